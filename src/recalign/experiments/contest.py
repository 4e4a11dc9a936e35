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

Selection (`selection.select`, shared with `demo`, `reproduce` and `sweep --select`) is handed
the validation metrics and the steps and nothing else, under two rules reported side by side:

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

`demo` and `reproduce` run the same pieces (`contest_seeds`, `summarise_contest`,
`write_frontier`, `selected_table`). Writes `contest.json`, `contest.md`, `frontier.png` and one
folder per seed (`seed<N>/`: π0, the reward model and one run folder per (method, grid point)).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from recalign import configlib
from recalign.config import PostTrainConfig, RunConfig
from recalign.data.prepared import Prepared, prepare
from recalign.errors import InputError
from recalign.eval.rm_error import rm_topk_error
from recalign.eval.stats import paired_delta
from recalign.experiments import report
from recalign.experiments.compare import compare_methods
from recalign.experiments.logs import labelled_stderr, pool_map
from recalign.experiments.presets import CONFIGS, GRIDS, read_preset
from recalign.experiments.selection import (
    RULES,
    checkpoint_every,
    choose,
    per_user_value,
    read_checkpoints,
    rules_for,
)
from recalign.experiments.summary import (
    fmt,
    fmt_interval,
    frontier_height,
    interval_phrase,
    seed_interval,
)
from recalign.experiments.summary import per_user as summary_per_user
from recalign.experiments.sweep import primary_metric, seeded
from recalign.posttrain.registry import get_method
from recalign.stages.reward_model import load_reward_model
from recalign.train.checkpoint import atomic_write_text

CONTEST_METHODS = ("sft", "linear_sft", "exp_sft", "ppo", "dpo")
BASELINE = "sft"
REFERENCE_NAMES = {"pretrained": "π0 (pretrained)", "oracle": "the oracle's top-10",
                   "logging": "the logging policy's top-10"}
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


def contest_variants(grid: Grid, methods: Sequence[str], epochs: int, every: int,
                     trace: Mapping[str, int] | None = None) -> dict[str, tuple[str, list[str]]]:
    """`{label: (method, --set pairs)}` of every grid point of `methods`; the methods of `trace`
    are traced every `trace[method]` steps (`posttrain.trace_every`: the hacking figure)."""
    out = {}
    for m in methods:
        for knobs in grid.points[m]:
            sets = [f"posttrain.{k}={json.dumps(v)}" for k, v in knobs.items()]
            sets += [f"posttrain.trace_every={(trace or {})[m]}"] if m in (trace or {}) else []
            out[point_label(m, knobs)] = (m, sets + [f"posttrain.epochs={epochs}", f"posttrain.checkpoint_every={every}"])
    return out


def method_result(method: str, grid: Grid, runs: Mapping[str, str], metric: str, rules: Sequence[str],
                  high: np.ndarray) -> dict[str, Any]:
    """One method in one seed: its points, its selected checkpoint under each rule (with its
    run folder's name and its per-user test values under `_per_user`) and its budget."""
    labels = [point_label(method, k) for k in grid.points[method]]
    records = [read_checkpoints(runs[lab]) for lab in labels]
    points = [{"label": lab, "knobs": knobs, "step": r["step"], "kl": r["test"]["kl"], "value": r["test"][metric]}
              for lab, knobs, recs in zip(labels, grid.points[method], records) for r in recs]
    out: dict[str, Any] = {"points": points, "selected": {}, "_per_user": {}}
    for rule in rules:
        i, j = choose(records, RULES[rule])
        rec = records[i][j]
        out["selected"][rule] = {"label": labels[i], "knobs": grid.points[method][i], "step": rec["step"],
                                 "run": Path(runs[labels[i]]).name, "valid": {RULES[rule]: rec["valid"][RULES[rule]]},
                                 "test": rec["test"]}
        out["_per_user"][rule] = per_user_value(runs[labels[i]], rec["step"], metric, high)
    states = [json.loads((Path(runs[lab]) / "state.json").read_text()) for lab in labels]
    for key, name in (("steps", "steps"), ("seconds", "train_seconds"), ("reward_model_queries", "reward_model_queries")):
        out[key] = sum(s.get(name, 0) for s in states)
    return out


