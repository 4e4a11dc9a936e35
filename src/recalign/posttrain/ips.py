"""Off-policy REINFORCE with importance weights (`ips`; Chen et al. 2019, "Top-K Off-Policy
Correction for a REINFORCE Recommender System"), `losses.ips_loss`.

At every scored position: `ρ = min(π_θ(a_t|s_t) / π_β(a_t|s_t), ips_clip)` with the logging
propensity `π_β` estimated by the pretrained π_0 (METHOD.md: no propensities are logged in
general), then `L = −mean(ρ · λ_K · r_t · log π_θ(a_t|s_t))`, `λ_K = K(1 − π_θ)^(K−1)` when
`topk = K > 0`. `log π_0(a_t|s_t)` of every training target is cached in `setup` (one pass of
the frozen reference; no second forward per step). `r_t` is the logged reward after
`posttrain.reward_transform`: with rewards that are all positive (ratings 1–5) every logged item
is pushed up, more so the higher its reward; `user_center` turns them into signed advantages.
"""

from __future__ import annotations

from typing import Any

import torch

from recalign.errors import InputError
from recalign.posttrain.losses import ips_loss
from recalign.posttrain.registry import Method, PostTrainContext, register
from recalign.posttrain.scoring import lookup, reference_target_logp, reward_table


@register("ips")
class IPS(Method):
    description = "off-policy REINFORCE, propensities estimated by π_0, clipped ratio, optional top-K correction"
    knobs = ("ips_clip", "topk", "reward_transform")
    disable_dropout = True

    def prepare(self, ctx: PostTrainContext) -> dict[str, Any]:
        if ctx.reference is None:
            raise InputError("ips needs the reference policy π_0 (the propensity estimate)")
        if self.pt.ips_clip < 0 or self.pt.topk < 0:
            raise InputError("posttrain.ips_clip and posttrain.topk must be >= 0 (0 = off)")
        self._reward, rows = reward_table(ctx, self.reward_transform)
        self._logp0 = reference_target_logp(ctx)
        lp = self._logp0[torch.as_tensor(rows, device=self._logp0.device)]
        return {"behavior_logp_mean": float(lp.mean()), "ips_clip": self.pt.ips_clip, "topk": self.pt.topk}

    def loss(self, model, batch):
        sel = batch.targets > 0
        logp = model.position_log_probs(batch.items, batch.timestamps, sel).gather(1, batch.targets[sel].unsqueeze(1)).squeeze(1)
        behavior = lookup(self._logp0, batch.target_rows)[sel]
        rewards = lookup(self._reward, batch.target_rows)[sel]
        return ips_loss(logp, behavior, rewards, clip=self.pt.ips_clip, topk=self.pt.topk or None)
