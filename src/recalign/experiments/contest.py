"""`recalign contest`: post-training methods compared at equal tuning budgets, selected on
validation only, read on reward–KL frontiers (METHOD.md, "The contest").

    recalign contest --data sim --seeds 3 --out DIR
    recalign contest --data sim --quick --seeds 1 --methods sft,exp_sft,ppo --out DIR

Per seed (seed `i`: `sim.seed + i`, `train.seed + i`, a new world) one π0 and one reward model
serve every method (`compare.compare_methods`). Every method runs every point of its grid
(`configs/contest/grids.toml`: the same number of points K for every method but `sft`, which has
one; the same `posttrain.epochs` for all) from π0, with `posttrain.checkpoint_every` set so that
each run has the grid's number of checkpoints after step 0; every (grid point, checkpoint) is a
candidate. Each checkpoint line holds its validation metrics and its test metrics apart
(`stages/posttrain.py:make_checkpoints`).

Selection (`select`) is handed the validation metrics and the steps and nothing else, under two
rules reported side by side:

- `practical`: the argmax of the validation `high/ndcg@10` (NDCG@10 of the held-out high-rated
  items: computable from logged data);
- `oracle` (simulator only): the argmax of the validation `true_value` (the oracle's value of
  the top-10 on validation contexts): the ceiling of online tuning.

Ties go to the earlier step, then to the grid point written first. For each rule and method the
selected checkpoint's test metrics are read: the test value (`true_value` on the simulator, else
`high/ndcg@10`), `expected_value` (E_π[r*], simulator) and the exact KL(π ‖ π0). Per-user test
values of every checkpoint are saved by post-training (`checkpoints/step-N.safetensors`), so the
selected checkpoint's own values (not a re-run's) give the paired deltas against `sft`'s
selected policy (`eval.stats.paired_delta`: a t interval over the seeds' mean differences; one
seed: a bootstrap over users).

Frontier: every checkpoint of every grid point is a point (test KL, test value); a method's
frontier is the monotone upper envelope over KL (`upper_frontier`). For each KL band [a, b) the
frontier's height at the band's upper edge (the best test value of the method's points with
KL < b: what it reaches without moving further than b) is compared across methods; the gap
between the best two has a t interval over seeds (one seed: no interval). The frontier reads
test values of every candidate: it describes the methods, it selects nothing.

Writes `contest.json`, `contest.md`, `frontier.png` and one folder per seed (`seed<N>/`: π0, the
reward model and one run folder per (method, grid point)).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import multiprocessing as mp
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from recalign import configlib
from recalign.config import PostTrainConfig, RunConfig
from recalign.data.prepared import prepare
from recalign.errors import InputError
from recalign.eval.metrics import ndcg
from recalign.eval.rm_error import rm_topk_error
from recalign.eval.stats import paired_delta
from recalign.experiments import report
from recalign.experiments.compare import compare_methods
from recalign.experiments.demo import labelled_stderr
from recalign.experiments.presets import CONFIGS, read_preset
from recalign.experiments.summary import (
    fmt,
    fmt_interval,
    frontier_height,
    interval_phrase,
    seed_interval,
)
from recalign.experiments.sweep import primary_metric, seeded
from recalign.posttrain.registry import get_method
from recalign.stages.posttrain import planned_steps
from recalign.stages.reward_model import load_reward_model
from recalign.train.checkpoint import atomic_write_text

GRIDS = "contest/grids.toml"
CONTEST_METHODS = ("sft", "linear_sft", "exp_sft", "ppo", "dpo")
BASELINE = "sft"
RULES = {"practical": "high/ndcg@10", "oracle": "true_value"}
BANDS = ((0.0, 0.05), (0.05, 0.2), (0.2, 1.0), (1.0, math.inf))


def _log(msg: str) -> None:
    print(f"recalign contest: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the grids


@dataclass
class Grid:
    """One grid of the grids file: the budget and every method's points.

    Attributes:
        name: `full` or `quick`.
        epochs: `posttrain.epochs` of every point.
        checkpoints: checkpoints after step 0 in every run.
        points: `{method: [{knob: value}, ...]}` in the file's order.
    """

    name: str
    epochs: int
    checkpoints: int
    points: dict[str, list[dict[str, Any]]]


def _method_points(method: str, table: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """The product of a method's knob lists, each knob checked against the method's `knobs` and
    each value against the `PostTrainConfig` field's type and range."""
    knobs = get_method(method, PostTrainConfig()).knobs
    for key, values in table.items():
        if key not in knobs:
            raise InputError(f"{where}: {key!r} is not a knob of {method} (it reads "
                             f"{', '.join(knobs) or 'none of its own'}); the budget (epochs, lr, batch_size) "
                             "is the same for every method and not part of a grid")
        if not isinstance(values, list) or not values:
            raise InputError(f"{where}: {key} must be a non-empty list of values, got {values!r}")
        for v in values:
            try:
                configlib.update(RunConfig(), {"posttrain": {key: v}})
            except InputError as e:
                raise InputError(f"{where}: {key} = {v!r}: {e}") from None
    return [dict(zip(table, combo)) for combo in itertools.product(*table.values())]


