"""`recalign phase`: where does exp_sft beat RLHF? A contest in every cell of a 2-D grid of
settings (METHOD.md, claim 2: "where it does not hold, the phase diagram says so").

    recalign phase --data sim --world ratings --x sim.noise_scale=0.25,0.5,1 --y sim.selection=0,1,2 \\
        --seeds 3 --out DIR

Each cell (x value, y value) is a full `recalign contest` at those settings
(`contest.run_contest`: its own worlds, π0, reward model and equal grids; seeds `--jobs` at a
time), in `DIR/cells/<x>=<v>,<y>=<w>/`. A cell whose `contest.json` is already there is read,
not re-run, after checking that it was made with the same settings (configuration, methods,
seeds, grid, epochs); an interrupted cell continues from its finished runs.

Per cell, under the practical selection rule (validation `high/ndcg@10`: what a practitioner
could apply), the best (selected) `exp_sft` is compared with the best of every other method of
`--methods` (its rivals: by default `sft`, `ppo` and `dpo`; `--methods sft,exp_sft` asks only
where exp_sft falls below sft):
Δ = exp_sft − rival on the test contexts' true value of the top-10, paired per user on the
selected checkpoints' own values (`eval.stats.paired_delta`: a t interval over the seeds' mean
differences; one seed: a bootstrap over users, which says nothing about another world), with a
verdict from the interval (`summary.verdict`: holds = exp_sft ahead, contradicted = the rival
ahead, inconclusive).

Writes `phase.json` (per cell: each rival's delta with intervals and verdicts, each method's selected
test value, the reward model's error on each selected policy's top-10), `phase.md` (a table per
rival) and `phase.png` (a heat map per rival; each cell annotated with the mean Δ, boxed where the
interval excludes zero).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recalign import configlib
from recalign.config import RunConfig
from recalign.errors import InputError
from recalign.eval.stats import paired_delta
from recalign.experiments import report
from recalign.experiments.compare import folder_name
from recalign.experiments.contest import (
    Grid,
    check_methods,
    jsonable,
    load_grid,
    per_user_value,
    run_contest,
)
from recalign.experiments.summary import fmt, verdict
from recalign.train.checkpoint import atomic_write_text

HERO = "exp_sft"
RULE = "practical"
PHASE_METHODS = ("sft", "exp_sft", "ppo", "dpo")
RESERVED = ("posttrain.epochs", "posttrain.checkpoint_every")  # the contest sets them


def _log(msg: str) -> None:
    print(f"recalign phase: {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Axis:
    """One axis of the diagram: a config field and its values (as written on the command line)."""

    flag: str
    field: str
    values: tuple[str, ...]


def parse_axis(flag: str, text: str, cfg: RunConfig, grid: Grid, methods: Sequence[str]) -> Axis:
    """`FIELD=v1,v2,...` of `flag` (`--x`, `--y`): a known config field, at least one value, no
    value twice, each value valid for the field; not a field the contest sets (`posttrain.epochs`,
    `posttrain.checkpoint_every`) nor a knob of the `grid` of one of `methods` (it would be
    overridden)."""
    field, sep, rest = text.partition("=")
    field = field.strip()
    values = tuple(v.strip() for v in rest.split(","))
    if not sep or not field or not rest.strip():
        raise InputError(f"{flag} {text!r}: expected FIELD=v1,v2,... (e.g. {flag} sim.noise_scale=0.5,1,2)")
    if any(not v for v in values):
        raise InputError(f"{flag} {text!r}: an empty value in the list {rest!r}")
    if len(set(values)) < len(values):
        raise InputError(f"{flag} {text!r}: a value appears twice")
    grid_knobs = {k for m in methods for point in grid.points.get(m, []) for k in point}
    if field in RESERVED or (field.startswith("posttrain.") and field.split(".", 1)[1] in grid_knobs):
        raise InputError(f"{flag}: {field} is set by the contest itself (its budget or a method's grid, "
                         "configs/contest/grids.toml); choose a field of the world, the data, the model or training")
    for v in values:
        try:
            configlib.update(cfg, configlib.parse_overrides([f"{field}={v}"]))
        except InputError as e:
            raise InputError(f"{flag} {field}={v}: {e}") from None
    return Axis(flag, field, values)


def check_phase(x: Axis, y: Axis, methods: Sequence[str], seeds: int) -> None:
    if x.field == y.field:
        raise InputError(f"--x and --y both vary {x.field}; the two axes need two different fields")
    if HERO not in methods or len(methods) < 2:
        raise InputError(f"--methods must include {HERO} and at least one rival (sft, ppo, dpo, ...); got "
                         f"{', '.join(methods)}")
    if seeds < 1:
        raise InputError(f"--seeds must be at least 1, got {seeds}")


def cell_config(cfg: RunConfig, x: Axis, xv: str, y: Axis, yv: str) -> RunConfig:
    return configlib.update(cfg, configlib.parse_overrides([f"{x.field}={xv}", f"{y.field}={yv}"]))


def cell_folder(out: Path, x: Axis, xv: str, y: Axis, yv: str) -> Path:
    return out / "cells" / folder_name(f"{x.field}={xv},{y.field}={yv}")


def reuse_or_run(ccfg: RunConfig, folder: Path, methods: list[str], grid: str, seeds: int, jobs: int,
                 epochs: int | None) -> dict[str, Any]:
    """A finished cell's `contest.json` (after checking it matches), else the contest run now."""
    path = folder / "contest.json"
    if not path.is_file():
        return run_contest(ccfg, folder, methods, grid=grid, seeds=seeds, jobs=jobs, epochs=epochs)
    res = json.loads(path.read_text(encoding="utf-8"))
    want = {"config": jsonable(configlib.to_dict(ccfg)), "methods": methods, "seeds": seeds, "grid": grid,
            "epochs": epochs or load_grid(grid).epochs}
    have = {"config": res.get("config"), "methods": list(res.get("methods", {})), "seeds": res.get("seeds"),
            "grid": res.get("grid"), "epochs": res.get("epochs")}
    differ = [k for k in want if want[k] != have[k]]
    if differ:
        raise InputError(f"this cell was finished with other settings ({', '.join(differ)} differ); choose another "
                         "--out, or remove the cell's folder to run it again", path=folder)
    return res


