"""`recalign demo`: the whole story on the embedded simulator, in about three minutes on 2 CPU cores.

For each seed: simulate logs (the simulator knows the true reward of every item in every
context), pretrain a SASRec policy π0 on them (behaviour cloning), train one reward model, then
run the contest of METHOD.md ("The contest", `contest.py`) from that π0 on a small grid (default
`quick`: K = 2 points per method but `sft`, 2 epochs, 2 checkpoints after step 0): `sft`,
`linear_sft`, `exp_sft`, `ppo` and `dpo`, each at every point of its grid, every checkpoint a
candidate. Each method's row is its checkpoint selected on validation only: by the `practical`
rule (validation NDCG@10 of the high-rated items) and, beside it, the `oracle` rule (validation
true value: the ceiling of online tuning); both read on the test contexts with the simulator's
exact oracle, with the exact KL(π ‖ π0) and E_π[r*] beside the value. `ppo`'s training is
traced (the reward model's score and the true value of its top-10 every few steps; the
hacking figure shows the run of its practical selection). Writes `results.json`, `table.txt`,
`contest.md`, `methods.png`, `frontier.png`, `hacking.png` and one folder of runs per seed (`seed<N>/`) into
`--out` (default `./runs/demo-<date>-<time>`), and names each of them in `results.json`'s
`files`. The seeds' lines on stderr start with `[seed N]` (they run in parallel processes, and
their lines interleave).

Intervals (95%): with several seeds, a method's true value is the mean over seeds with a
Student-t interval (one seed: none). Deltas against `sft`'s selected policy are paired (every
policy is scored on the same contexts, from the selected checkpoint's own per-user values): a
Student-t interval over the seeds' mean differences (`eval.stats.paired_delta`; one seed: a
bootstrap over users).
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from recalign import configlib
from recalign.config import RunConfig
from recalign.errors import InputError
from recalign.experiments import report
from recalign.experiments.compare import folder_name
from recalign.experiments.contest import (
    Grid,
    check_methods,
    contest_markdown,
    contest_seeds,
    epochs_override,
    jsonable,
    load_grid,
    point_label,
    summarise_contest,
    write_frontier,
)
from recalign.experiments.logs import LabelledStream, labelled_stderr
from recalign.experiments.presets import preset_config
from recalign.experiments.summary import fmt, interval_phrase
from recalign.train.checkpoint import atomic_write_text

__all__ = ["LabelledStream", "labelled_stderr", "run_demo", "demo_config", "default_out_dir", "format_table",
           "format_files"]

DEMO_METHODS = ("sft", "linear_sft", "exp_sft", "ppo", "dpo")
DEMO_GRID = "quick"  # K = 2, 2 epochs, 2 checkpoints: the default demo in about 3 minutes on 2 cores
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


def _iv(d: dict[str, Any] | None, sign: bool = False) -> str:
    """`mean [lo, hi]`, the mean alone without an interval (one seed), `—` when absent."""
    if d is None:
        return "—"
    if d.get("lo") is None or d["lo"] != d["lo"]:  # None in JSON, NaN before
        return fmt(d["mean"], 3, sign)
    return f"{fmt(d['mean'], 3, sign)} [{fmt(d['lo'], 3, sign)}, {fmt(d['hi'], 3, sign)}]"


def _picks(sel: list[dict[str, Any]]) -> str:
    """The selected knobs and step of each seed: `lam=0.5, step 24; lam=2.0, step 12`."""
    return "; ".join(", ".join([f"{k}={v}" for k, v in s["knobs"].items()] + [f"step {s['step']}"]) for s in sel)


def format_table(res: dict[str, Any]) -> str:
    """The demo's table: per method, its policy selected on validation under each rule (practical
    first, the oracle beside it), read on test: true value, Δ vs sft, KL(π‖π0), E_π[r*]."""
    ref = res["reference"]
    lines = [f"true value of the top-10 on the test contexts (simulator oracle; {res['seeds']} seed(s), 95% "
             f"intervals); each method: its checkpoint selected on validation from the `{res['grid']}` grid",
             f"  oracle {ref['oracle']['mean']:.3f}   logging policy {ref['logging']['mean']:.3f}   "
             f"π0 (pretrained) {ref['pretrained']['mean']:.3f}", "",
             f"  {'policy':<11} {'rule':<9} {'true value':>22} {'Δ vs sft (seeds > 0)':>30} {'KL(π‖π0)':>9} "
             f"{'E_π[r*]':>8}  selected (knobs, step; per seed)"]
    for name, m in res["methods"].items():
        for rule in res["rules"]:
            d = m["delta_vs_sft"].get(rule)
            dtxt = f"{_iv(d, sign=True)} {d['seeds_positive']}/{d['seeds']}" if d else "—"
            lines.append(f"  {name if rule == 'practical' else '':<11} {rule:<9} {_iv(m['true_value'][rule]):>22} "
                         f"{dtxt:>30} {fmt(m['kl'][rule]['mean'], 4):>9} "
                         f"{fmt(m['expected_value'][rule]['mean'], 3):>8}  {_picks(m['selected'][rule])}")
    deltas = [d for m in res["methods"].values() for d in m["delta_vs_sft"].values()]
    lines += ["", "  selection reads validation only: practical = argmax of the validation NDCG@10 of high-rated items,",
              "  oracle = argmax of the validation true value; the test contexts are read once, for this table.",
              "  true value: mean over seeds, t interval; Δ: mean per-user difference from sft's selected policy on",
              f"  the same contexts, 95% {interval_phrase(deltas)}, and the seeds where the",
              "  method's mean beats sft's; KL(π‖π0) and E_π[r*] (the expected true reward of the whole policy):",
              "  means over seeds"]
    return "\n".join(lines)


def run_files(out: Path, seeds: int, grid: Grid, methods: tuple[str, ...]) -> dict[str, str]:
    """`{seed folder: what it holds}`: π0, the reward model and every grid point's run of each seed."""
    runs = ["pretrain", "reward_model"] + [folder_name(point_label(m, k)) for m in methods for k in grid.points[m]]
    return {f"seed{s}/": f"the run folders of seed {s}: "
            + ", ".join(r for r in runs if (out / f"seed{s}" / r).is_dir()) for s in range(seeds)}


