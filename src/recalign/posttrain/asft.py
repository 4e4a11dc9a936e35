"""Advantage-weighted SFT (`asft`; Netflix's A-SFT, 2025): the weighted next-item likelihood of
`sft.py` with weights from the advantage of the logged item,

    A_t = r_t − b(s_t),   b(s) = E_{a∼π_0(·|s)}[ r̂(s, a) ] = Σ_a π_0(a|s) · r̂(s, a),

`w = exp(A/λ)/Z` (`asft_weight = exp`) or `max(A, 0)/Z` (`asft_weight = pos`), normalised by
`weight_norm` and clipped at `max_weight` like `exp_sft`. The baseline is exact: at every
training target the frozen π_0's full-catalog distribution is contracted with the reward model's
`score_all` (one pass over the training set in `setup`; nothing is sampled), so `b(s)` is the
value of the pretrained policy under the reward model.

`reward_transform` is applied to both `r` and `b(s)` (they share one scale): `standardize`
divides `A` by the training rewards' std, `user_center` leaves `A` unchanged (the user's mean
cancels in `r − b`); `rank`/`user_rank` are refused (`b(s)` has no rank). `log_clip_*` and
`lam_rule` apply as in `exp_sft` (`lam_rule` for `asft_weight = exp` only).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from recalign.errors import InputError
from recalign.posttrain.registry import PostTrainContext, register
from recalign.posttrain.scoring import expected_value, training_batches
from recalign.posttrain.sft import WeightedSFT
from recalign.posttrain.weights import log_weights


@torch.no_grad()
def reference_value(ctx: PostTrainContext) -> Tensor:
    """`b(s_t) = Σ_a π_0(a|s_t) r̂(s_t, a)` of every training target, as a per-row float64 table
    (NaN elsewhere)."""
    ref, rm = ctx.reference, ctx.reward_model
    out = torch.full((len(ctx.data.inter),), float("nan"), dtype=torch.float64, device=ctx.device)
    for batch in training_batches(ctx):
        sel = batch.targets > 0
        logp0 = ref.position_log_probs(batch.items, batch.timestamps, sel)  # [M, N+1]
        values = rm.score_all(rm.encode(batch.items, batch.timestamps)[sel])  # [M, N+1]
        out[batch.target_rows[sel]] = expected_value(logp0, values).double()
    return out


@register("asft")
class ASFT(WeightedSFT):
    description = "advantage-weighted SFT: w = exp(A/λ) or max(A,0), A = r − E_π0[RM] (needs a reward model)"
    knobs = ("lam", "asft_weight", "weight_norm", "max_weight", "reward_transform", "log_clip_quantile",
             "log_clip_ratio", "lam_rule", "lam_target_ess")
    needs_reward_model = True

    def uses_lam(self) -> bool:
        return self.pt.asft_weight == "exp"

    def prepare(self, ctx: PostTrainContext) -> dict[str, Any]:
        if ctx.reference is None:
            raise InputError("asft needs the reference policy π_0")
        if self.pt.asft_weight == "exp" and not self.pt.lam > 0:
            raise InputError(f"posttrain.lam must be > 0; got {self.pt.lam}")
        if self.reward_transform in ("rank", "user_rank"):
            raise InputError(f"asft does not support reward_transform = {self.reward_transform} (the baseline "
                             "b(s) has no rank among the logged rewards); use none, standardize or user_center")
        self._lam = self.pt.lam
        self._baseline = reference_value(ctx)
        stats = super().prepare(ctx)
        stats.update(self._adv_stats)
        return stats

    def transformed_rewards(self, ctx, rows):  # the advantage carries the transform
        return torch.from_numpy(ctx.data.inter.reward[rows].astype(np.float64))

    def row_log_weights(self, ctx, rows, rewards):
        b = self._baseline[torch.as_tensor(rows, device=self._baseline.device)].cpu()
        if self.reward_transform == "standardize":  # (r − m)/s − (b − m)/s = (r − b)/s
            std = float(rewards.std(unbiased=False))
            if std > 0:
                rewards, b = rewards / std, b / std
        adv = rewards - b
        self._adv_stats = {"baseline_mean": float(b.mean()), "advantage_mean": float(adv.mean()),
                           "advantage_std": float(adv.std(unbiased=False)),
                           "advantage_pos_frac": float((adv > 0).double().mean())}
        kind = "adv_exp" if self.pt.asft_weight == "exp" else "adv_pos"
        return log_weights(rewards, kind, lam=self._lam, baseline=b)
