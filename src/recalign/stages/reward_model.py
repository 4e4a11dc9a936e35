"""The one reward-model trainer: `r̂(s, a)` for the methods that need one (`ppo`, online `dpo`,
`asft`) and, through `stages/judge.py`, for the held-out judges.

A reward model is trained on the training targets of a split (MSE, or BCE when every training
reward is 0/1), from the policy's backbone when one is given. With validation (the default) it
keeps the epoch with the best validation RMSE and reports its error next to the global-, user-
and item-mean predictors; without (judges: every interaction is in training) it trains a fixed
budget and keeps its last weights. Either way it is a run folder (`config.toml`,
`model.safetensors`, `state.json` with `stage = reward_model`, `metrics.jsonl`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recalign import configlib, distributed
from recalign.config import RunConfig
from recalign.data.prepared import Prepared, prepare
from recalign.errors import InputError
from recalign.eval.judge import SeqJudge, judge_targets
from recalign.eval.rm_error import error_by_propensity
from recalign.models.recommender import Recommender
from recalign.models.reward_model import (
    RewardModel,
    RewardObjective,
    is_binary,
    prediction_errors,
    reference_predictors,
)
from recalign.stages.common import load_run
from recalign.stages.keys import check_training_keys
from recalign.train import checkpoint as ckpt
from recalign.train.loop import fit, resolve_device
from recalign.train.runfolder import (
    read_config,
    read_state,
    update_state,
    warn_if_data_changed,
    write_run_files,
)


def train_reward_model(cfg: RunConfig, data: Prepared, out_dir: str | Path, init_model: Recommender | None = None,
                       validate: bool = True, extra_state: dict[str, Any] | None = None,
                       ) -> tuple[RewardModel, dict[str, Any] | None]:
    """Train a reward model on `data`'s training targets with `cfg.train` (seed, epochs, lr, ...).

    Args:
        init_model: start the backbone from this policy's (else from scratch).
        validate: select the epoch with the best validation RMSE (`train.patience` applies) and
            return diagnostics; False: train `train.epochs`, keep the last weights, return None,
            and resume an interrupted folder.
        extra_state: more fields for the folder's `state.json` (e.g. `role = judge`).

    Returns:
        the model (eval mode) and, with validation, its diagnostics (also in
        `rm_diagnostics.json`).
    """
    out_dir = Path(out_dir)
    train_rewards = data.inter.reward[data.split.train_rows()]
    binary = is_binary(train_rewards)
    torch.manual_seed(cfg.train.seed)
    rm = RewardModel(cfg.model, data.inter.n_items, binary=binary,
                     init_mean=float(train_rewards.mean()) if train_rewards.size else 0.0)
    if init_model is not None:
        rm.backbone.load_state_dict(init_model.backbone.state_dict())
    write_run_files(out_dir, cfg, data.inter, {"stage": "reward_model", "binary": binary, "trained": False,
                                               "init_backbone": init_model is not None, **(extra_state or {})})
    if not validate:
        res = fit(rm, data.seq, RewardObjective(), cfg.train, out_dir, validate=None, resume=True)
        ckpt.load_model_weights(rm, out_dir / "model.safetensors")
        update_state(out_dir, trained=True, epochs_run=res.epochs_run, train_seconds=round(res.seconds, 2))
        return rm.eval(), None

    def valid_rmse(m: RewardModel) -> dict[str, Any]:
        pred, obs = _predictions(m, data, "valid", cfg.eval.batch_size)
        err = prediction_errors(pred, obs, binary)
        return {**err, "neg_rmse": -err["rmse"]}

    res = fit(rm, data.seq, RewardObjective(), cfg.train, out_dir, validate=valid_rmse, select_metric="neg_rmse")
    ckpt.load_model_weights(rm, out_dir / "model.safetensors")
    rm.eval()
    diag = reward_model_diagnostics(rm, data, cfg.eval.batch_size)
    diag.update({"best_epoch": res.best_epoch, "epochs_run": res.epochs_run, "train_seconds": round(res.seconds, 2)})
    ckpt.atomic_write_text(out_dir / "rm_diagnostics.json", json.dumps(diag, indent=2))
    update_state(out_dir, trained=True, best_epoch=res.best_epoch, epochs_run=res.epochs_run,
                 valid=res.best, diagnostics=diag)
    if cfg.train.progress and distributed.is_main():
        for line in diagnostics_lines(diag):
            print(f"recalign: reward model {line}", file=sys.stderr)
    return rm, diag


def _predictions(rm: RewardModel, data: Prepared, which: str, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and observed rewards of the held-out `which` targets (the judges' scoring of a
    target's own item, `eval.judge.judge_targets`)."""
    targets = data.split.targets(which)
    was_training = rm.training
    rm.eval()
    pred = judge_targets(SeqJudge(rm), data.seq, targets, batch_size)
    rm.train(was_training)
    return pred, data.inter.reward[targets.target_row].astype(np.float32)


