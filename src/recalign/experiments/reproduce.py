"""`recalign reproduce`: the paper-style evidence, methods × datasets × seeds, in one report.

    recalign reproduce --datasets sim,ml-100k,ml-latest-small --seeds 3 --out DIR

For each dataset (its preset from `presets.py`, then `--set`), and each seed: pretrain π0, train
the reward model the RLHF baselines need, and run the contest of METHOD.md (`contest.py`: every
method of `--methods` at every point of its grid in `configs/contest/grids.toml`, `full`, or
`quick` with `--quick`, each checkpoint a candidate, each method's policy selected on validation
only, by the `practical` rule and on the simulator the `oracle` rule beside it, read on test with
its KL from π0 and, on the simulator, E_π[r*]). From the same π0, `sft` and `exp_sft` at every λ
of `--lams` (the λ curve). On real data, `K` held-out judge reward models (`eval.judges`) score
the λ curve's policies. On the simulator, in addition, the same comparison on fresh worlds at
every noise scale of `--noise-scales` (robustness), with `ppo`'s training traced (reward hacking).
Every run of the λ curve and of the noise sweeps is checkpointed as the contest's runs are (the
grid's `checkpoints`) and read at its checkpoint selected on validation by the `practical` rule
(`sweep.sweep_seed`'s `select`; only the step is chosen), never on test; `results.json` holds
the rule and the selected steps under each part's `select`. So every policy of the report is a
checkpoint selected on validation only; the judges score those checkpoints too (the top-10 lists
each checkpoint file saves, `selection.apply_selection`).

Writes `results.json` (every figure), `report.md` (tables, the claims of METHOD.md read off
intervals as holds / contradicted / inconclusive, the figures) and the PNG figures
(`methods.png`, `frontier_<dataset>.png`, `lambda_<dataset>.png`, `noise_<model>.png`,
`hacking.png`) into `--out`. The claims are stated as what the intervals say, whichever way that
goes.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from recalign import configlib
from recalign.config import RunConfig
from recalign.data.prepared import prepare
from recalign.errors import InputError
from recalign.experiments import report
from recalign.experiments.compare import folder_name, judge_agreement_over_seeds
from recalign.experiments.contest import (
    Grid,
    check_methods,
    contest_seed,
    epochs_override,
    frontier_table,
    jsonable,
    load_grid,
    protocol_sentence,
    selected_table,
    summarise_contest,
    write_frontier,
)
from recalign.experiments.logs import pool_map
from recalign.experiments.presets import preset_config
from recalign.experiments.selection import selected_judges
from recalign.experiments.summary import (
    fmt,
    fmt_ess,
    fmt_interval,
    interval_phrase,
    seed_interval,
    verdict,
)
from recalign.experiments.sweep import (
    JudgeCache,
    check_sweep,
    finish_sweep,
    primary_metric,
    seeded,
    sweep_seed,
    variant_label,
)
from recalign.train.checkpoint import atomic_write_text

METHODS = ("sft", "linear_sft", "exp_sft", "ppo", "dpo")
LAMS = ("0.1", "0.3", "1", "3", "10")
NOISE_SCALES = ("0", "1", "2")
NOISE_MODELS = ("gaussian", "popularity_bias")
SELECT = "practical"  # the rule that reads every run of the λ curve and the noise sweeps (selection.RULES)


def folder(ds: str) -> str:
    """The folder (and figure-name part) of dataset `ds` under `--out`: its file name, so a
    dataset given as a path (`/data/my_logs.csv`) writes under `--out`, not beside the file."""
    return folder_name(Path(ds).name)


def _log(msg: str) -> None:
    print(f"recalign reproduce: {msg}", file=sys.stderr, flush=True)


def _git_revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _sweep_args(kind: str, ds: str, cfg: RunConfig, out: Path, methods: tuple[str, ...], lams: tuple[str, ...],
                noise_scales: tuple[str, ...]) -> dict[str, Any]:
    """The sweep behind a part: `main` = exp_sft's λ grid on `ds` (beside `sft`, from the contest's π0);
    `noise:<model>` = the robustness sweep on the simulator under that noise model."""
    if kind == "main":  # the λ curve (the methods' table is the contest's)
        return {"cfg": cfg, "param": "posttrain.lam", "values": list(lams), "methods": ["exp_sft"],
                "out": out / folder(ds) / "lambda", "fixed": ["sft"], "trace": ()}
    noise = kind.split(":", 1)[1]
    return {"cfg": configlib.update(cfg, {"sim": {"noise": noise}}), "param": "sim.noise_scale",
            "values": list(noise_scales), "methods": [m for m in methods if m != "sft"],
            "out": out / folder(ds) / f"noise-{noise}", "fixed": ["sft"], "trace": ("ppo",)}


def _judges_job(ds: str, cfg: RunConfig, out: Path) -> float:
    """Phase 1: the judge ensemble of a real dataset, trained once (seeds then load it)."""
    t0 = time.perf_counter()
    JudgeCache(out / folder(ds), cfg.eval.judges, lambda m: _log(f"{ds}: {m}")).get(cfg, prepare(cfg))
    return round(time.perf_counter() - t0, 1)


def _seed_job(kind: str, ds: str, cfg: RunConfig, out: Path, seed: int, methods: tuple[str, ...],
              lams: tuple[str, ...], noise_scales: tuple[str, ...], judges: bool, checkpoints: int,
              contest: tuple[Grid, int] | None = None) -> dict[str, Any]:
    """Phase 2: one seed of one part (a process of its own with `--jobs`). `main`: the contest
    (`contest` = its grid and epochs; `ppo` traced on the simulator), then the λ curve from its
    π0. The sweep's runs are checkpointed `checkpoints` times and read at their checkpoints
    selected on validation by the `SELECT` rule; on real data with `judges`, the judges score
    those checkpoints."""
    t0 = time.perf_counter()
    done: dict[str, Any] = {"kind": kind, "dataset": ds, "seed": seed}
    root, pretrained = out / folder(ds), None
    k = cfg.eval.judges if judges and cfg.data.name != "sim" and kind == "main" else 0
    judge_cache = JudgeCache(root, k, _log)  # one per seed job: the contest's judges and the sweep's are loaded once
    if kind == "main" and contest is not None:
        grid, epochs = contest
        trace = {"ppo": max(1, cfg.posttrain.trace_every or 10)} if cfg.data.name == "sim" and "ppo" in methods else None
        done["contest"] = contest_seed(cfg, root, methods, grid, epochs, seed, trace=trace, log=_log)
        pretrained = root / f"seed{seed}" / "pretrain"
        if k:  # the judges score every method's practically selected checkpoint
            scfg = seeded(cfg, seed)
            data = prepare(scfg)
            done["contest_judges"] = selected_judges(root / f"seed{seed}", done["contest"]["methods"], SELECT,
                                                     judge_cache.get(scfg, data), data, scfg.eval)
    a = _sweep_args(kind, ds, cfg, out, methods, lams, noise_scales)
    done["result"] = sweep_seed(a["cfg"], a["param"], a["values"], a["methods"], a["out"], seed, fixed=a["fixed"],
                                trace=a["trace"], log=lambda m: _log(f"{ds} {kind} seed {seed}: {m}"),
                                judge_cache=judge_cache, select=SELECT, checkpoints=checkpoints,
                                pretrained=pretrained)
    return {**done, "seconds": round(time.perf_counter() - t0, 1)}


def _check(out: Path, datasets: list[str], methods: tuple[str, ...], jobs: int, resume: bool) -> None:
    if (out / "results.json").exists():
        raise InputError("output folder already holds results.json; choose another --out", path=out)
    if out.is_dir() and any(out.iterdir()) and not resume:
        raise InputError("output folder is not empty; pass --resume to continue an interrupted reproduce there, "
                         "or choose another --out", path=out)
    if "sft" not in methods:
        raise InputError("--methods must include sft (the baseline of every delta)")
    if not datasets:
        raise InputError("--datasets is empty")
    clash = sorted(name for name, n in Counter(map(folder, datasets)).items() if n > 1)
    if clash:
        raise InputError(f"--datasets names two datasets with the same file name ({', '.join(clash)}): their "
                         "folders under --out would clash; rename one")
    if jobs < 1:
        raise InputError(f"--jobs must be >= 1; got {jobs}")


def _main_results(ds: str, cfg: RunConfig, mine: list[dict[str, Any]], sw: dict[str, Any], methods: tuple[str, ...],
                  contest: tuple[Grid, int], out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A dataset's entry of `results["datasets"]` (the λ curve's summary with the contest's
    results under `contest`) and its traces (ppo's practical selections); writes
    `frontier_<ds>.png`."""
    per_seed = [d["contest"] for d in mine]
    grid, epochs = contest
    res = jsonable(summarise_contest(per_seed, list(methods), grid, epochs))
    write_frontier(per_seed, out / f"frontier_{folder(ds)}.png", res["metric"])
    res["judge_families"] = judge_agreement_over_seeds([d["contest_judges"] for d in mine if "contest_judges" in d])
    entry = {"config": configlib.to_dict(cfg), "metric": primary_metric(cfg), **sw["summary"], "contest": res,
             "judge_families": judge_agreement_over_seeds([s["base"] for s in sw["per_seed"] if "base" in s])}
    traces = {}
    if cfg.data.name == "sim" and "ppo" in methods:
        runs = [out / folder(ds) / f"seed{d['seed']}" / d["contest"]["methods"]["ppo"]["selected"]["practical"]["run"]
                for d in mine]
        traces[f"ppo, {cfg.sim.noise} noise {cfg.sim.noise_scale:g} (contest, practical selection)"] = [
            report.read_trace(r) for r in runs]
    return entry, traces


