"""Preference optimisation against the frozen π_0: `dpo` (Rafailov et al. 2023) and `ipo`
(Azar et al. 2023), on pairs `(s, a_w, a_l)` at every scored position (`losses.dpo_loss`,
`losses.ipo_loss`, temperature `β = posttrain.beta`).

Pairs, config `posttrain.pairs`:

- `rm` (default; online DPO, as RLHF does when counterfactuals are missing): at each position
  `k_samples` distinct items are drawn from the *current* policy π_θ(·|s) (without
  replacement), scored by the reward model, and the best and the worst of them form the pair
  (with `k_samples = 2`, exactly two items ordered by the reward model). Positions whose
  candidates all score the same are skipped. The reference log-probs of the sampled items need
  one no-grad forward of π_0 per batch.
- `logged`: the logged item `a_t` is the preferred one when its reward is above the user's mean
  reward over their training rows (strictly); the dispreferred item is drawn once, in `setup`,
  from π_0(·|s_t) with `a_t` excluded (seeded by `train.seed`), so the pairs form a fixed
  offline preference set; π_0's log-probs of both items are cached then (no reference forward
  during training). No reward model is needed.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from recalign.errors import InputError
from recalign.models.heads import window_contexts
from recalign.posttrain.losses import dpo_loss, ipo_loss
from recalign.posttrain.registry import Method, PostTrainContext, register
from recalign.posttrain.scoring import (
    lookup,
    row_table,
    sample_items,
    training_batches,
    training_target_rows,
)


def best_worst(candidates: Tensor, scores: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Order sampled items by a score: `[M, K]` candidates and scores -> `(chosen [M],
    rejected [M], valid [M] bool)`: the highest- and the lowest-scored candidate of each row
    (first one on ties); `valid` is False where every score of the row is equal (no preference)."""
    hi = scores.argmax(dim=1, keepdim=True)
    lo = scores.argmin(dim=1, keepdim=True)
    chosen = candidates.gather(1, hi).squeeze(1)
    rejected = candidates.gather(1, lo).squeeze(1)
    valid = scores.gather(1, hi).squeeze(1) > scores.gather(1, lo).squeeze(1)
    return chosen, rejected, valid


def above_user_mean(rewards: np.ndarray, users: np.ndarray, train_mask: np.ndarray, n_users: int) -> np.ndarray:
    """Boolean per row: its reward is strictly above the mean reward of its user's training rows
    (`train_mask`); False for users with no training row."""
    r = rewards.astype(np.float64)
    s = np.bincount(users[train_mask], weights=r[train_mask], minlength=n_users)
    c = np.bincount(users[train_mask], minlength=n_users)
    mean = np.where(c > 0, s / np.maximum(c, 1), np.inf)
    return r > mean[users]


