"""Compare post-training methods from one pretrained checkpoint on one dataset.

`compare_methods` pretrains (or reuses) π0, trains one reward model when some method needs it
(shared by all of them, so they are judged against the same learned reward), post-trains every
method from π0, and evaluates every policy on the same test targets, keeping per-user values so
that differences can be judged with paired intervals.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recalign.config import RunConfig
from recalign.data.prepared import Prepared, prepare
from recalign.eval.evaluate import evaluate_targets
from recalign.eval.judge import judge_summary, judge_topk, judges_agree
from recalign.eval.metrics import ndcg
from recalign.experiments.summary import seed_interval
from recalign.posttrain.registry import get_method
from recalign.stages.common import load_run
from recalign.stages.posttrain import posttrain
from recalign.stages.pretrain import pretrain
from recalign.stages.reward_model import reward_model_stage


def _quiet(msg: str) -> None:
    return None


Variant = tuple[str, list[str]]  # (method name, its `--set` pairs)


def as_variants(methods: Sequence[str] | Mapping[str, Variant],
                overrides: Mapping[str, list[str]] | None = None) -> dict[str, Variant]:
    """Method names, or `{label: (method, overrides)}`, as `{label: (method, overrides)}`."""
    if isinstance(methods, Mapping):
        return {label: (m, list(o)) for label, (m, o) in methods.items()}
    return {m: (m, list((overrides or {}).get(m, []))) for m in methods}


def _state(run: Path, key: str) -> dict[str, Any] | None:
    """The run's `state.json` if the run finished (the state has `key` set), else None: finished
    runs are reused, so an interrupted comparison continues where it stopped."""
    path = Path(run) / "state.json"
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    return state if state.get(key) else None


def folder_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label)


def compare_methods(cfg: RunConfig, out: Path, methods: Sequence[str] | Mapping[str, Variant], *,
                    data: Prepared | None = None, pretrained: Path | None = None,
                    overrides: Mapping[str, list[str]] | None = None, judges: list | None = None,
                    log: Callable[[str], None] = _quiet) -> dict[str, Any]:
    """Post-train every method (or labelled variant) from one π0 and evaluate all on the test targets.

    Args:
        methods: method names, or `{label: (method, overrides)}` to run one method under several
            settings (e.g. a λ grid) from the same π0 and reward model.
        pretrained: reuse this π0 run instead of pretraining one under `out/pretrain`.
        overrides: with plain names, extra `--set` pairs per method.
        judges: held-out judges of any family (`stages/judge.py:train_judges`, or bare reward
            models: the `seq` family); adds per-user judge values per family.

    Returns `{"metrics": {label: test metrics}, "ndcg@10": {label: per-user array},
    "true_value": {label: per-user array} (simulator only), "judge": {label: [n_seq_judges, n_users]}
    (with judges: the `seq` family's), "judge_family": {label: {family: [n_judges, n_users]}},
    "judge_validated": {family: beats the mean predictors out of fold}, "judge_agreement": {label:
    `judge_agreement`} (with judges), "oracle_value": per-user array (simulator only), "setup": {label: posttrain setup
    statistics (ESS, ...)}, "seconds": {label: s}, "runs": {label: run folder}}`; the label
    `pretrained` is π0 itself."""
    out = Path(out)
    variants = as_variants(methods, overrides)
    data = data or prepare(cfg)
    seconds: dict[str, float] = {}
    if pretrained is None:
        t0 = time.perf_counter()
        pretrained = out / "pretrain"
        if _state(pretrained, "test") is None:  # not finished (absent, or interrupted: resumed)
            pretrain(cfg, pretrained, resume=(pretrained / "state.json").is_file())
            seconds["pretrained"] = time.perf_counter() - t0
            log(f"pretrained {cfg.model.name} in {seconds['pretrained']:.0f} s")
    rm = None
    if any(get_method(m, cfg.posttrain).needs_reward_model for m, _ in variants.values()):
        rm = out / "reward_model"
        if _state(rm, "trained") is None:
            shutil.rmtree(rm, ignore_errors=True)  # an interrupted reward model is retrained
            t0 = time.perf_counter()
            reward_model_stage(rm, init_run=pretrained)
            log(f"trained the reward model in {time.perf_counter() - t0:.0f} s")
    runs = {"pretrained": Path(pretrained)}
    setup: dict[str, Any] = {}
    for label, (name, extra) in variants.items():
        t0 = time.perf_counter()
        run = out / folder_name(label)
        summary = _state(run, "test")
        if summary is None:
            summary = posttrain(pretrained, name, run, overrides=extra, data=data,
                                reward_model_run=rm if get_method(name, cfg.posttrain).needs_reward_model else None,
                                resume=(run / "state.json").is_file())
            seconds[label] = time.perf_counter() - t0
            log(f"post-trained {label} in {seconds[label]:.0f} s")
        runs[label] = run
        setup[label] = summary.get("setup", {})
    res: dict[str, Any] = {"metrics": {}, "ndcg@10": {}, "true_value": {}, "judge": {}, "setup": setup,
                           "seconds": seconds, "runs": {k: str(v) for k, v in runs.items()}}
    for label, run in runs.items():
        _, _, model = load_run(run, data=data)
        m = evaluate_targets(model, data.seq, data.split.test, cfg.eval, cfg.data.high_reward, data.simulator,
                             return_ranks=True)
        res["ndcg@10"][label] = ndcg(m.pop("_ranks"), 10)
        if "_true_values" in m:
            res["true_value"][label] = m.pop("_true_values")
        if judges:
            m.update(record_judges(res, label, judges, judge_topk(judges, model, data.seq, data.split.test, cfg.eval)))
        res["metrics"][label] = m
    if judges:
        res["judge_agreement"] = judge_agreement(res)
    if data.simulator is not None:  # the oracle's top-10 in the same contexts: the ceiling of every policy
        test = data.split.test
        res["oracle_value"] = data.simulator.oracle_value(test.users, 10, step=data.seq.context_steps(test))
    res["high"] = data.split.high_reward("test", cfg.data.high_reward)
    res["n_users"] = int(np.asarray(res["high"]).size)
    return res


def record_judges(res: dict[str, Any], label: str, judges: list, vals: np.ndarray) -> dict[str, Any]:
    """Put `label`'s judge values `vals [n_judges, n_users]` (`eval.judge.judge_lists` of its
    top-10 lists: the final policy's here, a selected checkpoint's in `selection.apply_selection`)
    into `res`'s judge entries (replacing any); returns the metrics (`judge_summary` per family,
    without the per-judge list)."""
    families = [getattr(j, "family", "seq") for j in judges]
    validated = {f: bool((getattr(j, "validation", None) or {}).get("beats_means", False))
                 for f, j in zip(families, judges)}
    fam = np.asarray(families)
    if "seq" in families:
        res["judge"][label] = vals[fam == "seq"]
    res.setdefault("judge_family", {})[label] = {f: vals[fam == f] for f in dict.fromkeys(families)}
    res["judge_validated"] = validated
    return {k: v for k, v in judge_summary(vals, families, validated).items() if k != "judge_values"}


def judge_agreement(res: dict[str, Any], base: str = "sft") -> dict[str, Any]:
    """`{label: {"deltas": {family: mean per-user Δ of the family's ensemble vs base}, "agree":
    judges_agree(...)}}` of one comparison (validated families only count); {} without `base`."""
    fams = res.get("judge_family", {})
    if base not in fams:
        return {}
    out = {}
    for label, by in fams.items():
        if label == base:
            continue
        deltas = {f: float((v.mean(0) - fams[base][f].mean(0)).mean()) for f, v in by.items()}
        out[label] = {"deltas": deltas, "agree": judges_agree(deltas, res.get("judge_validated"))}
    return out


def judge_agreement_over_seeds(per_seed: list[dict[str, Any]], base: str = "sft") -> dict[str, Any]:
    """Over seeds (comparisons with judges): `{label: {"deltas": {family: seed_interval of the
    per-seed Δ vs base}, "validated": {family: validated in every seed}, "agree": judges_agree on
    the intervals}}`; {} when a seed has no judge families."""
    if not per_seed or any(not r.get("judge_agreement") for r in per_seed):
        return {}
    validated = {f: all(r.get("judge_validated", {}).get(f, False) for r in per_seed)
                 for f in per_seed[0].get("judge_validated", {})}
    out = {}
    for label in per_seed[0]["judge_agreement"]:
        fams = per_seed[0]["judge_agreement"][label]["deltas"]
        deltas = {f: seed_interval([r["judge_agreement"][label]["deltas"][f] for r in per_seed]) for f in fams}
        out[label] = {"deltas": deltas, "validated": validated, "agree": judges_agree(deltas, validated)}
    return out
