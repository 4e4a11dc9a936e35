"""Train the held-out judges (`eval/judge.py` says what they are for and scores policies with
them) and validate every judge family out of fold.

Families (`eval.judge_families`):

- `seq`: `eval.judges` sequence reward models, each trained by the one reward-model trainer
  (`stages/reward_model.py`) on every interaction — validation and test targets included — for
  a fixed `eval.judge_epochs`; run folders `judge<j>` (seed `train.seed + 7919 + j`).
- `mf`: `eval.judges` biased matrix-factorisation regressors (`models/mf.py`) on every
  interaction, seeds as above; folders `mf<j>` (`model.safetensors` + `mf.json`).

Out-of-fold validation (`validation.json`): each family is trained once more, on the split's
training rows only (per-user leave-one-out: every interaction but each user's last two), and
predicts the held-out rows (the validation and test targets, never trained on), next to the
global-, user- and item-mean predictors fitted on the same training rows: RMSE and Spearman
rank correlation. A family whose out-of-fold RMSE does not beat the best mean predictor is
marked `beats_means = false`: it is still reported, but it does not count as a judge
(`judges_agree`). Finished judges and validations are reused, not retrained.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load_file

from recalign.config import RunConfig
from recalign.data.prepared import Prepared
from recalign.data.sequences import SequenceData
from recalign.data.split import Split, Targets
from recalign.eval.judge import ListJudge, MFJudge, SeqJudge, judge_targets
from recalign.models.mf import MatrixFactorization, MFParams, fit_mf, spearman
from recalign.models.reward_model import (
    RewardModel,
    is_binary,
    prediction_errors,
    reference_predictors,
)
from recalign.stages.reward_model import load_reward_model, train_reward_model
from recalign.train import checkpoint as ckpt
from recalign.train.runfolder import read_state

JUDGE_SEED_OFFSET = 7919  # judges' seeds are far from any policy seed a sweep would use
FAMILIES = ("seq", "mf")


def judge_split(split: Split) -> Split:
    """The same split with every interaction in training (validation and test targets too)."""
    return dataclasses.replace(split, train_end=split.offsets[1:].copy())


def train_judges(cfg: RunConfig, data: Prepared, out_dir: str | Path, k: int | None = None,
                 verbose: bool = False) -> list[ListJudge]:
    """Train `k` (default `cfg.eval.judges`) judges of every family of `cfg.eval.judge_families`
    on every interaction of `data`, after validating each family out of fold; returns them in
    family order (`judge.family`, `judge.validation`: that family's out-of-fold errors)."""
    out_dir = Path(out_dir)
    k = cfg.eval.judges if k is None else k
    validation = validate_families(cfg, data, out_dir, verbose)
    judges: list[ListJudge] = []
    if "seq" in cfg.eval.judge_families:
        judges += [SeqJudge(rm, validation["seq"]) for rm in _seq_judges(cfg, data, out_dir, k, verbose)]
    if "mf" in cfg.eval.judge_families:
        judges += [MFJudge(_mf_judge(cfg, data, out_dir / f"mf{j}", j), validation["mf"]) for j in range(k)]
    return judges


def _seq_judges(cfg: RunConfig, data: Prepared, out_dir: Path, k: int, verbose: bool) -> list[RewardModel]:
    split = judge_split(data.split)
    jdata = Prepared(cfg, data.inter, split, SequenceData(split, cfg.model.max_len, cfg.train.window_stride),
                     data.simulator)
    judges = []
    for j in range(k):
        run = out_dir / f"judge{j}"
        if read_state(run).get("trained"):
            judges.append(load_reward_model(run, jdata))
            continue
        rm, _ = train_reward_model(_judge_cfg(cfg, j, verbose), jdata, run, validate=False,
                                   extra_state={"role": "judge"})
        if verbose:
            print(f"recalign: judge {j + 1}/{k} trained in {read_state(run)['train_seconds']:.0f} s", file=sys.stderr)
        judges.append(rm)
    return judges


def _judge_cfg(cfg: RunConfig, j: int, verbose: bool = False) -> RunConfig:
    tcfg = dataclasses.replace(cfg.train, seed=cfg.train.seed + JUDGE_SEED_OFFSET + j, epochs=cfg.eval.judge_epochs,
                               max_steps=0, progress=cfg.train.progress and verbose)
    return dataclasses.replace(cfg, train=tcfg)


def _mf_judge(cfg: RunConfig, data: Prepared, folder: Path, j: int) -> MatrixFactorization:
    """Judge `j` of the `mf` family on every interaction (reused when `folder` holds it)."""
    return _fit_or_load_mf(data, data.inter.user >= 0, folder,
                           MFParams(seed=cfg.train.seed + JUDGE_SEED_OFFSET + j))


def _fit_or_load_mf(data: Prepared, rows: np.ndarray, folder: Path, params: MFParams) -> MatrixFactorization:
    """Fit an MF on the table's `rows` (boolean mask), saved as `folder/model.safetensors` +
    `folder/mf.json`; a folder that finished with the same settings is loaded instead."""
    inter = data.inter
    n_users, binary = len(data.split.offsets) - 1, is_binary(inter.reward[rows])
    meta = {"family": "mf", "params": dataclasses.asdict(params), "binary": binary, "n_users": n_users,
            "n_items": int(inter.n_items), "rows": int(rows.sum())}
    info = folder / "mf.json"
    if info.is_file() and json.loads(info.read_text()) == {**meta, "trained": True}:
        return MatrixFactorization.from_tensors(load_file(str(folder / "model.safetensors")), binary)
    mf = fit_mf(inter.user[rows], inter.item[rows], inter.reward[rows], n_users, inter.n_items, params, binary)
    folder.mkdir(parents=True, exist_ok=True)
    ckpt.atomic_save_tensors(folder / "model.safetensors", mf.to_tensors())
    ckpt.atomic_write_text(info, json.dumps({**meta, "trained": True}, indent=2))
    return mf


def heldout_targets(split: Split) -> Targets:
    """The out-of-fold rows: the validation and test targets (each user's last two interactions
    under leave-one-out), none of them among `split.train_rows()`."""
    v, t = split.valid, split.test
    return Targets(users=np.concatenate([v.users, t.users]), context_end=np.concatenate([v.context_end, t.context_end]),
                   target_row=np.concatenate([v.target_row, t.target_row]))


def validate_families(cfg: RunConfig, data: Prepared, out_dir: Path, verbose: bool = False) -> dict[str, Any]:
    """Out-of-fold errors of every family of `cfg.eval.judge_families` (module docstring), stored
    in `out_dir/validation.json` and reused from there."""
    path = out_dir / "validation.json"
    done = json.loads(path.read_text()) if path.is_file() else {}
    held = heldout_targets(data.split)
    for family in cfg.eval.judge_families:
        if family in done:
            continue
        if family == "seq":
            rm, _ = train_reward_model(_judge_cfg(cfg, 0, verbose), data, out_dir / "oof-seq", validate=False,
                                       extra_state={"role": "judge out-of-fold"})
            judge: ListJudge = SeqJudge(rm)
        else:
            judge = MFJudge(_fit_or_load_mf(data, data.split.train_rows(), out_dir / "oof-mf",
                                            MFParams(seed=cfg.train.seed + JUDGE_SEED_OFFSET)))
        done[family] = oof_report(judge_targets(judge, data.seq, held, cfg.eval.batch_size), data, held)
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write_text(path, json.dumps(done, indent=2))
        if verbose:
            print(f"recalign: judge family {family}: out-of-fold {done[family]}", file=sys.stderr)
    return done


def oof_report(pred: np.ndarray, data: Prepared, held: Targets) -> dict[str, Any]:
    """RMSE and Spearman of out-of-fold predictions `pred` of the `held` rows, next to the mean
    predictors fitted on the training rows; `beats_means`: RMSE below the best mean predictor's."""
    inter, train = data.inter, data.split.train_rows()
    rows = held.target_row
    r = inter.reward[rows]
    binary = is_binary(inter.reward[train])
    refs = reference_predictors(inter.user[train], inter.item[train], inter.reward[train], inter.user[rows],
                                inter.item[rows], len(data.split.offsets) - 1, inter.n_items)
    out: dict[str, Any] = {"protocol": "leave-one-out: validation and test targets held out", "n_heldout": int(r.size),
                           **prediction_errors(pred, r, binary), "spearman": spearman(pred, r)}
    out["reference"] = {name: {**prediction_errors(p, r, binary), "spearman": spearman(p, r)}
                        for name, p in refs.items()}
    best = min(v["rmse"] for v in out["reference"].values())
    out["best_mean_rmse"], out["beats_means"] = best, bool(out["rmse"] < best)
    return out


def family_validated(judges: list[ListJudge]) -> dict[str, bool]:
    """`{family: beats the mean predictors out of fold}` of these judges (False when unvalidated)."""
    return {j.family: bool((j.validation or {}).get("beats_means", False)) for j in judges}

