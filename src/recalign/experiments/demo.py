"""`recalign demo`: the whole story on the embedded simulator, in a few minutes on a laptop CPU.

For each seed: simulate logs (the simulator knows the true reward of every item in every
context), pretrain a SASRec policy π0 on them (behaviour cloning), train one reward model, then
post-train π0 with `sft`, `linear_sft`, `exp_sft`, `ppo` and `dpo` from the same checkpoint, and
evaluate every policy's top-10 list on the test contexts with the simulator's exact oracle.
`ppo`'s training is traced (the reward model's score and the true value of its top-10 every few
steps), the reward-hacking figure. Writes `results.json`, `table.txt`, `methods.png`,
`hacking.png` and one folder of runs per seed (`seed<N>/`) into `--out` (default
`./runs/demo-<date>-<time>`), and names each of them in `results.json`'s `files`. The seeds' lines
on stderr start with `[seed N]` (they run in parallel processes, and their lines interleave).

Intervals (95%): with several seeds, a method's true value is the mean over seeds with a
Student-t interval; with one seed, a bootstrap over users. Deltas against `sft` are paired (every
policy is scored on the same contexts): a Student-t interval over the seeds' mean differences
(`eval.stats.paired_delta`; one seed: a bootstrap over users).
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import re
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from recalign import configlib
from recalign.config import RunConfig
from recalign.data.prepared import prepare
from recalign.errors import InputError
from recalign.experiments import report
from recalign.experiments.compare import compare_methods
from recalign.experiments.presets import preset_config
from recalign.experiments.summary import interval_phrase, label_summary
from recalign.experiments.sweep import seeded
from recalign.train.checkpoint import atomic_write_text

DEMO_METHODS = ("sft", "linear_sft", "exp_sft", "ppo", "dpo")
TRACED = ("ppo",)


def demo_config(quick: bool, overrides: list[str], config_file: str | Path | None = None) -> RunConfig:
    """The `sim` preset (presets.py), its quick variant, the user's `--config`, then `--set`."""
    return preset_config("sim", quick, list(overrides), config_file=config_file)


def _log(msg: str) -> None:
    print(f"recalign demo: {msg}", file=sys.stderr, flush=True)


def default_out_dir(now: datetime | None = None) -> Path:
    """`runs/demo-<date>-<time>` under the working folder (`-2`, `-3`, ... if it exists already)."""
    base = Path("runs") / f"demo-{(now or datetime.now()):%Y%m%d-%H%M%S}"
    out, i = base, 1
    while out.exists():
        i += 1
        out = base.with_name(f"{base.name}-{i}")
    return out


class LabelledStream:
    """A text stream that starts every line it passes on to `stream` with `label` (also after a
    carriage return: progress bars), writing whole lines at a time so that the lines of parallel
    processes do not mix mid-line. Other attributes (isatty, fileno, encoding) are the stream's."""

    def __init__(self, stream, label: str):
        self.stream, self.label, self.buffer, self.at_start = stream, label, "", True

    def write(self, text: str) -> int:
        self.buffer += text
        cut = max(self.buffer.rfind("\n"), self.buffer.rfind("\r")) + 1
        if cut:
            self._emit(self.buffer[:cut])
            self.buffer = self.buffer[cut:]
        return len(text)

    def _emit(self, text: str) -> None:
        if not text:
            return
        out = re.sub(r"([\n\r])(?=[^\n\r])", lambda m: m.group(1) + self.label, text)
        self.stream.write((self.label if self.at_start and text[0] not in "\r\n" else "") + out)
        self.at_start = text[-1] in "\r\n"

    def flush(self) -> None:
        self._emit(self.buffer)
        self.buffer = ""
        self.stream.flush()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


@contextmanager
def labelled_stderr(label: str) -> Iterator[None]:
    """Every line written to `sys.stderr` meanwhile (ours, the training loop's, warnings) starts
    with `label`."""
    old = sys.stderr
    sys.stderr = stream = LabelledStream(old, label)
    try:
        yield
    finally:
        stream.flush()
        sys.stderr = old


