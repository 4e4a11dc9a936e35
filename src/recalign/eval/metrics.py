"""Full-catalog ranking and the metrics computed from it.

Two layers:

1. **Ranking** (torch): `target_ranks` gives the 1-based rank of each query's held-out item
   among *all* items of the catalog, and `topk_items` the top-k list. Items are scored in chunks
   of `item_chunk` with `query @ item_weight[chunk].T`, so a catalog of a million items never
   materialises a `[U, N]` score matrix; exclusion of already-seen items is applied per chunk
   with one vectorised index operation (no Python loop over users or items).
2. **Metrics** (numpy, float64): pure functions of the ranks. Each `hit_rate`, `ndcg`, `mrr`,
   `mrr_at` returns the per-user array (for paired bootstraps over users); `ranking_metrics` and
   `reward_metrics` average them into the dictionaries that runs log and reports print.

Token space: item code `c` is token `c + 1`; token 0 is padding. `item_weight` is the tied
embedding table `[N + 1, D]` whose row 0 (padding) is never a candidate.

Ranking is over the full catalog, never over sampled negatives (Krichene & Rendle, "On Sampled
Metrics for Item Recommendation", KDD 2020).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

DEFAULT_KS: tuple[int, ...] = (10, 50, 200)
DEFAULT_ITEM_CHUNK = 262144

Exclude = tuple[Tensor, Tensor]
Offset = tuple[Tensor, Tensor, float]


# ---------------------------------------------------------------------------------------------
# Ranking over the full catalog
# ---------------------------------------------------------------------------------------------


def _check_ranking_inputs(query: Tensor, item_weight: Tensor, item_chunk: int) -> int:
    """Validate shapes; returns N, the number of items (padding excluded)."""
    if query.dim() != 2:
        raise ValueError(f"query must be [U, D], got shape {tuple(query.shape)}")
    if item_weight.dim() != 2 or item_weight.shape[1] != query.shape[1]:
        raise ValueError(
            f"item_weight must be [N + 1, D] with D = {query.shape[1]}, "
            f"got shape {tuple(item_weight.shape)}"
        )
    n_items = item_weight.shape[0] - 1
    if n_items < 1:
        raise ValueError("item_weight has no item rows besides padding (row 0)")
    if not query.is_floating_point():
        raise ValueError(f"query must be a floating-point tensor, got {query.dtype}")
    if int(item_chunk) < 1:
        raise ValueError(f"item_chunk must be >= 1, got {item_chunk}")
    if not bool(torch.isfinite(query).all()):
        raise ValueError("query has NaN or infinite values")
    return n_items


def _csr_pairs(
    indptr: Tensor,
    indices: Tensor,
    n_users: int,
    n_items: int,
    device: torch.device,
    name: str,
) -> tuple[Tensor, Tensor]:
    """Validate a CSR token list and flatten it into `(rows, tokens)` sorted by token, padding
    dropped.

    The tokens of row `u` are `indices[indptr[u]:indptr[u + 1]]`. Sorting by token lets each
    item chunk take its pairs as one contiguous slice. `name` (the argument, e.g. "exclude")
    prefixes the error messages.
    """
    indptr = torch.as_tensor(indptr).to(device=device, dtype=torch.long)
    indices = torch.as_tensor(indices).to(device=device, dtype=torch.long)
    if indptr.dim() != 1 or indptr.numel() != n_users + 1:
        raise ValueError(
            f"{name} indptr must have U + 1 = {n_users + 1} entries, got {tuple(indptr.shape)}"
        )
    if indices.dim() != 1:
        raise ValueError(f"{name} indices must be 1-D, got shape {tuple(indices.shape)}")
    counts = indptr[1:] - indptr[:-1]
    if int(indptr[0]) != 0 or int(indptr[-1]) != indices.numel() or bool((counts < 0).any()):
        raise ValueError(
            f"{name} indptr must start at 0, be non-decreasing and end at len(indices) "
            f"= {indices.numel()}"
        )
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) > n_items):
        raise ValueError(f"{name} indices must be tokens in 0..{n_items} (0 = padding, ignored)")
    rows = torch.repeat_interleave(torch.arange(n_users, device=device), counts)
    keep = indices > 0
    rows, tokens = rows[keep], indices[keep]
    order = torch.argsort(tokens, stable=True)
    return rows[order], tokens[order]


def _exclusion_pairs(
    exclude: Exclude | None, n_users: int, n_items: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """The `(rows, tokens)` pairs of `_csr_pairs` for a CSR exclusion list
    `exclude = (indptr [U + 1] long, indices [nnz] long)`, or none."""
    if exclude is None:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    indptr, indices = exclude
    return _csr_pairs(indptr, indices, n_users, n_items, device, "exclude")


def _candidates_left(ex_rows: Tensor, ex_tokens: Tensor, n_users: int, n_items: int) -> Tensor:
    """`[U] long`: the items each row still ranks after its (distinct) exclusions."""
    distinct = torch.unique(ex_rows * (n_items + 1) + ex_tokens)
    return n_items - torch.bincount(distinct // (n_items + 1), minlength=n_users)


def candidates_left(exclude: Exclude | None, n_users: int, n_items: int) -> Tensor:
    """`[U] long`: the candidates each row keeps under the CSR exclusion list `exclude` (an
    item listed twice counts once; token 0 ignored): the number `topk_items` checks against k."""
    rows, tokens = _exclusion_pairs(exclude, n_users, n_items, torch.device("cpu"))
    return _candidates_left(rows, tokens, n_users, n_items)


def _offset_pairs(
    offset: Offset | None, n_users: int, n_items: int, device: torch.device
) -> tuple[Tensor, Tensor, float]:
    """The distinct `(rows, tokens)` pairs of a CSR offset list
    `offset = (indptr [U + 1] long, indices [nnz] long, value)`, sorted by token, and the value.

    Duplicates of a token in a row are kept once (the offset is a set membership). No pairs when
    `offset` is None or its value is 0, so that these rank exactly as without an offset.
    """
    empty = torch.zeros(0, dtype=torch.long, device=device)
    if offset is None:
        return empty, empty, 0.0
    if len(offset) != 3:
        raise ValueError(f"offset must be (indptr, indices, value), got {len(offset)} entries")
    indptr, indices, value = offset
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"offset value must be finite, got {value}")
    rows, tokens = _csr_pairs(indptr, indices, n_users, n_items, device, "offset")
    if value == 0.0 or rows.numel() == 0:
        return empty, empty, 0.0
    key = torch.unique(tokens * n_users + rows)  # sorted by token, then row; duplicates once
    return key % n_users, key // n_users, value


def _chunk_bounds(n_items: int, item_chunk: int) -> list[tuple[int, int]]:
    """Token ranges `[start, end)` covering tokens 1..N (token 0, padding, is never scored)."""
    return [(s, min(s + item_chunk, n_items + 1)) for s in range(1, n_items + 1, item_chunk)]


def _pair_slices(tokens_sorted: Tensor, bounds: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """For each chunk, the slice of the token-sorted exclusion pairs that falls inside it."""
    edges = torch.tensor([s for s, _ in bounds] + [bounds[-1][1]], device=tokens_sorted.device)
    pos = torch.searchsorted(tokens_sorted, edges).tolist()
    return list(zip(pos[:-1], pos[1:]))


@torch.no_grad()
def target_ranks(
    query: Tensor,
    item_weight: Tensor,
    targets: Tensor,
    exclude: Exclude | None = None,
    item_chunk: int = DEFAULT_ITEM_CHUNK,
    temperature: float = 1.0,
    offset: Offset | None = None,
) -> Tensor:
    """1-based rank of each target among all candidate items, ties counted against the target.

    Args:
        query: `[U, D] float`, one query vector per user (the model's last hidden state). Scores
            are computed in its dtype and on its device.
        item_weight: `[N + 1, D]`, the tied item embedding table; row 0 is padding and is never a
            candidate. It may live on another device: each chunk is moved to `query`'s.
        targets: `[U] long`, the held-out item of each user as a token in `1..N`.
        exclude: optional CSR pair `(indptr [U + 1] long, indices [nnz] long)` listing, per user,
            tokens that are not candidates (already-seen items). Token 0 entries are ignored. The
            target itself is never excluded, even when it appears in the list.
        item_chunk: items scored per matmul; memory is about
            `U * (item_chunk + #distinct targets) * (dtype bytes + 1)` bytes.
        temperature: scores are divided by it (> 0). Ranks do not depend on a positive
            temperature except through floating-point rounding; it is accepted so that a caller
            that scores with a temperature can pass the same value.
        offset: optional CSR triple `(indptr [U + 1] long, indices [nnz] long, value)` listing,
            per user, tokens whose score gets the finite `value` added after the division by
            the temperature (e.g. a learned logit for the items already in the user's context).
            Token 0 entries are ignored and a token listed twice gets `value` once. The target
            gets it too when it is in its user's list; `exclude` still applies on top. `None` or
            a value of 0 ranks exactly as without it.

    Returns:
        `[U] long` on `query.device`: with
        `s_j = query[u] . item_weight[j] / temperature + value * 1[j in offset list of u]`,

            rank_u = 1 + #{j candidate, j != t_u : not (s_j < s_t)}

        i.e. every other candidate scoring higher than *or equal to* the target (or NaN, which
        only an overflow in low precision can produce) is ranked above it.

    Why ties count against the target (pessimistic ranking): a model that gives every item the
    same score (a zero query, identical item rows, a collapsed model) must get the worst rank,
    not rank 1. Optimistic tie-breaking would hand such a model a perfect HR/NDCG, and random
    tie-breaking would hand it the score of a random ranker; with pessimistic ties a model earns
    a good rank only by scoring the target strictly above the other items.

    The target's score is taken from the same matmul call as the items it is compared with, so
    that exact ties stay exact (see `_chunk_beats`).
    """
    n_items = _check_ranking_inputs(query, item_weight, item_chunk)
    n_users = query.shape[0]
    targets = _check_targets(targets, temperature, n_users, n_items, query.device)
    if n_users == 0:
        return torch.zeros(0, dtype=torch.long, device=query.device)
    ex_rows, ex_tokens = _exclusions_but_targets(exclude, targets, n_items, query.device)
    off_rows, off_tokens, value = _offset_pairs(offset, n_users, n_items, query.device)
    target_listed = torch.zeros(n_users, dtype=torch.bool, device=query.device)
    target_listed[off_rows[off_tokens == targets[off_rows]]] = True
    uniq, inverse = torch.unique(targets, return_inverse=True)
    users = torch.arange(n_users, device=query.device)
    above = torch.zeros(n_users, dtype=torch.long, device=query.device)
    bounds = _chunk_bounds(n_items, int(item_chunk))
    ex_slices, off_slices = _pair_slices(ex_tokens, bounds), _pair_slices(off_tokens, bounds)
    for (start, end), (lo, hi), (olo, ohi) in zip(bounds, ex_slices, off_slices):
        chunk_offset = None
        if off_rows.numel():
            chunk_offset = (off_rows[olo:ohi], off_tokens[olo:ohi] - start, value, target_listed)
        beats = _chunk_beats(
            query, item_weight, start, end, uniq, inverse, temperature, chunk_offset
        )
        if hi > lo:
            beats[ex_rows[lo:hi], ex_tokens[lo:hi] - start] = False  # excluded: not a rival
        inside = (targets >= start) & (targets < end)
        beats[users[inside], targets[inside] - start] = False  # the target is not its own rival
        above += beats.sum(dim=1, dtype=torch.int32)  # an int32 count avoids an int64 copy of beats
    return above + 1


def _check_targets(
    targets: Tensor, temperature: float, n_users: int, n_items: int, device: torch.device
) -> Tensor:
    """Validate `temperature` (finite, > 0) and `targets` (`U` item tokens in `1..N`); returns the
    targets as a `[U] long` tensor on `device`."""
    if not temperature > 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    targets = torch.as_tensor(targets).to(device=device, dtype=torch.long)
    if targets.shape != (n_users,):
        raise ValueError(f"targets must be [U] = [{n_users}], got shape {tuple(targets.shape)}")
    if n_users and (int(targets.min()) < 1 or int(targets.max()) > n_items):
        raise ValueError(f"targets must be item tokens in 1..{n_items} (0 is padding)")
    return targets


def _exclusions_but_targets(
    exclude: Exclude | None, targets: Tensor, n_items: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """The exclusion pairs `(rows [P] long, tokens [P] long)` of `_exclusion_pairs`, sorted by
    token, without the pairs that name the row's own target (`targets [U]`): a target is never
    excluded."""
    ex_rows, ex_tokens = _exclusion_pairs(exclude, targets.shape[0], n_items, device)
    not_target = ex_tokens != targets[ex_rows]
    return ex_rows[not_target], ex_tokens[not_target]


def _chunk_beats(
    query: Tensor,
    item_weight: Tensor,
    start: int,
    end: int,
    uniq: Tensor,
    inverse: Tensor,
    temperature: float,
    offset: tuple[Tensor, Tensor, float, Tensor] | None = None,
) -> Tensor:
    """Which items of the token range `[start, end)` score at least as high as each user's target.

    Args:
        query: `[U, D]`; scores are computed in its dtype and on its device.
        item_weight: `[N + 1, D]` tied item table (any device).
        uniq, inverse: `torch.unique(targets, return_inverse=True)` of the `[U]` target tokens:
            the `[T]` distinct targets, and for each user the index of its target in `uniq`.
        temperature: scores are divided by it (unless it is 1).
        offset: optional `(rows [P] long, cols [P] long, value, target_listed [U] bool)`: after
            the division, `value` is added to the score of item `start + cols[i]` for user
            `rows[i]` (distinct pairs), and to `s_target` of the users with `target_listed`.

    Returns:
        `[U, end - start] bool`: `not (s_j < s_target)` for each item `j` of the chunk, so ties
        (and NaN) count as ranked above the target. Nothing is excluded yet, not even the target.

    The target's score is taken from the *same* matmul call as the items it is compared with:
    the matmul also scores the distinct targets that lie outside the chunk. A separately
    computed dot product `(query * item_weight[t]).sum(-1)` rounds differently from a matmul
    column in most cases (measured: ~80% of users in float32), which would break exact ties
    either way at random and let a constant-score model win them. Within one matmul, equal item
    rows give equal scores, so ties are exact; the offset is added to those same scores, so
    equal scores with equal offsets stay equal.
    """
    device, dtype = query.device, query.dtype
    width = end - start
    w = item_weight[start:end].to(device=device, dtype=dtype)
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"item_weight has NaN or infinite values in rows {start}..{end - 1}")
    outside = (uniq < start) | (uniq >= end)
    extra = uniq[outside]
    if extra.numel():
        w = torch.cat([w, item_weight[extra.to(item_weight.device)].to(device=device, dtype=dtype)])
    scores = query @ w.T  # [U, width + #extra]
    if temperature != 1.0:
        scores = scores / temperature
    col_of_uniq = torch.where(outside, width + torch.cumsum(outside, 0) - 1, uniq - start)
    s_target = scores.gather(1, col_of_uniq[inverse].unsqueeze(1))  # [U, 1]
    if offset is not None:
        rows, cols, value, target_listed = offset
        if rows.numel():
            scores[rows, cols] += value  # distinct pairs: each score gets value once
        s_target = torch.where(target_listed.unsqueeze(1), s_target + value, s_target)
    return ~(scores[:, :width] < s_target)


@torch.no_grad()
def topk_items(
    query: Tensor,
    item_weight: Tensor,
    k: int,
    exclude: Exclude | None = None,
    item_chunk: int = DEFAULT_ITEM_CHUNK,
    offset: Offset | None = None,
    temperature: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """The `k` highest-scoring items per query over the full catalog, as a running top-k.

    Args:
        query: `[U, D] float`; scores are computed in its dtype and on its device.
        item_weight: `[N + 1, D]` tied item table; row 0 (padding) is never returned.
        k: list length, `1 <= k <= N`.
        exclude: optional CSR pair `(indptr [U + 1], indices [nnz])` of tokens never returned
            (token 0 entries are ignored). Every row must keep at least `k` candidates.
        item_chunk: items scored per matmul; the running top-k is merged with each chunk by
            `torch.topk` over `[running k | chunk]`.
        offset: optional CSR triple `(indptr [U + 1] long, indices [nnz] long, value)` of
            tokens whose score gets the finite `value` added (once per distinct token; token 0
            entries are ignored) before exclusion and the top-k, so a positive value can bring
            an item into the list. `None` or a value of 0 changes nothing.
        temperature: raw scores are divided by it (> 0) before the offset is added, as in
            `target_ranks` (a model's logits: `Recommender.seen_offset` is in logit units).

    Returns:
        `(scores [U, k], tokens [U, k] long)`, sorted by decreasing score, on `query.device`,
        with `score_j = query[u] . item_weight[j] / temperature + value * 1[j in offset list of u]`.
        Which of several equally scored items is returned is unspecified. A score that
        overflows to -inf or NaN in low precision is returned as the lowest finite value of the
        dtype, so that it still ranks above excluded items.
    """
    n_items = _check_ranking_inputs(query, item_weight, item_chunk)
    if not temperature > 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    n_users = query.shape[0]
    device, dtype = query.device, query.dtype
    k = int(k)
    if not 1 <= k <= n_items:
        raise ValueError(f"k must be in 1..{n_items} (the catalog size), got {k}")
    ex_rows, ex_tokens = _exclusion_pairs(exclude, n_users, n_items, device)
    off_rows, off_tokens, value = _offset_pairs(offset, n_users, n_items, device)
    if ex_rows.numel():
        left = _candidates_left(ex_rows, ex_tokens, n_users, n_items)
        short = torch.nonzero(left < k).flatten()
        if short.numel():
            u = int(short[0])
            raise ValueError(
                f"{short.numel()} rows keep fewer than k = {k} candidates after exclusion "
                f"(row {u}: {int(left[u])} of {n_items} items)"
            )

    lowest = torch.finfo(dtype).min
    top_s = torch.full((n_users, k), -math.inf, dtype=dtype, device=device)
    top_t = torch.zeros((n_users, k), dtype=torch.long, device=device)
    bounds = _chunk_bounds(n_items, int(item_chunk))
    ex_slices, off_slices = _pair_slices(ex_tokens, bounds), _pair_slices(off_tokens, bounds)
    for (start, end), (lo, hi), (olo, ohi) in zip(bounds, ex_slices, off_slices):
        w = item_weight[start:end].to(device=device, dtype=dtype)
        if not bool(torch.isfinite(w).all()):
            raise ValueError(f"item_weight has NaN or infinite values in rows {start}..{end - 1}")
        scores = query @ w.T  # [U, width]
        if temperature != 1.0:
            scores = scores / temperature
        if ohi > olo:
            scores[off_rows[olo:ohi], off_tokens[olo:ohi] - start] += value  # distinct pairs
        torch.nan_to_num_(scores, nan=lowest, neginf=lowest)
        if hi > lo:
            scores[ex_rows[lo:hi], ex_tokens[lo:hi] - start] = -math.inf
        merged = torch.topk(torch.cat([top_s, scores], dim=1), k, dim=1)
        idx = merged.indices
        from_running = idx < k
        top_t = torch.where(from_running, top_t.gather(1, idx.clamp(max=k - 1)), idx - k + start)
        top_s = merged.values
    return top_s, top_t


# ---------------------------------------------------------------------------------------------
# Metrics: pure functions of ranks
# ---------------------------------------------------------------------------------------------


def _as_ranks(ranks: np.ndarray | Tensor | Sequence[int]) -> np.ndarray:
    if isinstance(ranks, Tensor):
        ranks = ranks.detach().cpu().numpy()
    r = np.asarray(ranks)
    if r.ndim != 1:
        raise ValueError(f"ranks must be 1-D, got shape {r.shape}")
    if r.size and not np.issubdtype(r.dtype, np.integer):
        if not np.all(np.isfinite(r)) or not np.all(r == np.round(r)):
            raise ValueError("ranks must be integers")
    r = r.astype(np.int64)
    if r.size and r.min() < 1:
        raise ValueError(f"ranks are 1-based, got a minimum of {r.min()}")
    return r


def _check_k(k: int) -> int:
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    return int(k)


def hit_rate(ranks: np.ndarray | Tensor, k: int) -> np.ndarray:
    """Per-user hit ratio at k: `HR@k_u = 1[rank_u <= k]` (float64).

    With one held-out item per user this is also Recall@k.
    """
    r = _as_ranks(ranks)
    return (r <= _check_k(k)).astype(np.float64)


def ndcg(ranks: np.ndarray | Tensor, k: int) -> np.ndarray:
    """Per-user NDCG at k with a single relevant item (float64).

    DCG@k_u  = sum_{i=1..k} rel_i / log2(i + 1),   rel_i = 1[item at position i is the target]
    IDCG@k_u = 1 / log2(1 + 1) = 1
    NDCG@k_u = 1 / log2(rank_u + 1)  if rank_u <= k,  else 0
    """
    r = _as_ranks(ranks)
    k = _check_k(k)
    return np.where(r <= k, 1.0 / np.log2(r.astype(np.float64) + 1.0), 0.0)


def mrr(ranks: np.ndarray | Tensor) -> np.ndarray:
    """Per-user reciprocal rank over the full ranking, not truncated: `RR_u = 1 / rank_u`."""
    r = _as_ranks(ranks)
    return 1.0 / r.astype(np.float64)


def mrr_at(ranks: np.ndarray | Tensor, k: int) -> np.ndarray:
    """Per-user reciprocal rank truncated at k, as RecBole's MRR@k:
    `RR@k_u = 1 / rank_u if rank_u <= k else 0`."""
    r = _as_ranks(ranks)
    k = _check_k(k)
    return np.where(r <= k, 1.0 / r.astype(np.float64), 0.0)


def _mean_or_none(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def ranking_metrics(
    ranks: np.ndarray | Tensor, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float | int | None]:
    """Mean HR@k and NDCG@k for each k, full MRR, and the number of users `n`.

    Keys, in order: `hr@{k}`, `ndcg@{k}` for each k in `ks`, then `mrr`, then `n`. Values are
    plain Python floats (JSON-ready). With no users (`n = 0`) every mean is `None` (JSON `null`):
    a missing number, not a zero, and one that fails loudly if someone averages it.
    """
    r = _as_ranks(ranks)
    out: dict[str, float | int | None] = {}
    for k in ks:
        out[f"hr@{k}"] = _mean_or_none(hit_rate(r, k))
        out[f"ndcg@{k}"] = _mean_or_none(ndcg(r, k))
    out["mrr"] = _mean_or_none(mrr(r))
    out["n"] = int(r.size)
    return out


def _as_rewards(rewards: np.ndarray | Tensor | Sequence[float], n: int) -> np.ndarray:
    if isinstance(rewards, Tensor):
        rewards = rewards.detach().cpu().numpy()
    w = np.asarray(rewards, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"rewards must have one value per rank ({n}), got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("rewards have NaN or infinite values")
    return w


def reward_metrics(
    ranks: np.ndarray | Tensor,
    rewards: np.ndarray | Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    high_threshold: float | None = None,
) -> dict[str, float | int | None]:
    """Reward-aware metrics: the high-reward subset and reward-weighted NDCG.

    Args:
        ranks: `[U]` 1-based ranks of the targets.
        rewards: `[U]` the logged reward of each target (e.g. its rating).
        ks: cut-offs.
        high_threshold: targets with `reward >= high_threshold` form the high subset; `None`
            leaves the `high/` keys out.

    Returns a dict with

    - `high/hr@k`, `high/ndcg@k`, `high/mrr`, `high/n`: `ranking_metrics` over the users whose
      target has `reward >= high_threshold`. When no target qualifies, `high/n = 0` and every
      `high/` mean is `None` (JSON `null`), never 0 or NaN.
    - `rw_ndcg@k` for each k, the reward-weighted NDCG:

          rw_ndcg@k = mean_u(r_u * NDCG@k_u) / mean_u(r_u) = sum_u r_u NDCG@k_u / sum_u r_u

      i.e. the gain of a hit is the target's reward, normalised by the mean reward. With
      rewards >= 0 (ratings) it is a reward-weighted average of per-user NDCG@k: in [0, 1],
      equal to `ndcg@k` when all rewards are equal, and 1 only if every rewarded target is
      ranked first; users with reward 0 do not count. Negative rewards (signed scales, noisy
      simulator rewards) are kept as they are, not clipped: a hit on a negatively rewarded
      target lowers the value, which is then no longer bounded by 1. When the rewards sum to
      0 or less the normalisation is undefined and the value is `None`.
    """
    r = _as_ranks(ranks)
    w = _as_rewards(rewards, r.size)
    out: dict[str, float | int | None] = {}
    if high_threshold is not None:
        high = ranking_metrics(r[w >= high_threshold], ks)
        out.update({f"high/{key}": value for key, value in high.items()})
    total = w.sum()
    for k in ks:
        out[f"rw_ndcg@{k}"] = float((w * ndcg(r, k)).sum() / total) if total > 0 else None
    return out


def evaluate_queries(
    query: Tensor,
    item_weight: Tensor,
    targets: Tensor,
    rewards: np.ndarray | Tensor | None = None,
    exclude: Exclude | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    high_threshold: float | None = None,
    item_chunk: int = DEFAULT_ITEM_CHUNK,
) -> tuple[dict[str, float | int | None], Tensor]:
    """Rank the targets of one batch of queries and compute every metric of those ranks.

    The caller batches users so that `U * item_chunk` scores fit in memory; the returned ranks
    of several batches concatenate, and `ranking_metrics`/`reward_metrics` of the concatenation
    give the metrics of the whole split (metrics are pure functions of ranks).

    Returns:
        `(metrics, ranks)`: `ranking_metrics(ranks, ks)`, plus `reward_metrics(ranks, rewards,
        ks, high_threshold)` when `rewards` is given; `ranks` is `[U] long` on the CPU.
    """
    ranks = target_ranks(query, item_weight, targets, exclude=exclude, item_chunk=item_chunk).cpu()
    metrics = ranking_metrics(ranks, ks)
    if rewards is not None:
        metrics.update(reward_metrics(ranks, rewards, ks, high_threshold))
    elif high_threshold is not None:
        raise ValueError("high_threshold needs rewards")
    return metrics, ranks