def run_reproduce(datasets: list[str], out: str | Path, seeds: int = 3, methods: tuple[str, ...] = METHODS,
                  lams: tuple[str, ...] = LAMS, noise_scales: tuple[str, ...] = NOISE_SCALES,
                  noise_models: tuple[str, ...] = NOISE_MODELS, quick: bool = False,
                  overrides: list[str] | None = None, data_dir: str | None = None, judges: bool = True,
                  jobs: int = 1, resume: bool = False, grid: str | None = None) -> dict[str, Any]:
    """Run every part, seed by seed, `jobs` at a time (separate processes, one torch thread each),
    then write `results.json`, `report.md` and the figures into `out`. The contest runs on `grid`
    (None: `quick` with `quick`, else `full`; `--set posttrain.epochs=N` wins over its epochs);
    the λ curve's and the noise sweeps' runs get its `checkpoints`, each read at its checkpoint
    selected on validation by the `SELECT` rule (on real data with `judges`, scored by the judges
    there). With `resume`, runs that finished in `out` before are reused and interrupted ones
    continue."""
    out = Path(out)
    _check(out, datasets, methods, jobs, resume)
    g = load_grid(grid or ("quick" if quick else "full"))
    methods = tuple(check_methods(g, methods))
    contest = (g, epochs_override(overrides or []) or g.epochs)
    cfgs = {ds: preset_config(ds, quick, overrides, data_dir) for ds in datasets}  # bad keys fail here
    for noise in noise_models:
        configlib.update(RunConfig(), {"sim": {"noise": noise}})  # an unknown noise model fails here
    for cfg in cfgs.values():
        check_sweep(cfg, "posttrain.lam", list(lams), ["exp_sft"])
    out.mkdir(parents=True, exist_ok=True)
    revision = _git_revision()  # now: the tree may change while the parts run
    t_start = time.perf_counter()
    real = [ds for ds, c in cfgs.items() if c.data.name != "sim"]
    judge_seconds = pool_map(_judges_job, [(ds, cfgs[ds], out) for ds in real], jobs) if judges else []
    # the longest parts first (real data, then the noise sweeps), so parallel workers finish together
    parts = [("main", ds) for ds in real]
    parts += [(f"noise:{n}", ds) for ds, c in cfgs.items() if c.data.name == "sim" and noise_scales for n in noise_models]
    parts += [("main", ds) for ds, c in cfgs.items() if c.data.name == "sim"]
    args = [(kind, ds, cfgs[ds], out, i, tuple(methods), tuple(lams), tuple(noise_scales), judges, g.checkpoints,
             contest if kind == "main" else None) for kind, ds in parts for i in range(seeds)]
    done = pool_map(_seed_job, args, jobs)
    results: dict[str, Any] = {"datasets": {}, "noise": {}, "seeds": seeds, "methods": list(methods),
                               "grid": g.name, "lams": list(lams), "noise_scales": list(noise_scales), "quick": quick,
                               "overrides": list(overrides or []), "git_revision": revision, "jobs": jobs,
                               "seconds": {f"{ds} judges": t for ds, t in zip(real, judge_seconds)}, "traces": {}}
    for kind, ds in sorted(parts, key=lambda p: (datasets.index(p[1]), p[0])):  # the order asked for
        mine = sorted((d for d in done if d["kind"] == kind and d["dataset"] == ds), key=lambda d: d["seed"])
        a = _sweep_args(kind, ds, cfgs[ds], out, methods, lams, noise_scales)
        sw = finish_sweep([d["result"] for d in mine], a["cfg"], a["param"], a["values"], a["methods"], a["fixed"],
                          "sft", a["trace"], select=SELECT)
        if kind == "main":
            results["datasets"][ds], traces = _main_results(ds, cfgs[ds], mine, sw, methods, contest, out)
            results["traces"].update(traces)
        else:
            noise = a["cfg"].sim.noise
            results["noise"][f"{ds} ({noise} noise)"] = {**sw["summary"], "noise": noise}
            for v in noise_scales:
                results["traces"][f"ppo, {noise} noise {v}"] = sw["traces"].get(f"ppo, sim.noise_scale={v}", [])
        results["seconds"][f"{ds} {kind} (sum over seeds)"] = round(sum(d["seconds"] for d in mine), 1)
    results["seconds"]["total (wall)"] = round(time.perf_counter() - t_start, 1)
    write_report(results, out)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    return results