def parse_grid(values: dict[str, Any], name: str, where: str) -> Grid:
    """The grid `name` of the grids file's values (`where` names the file in errors)."""
    if name not in values:
        raise InputError(f"{where}: no grid {name!r}; grids: {', '.join(values)}")
    table = dict(values[name])
    budget = {}
    for key in ("epochs", "checkpoints"):
        v = table.pop(key, None)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise InputError(f"{where}: [{name}] needs {key} = a whole number >= 1, got {v!r}")
        budget[key] = v
    points = {}
    for method, knobs in table.items():
        if not isinstance(knobs, dict):
            raise InputError(f"{where}: [{name}] {method} must be a table [{name}.{method}]")
        points[method] = _method_points(method, knobs, f"{where} [{name}.{method}]")
    if len(points.get(BASELINE, [])) != 1:
        raise InputError(f"{where}: [{name}.{BASELINE}] must be there with no knobs (one point: its step is "
                         "chosen among its checkpoints)")
    sizes = {m: len(p) for m, p in points.items() if m != BASELINE}
    if len(set(sizes.values())) > 1:
        raise InputError(f"{where}: [{name}] every method but {BASELINE} needs the same number of grid points "
                         f"(an equal tuning budget); got {', '.join(f'{m} {k}' for m, k in sizes.items())}")
    return Grid(name, budget["epochs"], budget["checkpoints"], points)


def load_grid(name: str, path: str | Path | None = None) -> Grid:
    """The grid `name` (`full`, `quick`) of the packaged `configs/contest/grids.toml`, or of the
    TOML file `path`."""
    if path is None:
        (values,) = read_preset(GRIDS)
        return parse_grid(values, name, str(CONFIGS / GRIDS))
    return parse_grid(configlib.load_toml(path), name, str(path))


def point_label(method: str, knobs: Mapping[str, Any]) -> str:
    """`exp_sft[lam=0.5,weight_norm=global]`; a point without knobs is the method's name."""
    return method + (f"[{','.join(f'{k}={v}' for k, v in knobs.items())}]" if knobs else "")


def contest_variants(grid: Grid, methods: Sequence[str], epochs: int, every: int) -> dict[str, tuple[str, list[str]]]:
    """`{label: (method, --set pairs)}` of every grid point of `methods`."""
    out = {}
    for m in methods:
        for knobs in grid.points[m]:
            sets = [f"posttrain.{k}={json.dumps(v)}" for k, v in knobs.items()]
            out[point_label(m, knobs)] = (m, sets + [f"posttrain.epochs={epochs}", f"posttrain.checkpoint_every={every}"])
    return out


# ------------------------------------------------------------------ selection


def select(valid: Sequence[Sequence[Mapping[str, Any]]], steps: Sequence[Sequence[int]], metric: str) -> tuple[int, int]:
    """The selected candidate `(grid point i, checkpoint j)`: the argmax of `valid[i][j][metric]`
    (validation metrics only: this function is never handed a test number); ties go to the
    earlier `steps[i][j]`, then to the smaller `i`. A missing or NaN value is no candidate; an
    error when no candidate has one."""
    best: tuple[float, int, int] | None = None
    for i, (vs, ss) in enumerate(zip(valid, steps, strict=True)):
        for j, (v, step) in enumerate(zip(vs, ss, strict=True)):
            x = v.get(metric)
            if x is None or math.isnan(x):
                continue
            key = (-float(x), step, i)
            if best is None or key < best:
                best, where = key, (i, j)
    if best is None:
        raise InputError(f"selection: no checkpoint has a validation {metric} (on high-reward targets: does any "
                         "validation target reach data.high_reward?)")
    return where


# ------------------------------------------------------------------ one seed


