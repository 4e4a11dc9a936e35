"""The held-out judge: an ensemble of reward models that scores a policy's recommendations.

On real data nobody knows the reward of an item the user was never shown, so METHOD.md's
reward-aware evaluation adds a proxy: the mean predicted reward of each policy's top-k list
under `K` reward models (`eval.judges`) that

- are trained on *every* logged interaction, validation and test targets included (so each
  judge has seen the held-out behaviour it is asked about), and
- are never used to train a policy (so no policy was optimised against them, unlike the reward
  model `ppo` and online `dpo` climb: a policy that hacks its own reward model is not rewarded
  by an independent judge for it).

The judges differ by seed (initialisation and batch order). Their spread (the standard deviation
of the K per-judge means) says how much the verdict depends on which judge you ask; a difference
between two policies smaller than that spread is not one to trust. A judge is still a learned
model: it shares the logging data's blind spots (items rarely logged in a context are scored by
extrapolation), which is why the simulator's oracle remains the final word where it exists.

Judges train for a fixed `eval.judge_epochs` (their data has no held-out part to stop on) and
keep their last weights; `stages/judge.py` trains them (through the one reward-model trainer).
This module only measures: it scores a policy's lists with judges it is given.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from recalign.config import EvalConfig
from recalign.data.sequences import SequenceData
from recalign.data.split import Targets
from recalign.eval.evaluate import queries_and_exclusions
from recalign.eval.metrics import topk_items
from recalign.models.recommender import Recommender
from recalign.models.reward_model import RewardModel


@torch.no_grad()
def judge_topk(judges: list[RewardModel], model: Recommender, seq: SequenceData, targets: Targets,
               cfg: EvalConfig, k: int = 10) -> np.ndarray:
    """`[n_judges, n_targets]`: each judge's mean predicted reward of `model`'s top-`k` list
    (seen items excluded when `cfg.mask_seen`) in the context of each target."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    weight = model.item_weight.float()
    out = [[] for _ in judges]
    n = len(targets)
    for lo in range(0, n, cfg.batch_size):
        idx = np.arange(lo, min(n, lo + cfg.batch_size))
        q, exclude = queries_and_exclusions(model, seq, targets, idx, device, cfg.mask_seen)
        _, tokens = topk_items(q, weight, k, exclude=exclude, item_chunk=cfg.item_chunk)
        items, ts = seq.context_batch(targets, idx)
        for j, judge in enumerate(judges):
            jdev = next(judge.parameters()).device
            h = judge.last_hidden(items.to(jdev), ts.to(jdev))
            out[j].append(judge.score(h, tokens.to(jdev)).float().mean(1).cpu().numpy())
    if was_training:
        model.train()
    return np.stack([np.concatenate(v) if v else np.zeros(0) for v in out])


def judge_summary(values: np.ndarray) -> dict[str, Any]:
    """`values [n_judges, n_users]` -> the ensemble's mean, the spread (std of the per-judge
    means, 0 for one judge) and each judge's mean."""
    per_judge = values.mean(axis=1)
    return {"judge_value": float(per_judge.mean()),
            "judge_spread": float(per_judge.std(ddof=1)) if per_judge.size > 1 else 0.0,
            "judge_values": [float(v) for v in per_judge]}