# ------------------------------------------------------------------------------ the report
def _delta(table: dict[str, Any], name: str, metric: str) -> dict[str, Any] | None:
    return table.get(name, {}).get("delta", {}).get(metric)


def _all_deltas(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every Δ vs sft of the methods' tables (what the report's tables show): the contests' and
    the fixed methods'."""
    fixed = [d for r in results["datasets"].values() for s in r["fixed"].values() for d in s.get("delta", {}).values()]
    return fixed + [d for r in results["datasets"].values() for m in r.get("contest", {}).get("methods", {}).values()
                    for d in m["delta_vs_sft"].values()]


def _finite(d: dict[str, Any] | None) -> dict[str, Any] | None:
    """An interval read back from JSON (null where undefined) with NaN there instead."""
    return None if d is None else {**d, **{k: math.nan for k in ("lo", "hi") if d.get(k) is None}}


def _read_at(r: dict[str, Any]) -> str:
    """How a sweep's runs were read: at checkpoints selected on validation (`select`), or, in
    results written before reproduce selected them, at their ends."""
    sel = r.get("select")
    return (f"each run's checkpoint selected on validation by the {sel['rule']} rule" if sel
            else "final policies")


def _steps_line(r: dict[str, Any]) -> list[str]:
    """The selected step of every run of a sweep, per seed (empty without `select`)."""
    sel = r.get("select")
    if not sel:
        return []
    steps = "; ".join(f"`{label}` {', '.join(map(str, s))}" for label, s in sel["steps"].items())
    return [f"Each run read at its checkpoint selected on validation by the {sel['rule']} rule (argmax of the "
            f"validation {sel['metric']} over its checkpoints; never the test split); selected steps per seed: "
            f"{steps}.", ""]