def read_checkpoints(run: str | Path) -> list[dict[str, Any]]:
    """The lines of `run/checkpoints.jsonl`, by step."""
    path = Path(run) / "checkpoints.jsonl"
    if not path.is_file():
        raise InputError("run has no checkpoints.jsonl (post-trained without posttrain.checkpoint_every)", path=path)
    recs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sorted({r["step"]: r for r in recs}.values(), key=lambda r: r["step"])


def choose(records: Sequence[Sequence[Mapping[str, Any]]], metric: str) -> tuple[int, int]:
    """`select` over the checkpoint records of a method's grid points, handed only their `valid`
    sub-dicts and steps."""
    return select([[r["valid"] for r in recs] for recs in records], [[r["step"] for r in recs] for recs in records],
                  metric)


def per_user_value(run: str | Path, step: int, metric: str, high: np.ndarray) -> np.ndarray:
    """Per-user test values of checkpoint `step`: `true_value`, or NDCG@10 of the high targets."""
    arrays = load_file(str(Path(run) / "checkpoints" / f"step-{step}.safetensors"))
    if metric == "true_value":
        return arrays["true_value"].astype(np.float64)
    return ndcg(arrays["ranks"], 10)[np.asarray(high, dtype=bool)]


def method_result(method: str, grid: Grid, runs: Mapping[str, str], metric: str, rules: Sequence[str],
                  high: np.ndarray) -> dict[str, Any]:
    """One method in one seed: its points, its selected checkpoint under each rule (with its
    per-user test values under `_per_user`) and its budget."""
    labels = [point_label(method, k) for k in grid.points[method]]
    records = [read_checkpoints(runs[lab]) for lab in labels]
    points = [{"label": lab, "knobs": knobs, "step": r["step"], "kl": r["test"]["kl"], "value": r["test"][metric]}
              for lab, knobs, recs in zip(labels, grid.points[method], records) for r in recs]
    out: dict[str, Any] = {"points": points, "selected": {}, "_per_user": {}}
    for rule in rules:
        i, j = choose(records, RULES[rule])
        rec = records[i][j]
        out["selected"][rule] = {"label": labels[i], "knobs": grid.points[method][i], "step": rec["step"],
                                 "valid": {RULES[rule]: rec["valid"][RULES[rule]]}, "test": rec["test"]}
        out["_per_user"][rule] = per_user_value(runs[labels[i]], rec["step"], metric, high)
    states = [json.loads((Path(runs[lab]) / "state.json").read_text()) for lab in labels]
    for key, name in (("steps", "steps"), ("seconds", "train_seconds"), ("reward_model_queries", "reward_model_queries")):
        out[key] = sum(s.get(name, 0) for s in states)
    return out


def contest_seed(cfg: RunConfig, out: str | Path, methods: Sequence[str], grid: Grid, epochs: int,
                 seed: int) -> dict[str, Any]:
    """Seed `seed` (independent of the others: parallel processes may run them): one π0 and
    reward model, every grid point of every method, then each method's points and selections."""
    scfg = seeded(cfg, seed)
    with labelled_stderr(f"[seed {seed}] "):
        data = prepare(scfg)
        budget = dataclasses.replace(scfg, posttrain=dataclasses.replace(scfg.posttrain, epochs=epochs))
        every = max(1, math.ceil(planned_steps(budget, data.seq.n_windows) / grid.checkpoints))
        variants = contest_variants(grid, methods, epochs, every)
        _log(f"seed {seed}: {len(variants)} runs from one π0, {epochs} epoch(s) each, a checkpoint every {every} "
             "step(s)")
        res = compare_methods(scfg, Path(out) / f"seed{seed}", variants, data=data, log=_log)
    metric = primary_metric(scfg)
    rules = [r for r in RULES if r == "practical" or data.simulator is not None]
    high = np.asarray(res["high"], dtype=bool)
    if metric == "high/ndcg@10" and not high.any():
        raise InputError(f"no test target of {scfg.data.name} reaches data.high_reward = {scfg.data.high_reward}: the "
                         "test value high/ndcg@10 is undefined; lower it with --set data.high_reward=...")
    results = {m: method_result(m, grid, res["runs"], metric, rules, high) for m in methods}
    add_rm_error(results, data, Path(out) / f"seed{seed}" / "reward_model", res["runs"], scfg.eval.batch_size)
    return {"metric": metric, "rules": rules, "checkpoint_every": every, "methods": results}


# ------------------------------------------------------------------ across seeds