def write_figures(out: Path, cfg: RunConfig, res: dict[str, Any], per_seed: list[dict[str, Any]]) -> dict[str, str]:
    """`methods.png` (one panel per rule), `frontier.png` and `hacking.png` (the traced methods'
    practical selections); `{file: what it shows}`."""
    world = (f"simulator ({cfg.sim.noise} noise {cfg.sim.noise_scale:g}, {cfg.sim.observe} rewards, outcome selection "
             f"{cfg.sim.selection:g}, {cfg.sim.n_items} items)")
    tables = {f"selected by the {rule} rule": {n: {"delta": {res["metric"]: m["delta_vs_sft"][rule]}}
                                              for n, m in res["methods"].items() if rule in m["delta_vs_sft"]}
              for rule in res["rules"]}
    report.plot_methods(tables, out / "methods.png", dict.fromkeys(tables, res["metric"]),
                        note=f"Each seed is a new simulated world: {world}.")
    files = {"methods.png": "each method's Δ true value vs sft (selected policies, one panel per rule), 95% paired "
                            "intervals"}
    write_frontier(per_seed, out / "frontier.png", res["metric"])
    files["frontier.png"] = "every checkpoint's true value against its KL from π0, each method's frontier, the selections"
    traces = {m: [report.read_trace(out / f"seed{i}" / s["methods"][m]["selected"]["practical"]["run"])
                  for i, s in enumerate(per_seed)] for m in TRACED if m in res["methods"]}
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
             methods: tuple[str, ...] = DEMO_METHODS, jobs: int = 0, config_file: str | Path | None = None,
             grid: str = DEMO_GRID) -> dict[str, Any]:
    """The demo: `seeds` worlds (seed i: `sim.seed + i`, `train.seed + i`), run `jobs` at a time in
    separate processes (0 = as many as CPU cores, at most `seeds`), each the contest on `grid`
    (`--set posttrain.epochs=N` wins over the grid's epochs). `res["files"]` names every file and
    folder written into `out_dir`."""
    out = Path(out_dir)
    if (out / "results.json").exists():
        raise InputError("demo output folder already holds results.json; choose another --out", path=out)
    cfg = demo_config(quick, list(overrides or []), config_file)  # checked before anything is written
    if seeds < 1:
        raise InputError(f"--seeds must be at least 1, got {seeds}")
    g: Grid = load_grid(grid)
    methods = tuple(check_methods(g, methods))
    epochs = epochs_override(overrides or []) or g.epochs
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    jobs = max(1, min(jobs or (os.cpu_count() or 1), seeds))
    # ppo's trace: every 10 steps, every step in --quick; `--set posttrain.trace_every` wins
    every = cfg.posttrain.trace_every or (1 if quick else 10)
    _log(f"writing into {out} ({seeds} seed(s), {jobs} at a time; grid {grid}: {len(methods)} methods, "
         f"{sum(len(g.points[m]) for m in methods)} runs per seed, {epochs} epoch(s) each)")
    per_seed = contest_seeds(cfg, out, methods, g, epochs, seeds, jobs,
                             trace={m: every for m in TRACED if m in methods}, log=_log)
    res = summarise_contest(per_seed, methods, g, epochs)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["config"] = configlib.to_dict(cfg)
    res = jsonable(res)
    res["files"] = {"results.json": "every number of the table, the configuration and this list (JSON)",
                    "table.txt": "the table",
                    "contest.md": "the contest's tables: every rule's selections and budgets, the frontier's KL bands",
                    **write_figures(out, cfg, res, per_seed),
                    **run_files(out, seeds, g, methods)}
    atomic_write_text(out / "results.json", json.dumps(res, indent=2, allow_nan=False))
    atomic_write_text(out / "table.txt", format_table(res) + "\n")
    atomic_write_text(out / "contest.md", contest_markdown(res))
    return res
