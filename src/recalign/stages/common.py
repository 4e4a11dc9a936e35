"""What every stage shares: building a policy, fitting it with validation-based selection and
testing the selected weights, and loading a run folder back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from recalign import configlib, distributed
from recalign.config import RunConfig, TrainConfig
from recalign.data.prepared import Prepared, prepare
from recalign.eval.evaluate import evaluate_targets
from recalign.models.recommender import Recommender
from recalign.train import checkpoint as ckpt
from recalign.train.loop import FitResult, Objective, fit, resolve_device
from recalign.train.runfolder import (
    check_finished,
    read_config,
    read_state,
    update_state,
    warn_if_data_changed,
)


def build_model(cfg: RunConfig, data: Prepared) -> Recommender:
    """A new policy for `data`'s catalog, initialised from `train.seed`."""
    torch.manual_seed(cfg.train.seed)
    return Recommender(cfg.model, data.inter.n_items, data.item_counts())


def train_and_test(cfg: RunConfig, data: Prepared, model: Recommender, objective: Objective, run_dir: Path,
                   resume: bool = False, train_cfg: TrainConfig | None = None, select_metric: str | None = "ndcg@10",
                   on_step: Callable[[int], None] | None = None) -> tuple[FitResult, dict[str, Any]]:
    """Fit with validation-based model selection, then reload the best weights and test them."""
    tcfg = train_cfg or cfg.train
    run_dir = Path(run_dir)

    def validate(m: Recommender) -> dict[str, Any]:
        return evaluate_targets(m, data.seq, data.split.valid, cfg.eval, cfg.data.high_reward, data.simulator)

    def record_epoch(epoch: int, _record: dict[str, Any]) -> None:
        if distributed.is_main():
            update_state(run_dir, epochs_done=epoch + 1)

    if distributed.is_main():
        update_state(run_dir, finished=False, epochs_planned=tcfg.epochs)
    res = fit(model, data.seq, objective, tcfg, run_dir, validate=validate, resume=resume,
              select_metric=select_metric, on_step=on_step, on_epoch_end=record_epoch)
    ckpt.load_model_weights(model, run_dir / "model.safetensors")
    model.eval()
    test = evaluate_targets(model, data.seq, data.split.test, cfg.eval, cfg.data.high_reward, data.simulator)
    if distributed.is_main():
        update_state(run_dir, finished=True, epochs_done=res.epochs_run)
    return res, test


def load_run(run_dir: str | Path, device: str = "cpu", changes: dict[str, Any] | None = None,
             data: Prepared | None = None) -> tuple[RunConfig, Prepared, Recommender]:
    """Rebuild the data, the split and the model of a run, with its best weights.

    Args:
        run_dir: a run folder.
        device: where the model goes (`auto`, `cpu`, `cuda[:N]`).
        changes: nested config values applied to the run's configuration before anything is
            built (e.g. `{"eval": {"mask_seen": False}}`, or `configlib.parse_overrides(["k=v"])`).
        data: the run's prepared dataset, to skip reloading it.
    """
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    check_finished(run_dir)
    if changes:
        cfg = configlib.update(cfg, changes)
    data = data or prepare(cfg)
    warn_if_data_changed(run_dir, read_state(run_dir), data.inter)
    model = build_model(cfg, data)
    ckpt.load_model_weights(model, run_dir / "model.safetensors")
    model.to(resolve_device(device)).eval()
    return cfg, data, model