def _with_count(d: dict[str, Any], a: list[np.ndarray], b: list[np.ndarray]) -> dict[str, Any]:
    return {**d, "seeds_positive": int(sum(x.mean() > y.mean() for x, y in zip(a, b))), "seeds": len(a)}


def summarise_method(per_seed: list[dict[str, Any]], method: str) -> dict[str, Any]:
    """A method over seeds: per rule, the selected checkpoints' test value, `expected_value` and
    `kl` (mean with a t interval over seeds; one seed: none) and the paired delta of the test
    value against `sft`'s selected policy; the budget (mean over seeds, all grid points summed)
    and every point of every seed."""
    metric, rules = per_seed[0]["metric"], per_seed[0]["rules"]
    rs = [s["methods"][method] for s in per_seed]
    out: dict[str, Any] = {metric: {}, "expected_value": {}, "kl": {}, "delta_vs_sft": {}, "selected": {}}
    for rule in rules:
        sel = [r["selected"][rule] for r in rs]
        for key in (metric, "expected_value", "kl"):
            if key in sel[0]["test"]:
                out[key][rule] = seed_interval([s["test"][key] for s in sel])
        out["selected"][rule] = sel
        if method != BASELINE:
            a = [r["_per_user"][rule] for r in rs]
            b = [s["methods"][BASELINE]["_per_user"][rule] for s in per_seed]
            out["delta_vs_sft"][rule] = _with_count(paired_delta(a, b), a, b)
    if not out["expected_value"]:
        del out["expected_value"]
    for key in ("steps", "seconds", "reward_model_queries"):
        out[key] = float(np.mean([r[key] for r in rs]))
    out["grid_points"] = len({p["label"] for p in rs[0]["points"]})
    out["rm_error_top10"] = rm_error_over_seeds(rs, rules)
    out["points"] = [r["points"] for r in rs]
    return out


def _band_label(lo: float, hi: float) -> str:
    return f"[{lo:g}, {'∞' if math.isinf(hi) else f'{hi:g}'})"