def run_seed(cfg: RunConfig, out: Path, methods: tuple[str, ...], trace_every: int = 10) -> dict[str, Any]:
    """One seed: simulate, pretrain, every method from the same checkpoint (TRACED ones traced every
    `trace_every` steps); per-user true values and the oracle's and the logging policy's in the
    same contexts. Its stderr lines start with `[seed N]`."""
    with labelled_stderr(f"[seed {cfg.sim.seed}] "):
        data = prepare(cfg)
        sim, test = data.simulator, data.split.test
        logging = sim.logging_value(test.users, 10, step=test.context_end - data.split.offsets[test.users])
        variants = {m: (m, [f"posttrain.trace_every={trace_every}"] if m in TRACED else []) for m in methods}
        res = compare_methods(cfg, out, variants, data=data, log=_log)
        _log(f"{len(data.inter):,} logged interactions of {data.inter.n_users:,} users on "
             f"{data.inter.n_items:,} items; true value of the top-10: oracle {res['oracle_value'].mean():.3f}, "
             f"logging policy {logging.topk.mean():.3f} (one draw from it: {logging.expected.mean():.3f})")
    return {**res, "logging": logging.topk}


def summarise(seeds: list[dict[str, Any]], methods: tuple[str, ...]) -> dict[str, Any]:
    """`{"methods": {name: {"true_value": {mean, lo, hi}, "normalised_value", "ndcg@10", ...}},
    "deltas": {name: {mean, lo, hi, seeds_positive, seeds}}, ...}`: intervals over seeds (one
    seed: over users), deltas against `sft` paired by context, with a t interval over the seeds'
    mean differences (one seed: a bootstrap over users)."""
    names = ("pretrained",) + tuple(methods)
    base = "sft" if "sft" in names else None
    out: dict[str, Any] = {"methods": {}, "deltas": {}, "seeds": len(seeds)}
    for name in names:
        s = label_summary(seeds, name, base, ("true_value", "ndcg@10", "high/ndcg@10"))
        out["methods"][name] = {
            "true_value": s["true_value"],
            "normalised_value": s.get("normalised_value"),
            **{k: s[k]["mean"] for k in ("ndcg@10", "high/ndcg@10") if k in s},
        }
        if "delta" in s:
            out["deltas"][name] = s["delta"]["true_value"]
    out["oracle_value"] = float(np.mean([s["oracle_value"].mean() for s in seeds]))
    out["logging_value"] = float(np.mean([s["logging"].mean() for s in seeds]))
    return out


def format_table(res: dict[str, Any]) -> str:
    lines = [f"true value of the top-10 on the test contexts (simulator oracle; {res['seeds']} seed(s), 95% intervals)",
             f"  oracle {res['oracle_value']:.3f}   logging policy {res['logging_value']:.3f}",
             "",
             f"  {'policy':<12} {'true value':>24} {'Δ vs sft (seeds > 0)':>30} {'norm.':>7} {'NDCG@10':>8} {'high NDCG@10':>13}"]
    for name, m in res["methods"].items():
        tv = m["true_value"]
        d = res["deltas"].get(name)
        dtxt = f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] {d['seeds_positive']}/{d['seeds']}" if d else "—"
        nv = (m.get("normalised_value") or {}).get("mean")
        tv_txt = f"{tv['mean']:>8.3f}" + ("" if math.isnan(tv["lo"]) else f" [{tv['lo']:.3f}, {tv['hi']:.3f}]")
        lines.append(f"  {name:<12} {tv_txt:>24} {dtxt:>30} "
                     f"{'' if nv is None else f'{nv:+.2f}':>7} {m.get('ndcg@10', float('nan')):>8.4f} "
                     f"{m.get('high/ndcg@10', float('nan')):>13.4f}")
    lines.append("")
    lines.append("  true value: mean over seeds, t interval; Δ: mean per-user difference from sft on the same contexts,")
    lines.append(f"  95% {interval_phrase(list(res['deltas'].values()))}, and the seeds where the")
    lines.append("  method's mean beats sft's; norm. = (V(π) − V(π0)) / (V(oracle) − V(π0)), π0 = pretrained")
    return "\n".join(lines)


