"""Compare post-training methods from one pretrained checkpoint on one dataset.

`compare_methods` pretrains (or reuses) π0, trains one reward model when some method needs it
(shared by all of them, so they are judged against the same learned reward), post-trains every
method from π0, and evaluates every policy on the same test targets, keeping per-user values so
that differences can be judged with paired intervals.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from recalign.config import RunConfig
from recalign.eval.evaluate import evaluate_targets
from recalign.eval.metrics import ndcg
from recalign.pipeline import Prepared, load_run, prepare, pretrain


def _quiet(msg: str) -> None:
    return None


def compare_methods(cfg: RunConfig, out: Path, methods: tuple[str, ...] | list[str], *,
                    data: Prepared | None = None, pretrained: Path | None = None,
                    overrides: dict[str, list[str]] | None = None,
                    log: Callable[[str], None] = _quiet) -> dict[str, Any]:
    """Returns `{"metrics": {name: test metrics}, "ndcg@10": {name: per-user array},
    "true_value": {name: per-user array} (simulator only), "seconds": {name: s}}`; the name
    `pretrained` is π0 itself. `overrides[name]` adds `--set` pairs for one method."""
    from recalign.posttrain.registry import get_method
    from recalign.posttrain.run import posttrain, reward_model_stage

    out = Path(out)
    data = data or prepare(cfg)
    seconds: dict[str, float] = {}
    if pretrained is None:
        t0 = time.perf_counter()
        pretrained = out / "pretrain"
        pretrain(cfg, pretrained)
        seconds["pretrained"] = time.perf_counter() - t0
        log(f"pretrained {cfg.model.name} in {seconds['pretrained']:.0f} s")
    rm = None
    if any(get_method(m, cfg.posttrain).needs_reward_model for m in methods):
        t0 = time.perf_counter()
        rm = out / "reward_model"
        reward_model_stage(rm, init_run=pretrained)
        log(f"trained the reward model in {time.perf_counter() - t0:.0f} s")
    runs = {"pretrained": pretrained}
    for name in methods:
        t0 = time.perf_counter()
        posttrain(pretrained, name, out / name, overrides=(overrides or {}).get(name),
                  reward_model_run=rm if get_method(name, cfg.posttrain).needs_reward_model else None,
                  data=data)
        runs[name] = out / name
        seconds[name] = time.perf_counter() - t0
        log(f"post-trained {name} in {seconds[name]:.0f} s")
    res: dict[str, Any] = {"metrics": {}, "ndcg@10": {}, "true_value": {}, "seconds": seconds}
    for name, run in runs.items():
        _, _, model = load_run(run, data=data)
        m = evaluate_targets(model, data.seq, data.split.test, cfg.eval, cfg.data.high_reward, data.simulator,
                             return_ranks=True)
        res["ndcg@10"][name] = ndcg(m.pop("_ranks"), 10)
        if "_true_values" in m:
            res["true_value"][name] = m.pop("_true_values")
        res["metrics"][name] = m
    res["high"] = data.split.high_reward("test", cfg.data.high_reward)
    res["n_users"] = int(np.asarray(res["high"]).size)
    return res