def cell_delta(res: dict[str, Any], folder: Path, rival: str) -> dict[str, Any]:
    """Δ = exp_sft − rival (both selected under the practical rule) on the selected checkpoints'
    own per-user test true values, seed by seed: `paired_delta` plus its verdict."""
    a, b = [], []
    for s in range(res["seeds"]):
        for method, acc in ((HERO, a), (rival, b)):
            sel = res["methods"][method]["selected"][RULE][s]
            run = folder / f"seed{s}" / folder_name(sel["label"])
            acc.append(per_user_value(run, sel["step"], res["metric"], np.zeros(0, dtype=bool)))
    d = paired_delta(a, b)
    return {**d, "verdict": verdict(d), "seeds_positive": int(sum(x.mean() > y.mean() for x, y in zip(a, b)))}


def cell_summary(res: dict[str, Any], folder: Path, rivals: Sequence[str]) -> dict[str, Any]:
    """One cell's figures (see the module docstring)."""
    methods = res["methods"]
    return {"deltas": {r: cell_delta(res, folder, r) for r in rivals},
            "values": {m: methods[m][res["metric"]][RULE]["mean"] for m in methods},
            "selected": {m: [f"{s['label']} @ step {s['step']}" for s in methods[m]["selected"][RULE]]
                         for m in methods},
            "rm_error_top10": {m: methods[m]["rm_error_top10"][RULE] for m in methods
                               if RULE in methods[m].get("rm_error_top10", {})}}