def run_files(per_seed: list[dict[str, Any]], dirs: list[Path]) -> dict[str, str]:
    """`{seed folder: what it holds}`: the run folders of each seed, in the order they were made."""
    out = {}
    for res, d in zip(per_seed, dirs):
        runs = [Path(r).name for r in res["runs"].values()]
        runs[1:1] = ["reward_model"] if (d / "reward_model").is_dir() else []
        out[f"{d.name}/"] = f"the run folders of {d.name.replace('seed', 'seed ')}: {', '.join(runs)}"
    return out


def write_figures(out: Path, cfg: RunConfig, per_seed: list[dict[str, Any]], methods: tuple[str, ...]) -> dict[str, str]:
    """`methods.png` (with `sft`) and `hacking.png` (with a traced method); `{file: what it shows}`."""
    files = {}
    world = f"simulator ({cfg.sim.noise} noise {cfg.sim.noise_scale:g})"
    if "sft" in methods:
        table = {n: label_summary(per_seed, n, "sft", ("true_value",)) for n in methods}
        report.plot_methods({world: table}, out / "methods.png", {world: "true_value"},
                            note="Each seed is a new simulated world.")
        files["methods.png"] = "each method's Δ true value vs sft, 95% paired intervals"
    traces = {m: [report.read_trace(s["runs"][m]) for s in per_seed] for m in TRACED if m in methods}
    if report.plot_traces(traces, out / "hacking.png") is not None:
        files["hacking.png"] = ("the reward model's score vs the true value along training; "
                                + report.traces_verdict(traces))
    return files


def format_files(res: dict[str, Any], out: str | Path) -> str:
    """The closing lines: the output folder and every file in it, one line each."""
    width = max(len(k) for k in res["files"])
    return "\n".join([f"{res['seconds']:.0f} s; written into {out}:"]
                     + [f"  {name:<{width}}  {what}" for name, what in res["files"].items()])


def run_demo(out_dir: str | Path, quick: bool = False, overrides: list[str] | None = None, seeds: int = 3,
             methods: tuple[str, ...] = DEMO_METHODS, jobs: int = 0,
             config_file: str | Path | None = None) -> dict[str, Any]:
    """The demo: `seeds` worlds (seed i: `sim.seed + i`, `train.seed + i`), run `jobs` at a time in
    separate processes (0 = as many as CPU cores, at most `seeds`). `res["files"]` names every file
    and folder written into `out_dir`."""
    out = Path(out_dir)
    if (out / "results.json").exists():
        raise InputError("demo output folder already holds results.json; choose another --out", path=out)
    cfg = demo_config(quick, list(overrides or []), config_file)  # checked before anything is written
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cfgs = [seeded(cfg, s) for s in range(seeds)]
    dirs = [out / f"seed{c.sim.seed}" for c in cfgs]
    jobs = max(1, min(jobs or (os.cpu_count() or 1), seeds))
    # ppo's trace: every 10 steps, every step in --quick (5 steps); `--set posttrain.trace_every` wins
    every = cfg.posttrain.trace_every or (1 if quick else 10)
    _log(f"writing into {out} ({seeds} seed(s), {jobs} at a time)")
    if jobs == 1:
        per_seed = [run_seed(c, d, methods, every) for c, d in zip(cfgs, dirs)]
    else:  # one process per seed, `jobs` at a time (each trains with train.num_threads threads)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as ex:
            per_seed = list(ex.map(run_seed, cfgs, dirs, [methods] * seeds, [every] * seeds))
    res = summarise(per_seed, methods)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["config"] = configlib.to_dict(cfg)
    res["files"] = {"results.json": "every number of the table, the configuration and this list (JSON)",
                    "table.txt": "the table", **write_figures(out, cfg, per_seed, methods),
                    **run_files(per_seed, dirs)}
    atomic_write_text(out / "results.json", json.dumps(res, indent=2))
    atomic_write_text(out / "table.txt", format_table(res) + "\n")
    return res
