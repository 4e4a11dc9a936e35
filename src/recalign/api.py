"""The small public Python API: the same stages as the command line, as functions.

    from recalign import api

    run = api.pretrain("ml-100k", out="runs/sasrec", data_dir="data", overrides=["model.name=sasrec"])
    metrics = api.evaluate("runs/sasrec")                       # test split, full ranking
    top = api.recommend("runs/sasrec", user="42", k=10)         # original ids and scores
    api.posttrain("runs/sasrec", "exp_sft", out="runs/exp", overrides=["posttrain.lam=0.5"])

Every function raises `recalign.errors.InputError` on bad input, with a message naming the file,
the row and the column where they apply.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recalign.config import RunConfig, load_config
from recalign.stages.common import load_run
from recalign.stages.inference import evaluate_run, recommend_run
from recalign.stages.posttrain import posttrain as _posttrain
from recalign.stages.pretrain import pretrain as _pretrain

__all__ = ["config", "pretrain", "posttrain", "evaluate", "recommend", "load"]


def config(dataset: str | None = None, *, data_dir: str | Path | None = None, config_file: str | Path | None = None,
           overrides: list[str] | None = None) -> RunConfig:
    """A resolved run configuration: defaults, then `config_file`, then `overrides`
    (`["train.epochs=10", ...]`), with `dataset` and `data_dir` as shorthands for `data.*`."""
    extra = []
    if dataset is not None:
        extra.append(f"data.name={json.dumps(str(dataset))}")
    if data_dir is not None:
        extra.append(f"data.data_dir={json.dumps(str(data_dir))}")
    return load_config(config_file, extra + list(overrides or []))


def pretrain(dataset: str | RunConfig, out: str | Path, *, data_dir: str | Path | None = None,
             config_file: str | Path | None = None, overrides: list[str] | None = None,
             resume: bool = False) -> dict[str, Any]:
    """Stage 1 (next-item pretraining). Returns the run summary (best epoch, timings, validation
    and test metrics); the run folder `out` holds the model, config and metrics."""
    cfg = dataset if isinstance(dataset, RunConfig) else config(dataset, data_dir=data_dir,
                                                               config_file=config_file, overrides=overrides)
    return _pretrain(cfg, out, resume=resume)


def posttrain(init: str | Path, method: str, out: str | Path, *, overrides: list[str] | None = None,
              reward_model: str | Path | None = None, resume: bool = False) -> dict[str, Any]:
    """Stage 2: post-train the run `init` with `method` (`exp_sft`, `sft`, `ppo`, ...)."""
    return _posttrain(init, method, out, overrides=overrides, reward_model_run=reward_model, resume=resume)


def evaluate(run: str | Path, split: str = "test", *, device: str = "auto",
             overrides: list[str] | None = None) -> dict[str, Any]:
    """Full-ranking metrics of a run (`hr@10`, `ndcg@10`, `mrr`, `high/...`; `true_value` on the
    simulator)."""
    return {k: v for k, v in evaluate_run(run, split, device=device, overrides=overrides).items()
            if not k.startswith("_")}


def recommend(run: str | Path, *, user: str | int | None = None, history: list[str | int] | None = None,
              k: int = 10, exclude_seen: bool = True) -> list[dict[str, Any]]:
    """Top-`k` items `[{"item": original id, "score": float}, ...]` for a known user (their whole
    logged history is the context) or for an explicit history of original item ids."""
    res = recommend_run(run, user=None if user is None else str(user),
                        history=None if history is None else [str(h) for h in history], k=k,
                        exclude_seen=exclude_seen)
    return res["items"]


def load(run: str | Path, device: str = "cpu"):
    """`(config, prepared data, model)` of a run folder, for custom analysis."""
    return load_run(Path(run), device)
