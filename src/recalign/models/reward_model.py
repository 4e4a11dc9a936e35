"""A learned reward model `r̂(s, a)`: a copy of the backbone with a scalar head on (context, item).

METHOD.md: "a copy of the backbone with a scalar head on `(s, a)`; MSE for graded rewards, BCE
for binary ones; trained on the training split only". The head is bilinear, so the whole catalog
is scored with one matmul:

    raw(s, a) = h · W · e_a  +  b_a  +  c · h  +  g

- `h = h(s)`: the backbone's hidden state at the position before `a` (the state that predicts
  `a`), `[B, D]`;
- `e_a`: the backbone's (tied) item embedding, `[N+1, D]` (row 0 = padding, never scored);
- `W` `[D, D]` (zero at start), `b_a` an item bias (zero at start), `c · h + g` a context bias and
  the global bias `g` (`g` starts at the training mean reward, or its logit for binary rewards).

The *score* is the predicted expected reward: `raw` for graded rewards, `sigmoid(raw)` (a click
probability) for binary ones. Training uses `raw` with MSE (graded) or BCE-with-logits (binary).

`reference_predictors` gives the trivial predictors a reward model must beat (global, user and
item means over the training rows); `train_reward_model` in `recalign.stages.reward_model` trains one
and reports its error against them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recalign.models.config import ModelConfig
from recalign.models.recommender import SequenceEncoder


def is_binary(rewards: np.ndarray) -> bool:
    """True when every reward is 0 or 1 (then the reward model uses BCE and a sigmoid link)."""
    r = np.asarray(rewards)
    return bool(r.size) and bool(np.all((r == 0) | (r == 1)))


class RewardModel(SequenceEncoder):
    """`r̂(s, a)`: backbone + bilinear scalar head.

    Args:
        cfg: the backbone configuration (the same as the policy's, so that a pretrained
            backbone can be copied in).
        n_items: catalog size N (tokens 1..N).
        binary: rewards are 0/1: BCE loss and a sigmoid link (else MSE and the identity).
        init_mean: the training mean reward; the global bias starts there (its logit if binary).
    """

    def __init__(self, cfg: ModelConfig, n_items: int, binary: bool = False, init_mean: float = 0.0):
        super().__init__(cfg, n_items)
        self.binary = binary
        d = cfg.dim
        self.bilinear = nn.Parameter(torch.zeros(d, d))  # W
        self.item_bias = nn.Parameter(torch.zeros(n_items + 1))  # b_a
        self.context = nn.Linear(d, 1)  # c · h + g
        with torch.no_grad():
            self.context.weight.zero_()
            if binary:
                p = min(max(init_mean, 1e-4), 1 - 1e-4)
                self.context.bias.fill_(math.log(p / (1 - p)))
            else:
                self.context.bias.fill_(init_mean)

    def link(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw head output -> predicted expected reward (sigmoid for binary rewards)."""
        return torch.sigmoid(raw) if self.binary else raw

    def raw_score(self, h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """`h [B, D]`, `items [B, K] long` (tokens >= 1) -> raw head outputs `[B, K] float32`."""
        h = h.float()
        q = h @ self.bilinear.float()  # [B, D]
        e = self.item_weight.float()[items]  # [B, K, D]
        return (q.unsqueeze(1) * e).sum(-1) + self.item_bias.float()[items] + self.context(h).float()

    def raw_all(self, h: torch.Tensor) -> torch.Tensor:
        """`h [B, D]` -> raw head outputs of every token `[B, N+1] float32` (column 0 = -inf)."""
        h = h.float()
        out = (h @ self.bilinear.float()) @ self.item_weight.float().T + self.item_bias.float() + self.context(h).float()
        out[:, 0] = float("-inf")
        return out

    def score(self, h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Predicted expected reward of `items [B, K]` in contexts `h [B, D]` -> `[B, K]`."""
        return self.link(self.raw_score(h, items))

    def score_all(self, h: torch.Tensor) -> torch.Tensor:
        """Predicted expected reward of every token `[B, N+1]`; column 0 (padding) = -inf."""
        out = self.link(self.raw_all(h))
        out[:, 0] = float("-inf")
        return out

    def loss(self, hidden: torch.Tensor, targets: torch.Tensor, rewards: torch.Tensor
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean MSE (graded) or BCE (binary) over the positions with a target.

        Args:
            hidden: `[B, L, D]` states; targets: `[B, L] long` (0 = none); rewards: `[B, L]`.
        Returns:
            loss and diagnostics `mse` (of the expected-reward prediction), `n_targets`.
        """
        sel = targets > 0
        h, t, r = hidden[sel], targets[sel], rewards[sel].float()
        raw = self.raw_score(h, t.unsqueeze(1)).squeeze(1)  # [M]
        if t.numel() == 0:
            zero = raw.sum() * 0.0
            return zero, {"mse": zero.detach(), "n_targets": 0}
        if self.binary:
            loss = F.binary_cross_entropy_with_logits(raw, r)
        else:
            loss = F.mse_loss(raw, r)
        mse = ((self.link(raw.detach()) - r) ** 2).mean()
        return loss, {"mse": mse, "n_targets": t.numel()}


class RewardObjective:
    """The training loop's objective for a reward model: its loss on the training targets."""

    def __call__(self, model: RewardModel, batch) -> tuple[torch.Tensor, dict]:
        hidden = model.encode(batch.items, batch.timestamps)
        return model.loss(hidden, batch.targets, batch.rewards)


def reference_predictors(
    train_users: np.ndarray, train_items: np.ndarray, train_rewards: np.ndarray,
    users: np.ndarray, items: np.ndarray, n_users: int, n_items: int,
) -> dict[str, np.ndarray]:
    """Predictions of the trivial reward predictors, fitted on training rows only.

    `global_mean` (the mean training reward), `user_mean` (the user's mean training reward) and
    `item_mean` (the item's mean training reward); a user or item with no training row gets the
    global mean. `users`, `items`: codes of the rows to predict.
    """
    r = np.asarray(train_rewards, dtype=np.float64)
    g = float(r.mean()) if r.size else 0.0

    def group_mean(keys: np.ndarray, n: int) -> np.ndarray:
        s = np.bincount(keys, weights=r, minlength=n)
        c = np.bincount(keys, minlength=n)
        return np.where(c > 0, s / np.maximum(c, 1), g)

    return {
        "global_mean": np.full(len(users), g),
        "user_mean": group_mean(train_users, n_users)[users],
        "item_mean": group_mean(train_items, n_items)[items],
    }


def prediction_errors(pred: np.ndarray, rewards: np.ndarray, binary: bool) -> dict[str, float]:
    """`rmse` of predicted expected rewards; also `log_loss` when rewards are binary
    (predictions clipped to [1e-6, 1 - 1e-6])."""
    pred = np.asarray(pred, dtype=np.float64)
    r = np.asarray(rewards, dtype=np.float64)
    out = {"rmse": float(np.sqrt(np.mean((pred - r) ** 2))) if r.size else float("nan")}
    if binary:
        p = np.clip(pred, 1e-6, 1 - 1e-6)
        out["log_loss"] = float(-np.mean(r * np.log(p) + (1 - r) * np.log(1 - p))) if r.size else float("nan")
    return out
