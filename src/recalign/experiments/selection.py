"""Selection on validation only (METHOD.md, "The contest"): the checkpoint records that
post-training writes with `posttrain.checkpoint_every` (`stages/posttrain.py:make_checkpoints`),
the argmax of a validation metric over them, and the selected checkpoint's own per-user test
values. Shared by `contest`, `demo`, `reproduce` and `sweep --select`.

Two rules:

- `practical`: the argmax of the validation `high/ndcg@10` (NDCG@10 of the held-out high-rated
  items: computable from logged data);
- `oracle` (simulator only): the argmax of the validation `true_value` (the oracle's value of
  the top-10 on validation contexts): the ceiling of online tuning.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from recalign.config import EvalConfig, RunConfig
from recalign.data.prepared import Prepared
from recalign.errors import InputError
from recalign.eval.judge import judge_lists
from recalign.eval.metrics import ndcg
from recalign.experiments.compare import judge_agreement, record_judges
from recalign.stages.posttrain import planned_steps

RULES = {"practical": "high/ndcg@10", "oracle": "true_value"}

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


def rules_for(simulated: bool) -> list[str]:
    """The rules a dataset allows: `practical` always, `oracle` on the simulator only."""
    return [r for r in RULES if r == "practical" or simulated]


def select_run(run: str | Path, rule: str) -> dict[str, Any]:
    """The checkpoint of one run selected by `rule` (its step chosen on validation): the record
    `{"step", "valid", "test"}` of `run/checkpoints.jsonl`."""
    recs = read_checkpoints(run)
    _, j = choose([recs], RULES[rule])
    return recs[j]


def checkpoint_arrays(run: str | Path, step: int) -> dict[str, np.ndarray]:
    """Per-user test values of checkpoint `step` of `run`, in test-target order: `ndcg@10` (from
    the saved ranks), on the simulator `true_value`, and `top10` (the item codes of its top-10
    lists; absent from checkpoints saved before real data kept them)."""
    arrays = load_file(str(Path(run) / "checkpoints" / f"step-{step}.safetensors"))
    out = {"ndcg@10": ndcg(arrays["ranks"], 10)}
    if "true_value" in arrays:
        out["true_value"] = arrays["true_value"].astype(np.float64)
    if "top10" in arrays:
        out["top10"] = arrays["top10"]
    return out


def checkpoint_every(cfg: RunConfig, n_windows: int, checkpoints: int) -> int:
    """`posttrain.checkpoint_every` that gives a run of `cfg` (its `posttrain.epochs`) about
    `checkpoints` checkpoints after step 0 (plus step 0 and the end)."""
    return max(1, math.ceil(planned_steps(cfg, n_windows) / checkpoints))


def judge_checkpoint(run: str | Path, step: int, arrays: Mapping[str, np.ndarray], judges: list, data: Prepared,
                     eval_cfg: EvalConfig) -> np.ndarray:
    """The judges' values `[n_judges, n_users]` of checkpoint `step`'s own top-10 lists (`arrays`:
    its `checkpoint_arrays`), scored by `eval.judge.judge_lists`."""
    if "top10" not in arrays:
        raise InputError(f"checkpoint {step} has no top-10 lists for the judges to score (saved before "
                         "checkpoints kept them on real data): post-train the run again", path=run)
    return judge_lists(judges, data.seq, data.split.test, arrays["top10"], eval_cfg.batch_size)


def selected_judges(seed_dir: str | Path, methods: Mapping[str, Any], rule: str, judges: list, data: Prepared,
                    eval_cfg: EvalConfig) -> dict[str, Any]:
    """The judges on one contest seed's selections (`methods`: `contest_seed`'s per-method results,
    runs under `seed_dir`): each method's checkpoint selected by `rule`, its top-10 lists scored by
    every judge; returns `{"judge_agreement": compare.judge_agreement (each family's mean Δ vs
    sft), "judge_validated": {family: beats the mean predictors out of fold}}`."""
    res: dict[str, Any] = {"judge": {}}
    for method, r in methods.items():
        sel = r["selected"][rule]
        run = Path(seed_dir) / sel["run"]
        vals = judge_checkpoint(run, sel["step"], checkpoint_arrays(run, sel["step"]), judges, data, eval_cfg)
        record_judges(res, method, judges, vals)
    return {"judge_agreement": judge_agreement(res), "judge_validated": res.get("judge_validated", {})}


def apply_selection(res: dict[str, Any], rule: str, judges: list | None = None, data: Prepared | None = None,
                    eval_cfg: EvalConfig | None = None) -> dict[str, Any]:
    """A comparison (`compare.compare_methods`, runs post-trained with `posttrain.checkpoint_every`)
    with every post-trained label's test figures replaced by those of its checkpoint selected by
    `rule` on validation: the per-user `ndcg@10` and `true_value`, the test `metrics` (the
    record's), and `selected[label]` = `{step, valid, test}`. π0 (`pretrained`) stays.

    A comparison the judges scored needs the same `judges` (with its `data` and `eval_cfg`): they
    score each selected checkpoint's own top-10 lists (`top10` of its checkpoint file,
    `eval.judge.judge_lists`, the path `judge_topk` scores a model's lists by), replacing the
    final policy's judge values and metrics, and `judge_agreement` is recomputed."""
    if res.get("judge_family") and not judges:
        raise InputError("selection replaces each policy by a checkpoint, but the judges scored the final policies; "
                         "pass the judges to apply_selection, so that they score the selected checkpoints")
    if judges and (data is None or eval_cfg is None):
        raise ValueError("apply_selection: judges need the comparison's data and eval config")
    metric = RULES[rule]
    res["selected"] = {}
    for label, run in res["runs"].items():
        if label == "pretrained":
            continue
        rec = select_run(run, rule)
        arrays = checkpoint_arrays(run, rec["step"])
        res["ndcg@10"][label] = arrays["ndcg@10"]
        if "true_value" in arrays:
            res["true_value"][label] = arrays["true_value"]
        res["metrics"][label] = dict(rec["test"])
        if judges:
            vals = judge_checkpoint(run, rec["step"], arrays, judges, data, eval_cfg)
            res["metrics"][label].update(record_judges(res, label, judges, vals))
        res["selected"][label] = {"step": rec["step"], "valid": {metric: rec["valid"][metric]}, "test": rec["test"]}
    if judges:
        res["judge_agreement"] = judge_agreement(res)
    return res