def reference_values(data: Prepared, res: Mapping[str, Any], metric: str) -> dict[str, float]:
    """The test value of π0 (`pretrained`) and, on the simulator, of the oracle's top-10 and of
    the logging policy's top-10 in the same contexts: the scale every method is read on."""
    out = {"pretrained": float(summary_per_user(res, "pretrained", metric).mean())}
    if data.simulator is not None:
        test = data.split.test
        logging = data.simulator.logging_value(test.users, 10, step=data.seq.context_steps(test))
        out.update(oracle=float(res["oracle_value"].mean()), logging=float(logging.topk.mean()))
    return out


def contest_seed(cfg: RunConfig, out: str | Path, methods: Sequence[str], grid: Grid, epochs: int,
                 seed: int, trace: Mapping[str, int] | None = None,
                 log: Callable[[str], None] = _log) -> dict[str, Any]:
    """Seed `seed` (independent of the others: parallel processes may run them): one π0 and
    reward model, every grid point of every method (the methods of `trace` traced), then each
    method's points and selections, and the reference values (`reference_values`). The seed's
    folder is `out/seed<seed>`; its stderr lines start with `[seed <seed>]`."""
    scfg = seeded(cfg, seed)
    metric = primary_metric(scfg)
    with labelled_stderr(f"[seed {seed}] "):
        data = prepare(scfg)
        budget = dataclasses.replace(scfg, posttrain=dataclasses.replace(scfg.posttrain, epochs=epochs))
        every = checkpoint_every(budget, data.seq.n_windows, grid.checkpoints)
        variants = contest_variants(grid, methods, epochs, every, trace)
        log(f"seed {seed}: {len(variants)} runs from one π0, {epochs} epoch(s) each, a checkpoint every {every} "
            "step(s)")
        res = compare_methods(scfg, Path(out) / f"seed{seed}", variants, data=data, log=log)
        high = np.asarray(res["high"], dtype=bool)
        if metric == "high/ndcg@10" and not high.any():
            raise InputError(f"no test target of {scfg.data.name} reaches data.high_reward = {scfg.data.high_reward}: "
                             "the test value high/ndcg@10 is undefined; lower it with --set data.high_reward=...")
        reference = reference_values(data, res, metric)
    rules = rules_for(data.simulator is not None)
    results = {m: method_result(m, grid, res["runs"], metric, rules, high) for m in methods}
    add_rm_error(results, data, Path(out) / f"seed{seed}" / "reward_model", res["runs"], scfg.eval.batch_size)
    return {"metric": metric, "rules": rules, "checkpoint_every": every, "reference": reference, "methods": results}


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
            "frontier": frontier_bands(per_seed, methods),
            "reference": {k: seed_interval([s["reference"][k] for s in per_seed]) for k in first["reference"]}}


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


def selected_table(res: dict[str, Any]) -> list[str]:
    """The markdown table of the selected policies (one row per method and rule) and its footer."""
    metric = res["metric"]
    lines = [f"| method | rule | selected (knobs @ step, per seed) | valid metric | test {metric} | Δ vs {BASELINE} "
             "(seeds > 0) | KL(π‖π0) | E_π[r*] | grid points | steps (all points) | train s | RM queries |",
             "|" + "---|" * 12]
    for rule in res["rules"]:
        lines += [_selected_rows(name, m, metric, rule) for name, m in res["methods"].items()]
    d = next((m["delta_vs_sft"][r] for m in res["methods"].values() for r in m["delta_vs_sft"]), None)
    return lines + ["", f"Values: mean over seeds [95% t interval over seeds; one seed: none]. Δ: paired on the same "
                    f"test contexts, the selected checkpoint's own per-user values, 95% "
                    f"{interval_phrase([d] if d else [])}."]


