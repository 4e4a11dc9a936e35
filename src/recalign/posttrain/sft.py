"""Reward-weighted SFT: `L = −(1/n) Σ_t w_t · log π_θ(a_t | s_t)` over every logged training
transition, with the weights of `weights.py`. Four methods share this one concept:

| method         | weight `w_t` before normalisation   | knobs (the class's `knobs`)            |
|----------------|-------------------------------------|----------------------------------------|
| `sft`          | 1 (behaviour cloning)               | —                                      |
| `linear_sft`   | `r_t` (0 where `r_t ≤ 0`)           | weight_norm, max_weight, reward_transform, log_clip_* |
| `exp_sft`      | `exp(r_t / λ)` (the paper)          | lam (or lam_rule, lam_target_ess), weight_norm, max_weight, reward_transform, log_clip_* |
| `filtered_sft` | `1[r_t ≥ threshold]`                | threshold, weight_norm, max_weight, reward_transform |

(`asft` in `asft.py` is the same loss with advantage weights.)

The loss goes through the model's head (`model.next_item_loss`, which ends in
`models.heads.weighted_nll`: it divides by the number of positions with a target and reports
the batch's weight mean, max and ESS), so the sampled-softmax head works as in pretraining.

Normalisation `weight_norm` (`Z`): `global` (mean weight 1 over all training targets, computed
once in `setup`), `batch` (mean weight 1 in each batch), `none` (raw `exp(r/λ)` shifted by the
training set's max, a constant logged as `log_shift`), `context`: mean weight 1 over each
user's training targets. A logged state has one logged action, so a per-state `Z(s)` would make
every weight 1; the user (the context that generated the sequence) is the finest grouping that
changes anything: every user counts as much as in SFT, whatever their rewards.
Every weight is computed in log space (`log_weights` → `normalize`), then optionally clipped at
`max_weight`. The threshold of `filtered_sft` applies to the transformed reward (the raw reward
for `filtered_sft`'s default, `reward_transform = auto` = none).

`reward_transform = auto` (the config default) is each method's own default
(`Method.default_transform`): `user_rank` for `exp_sft` (each reward's mid-rank quantile within
its user, mapped onto the rating range: chosen on validation, docs/reproduce/defaults.md),
`none` for every other method.
"""

from __future__ import annotations

import math
import sys
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from recalign.errors import InputError
from recalign.posttrain.registry import Method, PostTrainContext, register
from recalign.posttrain.scoring import lookup, row_table, training_target_rows
from recalign.posttrain.weights import (
    clip_log_weights,
    ess,
    global_log_max,
    global_log_z,
    log_weights,
    normalize,
    transform_rewards,
)

LAM_GRID = (0.05, 100.0)  # lam_rule = ess: the range searched for λ