def _picks(sels: list[dict[str, Any]]) -> str:
    return "; ".join(", ".join([f"{k}={v}" for k, v in s["knobs"].items()] + [f"step {s['step']}"]) for s in sels)


def _claim1_contest(ds: str, c: dict[str, Any]) -> str:
    """Claim 1 off the contest: exp_sft's selected policy against sft's, under each rule."""
    m = c["methods"]["exp_sft"]
    parts = []
    for rule in c["rules"]:
        d = _finite(m["delta_vs_sft"][rule])
        parts.append(f"{rule} rule (selected {_picks(m['selected'][rule])}; KL(π‖π0) {fmt(m['kl'][rule]['mean'], 4)}): "
                     f"Δ = {fmt_interval(d, 3, True)} ({d['interval']}), {d['seeds_positive']}/{d['seeds']} seeds "
                     f"positive → **{verdict(d)}**")
    return (f"**Claim 1** ({ds}): `exp_sft` beats `sft` on the true value, each selected on validation from its "
            f"`{c['grid']}` grid: " + "; ".join(parts) + ".")


def _claim4_contest(ds: str, r: dict[str, Any]) -> str:
    """Claim 4 off the contest (practical rule): exp_sft's Δ high/NDCG@10 vs sft and vs
    linear_sft, and plain NDCG@10 of the selected checkpoints (per seed, t over seeds); then the
    λ curve's peak and, where the judges ran, their sentence on that λ's run (each seed's
    checkpoint selected on validation) vs sft."""
    m = r["contest"]["methods"]
    d = _finite(m["exp_sft"]["delta_vs_sft"]["practical"])
    plain = seed_interval([a["test"]["ndcg@10"] - b["test"]["ndcg@10"] for a, b in
                           zip(m["exp_sft"]["selected"]["practical"], m["sft"]["selected"]["practical"])])
    parts = [f"high/ndcg@10 vs sft rises: {_read(d, 'positive', 4)}",
             f"ndcg@10 vs sft falls (a collapse; per seed, t over seeds): {_read(plain, 'negative', 4)}"]
    if "linear_sft" in m:
        diff = _per_seed_diff(d, m["linear_sft"]["delta_vs_sft"]["practical"])
        parts.append(f"high/ndcg@10 exp_sft − linear_sft > 0: {_read(diff, 'positive', 4)}")
    best = max(r["series"]["exp_sft"], key=lambda p: p.get("high/ndcg@10", {}).get("mean", -1))
    agree = r.get("judge_families", {}).get(variant_label("exp_sft", r["param"], best["value"]))
    judged = f" At that λ, {_judges_sentence(agree)}." if agree else ""
    contest_judged = r["contest"].get("judge_families", {})
    if contest_judged:  # each method's practically selected policy, scored by the held-out judges
        judged += (" The held-out judges on each method's selected policy (practical rule): "
                   + "; ".join(f"`{m}`: {_judges_sentence(a)}" for m, a in contest_judged.items()) + ".")
    return (f"**Claim 4** ({ds}): `exp_sft`, selected on validation by the practical rule "
            f"({_picks(m['exp_sft']['selected']['practical'])}): {'; '.join(parts)}. Over λ ({_read_at(r)}), the "
            f"mean high/NDCG@10 peaks at λ = {best['value']} ({fmt(best.get('high/ndcg@10', {}).get('mean'), 4)})."
            + judged)