def frontier_table(res: dict[str, Any]) -> list[str]:
    """The markdown table of the frontier's KL bands: the best two methods and the gap."""
    lines = ["Height: the best test value of a method's points with KL below the band's upper edge (mean over "
             "seeds). Gap: best minus second, per seed, with a 95% t interval over seeds.", "",
             "| KL band | best | height | second | height | gap |", "|---|---|---|---|---|---|"]
    for b in res["frontier"]:
        best, second = b["best"], b["second"]
        gap = b.get("gap")
        gap_txt = "—" if gap is None else (f"{fmt(gap['mean'], 4, sign=True)} (one seed: no interval)"
                                           if res["seeds"] < 2 else _iv(gap, sign=True))
        lines.append(f"| {b['band']} | {best or '—'} | {fmt(b['heights'].get(best), 4)} | {second or '—'} | "
                     f"{fmt(b['heights'].get(second), 4)} | {gap_txt} |")
    return lines


def protocol_sentence(res: dict[str, Any]) -> str:
    """What was run and how it was selected, in one paragraph."""
    return (f"Test value: `{res['metric']}`. Every method but {BASELINE} has the same number of grid points (grid "
            f"`{res['grid']}`); every point the same {res['epochs']} epoch(s) and {res['checkpoints']} checkpoints "
            f"after step 0 (every {'/'.join(map(str, res['checkpoint_every']))} step(s)). Selection reads validation "
            "only: " + "; ".join(f"`{r}` = argmax of validation `{k}`" for r, k in res["rules"].items())
            + " (ties: earlier step, then the grid point written first). Reference (test, mean over seeds): "
            + ", ".join(f"{REFERENCE_NAMES[k]} {fmt(v['mean'], 4)}" for k, v in res.get("reference", {}).items()) + ".")


def contest_markdown(res: dict[str, Any]) -> str:
    """`contest.md`: the selected policies under each rule, the frontier bands, the figure."""
    lines = [f"# recalign contest: grid `{res['grid']}`, {res['seeds']} seed(s), {res['epochs']} epoch(s) per grid "
             "point", "", protocol_sentence(res), "", "## Selected on validation, read on test", "",
             *selected_table(res), "", "## Reward–KL frontier", "", *frontier_table(res), *rm_error_markdown(res), "",
             "![frontier](frontier.png)"]
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


def epochs_override(overrides: Sequence[str]) -> int | None:
    """`posttrain.epochs` when `--set` gives it (it wins over the grid's epochs), else None."""
    return configlib.parse_overrides(list(overrides)).get("posttrain", {}).get("epochs")


def contest_seeds(cfg: RunConfig, out: str | Path, methods: Sequence[str], grid: Grid, epochs: int, seeds: int,
                  jobs: int = 1, trace: Mapping[str, int] | None = None,
                  log: Callable[[str], None] = _log) -> list[dict[str, Any]]:
    """`contest_seed` for seeds 0 .. `seeds` − 1, `jobs` at a time in separate processes."""
    return pool_map(contest_seed, [(cfg, out, methods, grid, epochs, s, trace, log) for s in range(seeds)], jobs)


def write_frontier(per_seed: list[dict[str, Any]], path: str | Path, metric: str) -> Path:
    """`frontier.png` (`report.plot_frontier`) of a contest's seeds, the KL band edges dotted."""
    return report.plot_frontier(figure_input(per_seed), path, metric, [b for b, _ in BANDS[1:]])


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
    log(f"writing into {out}: {', '.join(methods)}; grid {grid}, {seeds} seed(s), {max(1, min(jobs, seeds))} at a time")
    per_seed = contest_seeds(cfg, out, methods, g, epochs, seeds, jobs, log=log)
    res = summarise_contest(per_seed, methods, g, epochs)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["config"] = configlib.to_dict(cfg)
    res = jsonable(res)
    write_frontier(per_seed, out / "frontier.png", res["metric"])
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