def reward_model_diagnostics(rm: RewardModel, data: Prepared, batch_size: int = 512) -> dict[str, Any]:
    """Error of `rm` on the validation and test targets next to the global-, user- and item-mean
    predictors (fitted on training rows only): `{split: {metric: {predictor: value}}}` with
    metric `rmse` (and `log_loss` for binary rewards). On the simulator also `true_reward_error`:
    `{split: eval.rm_error.error_by_propensity}`, the error of the prediction against the true
    reward r* of the held-out items, overall and by decile of their logging propensity."""
    inter, split = data.inter, data.split
    train = split.train_rows()
    out: dict[str, Any] = {"binary": rm.binary, "n_train_rows": int(train.sum())}
    for which in ("valid", "test"):
        targets = split.targets(which)
        pred, obs = _predictions(rm, data, which, batch_size)
        rows = targets.target_row
        preds = {"reward_model": pred, **reference_predictors(
            inter.user[train], inter.item[train], inter.reward[train], inter.user[rows], inter.item[rows],
            inter.n_users, inter.n_items)}
        table: dict[str, dict[str, float]] = {}
        for name, p in preds.items():
            for metric, v in prediction_errors(p, obs, rm.binary).items():
                table.setdefault(metric, {})[name] = v
        out[which] = table
    if data.simulator is not None:
        out["true_reward_error"] = {which: error_by_propensity(rm, data.simulator, data.seq, split.targets(which),
                                                               batch_size=batch_size) for which in ("valid", "test")}
    return out


def diagnostics_lines(diag: dict[str, Any]) -> list[str]:
    """`reward_model_diagnostics` as lines: `valid rmse: reward_model=0.91  global_mean=1.02 ...`."""
    lines = [f"{which} {metric}: " + "  ".join(f"{k}={v:.4f}" for k, v in row.items())
             for which in ("valid", "test") for metric, row in diag[which].items()]
    return lines + true_error_lines(diag)


def true_error_lines(diag: dict[str, Any]) -> list[str]:
    """`true_reward_error` (simulator only) as lines: per split, the RMSE and mean error against
    r* overall and per propensity decile (1 = the rarest logged items)."""
    out = []
    for which, e in diag.get("true_reward_error", {}).items():
        o = e["overall"]
        deciles = " ".join(f"{d['rmse']:.2f}/{d['mean_error']:+.2f}" for d in e["by_propensity_decile"])
        out.append(f"{which} error vs r* (rmse/mean): {o['rmse']:.4f}/{o['mean_error']:+.4f}; by propensity decile, "
                   f"rarest first: {deciles}")
    return out


def load_reward_model(run_dir: str | Path, data: Prepared | None = None, device: str = "cpu") -> RewardModel:
    """A reward model saved by `train_reward_model`; `data` (if given) must have its catalog."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    state = read_state(run_dir)
    if state.get("stage") != "reward_model":
        raise InputError("not a reward-model run folder (state.json stage is not reward_model)", path=run_dir)
    n_items = int(state["n_items"])
    if data is not None:
        if data.inter.n_items != n_items:
            raise InputError(f"the reward model scores {n_items} items but the data has {data.inter.n_items}",
                             path=run_dir)
        warn_if_data_changed(run_dir, state, data.inter)
    rm = RewardModel(cfg.model, n_items, binary=bool(state.get("binary", False)))
    ckpt.load_model_weights(rm, run_dir / "model.safetensors")
    return rm.to(resolve_device(device)).eval()


def reward_model_stage(out_dir: str | Path, init_run: str | Path | None = None, cfg: RunConfig | None = None,
                       overrides: list[str] | None = None) -> dict[str, Any]:
    """`recalign reward-model`: from a pretrained run (its data, config and backbone; `overrides`
    are `--set` pairs applied to its config) or from a configuration (data from `cfg.data`,
    backbone from scratch). Returns the diagnostics."""
    out_dir = Path(out_dir)
    if (out_dir / "state.json").is_file():
        raise InputError("run folder exists; choose another --out", path=out_dir)
    if init_run is not None:
        changes = configlib.parse_overrides(overrides or [])
        cfg, data, model = load_run(init_run, "cpu", changes)
        check_training_keys("reward-model", changes, cfg)
    else:
        if cfg is None:
            raise InputError("give --init RUN or --data DATASET")
        data, model = prepare(cfg), None
    _, diag = train_reward_model(rm_training_config(cfg), data, out_dir, init_model=model)
    return diag


def rm_training_config(cfg: RunConfig) -> RunConfig:
    """The configuration the RLHF methods' reward model trains with: `cfg`, with
    `posttrain.rm_weight_decay` (when set, >= 0) as its `train.weight_decay`."""
    if cfg.posttrain.rm_weight_decay < 0:
        return cfg
    return configlib.update(cfg, {"train": {"weight_decay": cfg.posttrain.rm_weight_decay}})
