"""Discrete conservative Q-learning (`cql`; Kumar et al. 2020, CQL(H)) with the policy's logits
as Q-values: `Q(s, ·) = model.logits(h(s))`, so the trained model is ranked exactly as before.

At every scored position t of a window (`losses.cql_loss`, `γ = posttrain.gamma`,
`α = posttrain.cql_alpha`):

- TD target `y_t = r_t + γ·(1 − done_t)·max_a Q(s_{t+1}, a)`, where `s_{t+1}` is the next
  position of the same window (the context after `a_t` was consumed) and the max is detached
  (the current network is its own target network; there is no lagged copy). The last
  transition of a window is treated as terminal: its next state begins the next window, which
  the batch does not hold (a truncation of one transition in `max_len`, like the end of a
  user's training log). `γ = 0` is the contextual bandit `y_t = r_t`.
- conservative term `α·(logsumexp_a Q(s_t, a) − Q(s_t, a_t))`: the next-item NLL, pushing down
  the items the log does not support.

`r_t` is the logged reward after `posttrain.reward_transform`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from recalign.errors import InputError
from recalign.models.heads import window_contexts
from recalign.posttrain.losses import cql_loss
from recalign.posttrain.registry import Method, PostTrainContext, register
from recalign.posttrain.scoring import lookup, reward_table


def next_state_max(q_max: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Bootstrap values along each window.

    Args:
        q_max: `[B, L]` `max_a Q(s_t, a)` at each position (any value where there is no target).
        targets: `[B, L] long`, 0 where a position has no target.
    Returns:
        `(q_next [B, L], done [B, L] bool)`: `q_next[b, t] = q_max[b, t + 1]` (0 at the last
        position), `done[b, t]` True where position t + 1 has no target (or t = L − 1).
    """
    has_next = torch.zeros_like(targets, dtype=torch.bool)
    has_next[:, :-1] = targets[:, 1:] > 0
    q_next = torch.zeros_like(q_max)
    q_next[:, :-1] = q_max[:, 1:]
    q_next = torch.where(has_next, q_next, torch.zeros_like(q_next))
    return q_next, ~has_next


@register("cql")
class CQL(Method):
    description = "conservative Q-learning with Q = logits: TD along the sequence (γ) + α·(logsumexp Q − Q(a_logged))"
    knobs = ("gamma", "cql_alpha", "reward_transform")

    def prepare(self, ctx: PostTrainContext) -> dict[str, Any]:
        if not 0 <= self.pt.gamma < 1:
            raise InputError(f"posttrain.gamma must be in [0, 1); got {self.pt.gamma}")
        if self.pt.cql_alpha < 0:
            raise InputError(f"posttrain.cql_alpha must be >= 0; got {self.pt.cql_alpha}")
        self._reward, rows = reward_table(ctx, self.reward_transform)
        r = self._reward[torch.as_tensor(rows, device=self._reward.device)]
        return {"gamma": self.pt.gamma, "cql_alpha": self.pt.cql_alpha, "reward_mean": float(r.mean())}

    def loss(self, model, batch):
        sel = batch.targets > 0
        hidden = model.encode(batch.items, batch.timestamps)
        q = model.logits(hidden[sel], window_contexts(batch.items)[sel]).float()  # [M, N+1], column 0 = -inf
        rewards = lookup(self._reward, batch.target_rows)[sel]
        q_next = done = None
        if self.pt.gamma > 0:
            q_max = torch.zeros(batch.targets.shape, device=q.device)
            q_max[sel] = q.detach().max(dim=1).values
            q_next_full, done_full = next_state_max(q_max, batch.targets)
            q_next, done = q_next_full[sel], done_full[sel]
        loss, diag = cql_loss(q, batch.targets[sel], rewards, q_next, done, self.pt.gamma, self.pt.cql_alpha)
        return loss, diag