class WeightedSFT(Method):
    """Weighted next-item likelihood with per-row weights fixed at setup (or per batch for
    `weight_norm = batch`). Subclasses give the unnormalised log weights."""

    uses_weights: ClassVar[bool] = True
    clips_log_weights: ClassVar[bool] = True  # reads posttrain.log_clip_* (filtered_sft: no)

    def uses_lam(self) -> bool:
        """Whether the log weights are `(something)/λ` (exp weights): then `lam_rule` applies."""
        return False

    def row_log_weights(self, ctx: PostTrainContext, rows: np.ndarray, rewards: Tensor) -> Tensor:
        """`[n] float64` log weights of the training targets `rows` with transformed `rewards`
        (at temperature `self._lam` where `uses_lam()`)."""
        raise NotImplementedError

    def transformed_rewards(self, ctx: PostTrainContext, rows: np.ndarray) -> Tensor:
        inter = ctx.data.inter
        return transform_rewards(torch.from_numpy(inter.reward[rows].astype(np.float64)),
                                 torch.from_numpy(inter.user[rows]), self.reward_transform)

    def prepare(self, ctx: PostTrainContext) -> dict[str, Any]:
        inter = ctx.data.inter
        rows = np.flatnonzero(training_target_rows(ctx.data.split))
        if rows.size == 0:
            raise InputError("no training transitions to post-train on")
        self._norm = "fixed"
        if not self.uses_weights:  # sft: every weight 1
            self._w = row_table(len(inter), rows, torch.ones(rows.size), 0.0, ctx.device)
            return {"n_targets": int(rows.size), "ess": 1.0, "weight_mean": 1.0, "weight_max": 1.0,
                    "kept_frac": 1.0}
        auto = self.uses_lam() and self.pt.lam_rule == "ess"
        if self.uses_lam():
            self._lam = 1.0 if auto else self.pt.lam  # auto: log weights at λ = 1, divided by λ below
        logw = self.row_log_weights(ctx, rows, self.transformed_rewards(ctx, rows))
        kept = torch.isfinite(logw)
        if not bool(kept.any()):
            raise InputError(f"method {self.name!r} gives weight 0 to every training interaction "
                             f"(rewards in [{inter.reward.min():g}, {inter.reward.max():g}]); check "
                             "posttrain.threshold / reward_transform")
        stats: dict[str, Any] = {"n_targets": int(rows.size), "kept_frac": float(kept.double().mean()),
                                 "weight_norm": self.pt.weight_norm}
        lam_stats: dict[str, Any] = {}
        if auto:
            self._lam, lam_stats = self.choose_lam(ctx, rows, logw)
            logw = logw / self._lam
        stats.update(self.training_weights(ctx, rows, logw, store=True))
        stats.update(lam_stats)
        return stats

    def training_weights(self, ctx: PostTrainContext, rows: np.ndarray, logw: Tensor,
                         store: bool) -> dict[str, Any]:
        """Clip (`log_clip_*`), normalise (`weight_norm`, `max_weight`) the training targets' log
        weights; returns the setup statistics (`ess` among them), and with `store` keeps the
        weights (or, for `batch`, the log weights) for training."""
        pt, inter = self.pt, ctx.data.inter
        stats: dict[str, Any] = {}
        if self.clips_log_weights and pt.log_clip_quantile > 0:
            raw = logw
            logw, cap = clip_log_weights(logw, pt.log_clip_quantile, pt.log_clip_ratio)
            stats["log_clip_cap"] = cap
            stats["log_clip_frac"] = float((raw > cap).double().mean())
        log_z = global_log_z(logw)
        stats = {"log_z": log_z, **stats}
        if pt.weight_norm == "batch":
            # per-batch Z at each step; the training-set statistics use the global Z
            if store:
                self._norm = "batch"
                self._logw = row_table(len(inter), rows, logw, -np.inf, ctx.device, torch.float64)
            w = normalize(logw, norm="global", global_log_z=log_z, max_weight=0.0)
        else:
            shift = global_log_max(logw) if pt.weight_norm == "none" else None
            if shift is not None:
                stats["log_shift"] = shift
            w = normalize(logw, norm=pt.weight_norm, context=torch.from_numpy(inter.user[rows]),
                          global_log_z=log_z, log_shift=shift, max_weight=pt.max_weight)
            if store:
                self._w = row_table(len(inter), rows, w, 0.0, ctx.device)
        stats.update({"ess": ess(w), "weight_mean": float(w.double().mean()), "weight_max": float(w.max())})
        return stats

    def choose_lam(self, ctx: PostTrainContext, rows: np.ndarray, logw1: Tensor) -> tuple[float, dict[str, Any]]:
        """`lam_rule = ess`: the smallest λ in `LAM_GRID` whose training-set weights (after the
        transform, clip and normalisation in use) have ESS ≥ `lam_target_ess`, by bisection in
        `log λ` to a relative tolerance of 1e-3 (`logw1` = the log weights at λ = 1).

        For unclipped `global`/`batch`/`none` weights the ESS is non-decreasing in λ (with
        `β = 1/λ`, `d log ESS/dβ = 2·(E_β[r] − E_2β[r]) ≤ 0`, `E_β` the mean under
        `softmax(β·r)`, which grows with β), so the bisection finds that smallest λ; otherwise it
        returns a λ that meets the target (the upper end of the bracket always does)."""
        target = self.pt.lam_target_ess
        lo, hi = LAM_GRID

        def ess_at(lam: float) -> float:
            return self.training_weights(ctx, rows, logw1 / lam, store=False)["ess"]

        e_lo, e_hi = ess_at(lo), ess_at(hi)
        if e_lo >= target:
            lam, e, reason = lo, e_lo, "the target ESS is met at the grid's smallest λ"
        elif e_hi < target:
            lam, e, reason = hi, e_hi, "the target ESS is not met on the grid: its largest λ"
        else:
            while hi / lo > 1 + 1e-3:
                mid = math.sqrt(lo * hi)
                e_mid = ess_at(mid)
                if e_mid >= target:
                    hi, e_hi = mid, e_mid
                else:
                    lo = mid
            lam, e, reason = hi, e_hi, "the smallest λ with ESS >= target (bisection in log λ)"
        print(f"posttrain: lam_rule = ess chose λ = {lam:.4g} (training-set ESS {e:.3g}, target "
              f"{target:g}): {reason}", file=sys.stderr)
        return lam, {"lam_rule": "ess", "lam": lam, "lam_ess": e, "lam_target_ess": target,
                     "lam_reason": reason}

    def loss(self, model, batch):
        hidden = model.encode(batch.items, batch.timestamps)
        mask = batch.targets > 0
        if self._norm == "batch":
            w = normalize(lookup(self._logw, batch.target_rows).flatten(), mask.flatten(), norm="batch",
                          max_weight=self.pt.max_weight).view_as(mask)
        else:
            w = lookup(self._w, batch.target_rows) * mask
        return model.next_item_loss(hidden, batch.targets, w.float(), batch.items)