def run_phase(cfg: RunConfig, out: str | Path, x: Axis, y: Axis, methods: Sequence[str] = PHASE_METHODS,
              grid: str = "full", seeds: int = 3, jobs: int = 1, epochs: int | None = None, world: str | None = None,
              log: Callable[[str], None] = _log) -> dict[str, Any]:
    """The phase diagram (module docstring): a contest per cell, then `phase.json`, `phase.md` and
    `phase.png` in `out`; `world` (the named world `cfg` was built with) is only recorded. Returns
    what `phase.json` holds."""
    if cfg.data.name != "sim":
        raise InputError(f"phase compares the simulator's true values; --data must be sim, got {cfg.data.name!r}")
    methods = check_methods(load_grid(grid), methods)
    check_phase(x, y, methods, seeds)
    rivals = [m for m in methods if m != HERO]  # every other method, sft included
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cells = []
    for yv in y.values:
        for xv in x.values:
            folder = cell_folder(out, x, xv, y, yv)
            done = "finished before: reused" if (folder / "contest.json").is_file() else "running its contest"
            log(f"cell {len(cells) + 1}/{len(x.values) * len(y.values)}: {x.field}={xv}, {y.field}={yv} ({done})")
            res = reuse_or_run(cell_config(cfg, x, xv, y, yv), folder, methods, grid, seeds, jobs, epochs)
            cells.append({"x": xv, "y": yv, "folder": str(folder.relative_to(out)),
                          **cell_summary(res, folder, rivals)})
    result = jsonable({"x": {"field": x.field, "values": list(x.values)},
                       "y": {"field": y.field, "values": list(y.values)},
                       "metric": "true_value", "rule": RULE, "hero": HERO, "rivals": rivals, "methods": methods,
                       "grid": grid, "seeds": seeds, "world": world, "sim": configlib.to_dict(cfg)["sim"],
                       "cells": cells})
    plot_phase(result, out / "phase.png")
    atomic_write_text(out / "phase.md", phase_markdown(result))
    atomic_write_text(out / "phase.json", json.dumps(result, indent=2, allow_nan=False))
    return result


# ------------------------------------------------------------------ report


def _cell(res: dict[str, Any], xv: str, yv: str) -> dict[str, Any]:
    return next(c for c in res["cells"] if c["x"] == xv and c["y"] == yv)


def excludes_zero(d: dict[str, Any]) -> bool:
    return d["verdict"] in ("holds", "contradicted")


def _delta_text(d: dict[str, Any]) -> str:
    iv = "" if d.get("lo") is None else f" [{fmt(d['lo'], 3, True)}, {fmt(d['hi'], 3, True)}]"
    return f"{fmt(d['mean'], 3, True)}{iv} {d['verdict']}"


def phase_markdown(res: dict[str, Any]) -> str:
    """`phase.md`: per rival, a table (rows: y values, columns: x values) of Δ [interval] verdict."""
    x, y = res["x"], res["y"]
    kinds = sorted({c["deltas"][r]["interval"] for c in res["cells"] for r in res["rivals"]})
    lines = [f"# recalign phase: {HERO} against {', '.join(res['rivals'])} over {x['field']} × {y['field']}", "",
             f"Each cell is a `recalign contest` (grid `{res['grid']}`, {res['seeds']} seed(s); folders under "
             "`cells/`). Δ = best exp_sft − best rival, each selected by the practical rule (validation "
             "high/ndcg@10), on the test contexts' true value of the top-10, paired per user; 95% interval: "
             f"{'; '.join(kinds)}. Verdict from the interval: holds = exp_sft ahead, contradicted = the rival ahead.", ""]
    for r in res["rivals"]:
        lines += [f"## Δ({HERO} − {r})", "", f"| {y['field']} \\ {x['field']} | " + " | ".join(x["values"]) + " |",
                  "|---" * (len(x["values"]) + 1) + "|"]
        for yv in y["values"]:
            cells = [_delta_text(_cell(res, xv, yv)["deltas"][r]) for xv in x["values"]]
            lines.append(f"| {yv} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Selected test values and the reward model's error on each selected top-10", "",
              "| cell | " + " | ".join(res["methods"]) + " | RM error (pred − r*) on the top-10 |",
              "|---" * (len(res["methods"]) + 2) + "|"]
    for c in res["cells"]:
        errs = ", ".join(f"{m} {fmt(e['mean_error']['mean'], 3, True)}" for m, e in c["rm_error_top10"].items())
        lines.append(f"| {x['field']}={c['x']}, {y['field']}={c['y']} | "
                     + " | ".join(fmt(c["values"][m], 3) for m in res["methods"]) + f" | {errs or '—'} |")
    lines += ["", "![phase](phase.png)"]
    return "\n".join(lines) + "\n"