def frontier_bands(per_seed: list[dict[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    """Per KL band [a, b): each method's frontier height at b (`frontier_height`, mean over
    seeds; a method without a point below b in some seed is left out), the best method, the
    runner-up and the gap between them (per seed, with a t interval over seeds; one seed: no
    interval)."""
    out = []
    for lo, hi in BANDS:
        per_method = {m: [frontier_height([(p["kl"], p["value"]) for p in s["methods"][m]["points"]], hi)
                          for s in per_seed] for m in methods}
        reached = {m: h for m, h in per_method.items() if all(x is not None for x in h)}
        ranked = sorted(reached, key=lambda m: -float(np.mean(reached[m])))
        entry: dict[str, Any] = {"band": _band_label(lo, hi), "kl_from": lo, "kl_below": None if math.isinf(hi) else hi,
                                 "heights": {m: float(np.mean(h)) for m, h in reached.items()},
                                 "best": ranked[0] if ranked else None,
                                 "second": ranked[1] if len(ranked) > 1 else None}
        if len(ranked) > 1:
            entry["gap"] = seed_interval([x - y for x, y in zip(reached[ranked[0]], reached[ranked[1]])])
        out.append(entry)
    return out


def summarise_contest(per_seed: list[dict[str, Any]], methods: Sequence[str], grid: Grid, epochs: int) -> dict[str, Any]:
    """The JSON-able results of a contest (what `contest.json` holds)."""
    first = per_seed[0]
    return {"metric": first["metric"], "rules": {r: RULES[r] for r in first["rules"]}, "baseline": BASELINE,
            "grid": grid.name, "grid_points": {m: len(grid.points[m]) for m in methods}, "epochs": epochs,
            "checkpoints": grid.checkpoints, "checkpoint_every": [s["checkpoint_every"] for s in per_seed],
            "seeds": len(per_seed), "methods": {m: summarise_method(per_seed, m) for m in methods},
            "frontier": frontier_bands(per_seed, methods)}


def jsonable(x: Any) -> Any:
    """NaN and infinities as None (JSON has neither), numpy scalars as numbers, recursively."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


# ------------------------------------------------------------------ report


def _iv(d: dict[str, Any] | None, sign: bool = False) -> str:
    """`mean [lo, hi]`; the mean alone where there is no interval (None in contest.json)."""
    if d is None:
        return "—"
    return fmt(d["mean"], 4, sign) if d.get("lo") is None else fmt_interval(d, 4, sign)


def _knobs_text(sel: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sel["knobs"].items()) or "—"


def _selected_rows(name: str, m: dict[str, Any], metric: str, rule: str) -> str:
    """One markdown row: a method's selection under `rule` (seed 0's knobs and step; the values
    over seeds)."""
    sel = m["selected"][rule]
    picks = "; ".join(f"{_knobs_text(s)} @ step {s['step']}" for s in sel)
    d = m["delta_vs_sft"].get(rule)
    delta = "—" if d is None else f"{_iv(d, sign=True)} ({d['seeds_positive']}/{d['seeds']})"
    return (f"| {name} | {rule} | {picks} | {fmt(float(np.mean([s['valid'][RULES[rule]] for s in sel])), 4)} | "
            f"{_iv(m[metric][rule])} | {delta} | {_iv(m['kl'][rule])} | "
            f"{_iv(m.get('expected_value', {}).get(rule))} | {m['grid_points']} | {m['steps']:.0f} | "
            f"{m['seconds']:.0f} | {m['reward_model_queries']:.3g} |")


def contest_markdown(res: dict[str, Any]) -> str:
    """`contest.md`: the selected policies under each rule, the frontier bands, the figure."""
    metric, n = res["metric"], res["seeds"]
    lines = [f"# recalign contest: grid `{res['grid']}`, {n} seed(s), {res['epochs']} epoch(s) per grid point", "",
             f"Test value: `{metric}`. Every method but {BASELINE} has the same number of grid points; every point "
             f"the same epochs and {res['checkpoints']} checkpoints after step 0 (every "
             f"{'/'.join(map(str, res['checkpoint_every']))} step(s)). Selection reads validation only: "
             + "; ".join(f"`{r}` = argmax of validation `{k}`" for r, k in res["rules"].items())
             + " (ties: earlier step, then the grid point written first).", "",
             "## Selected on validation, read on test", "",
             f"| method | rule | selected (knobs @ step, per seed) | valid metric | test {metric} | Δ vs {BASELINE} "
             "(seeds > 0) | KL(π‖π0) | E_π[r*] | grid points | steps (all points) | train s | RM queries |",
             "|" + "---|" * 12]
    for rule in res["rules"]:
        lines += [_selected_rows(name, m, metric, rule) for name, m in res["methods"].items()]
    d = next((m["delta_vs_sft"][r] for m in res["methods"].values() for r in m["delta_vs_sft"]), None)
    lines += ["", f"Values: mean over seeds [95% t interval over seeds; one seed: none]. Δ: paired on the same test "
              f"contexts, the selected checkpoint's own per-user values, 95% {interval_phrase([d] if d else [])}.", "",
              "## Reward–KL frontier", "",
              "Height: the best test value of a method's points with KL below the band's upper edge (mean over "
              "seeds). Gap: best minus second, per seed, with a 95% t interval over seeds.", "",
              "| KL band | best | height | second | height | gap |", "|---|---|---|---|---|---|"]
    for b in res["frontier"]:
        best, second = b["best"], b["second"]
        gap = b.get("gap")
        gap_txt = "—" if gap is None else (f"{fmt(gap['mean'], 4, sign=True)} (one seed: no interval)" if n < 2
                                           else _iv(gap, sign=True))
        lines.append(f"| {b['band']} | {best or '—'} | {fmt(b['heights'].get(best), 4)} | {second or '—'} | "
                     f"{fmt(b['heights'].get(second), 4)} | {gap_txt} |")
    lines += rm_error_markdown(res) + ["", "![frontier](frontier.png)"]
    return "\n".join(lines) + "\n"


def figure_input(per_seed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per seed, `{"points": {method: points}, "selected": {method: {rule: selection}}}` for
    `report.plot_frontier`."""
    return [{"points": {m: r["points"] for m, r in s["methods"].items()},
             "selected": {m: r["selected"] for m, r in s["methods"].items()}} for s in per_seed]


# ------------------------------------------------------------------ the whole contest


def check_methods(grid: Grid, methods: Sequence[str]) -> list[str]:
    """`sft` (the baseline of every delta) first, then `methods`; each must have a grid."""
    methods = list(dict.fromkeys([BASELINE, *methods]))
    missing = [m for m in methods if m not in grid.points]
    if missing:
        raise InputError(f"no `{grid.name}` grid for {', '.join(missing)} in {GRIDS}; methods with one: "
                         f"{', '.join(grid.points)}")
    return methods


def run_contest(cfg: RunConfig, out: str | Path, methods: Sequence[str] = CONTEST_METHODS, grid: str = "full",
                seeds: int = 3, jobs: int = 1, epochs: int | None = None, grids_file: str | Path | None = None,
                log: Callable[[str], None] = _log) -> dict[str, Any]:
    """The contest (module docstring): `seeds` seeds, `jobs` at a time in separate processes;
    `epochs` (None: the grid's) is every grid point's `posttrain.epochs`. Writes `contest.json`
    (the returned results), `contest.md` and `frontier.png` into `out`; finished runs found under
    `out` are reused (an interrupted contest continues)."""
    out = Path(out)
    if (out / "contest.json").exists():
        raise InputError("output folder already holds contest.json; choose another --out", path=out)
    if seeds < 1:
        raise InputError(f"--seeds must be at least 1, got {seeds}")
    g = load_grid(grid, grids_file)
    methods = check_methods(g, methods)
    epochs = epochs or g.epochs
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    jobs = max(1, min(jobs, seeds))
    log(f"writing into {out}: {', '.join(methods)}; grid {grid}, {seeds} seed(s), {jobs} at a time")
    args = ([cfg] * seeds, [out] * seeds, [methods] * seeds, [g] * seeds, [epochs] * seeds, list(range(seeds)))
    if jobs == 1:
        per_seed = [contest_seed(*a) for a in zip(*args)]
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as ex:
            per_seed = list(ex.map(contest_seed, *args))
    res = summarise_contest(per_seed, methods, g, epochs)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["config"] = configlib.to_dict(cfg)
    res = jsonable(res)
    report.plot_frontier(figure_input(per_seed), out / "frontier.png", res["metric"], [b for b, _ in BANDS[1:]])
    atomic_write_text(out / "contest.md", contest_markdown(res))
    atomic_write_text(out / "contest.json", json.dumps(res, indent=2, allow_nan=False))
    return res


# ------------------------------------------------------------------ the reward model's error on the selected lists


def add_rm_error(results: dict[str, dict[str, Any]], data: Any, rm_dir: Path, runs: Mapping[str, str],
                 batch_size: int = 512) -> None:
    """On the simulator, with the seed's reward model (trained when some method needs one): set
    `rm_error_top10` (`eval.rm_error.rm_topk_error`: n, rmse, mean_error of the reward model's
    prediction against r*) in every selection of `results` (one seed's `method_result`s), on the
    selected checkpoint's own test top-10 lists (`top10` of its `checkpoints/step-N.safetensors`;
    a checkpoint saved without them gets none)."""
    if data.simulator is None or not (rm_dir / "state.json").is_file():
        return
    rm = load_reward_model(rm_dir, data)
    for res in results.values():
        for sel in res["selected"].values():
            arrays = load_file(str(Path(runs[sel["label"]]) / "checkpoints" / f"step-{sel['step']}.safetensors"))
            if "top10" in arrays:
                sel["rm_error_top10"] = rm_topk_error(rm, data.simulator, data.seq, data.split.test, arrays["top10"],
                                                      batch_size)


def rm_error_over_seeds(rs: list[dict[str, Any]], rules: Sequence[str]) -> dict[str, Any]:
    """Per rule where every seed has one: the reward model's `mean_error` and `rmse` on the
    selected policy's top-10 (`seed_interval` over seeds); {} without a reward model."""
    out = {}
    for rule in rules:
        errs = [r["selected"][rule].get("rm_error_top10") for r in rs]
        if errs and all(e is not None for e in errs):
            out[rule] = {k: seed_interval([e[k] for e in errs]) for k in ("mean_error", "rmse")}
    return out


def rm_error_markdown(res: dict[str, Any]) -> list[str]:
    """A contest.md section: the reward model's error against r* on each selected policy's test
    top-10 (no lines when the contest had no reward model)."""
    rows = [(name, rule, e) for rule in res["rules"] for name, m in res["methods"].items()
            if (e := m.get("rm_error_top10", {}).get(rule))]
    if not rows:
        return []
    lines = ["", "## The reward model's error on each selected policy's top-10", "",
             "Prediction − r* over every item of the selected checkpoint's test top-10 lists (> 0: the reward model "
             "over-rates what the policy recommends). Mean over seeds [95% t interval over seeds; one seed: none].", "",
             "| method | rule | mean error | RMSE |", "|---|---|---|---|"]
    lines += [f"| {name} | {rule} | {_iv(e['mean_error'], sign=True)} | {_iv(e['rmse'])} |" for name, rule, e in rows]
    return lines