class Preference(Method):
    """DPO-style methods; subclasses choose the loss."""

    knobs = ("beta", "pairs", "k_samples")
    disable_dropout = True

    pair_loss: ClassVar = staticmethod(dpo_loss)

    def __init__(self, pt=None):
        super().__init__(pt)
        self.needs_reward_model = self.pt.pairs == "rm"

    def prepare(self, ctx: PostTrainContext) -> dict[str, Any]:
        if ctx.reference is None:
            raise InputError(f"{self.name} needs the reference policy π_0")
        if not self.pt.beta > 0:
            raise InputError(f"posttrain.beta must be > 0; got {self.pt.beta}")
        if self.pt.pairs == "rm":
            k = self.pt.k_samples
            if not 2 <= k <= ctx.data.inter.n_items:
                raise InputError(f"posttrain.k_samples must be in [2, n_items={ctx.data.inter.n_items}] "
                                 f"for online {self.name}; got {k}")
            return {"pairs": "rm", "k_samples": k}
        return self._prepare_logged(ctx)

    @torch.no_grad()
    def _prepare_logged(self, ctx: PostTrainContext) -> dict[str, Any]:
        inter, split = ctx.data.inter, ctx.data.split
        targets = training_target_rows(split)
        preferred = above_user_mean(inter.reward, inter.user, split.train_rows(), inter.n_users) & targets
        if not preferred.any():
            raise InputError(f"{self.name} with pairs = logged: no training interaction has a reward above "
                             "its user's mean")
        n = len(inter)
        self._preferred = row_table(n, np.flatnonzero(preferred), torch.ones(int(preferred.sum())), 0.0,
                                    ctx.device, torch.bool)
        self._rejected = torch.zeros(n, dtype=torch.long, device=ctx.device)
        self._ref_w = torch.zeros(n, device=ctx.device)
        self._ref_l = torch.zeros(n, device=ctx.device)
        gen = torch.Generator(device=ctx.device).manual_seed(ctx.cfg.train.seed)
        ref = ctx.reference
        for batch in training_batches(ctx):
            sel = batch.targets > 0
            rows = batch.target_rows[sel]
            logp0 = ref.position_log_probs(batch.items, batch.timestamps, sel)  # [M, N+1]
            tgt = batch.targets[sel].unsqueeze(1)
            excl = logp0.scatter(1, tgt, float("-inf"))  # π_0 without the logged item
            rej = sample_items(excl, 1, replacement=False, generator=gen).squeeze(1)
            self._rejected[rows] = rej
            self._ref_w[rows] = logp0.gather(1, tgt).squeeze(1)
            self._ref_l[rows] = logp0.gather(1, rej.unsqueeze(1)).squeeze(1)
        return {"pairs": "logged", "n_pairs": int(preferred.sum()),
                "pair_frac": float(preferred.sum() / max(1, targets.sum()))}

    def loss(self, model, batch):
        hidden = model.encode(batch.items, batch.timestamps)
        if self.pt.pairs == "logged":
            sel = (batch.targets > 0) & lookup(self._preferred, batch.target_rows)
            rows = batch.target_rows[sel]
            if rows.numel() == 0:
                return model.zero_loss(hidden), {"n_pairs": 0}
            logp = model.log_probs(hidden[sel], window_contexts(batch.items)[sel])
            chosen, rejected = batch.targets[sel], self._rejected[rows]
            ref_w, ref_l = self._ref_w[rows], self._ref_l[rows]
            valid = None
        else:
            sel = batch.targets > 0
            logp = model.log_probs(hidden[sel], window_contexts(batch.items)[sel])  # [M, N+1]
            with torch.no_grad():
                cand = sample_items(logp, self.pt.k_samples, replacement=False)  # [M, K]
                rm = self.ctx.reward_model
                scores = rm.score(rm.encode(batch.items, batch.timestamps)[sel], cand)
                chosen, rejected, valid = best_worst(cand, scores)
                ref = self.ctx.reference
                ref_logp = ref.position_log_probs(batch.items, batch.timestamps, sel)
                ref_w = ref_logp.gather(1, chosen.unsqueeze(1)).squeeze(1)
                ref_l = ref_logp.gather(1, rejected.unsqueeze(1)).squeeze(1)
            if not bool(valid.any()):
                return logp[:, 1:].sum() * 0.0, {"n_pairs": 0}
        logp_w = logp.gather(1, chosen.unsqueeze(1)).squeeze(1)
        logp_l = logp.gather(1, rejected.unsqueeze(1)).squeeze(1)
        if valid is not None:
            logp_w, logp_l, ref_w, ref_l = logp_w[valid], logp_l[valid], ref_w[valid], ref_l[valid]
        loss, diag = self.pair_loss(logp_w, logp_l, ref_w, ref_l, self.pt.beta)
        diag["n_pairs"] = int(logp_w.numel())
        if valid is not None:
            diag["rm_margin"] = float((scores.max(1).values - scores.min(1).values)[valid].mean())
        return loss, diag


@register("dpo")
class DPO(Preference):
    description = "direct preference optimisation vs π_0 on rm (online) or logged pairs (Rafailov et al. 2023)"
    pair_loss = staticmethod(dpo_loss)


@register("ipo")
class IPO(Preference):
    description = "identity preference optimisation, squared margin loss vs π_0 (Azar et al. 2023)"
    pair_loss = staticmethod(ipo_loss)
