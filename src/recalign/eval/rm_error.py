"""Where a learned reward model is wrong: its error against the simulator's true reward r*.

METHOD.md ("Worlds"): the case against RLHF is that a reward model learned from logged feedback
is unreliable where the policy goes. On the simulator that can be measured, against the true
expected reward `r*(s, a)` (never against the noisy observation):

- `error_by_propensity`: the error on held-out logged items, by decile of the logging
  propensity of the item in its context (rarely logged items are where a reward model has seen
  little data);
- `rm_topk_error`: the error on the items a policy's top-k list contains, in the contexts the
  policy is judged on (over-optimisation: the reward model's error on a `ppo` policy's top-10
  against its error on `sft`'s).

Error = prediction − r*: `mean_error` is its mean (> 0: the reward model over-rates the
items), `rmse` its root mean square. This module only measures: it is handed the reward model,
the simulator and the contexts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from recalign.data.sequences import SequenceData
from recalign.data.split import Targets
from recalign.errors import InputError
from recalign.eval.judge import SeqJudge
from recalign.models.reward_model import RewardModel


def error_summary(pred: np.ndarray, true: np.ndarray) -> dict[str, Any]:
    """`{"n", "rmse", "mean_error"}` of `pred − true` over all entries (NaN when empty)."""
    d = np.asarray(pred, dtype=np.float64).ravel() - np.asarray(true, dtype=np.float64).ravel()
    if not d.size:
        return {"n": 0, "rmse": float("nan"), "mean_error": float("nan")}
    return {"n": int(d.size), "rmse": float(np.sqrt(np.mean(d * d))), "mean_error": float(d.mean())}


def error_by_decile(pred: np.ndarray, true: np.ndarray, propensity: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    """The error `pred − true` in `bins` groups of equal size (±1) by increasing `propensity`
    (ties broken by position, so equal propensities may fall in two groups): per group
    `{"decile" (1 = the rarest), "propensity_lo", "propensity_hi", "n", "rmse", "mean_error"}`.
    Fewer rows than `bins`: one group per row."""
    pred, true, prop = (np.asarray(x, dtype=np.float64).ravel() for x in (pred, true, propensity))
    if not pred.size == true.size == prop.size:
        raise InputError(f"pred, true and propensity need the same size; got {pred.size}, {true.size}, {prop.size}")
    if bins < 1:
        raise InputError(f"bins must be >= 1, got {bins}")
    order = np.argsort(prop, kind="stable")
    out = []
    for i, rows in enumerate(g for g in np.array_split(order, min(bins, max(1, prop.size))) if g.size):
        out.append({"decile": i + 1, "propensity_lo": float(prop[rows].min()),
                    "propensity_hi": float(prop[rows].max()), **error_summary(pred[rows], true[rows])})
    return out


@torch.no_grad()
def rm_predictions(rm: RewardModel, seq: SequenceData, targets: Targets, items: np.ndarray,
                   batch_size: int = 512) -> np.ndarray:
    """`[n_targets, k]`: the reward model's predicted reward of item codes `items [n_targets, k]`
    (0-based) in each target's context."""
    items = np.asarray(items, dtype=np.int64).reshape(len(targets), -1)
    judge, out = SeqJudge(rm), []
    was_training = rm.training
    rm.eval()
    for lo in range(0, len(targets), batch_size):
        idx = np.arange(lo, min(len(targets), lo + batch_size))
        tokens = torch.from_numpy(items[idx] + 1)
        out.append(judge.score_lists(targets.users[idx], tokens, seq.context_batch(targets, idx)).float().cpu().numpy())
    rm.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, items.shape[1]))


def rm_topk_error(rm: RewardModel, simulator: Any, seq: SequenceData, targets: Targets, topk: np.ndarray,
                  batch_size: int = 512) -> dict[str, Any]:
    """The reward model's error against r* on a policy's lists `topk [n_targets, k]` (item codes)
    in the targets' contexts: `error_summary` over every (context, listed item)."""
    topk = np.asarray(topk, dtype=np.int64).reshape(len(targets), -1)
    pred = rm_predictions(rm, seq, targets, topk, batch_size)
    true = simulator.true_reward(targets.users, topk, step=seq.context_steps(targets))
    return error_summary(pred, true)


def error_by_propensity(rm: RewardModel, simulator: Any, seq: SequenceData, targets: Targets, bins: int = 10,
                        batch_size: int = 512) -> dict[str, Any]:
    """The reward model's error against r* on the targets' own (logged, held-out) items, overall
    and by decile of their logging propensity in their context (`Simulator.logging_probs`: the
    policy that generated the logs, π_β, or π_sel with outcome selection; the probability that
    `sim.log_propensity` writes): `{"overall": error_summary, "by_propensity_decile": [...]}`."""
    items = (seq.tokens[targets.target_row] - 1)[:, None]
    steps = seq.context_steps(targets)
    pred = rm_predictions(rm, seq, targets, items, batch_size)[:, 0]
    true = simulator.true_reward(targets.users, items, step=steps)[:, 0]
    prop = simulator.logging_probs(targets.users, items, step=steps)[:, 0]
    return {"overall": error_summary(pred, true), "by_propensity_decile": error_by_decile(pred, true, prop, bins)}