@register("sft")
class SFT(WeightedSFT):
    description = "continue behaviour cloning on the same data (weights 1)"
    knobs = ()
    uses_weights = False


@register("linear_sft")
class LinearSFT(WeightedSFT):
    description = "reward-weighted SFT with linear weights w = r (normalised like exp_sft)"
    knobs = ("weight_norm", "max_weight", "reward_transform", "log_clip_quantile", "log_clip_ratio")

    def row_log_weights(self, ctx, rows, rewards):
        return log_weights(rewards, "linear")


@register("exp_sft")
class ExpSFT(WeightedSFT):
    description = "exponential reward-weighted SFT, w = exp(r/λ)/Z (Chidambaram et al. 2026)"
    knobs = ("lam", "weight_norm", "max_weight", "reward_transform", "log_clip_quantile", "log_clip_ratio",
             "lam_rule", "lam_target_ess")
    # the within-user rank quantile: chosen on validation over four simulated worlds and two
    # MovieLens sets (docs/reproduce/defaults.md); `--set posttrain.reward_transform="none"` gives
    # the paper's raw exp(r/λ)
    default_transform = "user_rank"

    def uses_lam(self) -> bool:
        return True

    def row_log_weights(self, ctx, rows, rewards):
        if not self.pt.lam > 0:
            raise InputError(f"posttrain.lam must be > 0; got {self.pt.lam}")
        return log_weights(rewards, "exp", lam=self._lam)


@register("filtered_sft")
class FilteredSFT(WeightedSFT):
    description = "SFT on the interactions with reward >= posttrain.threshold only"
    knobs = ("threshold", "weight_norm", "max_weight", "reward_transform")
    clips_log_weights = False  # weights 0 or 1: nothing to clip

    def row_log_weights(self, ctx, rows, rewards):
        return log_weights(rewards, "filter", threshold=self.pt.threshold)
