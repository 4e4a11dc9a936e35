"""Per-interaction weights of reward-weighted SFT, computed in log space.

The path from a logged reward to the weight that multiplies `-log π_θ(a_t | s_t)`:

    rewards --transform_rewards--> r --log_weights--> log w --normalize--> w  (--ess--> diagnostic)

- `transform_rewards`: `none` (the paper), `standardize` (global z-score), `user_center`
  (subtract each user's mean reward), `rank` / `user_rank` (the reward's mid-rank quantile,
  global or within its user, mapped onto the rewards' range `[r_min, r_max]`).
- `log_weights`: the unnormalised log weight of each kind, e.g. `r/λ` for `exp` (METHOD.md,
  stage 2). Log weights are float64: `r/λ` reaches 1e8 for r = 1e4, λ = 1e-4, and float32 would
  round it to a multiple of 8.
- `normalize`: divides by `Z` (`global`, `batch`, `context`, `none`), optionally clips at
  `max_weight`, and only then leaves log space. `exp` is only applied to `log w − log Z` where
  that is at most `log n` (`global`: `Z` over the set the batch is drawn from; `none`: shifted by
  that set's max; `batch`/`context`: shifted by the group's max), so weights stay finite for any
  `r/λ`.
- `clip_log_weights` (optional, before `normalize`): caps `log w` at the `q`-quantile of the
  training set's log weights plus `log(ratio)`, so no weight exceeds `ratio` times the
  `q`-quantile weight and one outlier cannot dominate `Z` (`max_weight` clips after `Z` and
  cannot repair that).
- `ess`: the effective sample size `(Σw)² / (n·Σw²)` in `(0, 1]`, the diagnostic of how
  aggressive `λ` is.

Masked-out positions (padding) always get weight 0. Every function is pure and works on any
device.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

REWARD_TRANSFORMS = ("none", "standardize", "user_center", "rank", "user_rank")
WEIGHT_KINDS = ("exp", "linear", "adv_exp", "adv_pos", "filter")
NORMS = ("global", "batch", "context", "none")


def _check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")


def _group_ids(ids: Tensor) -> tuple[Tensor, int]:
    """Arbitrary integer ids [n] -> dense ids in [0, g) and the number of groups g."""
    uniq, inverse = torch.unique(ids, return_inverse=True)
    return inverse, int(uniq.numel())


def transform_rewards(rewards: Tensor, users: Tensor | None = None, kind: str = "none") -> Tensor:
    """Transform rewards before weighting (config `posttrain.reward_transform`).

    Args:
        rewards: `[n] float`, the rewards of the training interactions (pass the whole training
            set: `standardize` and `user_center` use statistics over what they are given).
        users: `[n] long`, the user of each interaction; needed by `user_center` only.
        kind: `none` (as the paper), `standardize` (`(r − mean)/std`, population std; if every
            reward is equal the std is 0 and only the mean is subtracted), `user_center`
            (`r − mean_u(r)`, the mean over that user's interactions in `rewards`), `rank` or
            `user_rank` (see `rank_rewards`; `user_rank` needs `users`).

    Returns:
        `[n]` transformed rewards, same dtype as `rewards`; the input is not modified.
    """
    _check_choice("reward_transform", kind, REWARD_TRANSFORMS)
    if kind == "none":
        return rewards.clone()
    if kind in ("rank", "user_rank"):
        return rank_rewards(rewards, users if kind == "user_rank" else None)
    if kind == "standardize":
        r = rewards.double()
        std = r.std(unbiased=False)
        centred = r - r.mean()
        out = centred / std if std > 0 else centred
        return out.to(rewards.dtype)
    if users is None:
        raise ValueError("reward_transform 'user_center' needs the user of each interaction")
    if users.shape != rewards.shape:
        raise ValueError(f"users {tuple(users.shape)} and rewards {tuple(rewards.shape)} differ in shape")
    gid, g = _group_ids(users)
    r = rewards.double()
    sums = torch.zeros(g, dtype=r.dtype, device=r.device).index_add_(0, gid, r)
    counts = torch.bincount(gid, minlength=g).to(r.dtype)
    return (r - (sums / counts)[gid]).to(rewards.dtype)


def rank_rewards(rewards: Tensor, users: Tensor | None = None) -> Tensor:
    """Rewards → their mid-rank quantile, mapped onto the rewards' range (`rank`, `user_rank`).

    `r' = r_min + q·(r_max − r_min)` with `q = (m − 1)/(n − 1)`, `m` the 1-based rank of `r`
    among the `n` rewards (ties get the mean of their ranks), `r_min`/`r_max` the min/max of all
    of `rewards`. Without `users` the ranks are global (`rank`); with them, `m` and `n` are
    within the interaction's user (`user_rank`; a user with one interaction gets `q = 1/2`).
    So `q` is in `[0, 1]` and `r'` in `[r_min, r_max]`: `λ` keeps its meaning on the reward
    scale, but the gap between consecutive distinct rewards no longer depends on their values
    (an outlier is one rank above the next reward). The order of rewards is kept, ties stay
    tied. If every reward is equal, they are returned unchanged.

    Example: `[1, 3, 3, 5, 2]` → mid-ranks `[1, 3.5, 3.5, 5, 2]` → `q = [0, .625, .625, 1, .25]`
    → `[1, 3.5, 3.5, 5, 2]` on the range `[1, 5]`.
    """
    r = rewards.double()
    if r.numel() == 0:
        return rewards.clone()
    lo, hi = r.min(), r.max()
    if not hi > lo:
        return rewards.clone()
    if users is None:
        gid, g = torch.zeros_like(r, dtype=torch.long), 1
    else:
        if users.shape != rewards.shape:
            raise ValueError(f"users {tuple(users.shape)} and rewards {tuple(rewards.shape)} differ in shape")
        gid, g = _group_ids(users)
    # distinct (group, reward) pairs, sorted by group then reward
    pairs, inverse, counts = torch.unique(torch.stack([gid.double(), r], 1), dim=0, return_inverse=True,
                                          return_counts=True)
    counts = counts.double()
    before = torch.cumsum(counts, 0) - counts  # rows in earlier pairs (all groups)
    pair_gid = pairs[:, 0].long()
    n_g = torch.zeros(g, dtype=r.dtype, device=r.device).index_add_(0, pair_gid, counts)
    group_start = torch.cumsum(n_g, 0) - n_g
    below = before - group_start[pair_gid]  # rows of the same group with a smaller reward
    denom = (n_g - 1)[pair_gid]
    q = torch.where(denom > 0, (below + (counts - 1) / 2) / denom.clamp_min(1), torch.full_like(below, 0.5))
    return (lo + q[inverse] * (hi - lo)).to(rewards.dtype)


def log_weights(
    rewards: Tensor,
    kind: str = "exp",
    lam: float = 1.0,
    threshold: float | None = None,
    baseline: Tensor | None = None,
) -> Tensor:
    """Unnormalised log weights `log w` of each interaction (float64, `-inf` = weight 0).

    | kind      | weight `w`             | `log w`                 | method (METHOD.md)   |
    |-----------|------------------------|-------------------------|----------------------|
    | `exp`     | `exp(r/λ)`             | `r/λ`                   | `exp_sft` (the paper)|
    | `linear`  | `r` (0 where `r ≤ 0`)  | `log r`, `-inf` if `r ≤ 0` | `linear_sft`      |
    | `adv_exp` | `exp((r − b)/λ)`       | `(r − b)/λ`             | `asft`               |
    | `adv_pos` | `max(r − b, 0)`        | `log(r − b)`, `-inf` if `r ≤ b` | `asft` (A > 0 only) |
    | `filter`  | `1[r ≥ threshold]`     | `0` or `-inf`           | `filtered_sft`       |

    `linear` cannot express a negative weight (which would push probability away from an item):
    interactions with `r ≤ 0` are dropped, as with `filter`. Use a reward scale where the
    rewards worth imitating are positive (e.g. ratings 1–5).

    Args:
        rewards: `[n] float`, (transformed) rewards.
        kind: one of `exp`, `linear`, `adv_exp`, `adv_pos`, `filter`.
        lam: temperature `λ > 0` (`exp`, `adv_exp`).
        threshold: `filter` keeps `r ≥ threshold`.
        baseline: `[n]` baseline `b(s)` (`adv_exp`, `adv_pos`), e.g. a reward model's value.

    Returns:
        `[n] float64` log weights.
    """
    _check_choice("weight kind", kind, WEIGHT_KINDS)
    r = rewards.double()
    if kind in ("adv_exp", "adv_pos"):
        if baseline is None:
            raise ValueError(f"weight kind {kind!r} needs a baseline b(s)")
        r = r - baseline.double()
    if kind in ("exp", "adv_exp"):
        if not lam > 0:
            raise ValueError(f"temperature lam must be > 0, got {lam}")
        return r / lam
    if kind in ("linear", "adv_pos"):
        return torch.where(r > 0, torch.log(r.clamp_min(torch.finfo(r.dtype).tiny)), -math.inf)
    if threshold is None:
        raise ValueError("weight kind 'filter' needs a threshold")
    return torch.where(r >= threshold, 0.0, -math.inf).to(r.dtype)


def _quantile(x: Tensor, q: float) -> float:
    """Linear-interpolation quantile of a 1-D tensor (numpy's default; no size limit)."""
    v = torch.sort(x).values
    pos = q * (v.numel() - 1)
    i = int(math.floor(pos))
    j = min(i + 1, v.numel() - 1)
    return float(v[i] + (pos - i) * (v[j] - v[i]))


def clip_log_weights(logw: Tensor, quantile: float, ratio: float = 10.0,
                     mask: Tensor | None = None) -> tuple[Tensor, float]:
    """Cap log weights at `c = Q_q(log w) + log(ratio)` before normalisation.

    `Q_q` is the `q`-quantile of the finite log weights (of the masked positions): after the
    clip no weight exceeds `ratio` times the `q`-quantile weight, so a single extreme reward
    cannot dominate `Z`. For `exp` weights `log w = r/λ`, i.e. rewards above
    `Q_q(r) + λ·log(ratio)` are treated as that value. Weights 0 (`-inf`) stay 0.

    Args:
        logw: `[n]` log weights (`-inf` = weight 0).
        quantile: `q` in `[0, 1]`; 0 = no clip.
        ratio: `> 0`, the largest weight as a multiple of the `q`-quantile weight.
        mask: `[n] bool` positions whose log weights define the quantile (None = all).

    Returns:
        `([n] float64 clipped log weights, c)`; `c = inf` when nothing is clipped (`q = 0`, or
        no finite log weight).
    """
    if not 0 <= quantile <= 1:
        raise ValueError(f"log_clip_quantile must be in [0, 1] (0 = off), got {quantile}")
    if not ratio > 0:
        raise ValueError(f"log_clip_ratio must be > 0, got {ratio}")
    lw = logw.double()
    sel = lw if mask is None else lw[mask]
    sel = sel[torch.isfinite(sel)]
    if quantile == 0 or sel.numel() == 0:
        return lw, math.inf
    cap = _quantile(sel, quantile) + math.log(ratio)
    return lw.clamp(max=cap), cap


def global_log_z(logw_all: Tensor, mask: Tensor | None = None) -> float:
    """`log mean(exp(log w))` over the training set: `log Z` of `normalize(norm="global")`.

    Computed with logsumexp, so it is finite for any finite log weights. `-inf` when every
    weight is 0.
    """
    lw = logw_all.double()
    if mask is not None:
        lw = lw[mask]
    if lw.numel() == 0:
        raise ValueError("global_log_z of an empty set of weights")
    return float(torch.logsumexp(lw, 0) - math.log(lw.numel()))


def global_log_max(logw_all: Tensor, mask: Tensor | None = None) -> float:
    """`max(log w)` over the training set: the `log_shift` of `normalize(norm="none")`.

    For `exp` weights this is `r_max/λ`: `none` then computes `exp((r − r_max)/λ)`, the paper's
    raw `exp(r/λ)` times the constant `exp(−r_max/λ)` (log it; it scales the learning rate).
    """
    lw = logw_all.double()
    if mask is not None:
        lw = lw[mask]
    if lw.numel() == 0:
        raise ValueError("global_log_max of an empty set of weights")
    return float(lw.max())


def _safe_exp(logw: Tensor, log_z: Tensor) -> Tensor:
    """`exp(logw − log_z)` with `log_z = -inf` (every weight 0) giving 0 rather than NaN."""
    z = torch.where(torch.isfinite(log_z), log_z, torch.zeros_like(log_z))
    return torch.where(torch.isfinite(log_z), torch.exp(logw - z), torch.zeros_like(logw))


def normalize(
    logw: Tensor,
    mask: Tensor | None = None,
    norm: str = "global",
    context: Tensor | None = None,
    global_log_z: float | None = None,
    log_shift: float | None = None,
    max_weight: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Normalised weights `w = exp(log w − log Z)` (config `posttrain.weight_norm`).

    - `global` (default): `Z` = mean weight over the training set, passed in as
      `global_log_z` (see `global_log_z()`), so the average weight is 1 over the training set
      and the gradient scale matches SFT's.
    - `batch`: self-normalised: the weights of the masked positions average 1 in this batch.
    - `context`: per context id: the weights of each context's positions average 1 (sum to its
      count), so every context counts as much as in SFT whatever its rewards. A context whose
      weights are all 0 (`linear`, `filter`) keeps weights 0.
    - `none`: the raw weights `exp(log w)` as the paper's Algorithm 1 reportedly uses, computed
      as `exp(log w − log_shift)` with `log_shift` fixed over the training set (see
      `global_log_max()`); the factor `exp(log_shift)` is constant, so it only rescales the
      learning rate; log it.

    Args:
        logw: `[n]` log weights from `log_weights` (`-inf` = weight 0).
        mask: `[n] bool`, True at real positions; False positions (padding) get weight 0.
            None = all real.
        norm: `global`, `batch`, `context` or `none`.
        context: `[n]` integer context id of each position (`context` only).
        global_log_z: `log Z` over the training set (`global` only).
        log_shift: the constant `max log w` over the training set (`none` only).
        max_weight: clip the normalised weights at this value (0 = no clip).
        dtype: dtype of the returned weights.

    Returns:
        `[n]` finite, non-negative weights in `dtype`.
    """
    _check_choice("weight_norm", norm, NORMS)
    if max_weight < 0:
        raise ValueError(f"max_weight must be >= 0 (0 = no clip), got {max_weight}")
    lw = logw.double()
    if mask is None:
        mask = torch.ones_like(lw, dtype=torch.bool)
    lw = torch.where(mask, lw, -math.inf)

    if norm == "global":
        if global_log_z is None:
            raise ValueError("weight_norm 'global' needs global_log_z (log mean weight over the training set)")
        w = _safe_exp(lw, torch.tensor(global_log_z, dtype=lw.dtype, device=lw.device))
    elif norm == "none":
        if log_shift is None:
            raise ValueError("weight_norm 'none' needs log_shift (max log weight over the training set)")
        w = _safe_exp(lw, torch.tensor(log_shift, dtype=lw.dtype, device=lw.device))
    else:
        # batch = one context holding every position. Shift by the group's max (so the largest
        # exp is 1) and divide in linear space: exp(lw − max) is exact where exp(lw − log Z)
        # would lose the precision of a large `lw` (1e8 for r = 1e4, λ = 1e-4).
        if norm == "batch":
            gid, g = torch.zeros_like(lw, dtype=torch.long), 1
        else:
            if context is None:
                raise ValueError("weight_norm 'context' needs the context id of each position")
            if context.shape != lw.shape:
                raise ValueError(f"context {tuple(context.shape)} and weights {tuple(lw.shape)} differ in shape")
            gid, g = _group_ids(context)
        gmax = torch.full((g,), -math.inf, dtype=lw.dtype, device=lw.device)
        gmax = gmax.scatter_reduce(0, gid, lw, reduce="amax", include_self=True)
        gmax = torch.where(torch.isfinite(gmax), gmax, torch.zeros_like(gmax))
        shifted = torch.exp(lw - gmax[gid])  # in [0, 1]; 1 at each group's max
        gsum = torch.zeros(g, dtype=lw.dtype, device=lw.device).index_add_(0, gid, shifted)
        gcount = torch.zeros(g, dtype=lw.dtype, device=lw.device).index_add_(0, gid, mask.to(lw.dtype))
        # gsum >= 1 in a group with a positive weight; 0 (weights stay 0) in one without.
        scale = torch.where(gsum > 0, gcount / gsum.clamp_min(torch.finfo(lw.dtype).tiny), torch.zeros_like(gsum))
        w = shifted * scale[gid]

    if max_weight > 0:
        w = w.clamp(max=max_weight)
    return w.to(dtype)


def ess(w: Tensor, mask: Tensor | None = None) -> float:
    """Effective sample size fraction `(Σw)² / (n·Σw²)` of non-negative weights, in `(0, 1]`.

    1 = uniform weights (SFT); `1/n` = a single position carries all the weight. `n` counts the
    masked positions. Scale-invariant, computed after dividing by `max w` so it never overflows.
    Returns 0.0 when every weight is 0.
    """
    x = w.double()
    if mask is not None:
        x = x[mask]
    n = x.numel()
    if n == 0:
        raise ValueError("ess of an empty set of weights")
    top = x.max()
    if not top > 0:
        return 0.0
    x = x / top
    return float(x.sum() ** 2 / (n * (x * x).sum()))