def _per_seed_diff(x: dict[str, Any] | None, y: dict[str, Any] | None, sub: dict[str, Any] | None = None,
                   sub_y: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Per seed `x − y` (minus `sub − sub_y` when given), with its t interval over the seeds
    (`seed_interval`); None when a summary lacks per-seed values (results written before they
    were kept) or the seed counts differ."""
    parts = [x, y] + ([sub, sub_y] if sub is not None or sub_y is not None else [])
    vals = [p.get("per_seed") if p else None for p in parts]
    if any(v is None for v in vals) or len({len(v) for v in vals}) != 1:
        return None
    diff = np.subtract(vals[0], vals[1])
    if len(vals) == 4:
        diff = diff - np.subtract(vals[2], vals[3])
    return seed_interval([float(v) for v in diff])


def _read(d: dict[str, Any] | None, direction: str = "positive", digits: int = 3) -> str:
    """`<mean> [<lo>, <hi>] → <verdict>`: an interval and what it says about the claimed sign."""
    if d is None:
        return "not measured (no per-seed values in these results)"
    return f"{fmt_interval(d, digits, True)} → {verdict(d, direction)}"


def _claim1(ds: str, r: dict[str, Any], seeds: int) -> list[str]:
    if "exp_sft" in r.get("contest", {}).get("methods", {}):
        lines = [_claim1_contest(ds, r["contest"])]
    else:  # results written before the contest: the fixed-epoch table
        d = _delta(r["fixed"], "exp_sft", "true_value")
        kind = f" ({d['interval']})" if d and "interval" in d else ""
        lines = [f"**Claim 1** ({ds}): `exp_sft` (λ = {r['config']['posttrain']['lam']:g}) beats `sft` on the true "
                 f"value: Δ = {fmt_interval(d, 3, True)}{kind}, {d['seeds_positive'] if d else 0}/{seeds} seeds "
                 f"positive → **{verdict(d)}**."]
    by: dict[str, list[str]] = {}
    for p in r["series"]["exp_sft"]:
        by.setdefault(verdict(p.get("delta", {}).get("true_value")), []).append(p["value"])
    lines.append(f"  Over the λ grid {{{', '.join(r['values'])}}} ({_read_at(r)}): " + "; ".join(
        f"{v} at λ ∈ {{{', '.join(lams)}}}" for v, lams in by.items()) + ".")
    return lines


def _claim2(ds: str, nz: dict[str, Any]) -> list[str]:
    """exp_sft loses less than ppo and dpo as noise grows: per seed, the change of each method from
    the lowest to the highest noise scale; the claim, per rival, is `change(exp_sft) − change(rival)
    > 0` (paired by seed, t over seeds). Overall: holds when it holds against both, contradicted
    when it is contradicted against either, inconclusive otherwise."""
    scales = nz["values"]
    ends = {m: (pts[0].get("true_value"), pts[-1].get("true_value")) for m, pts in nz["series"].items()
            if m != "pretrained" and pts[0].get("true_value") and pts[-1].get("true_value")}
    change = {m: _per_seed_diff(last, first) or {"mean": last["mean"] - first["mean"], "lo": float("nan"),
                                                  "hi": float("nan")} for m, (first, last) in ends.items()}
    order = ", ".join(f"`{m}` {fmt_interval(c, 3, True)}" for m, c in sorted(change.items(), key=lambda kv: -kv[1]["mean"]))
    rivals = [m for m in ("ppo", "dpo") if m in ends]
    if "exp_sft" not in ends or not rivals:
        return [f"**Claim 2** ({ds}, noise scale {scales[0]} → {scales[-1]}): change in true value {order} → not measured."]
    pairs = {m: _per_seed_diff(ends["exp_sft"][1], ends["exp_sft"][0], ends[m][1], ends[m][0]) for m in rivals}
    verdicts = [verdict(d) for d in pairs.values()]
    overall = ("holds" if all(v == "holds" for v in verdicts) else "contradicted" if "contradicted" in verdicts
               else "not measured" if "not measured" in verdicts else "inconclusive")
    vs = "; ".join(f"change(exp_sft) − change({m}) = {_read(d)}" for m, d in pairs.items())
    at_max = ", ".join(f"`{m}` {fmt(last['mean'])}" for m, (_, last) in sorted(ends.items(), key=lambda kv: -kv[1][1]["mean"]))
    return [f"**Claim 2** ({ds}, noise scale {scales[0]} → {scales[-1]}): change in true value (mean over seeds "
            f"[interval]) {order}. `exp_sft` loses less (paired by seed): {vs}. Claim 2 (against "
            f"{' and '.join(f'`{m}`' for m in rivals)}): **{overall}**. True value at scale {scales[-1]}: {at_max}."]


def _trace_lines(traces: dict[str, Any]) -> list[str]:
    """Each traced series: the change of the reward model's score and of the true value from the
    first to the last traced point, per seed, with t intervals; the figure's rule (means) and what
    the intervals say (hacking holds when the score's rise and the true value's fall both hold,
    is contradicted when the score's rise is contradicted or the true value's rise holds)."""
    lines = []
    for name, runs in report.unique_traces(traces).items():
        runs = [t for t in runs if len(t) >= 2 and "true_value" in t[0] and "rm_value" in t[0]]
        if not runs:
            continue
        d_rm = seed_interval([t[-1]["rm_value"] - t[0]["rm_value"] for t in runs])
        d_true = seed_interval([t[-1]["true_value"] - t[0]["true_value"] for t in runs])
        rm_up, true_down = verdict(d_rm), verdict(d_true, "negative")
        shown = ("holds" if rm_up == true_down == "holds" else
                 "contradicted" if rm_up == "contradicted" or true_down == "contradicted" else "inconclusive")
        lines.append(f"  Trace, {name}: over training the reward model's score of the top-10 changed by "
                     f"{fmt_interval(d_rm, 3, True)}, its true value by {fmt_interval(d_true, 3, True)} "
                     f"({len(runs)} seed(s), {d_rm['interval']}) → the figure's rule (means): "
                     f"{report.hacking_verdict(runs)}; hacking from the intervals: {shown}.")
    return lines


def _claim4(ds: str, r: dict[str, Any]) -> str:
    if {"exp_sft", "sft"} <= set(r.get("contest", {}).get("methods", {})):
        return _claim4_contest(ds, r)
    parts = []
    for metric, direction, what in (("high/ndcg@10", "positive", "rises"), ("judge_value", "positive", "rises"),
                                    ("ndcg@10", "negative", "falls (a collapse)")):
        d = _delta(r["fixed"], "exp_sft", metric)
        if d is not None:
            parts.append(f"{metric} vs sft {what}: {_read(d, direction, 4)}")
    agree = r.get("judge_families", {}).get("exp_sft")
    if agree:
        parts.append(_judges_sentence(agree))
    for metric in ("high/ndcg@10", "ndcg@10"):
        d = _per_seed_diff(_delta(r["fixed"], "exp_sft", metric), _delta(r["fixed"], "linear_sft", metric))
        if "linear_sft" in r["fixed"]:
            parts.append(f"{metric} exp_sft − linear_sft > 0: {_read(d, 'positive', 4)}")
    best = max(r["series"]["exp_sft"], key=lambda p: p.get("high/ndcg@10", {}).get("mean", -1))
    return (f"**Claim 4** ({ds}): `exp_sft` {'; '.join(parts)}. Over λ, the mean high/NDCG@10 peaks at "
            f"λ = {best['value']} ({fmt(best.get('high/ndcg@10', {}).get('mean'), 4)}).")


def _judges_sentence(agree: dict[str, Any]) -> str:
    """Claim 4's judge sentence: each family's Δ vs sft (t over seeds) and whether the validated
    families agree (`eval/judge.py:judges_agree`: all intervals above 0 = "up")."""
    fams = "; ".join(f"judge/{f} {_read(d, 'positive', 4)}"
                     + ("" if agree["validated"].get(f) else " (not validated: does not beat the mean predictors "
                                                               "out of fold, not counted)")
                     for f, d in agree["deltas"].items())
    return f"judge families vs sft: {fams} → the validated families agree: **{agree['agree']}**"


def claims(results: dict[str, Any]) -> list[str]:
    """METHOD.md's claims 1-4 read off the numbers (whichever way they go): every verdict from a
    95% interval (`summary.verdict`: holds / contradicted / inconclusive), printed beside it."""
    sim = {ds: r for ds, r in results["datasets"].items() if r["metric"] == "true_value"}
    lines = [f"Verdicts from 95% intervals, never from means: *holds* when the interval lies entirely on the claimed "
             f"side of 0, *contradicted* when entirely on the other side, *inconclusive* when it covers 0. Δ vs sft: "
             f"{interval_phrase(_all_deltas(results))}; differences between methods' changes: paired by seed, Student-t interval "
             f"over the seeds (one seed: no interval, inconclusive)."]
    for ds, r in sim.items():
        lines += _claim1(ds, r, results["seeds"])
    for ds, nz in results["noise"].items():
        lines += _claim2(ds, nz)
    lines += _trace_lines(results.get("traces", {}))
    for ds, r in sim.items():
        pts = r["series"]["exp_sft"]
        row = "; ".join(f"λ={p['value']}: {fmt(p.get('true_value', {}).get('mean'))}, ESS {fmt_ess(p.get('ess'))}"
                        for p in pts)
        lines.append(f"**Claim 3** ({ds}): the λ curve (true value, ESS; means): {row}.")
    lines += [_claim4(ds, r) for ds, r in results["datasets"].items() if r["metric"] != "true_value"]
    return lines


def _methods_tables(results: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """`methods.png`'s panels: per dataset and rule, the contest's Δ vs sft of each selected
    policy (results without a contest: the fixed-epoch table)."""
    tables, metrics = {}, {}
    for ds, r in results["datasets"].items():
        c = r.get("contest")
        if c is None:
            tables[ds], metrics[ds] = r["fixed"], r["metric"]
            continue
        for rule in c["rules"]:
            key = f"{ds}, {rule} rule"
            tables[key] = {n: {"delta": {c["metric"]: _finite(m["delta_vs_sft"][rule])}}
                           for n, m in c["methods"].items() if rule in m["delta_vs_sft"]}
            metrics[key] = c["metric"]
    return tables, metrics


def write_report(results: dict[str, Any], out: Path) -> Path:
    figs: list[tuple[str, str]] = []
    for ds, r in results["datasets"].items():
        p = report.plot_sweep(r, out / f"lambda_{folder(ds)}.png", f"{ds}: exp_sft's λ curve (baseline lines: fixed methods)")
        figs.append((f"λ curve, {ds}", p.name))
    for key, nz in results["noise"].items():
        p = report.plot_sweep(nz, out / f"noise_{nz['noise']}.png", f"{key}: true value as the logged rewards get noisier")
        figs.append((f"robustness to {nz['noise']} noise", p.name))
    p = report.plot_traces(results.get("traces", {}), out / "hacking.png",
                           "ppo: the reward model's score (left) vs the true value (right) along training")
    if p is not None:
        figs.append(("reward hacking along ppo training", p.name))
    tables, metrics = _methods_tables(results)
    p = report.plot_methods(tables, out / "methods.png", metrics,
                            note="Contest: each method's policy selected on validation (one panel per rule).")
    figs.append(("methods against sft", p.name))
    figs += [(f"reward–KL frontier, {ds}", f"frontier_{folder(ds)}.png") for ds, r in results["datasets"].items()
             if "contest" in r]

    md = ["# recalign reproduce", "",
          f"Datasets {', '.join(results['datasets'])}; {results['seeds']} seed(s) (each seed: new data on the simulator, "
          f"new π0, reward model and post-training); git {results['git_revision']}; "
          f"{results['seconds'].get('total (wall)', 0) / 60:.1f} min of wall-clock in this invocation"
          + (" (quick settings: a smoke test, not evidence)" if results["quick"] else "") + ".",
          "Intervals: 95%; a value is the mean over seeds (t interval); Δ is the mean per-user difference from `sft` "
          f"on the same users, with the {interval_phrase(_all_deltas(results))}, and the number of seeds whose mean "
          "difference is positive.", "",
          "## The claims of METHOD.md, read off these numbers", ""]
    md += [f"- {c}" for c in claims(results)]
    for ds, r in results["datasets"].items():
        metrics = (["true_value", "normalised_value", "ndcg@10", "high/ndcg@10"] if r["metric"] == "true_value"
                   else ["ndcg@10", "high/ndcg@10"] + (["judge_value"] if any("judge_value" in s for s in r["fixed"].values()) else []))
        md += ["", f"## {ds}", ""]
        if "contest" in r:
            md += ["### The contest: each method selected on validation, read on test", "",
                   protocol_sentence(r["contest"]), "", *selected_table(r["contest"]), "", *frontier_table(r["contest"]),
                   "", f"### The λ curve's runs ({_read_at(r)}; {r['config']['posttrain']['epochs']} epoch(s))", ""]
        md += _steps_line(r) + [report.methods_markdown(r["fixed"], metrics), ""]
        if any("judge_spread" in s for s in r["fixed"].values()):
            spread = max(s.get("judge_spread", 0) for s in r["fixed"].values())
            md.append(f"Judge ensemble: {r['config']['eval']['judges']} reward models trained on every interaction; "
                      f"largest spread (std of the judges' means) {spread:.4f}.")
            md.append("")
        md += [f"λ sweep of `exp_sft` ({r['metric']}):", "", report.sweep_markdown(r), ""]
    for key, nz in results["noise"].items():
        md += ["", f"## Robustness: {key}", "", f"True value of the top-10 against `{nz['param']}` (each value: new "
               f"worlds with the same items and true rewards, only the observed rewards differ; every method "
               f"retrained):", "", *_steps_line(nz), report.sweep_markdown(nz), ""]
    md += ["", "## Figures", ""]
    md += [f"### {title}\n\n![{title}]({name})\n" for title, name in figs]
    md += ["## Time", "", "| part | seconds |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in results["seconds"].items()]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(md) + "\n")
    return path