def plot_phase(res: dict[str, Any], path: str | Path) -> Path:
    """Two heat maps (one per rival): Δ(exp_sft − rival) per cell on a shared diverging scale
    centred at zero (red: exp_sft ahead), the mean and interval written in each cell, a thick box
    where the interval excludes zero, hatching where it covers zero."""
    plt = report._plt()
    x, y, rivals = res["x"], res["y"], res["rivals"]
    nx, ny = len(x["values"]), len(y["values"])
    grids = {r: np.array([[_cell(res, xv, yv)["deltas"][r]["mean"] for xv in x["values"]] for yv in y["values"]],
                         dtype=float) for r in rivals}
    vmax = max([abs(v) for g in grids.values() for v in g.ravel() if math.isfinite(v)] + [1e-9])
    w = max(4.0, 1.5 * nx + 1.8)
    fig, axes = plt.subplots(1, len(rivals), figsize=(w * len(rivals) + 0.8, max(3.6, 0.95 * ny + 2.2)), squeeze=False)
    for ax, r in zip(axes[0], rivals):
        im = ax.imshow(grids[r], cmap="RdBu_r", vmin=-vmax, vmax=vmax, origin="lower", aspect="auto")
        for j, yv in enumerate(y["values"]):
            for i, xv in enumerate(x["values"]):
                d = _cell(res, xv, yv)["deltas"][r]
                strong = excludes_zero(d)
                lines = [fmt(d["mean"], 3, True)]
                if d.get("lo") is not None:
                    lines.append(f"[{fmt(d['lo'], 3, True)}, {fmt(d['hi'], 3, True)}]")
                if strong:
                    lines.append(f"{HERO if d['mean'] > 0 else r} ahead")
                ax.text(i, j, "\n".join(lines), ha="center", va="center", fontsize=8.5, linespacing=1.4,
                        fontweight="bold" if strong else "normal", zorder=4,
                        color="white" if abs(grids[r][j, i]) > 0.6 * vmax else "black",
                        bbox=None if strong else {"boxstyle": "round,pad=0.25", "lw": 0,
                                                  "fc": im.cmap(im.norm(grids[r][j, i]))})
                if strong:
                    ax.add_patch(plt.Rectangle((i - 0.46, j - 0.46), 0.92, 0.92, fill=False, lw=2.4, color="black"))
                else:  # hatched: the colour shows a mean the interval does not back
                    ax.add_patch(plt.Rectangle((i - 0.5, j - 0.5), 1, 1, fill=False, hatch="///", lw=0,
                                               edgecolor="#ffffff99"))
        ax.set_xticks(range(nx), x["values"])
        ax.set_yticks(range(ny), y["values"])
        ax.set_xlabel(x["field"])
        ax.set_ylabel(y["field"])
        ax.set_title(f"Δ true value: best {HERO} − best {r}", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.85, label=f"Δ ({HERO} − {r})")
    kinds = sorted({c["deltas"][r]["interval"] for c in res["cells"] for r in rivals})
    caption = (f"Each cell: one contest ({res['seeds']} seed(s), grid {res['grid']}); Δ = the test true value of "
               f"the top-10 of the best {HERO} minus the best rival, each selected on validation high NDCG@10, "
               f"paired per user; in brackets its 95% interval ({'; '.join(kinds)}). Red: {HERO} ahead; blue: the "
               "rival ahead. Boxed and bold, with who is ahead: the interval excludes zero; hatched: it covers zero.")
    return report._finish(fig, path, f"Phase diagram: where {HERO} beats {', '.join(rivals)}", caption)
