"""The held-out judges: models of several families that score a policy's recommendations.

On real data nobody knows the reward of an item the user was never shown, so METHOD.md's
reward-aware evaluation adds a proxy: the mean predicted reward of each policy's top-k list
under judges that

- are trained on *every* logged interaction, validation and test targets included (so each
  judge has seen the held-out behaviour it is asked about), and
- are never used to train a policy (so no policy was optimised against them, unlike the reward
  model `ppo` and online `dpo` climb).

A judge that shares the reward model's architecture and data also shares its blind spots, so
"ppo pleases the judges" would not be independent evidence. Hence several families
(`eval.judge_families`), `eval.judges` judges each (differing by seed):

- `seq`: sequence reward models, the reward model's own kind (`SeqJudge`), scoring an item in
  the context of each test target;
- `mf`: biased matrix factorisation `μ + b_u + b_a + p_u · q_a` (`models/mf.py`, `MFJudge`),
  scoring an item for the target's *user*, whatever the context.

Every judge is a `ListJudge`: `score_lists(users, items [B, k], contexts) -> [B, k]`; a bare
`RewardModel` is adapted (`as_judge`). `stages/judge.py` trains them and validates each family
out of fold against the global-, user- and item-mean predictors; a family that does not beat
the best of them does not count. `judge_summary` reports each family (its mean and spread: the
std of its judges' means), `judges_agree` says whether the validated families agree on a
method's Δ vs `sft`: a method "pleases the judges" only when they all do. A judge is still a
learned model: every family extrapolates to items rarely logged for a user, which is why the
simulator's oracle remains the final word where it exists.

This module only measures: it scores a policy's lists with judges it is given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from recalign.config import EvalConfig
from recalign.data.sequences import SequenceData
from recalign.data.split import Targets
from recalign.eval.evaluate import queries_and_exclusions
from recalign.eval.metrics import topk_items
from recalign.models.mf import MatrixFactorization
from recalign.models.recommender import Recommender
from recalign.models.reward_model import RewardModel


class ListJudge(Protocol):
    """A judge of any family: the predicted expected reward of lists of items for users in contexts.

    `score_lists(users [B] codes, items [B, k] tokens (>= 1), contexts (items [B, L], timestamps
    [B, L]) left-padded)` -> `[B, k]`. A sequence judge reads the context; a user-level judge
    (matrix factorisation) reads only the user. `family` names the family; `validation` holds its
    out-of-fold errors (`stages/judge.py`), None when not validated."""

    family: str
    validation: dict[str, Any] | None

    def score_lists(self, users: np.ndarray, items: torch.Tensor,
                    contexts: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor: ...


class SeqJudge:
    """A sequence reward model as a `ListJudge`: scores items in the context's last hidden state."""

    family = "seq"

    def __init__(self, rm: RewardModel, validation: dict[str, Any] | None = None):
        self.rm, self.validation = rm, validation

    def score_lists(self, users: np.ndarray, items: torch.Tensor,
                    contexts: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        dev = next(self.rm.parameters()).device
        h = self.rm.last_hidden(contexts[0].to(dev), contexts[1].to(dev))
        return self.rm.score(h, items.to(dev))


class MFJudge:
    """A matrix-factorisation regressor as a `ListJudge`: `r̂(u, a)`, whatever the context."""

    family = "mf"

    def __init__(self, mf: MatrixFactorization, validation: dict[str, Any] | None = None):
        self.mf, self.validation = mf, validation

    def score_lists(self, users: np.ndarray, items: torch.Tensor,
                    contexts: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        u = torch.as_tensor(np.asarray(users), dtype=torch.long).unsqueeze(1)
        return self.mf.predict(u, items.cpu().long() - 1)


def as_judge(judge: RewardModel | ListJudge) -> ListJudge:
    """A bare sequence reward model becomes a `SeqJudge`; a `ListJudge` is returned as it is."""
    return SeqJudge(judge) if isinstance(judge, RewardModel) else judge


@torch.no_grad()
def topk_lists(model: Recommender, seq: SequenceData, targets: Targets, cfg: EvalConfig, k: int = 10) -> np.ndarray:
    """`[n_targets, k]` item codes: `model`'s top-`k` list in the context of each target (seen
    items excluded when `cfg.mask_seen`), ranked batch by batch of `cfg.batch_size` as
    `evaluate.evaluate_targets` ranks (its `_top10` are these lists for `k` = 10: what a
    checkpoint saves as `top10`)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    weight = model.item_weight.float()
    out = []
    n = len(targets)
    for lo in range(0, n, cfg.batch_size):
        idx = np.arange(lo, min(n, lo + cfg.batch_size))
        q, exclude, offset = queries_and_exclusions(model, seq, targets, idx, device, cfg.mask_seen)
        _, tokens = topk_items(q, weight, k, exclude=exclude, offset=offset, item_chunk=cfg.item_chunk,
                               temperature=model.cfg.temperature)
        out.append(tokens.cpu().numpy() - 1)
    if was_training:
        model.train()
    return np.concatenate(out).astype(np.int64) if out else np.zeros((0, k), dtype=np.int64)


@torch.no_grad()
def judge_lists(judges: Sequence[RewardModel | ListJudge], seq: SequenceData, targets: Targets, codes: np.ndarray,
                batch_size: int) -> np.ndarray:
    """`[n_judges, n_targets]`: each judge's mean predicted reward of the given lists (`codes
    [n_targets, k]` item codes, in target order: `topk_lists`, or the `top10` a checkpoint
    saved) in the context of each target (for a user-level judge: for the target's user), in
    batches of `batch_size` targets. The one scoring path: `judge_topk` is this on
    `topk_lists`."""
    judges = [as_judge(j) for j in judges]
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] != len(targets):
        raise ValueError(f"judge_lists: {codes.shape} lists for {len(targets)} targets (want [n_targets, k])")
    out = [[] for _ in judges]
    n = len(targets)
    for lo in range(0, n, batch_size):
        idx = np.arange(lo, min(n, lo + batch_size))
        tokens = torch.from_numpy(codes[idx].astype(np.int64) + 1)
        contexts = seq.context_batch(targets, idx)
        for j, judge in enumerate(judges):
            out[j].append(judge.score_lists(targets.users[idx], tokens, contexts).float().mean(1).cpu().numpy())
    return np.stack([np.concatenate(v) if v else np.zeros(0) for v in out])


def judge_topk(judges: Sequence[RewardModel | ListJudge], model: Recommender, seq: SequenceData,
               targets: Targets, cfg: EvalConfig, k: int = 10) -> np.ndarray:
    """`[n_judges, n_targets]`: each judge's mean predicted reward of `model`'s top-`k` list
    (seen items excluded when `cfg.mask_seen`) in the context of each target (for a user-level
    judge: for the target's user). Judges of any family (`ListJudge`, or bare reward models):
    `judge_lists` on `topk_lists`."""
    return judge_lists(judges, seq, targets, topk_lists(model, seq, targets, cfg, k), cfg.batch_size)


@torch.no_grad()
def judge_targets(judge: ListJudge, seq: SequenceData, targets: Targets, batch_size: int = 512) -> np.ndarray:
    """`[n_targets]`: the judge's predicted reward of each target's own item in its context (for
    out-of-fold validation against the logged reward)."""
    out = []
    for lo in range(0, len(targets), batch_size):
        idx = np.arange(lo, min(len(targets), lo + batch_size))
        tokens, _ = seq.target_tokens(targets, idx)
        out.append(judge.score_lists(targets.users[idx], tokens.unsqueeze(1), seq.context_batch(targets, idx))
                   .float()[:, 0].cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def _ensemble(values: np.ndarray) -> dict[str, Any]:
    per_judge = values.mean(axis=1)
    return {"judge_value": float(per_judge.mean()),
            "judge_spread": float(per_judge.std(ddof=1)) if per_judge.size > 1 else 0.0,
            "judge_values": [float(v) for v in per_judge]}


def judge_summary(values: np.ndarray, families: Sequence[str] | None = None,
                  validated: Mapping[str, bool] | None = None) -> dict[str, Any]:
    """`values [n_judges, n_users]` -> the ensemble's mean, the spread (std of the per-judge
    means, 0 for one judge) and each judge's mean.

    With `families` (one name per judge row): `judge_value`, `judge_spread`, `judge_values` are the
    `seq` family's (absent without one), and every family `f` adds `judge/f` (its mean),
    `judge/f_spread` and, with `validated`, `judge/f_validated` (it beat the mean predictors out
    of fold: only then does it count in `judges_agree`)."""
    if families is None:
        return _ensemble(values)
    fams = np.asarray(list(families))
    out: dict[str, Any] = {}
    for f in dict.fromkeys(families):
        s = _ensemble(values[fams == f])
        if f == "seq":
            out.update(s)
        out[f"judge/{f}"], out[f"judge/{f}_spread"] = s["judge_value"], s["judge_spread"]
        if validated is not None:
            out[f"judge/{f}_validated"] = bool(validated.get(f, False))
    return out


def judges_agree(deltas: Mapping[str, float | Mapping[str, float] | None],
                 validated: Mapping[str, bool] | None = None) -> str:
    """Whether the judge families agree on a method's Δ vs `sft` (`deltas[family]`: a number, or
    an interval `{"mean", "lo", "hi"}`); only validated families count (all, without `validated`).

    "up" (it pleases the judges) when every counted family's Δ is > 0 — with intervals, when
    every interval lies above 0; "down" symmetrically; "disagree" when the families' signs
    differ; "inconclusive" when the signs agree but some interval covers 0 (or is undefined);
    "no validated judge" when no family counts."""
    counted = {f: d for f, d in deltas.items() if d is not None and (validated is None or validated.get(f, False))}
    if not counted:
        return "no validated judge"
    means = [d["mean"] if isinstance(d, Mapping) else float(d) for d in counted.values()]
    if not (all(m > 0 for m in means) or all(m < 0 for m in means)):
        return "disagree"
    up = means[0] > 0
    for d in counted.values():
        if isinstance(d, Mapping):
            lo, hi = d.get("lo", math.nan), d.get("hi", math.nan)
            if math.isnan(lo) or math.isnan(hi) or (lo <= 0 if up else hi >= 0):
                return "inconclusive"
    return "up" if up else "down"
