"""Output heads: score hidden states against the tied item table and compute next-item losses.

Tokens: item code c is token c+1, token 0 is padding; `item_weight` is the backbone's tied table
`model.item_emb.weight`, `[N+1, D] float`, and logits are `hidden @ item_weight.T / temperature`
with the padding column set to -inf.

Both heads' `loss(hidden, targets, weights, item_weight)` end in the one weighted NLL of the
project, `weighted_nll` below (pretraining, every SFT-style method and the tests call it):

    loss = sum_{targets > 0} weights * nll / max(1, count(targets > 0))

The weights carry padding masks, reward weights and importance weights; a head never invents a
weighting of its own. Only positions with a target are scored: they are gathered first, so no
logits are formed for padded positions.

Diagnostics are detached tensors (0-dim) or ints, so that logging them costs no device sync
until the caller asks for the number.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recalign.models.config import ModelConfig


def weighted_nll(
    logp_target: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict]:
    """Weighted negative log-likelihood `L = −(1/n) Σ_t w_t · log π_θ(a_t | s_t)`.

    The one loss of pretraining and of every SFT-style method; only the weights differ (see
    `posttrain/weights.py`): `sft` (w = 1; behaviour cloning), `linear_sft` (w ∝ r), `exp_sft`
    (w ∝ exp(r/λ); Chidambaram et al. 2026, arXiv 2603.10279), `filtered_sft` (w = 1[r ≥ τ]),
    `asft` (w ∝ exp(A/λ), Netflix's advantage-weighted SFT). `n` is the number of real
    positions (not the sum of the weights), so with weights that average 1 the gradient scale
    matches SFT's and `∂L/∂ log π(a_t|s_t) = −w_t / n`. Over zero positions the loss is 0.

    Args:
        logp_target: `[n] float` log π_θ(a_t | s_t) of the logged items.
        weights: `[n] float` non-negative weights (detached here).
        mask: `[n] bool`, True at real positions; None = all real.

    Returns:
        loss (at least float32: bf16 would round weights such as 37.4 to 37.5) and diagnostics,
        detached 0-dim tensors (no device sync) or ints: `nll` (unweighted mean NLL),
        `n_targets`, `weight_sum`, `weight_mean`, `weight_max`, `ess` (`(Σw)² / (n·Σw²)`).
    """
    dtype = torch.promote_types(logp_target.dtype, torch.float32)
    logp_target = logp_target.to(dtype)
    w = weights.detach().to(dtype)
    if mask is None:
        n = logp_target.numel()
        nll_pos = -logp_target
        w_real = w
    else:
        n = int(mask.sum())
        w = w * mask.to(w.dtype)
        nll_pos = -torch.where(mask, logp_target, torch.zeros_like(logp_target))
        w_real = w[mask]
    m = max(1, n)
    loss = (w * nll_pos).sum() / m
    w_sum = w_real.sum()
    w64 = w_real.double()
    sq = (w64 * w64).sum()
    diag = {
        "nll": nll_pos.detach().sum() / m,
        "n_targets": n,
        "weight_sum": w_sum,
        "weight_mean": w_sum / m,
        "weight_max": w_real.max() if n else w_sum,
        "ess": torch.where(sq > 0, w64.sum() ** 2 / (m * sq.clamp_min(1e-300)), torch.zeros_like(sq)),
    }
    return loss, diag


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """`x` in float32, or in float64 when it is float64 (bf16 and fp16 logits are upcast)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


Seen = tuple[torch.Tensor, torch.Tensor]
"""A state's seen-item logit: `(context [..., L] long tokens, bias 0-dim float)`. Every item in
the context (padding 0 ignored; an item listed twice counts once) gets `bias` added to its logit
(after the temperature): `Recommender.seen_logit`, `model.seen_bias`."""


def window_contexts(items: torch.Tensor) -> torch.Tensor:
    """The context of each position of left-padded windows: `[B, L]` tokens -> `[B, L, L]`, row
    t = the tokens the state at position t attends to (`items[:, :t+1]`), 0 elsewhere."""
    L = items.shape[-1]
    causal = torch.ones(L, L, dtype=torch.bool, device=items.device).tril()
    return torch.where(causal, items.unsqueeze(-2), 0)


def in_context(context: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """Whether each candidate is in its row's context: `[M, L]` tokens and `[M, C]` (or shared
    `[C]`) candidate tokens in 1..N -> `[M, C] bool`. Memory O(M * C), not O(M * N)."""
    srt = context.sort(dim=-1).values
    cand = cand.expand(context.shape[0], -1) if cand.dim() == 1 else cand
    pos = torch.searchsorted(srt, cand.contiguous()).clamp(max=srt.shape[-1] - 1)
    return srt.gather(-1, pos) == cand


def full_logits(
    hidden: torch.Tensor, item_weight: torch.Tensor, temperature: float = 1.0, seen: Seen | None = None
) -> torch.Tensor:
    """Scores of every token: `[..., D] float`, `[N+1, D] float` -> `[..., N+1] float`, column 0 = -inf;
    with `seen = (context [..., L], bias)`, `bias` is added to the tokens of each state's context."""
    logits = hidden @ item_weight.T / temperature
    if seen is not None:  # one scatter_add of [..., L] values: no [..., N+1] mask is formed
        context, bias = seen
        srt = context.sort(dim=-1).values
        first = torch.ones_like(srt, dtype=torch.bool)
        first[..., 1:] = srt[..., 1:] != srt[..., :-1]  # an item listed twice gets the bias once
        logits = logits.scatter_add(-1, srt, ((first & (srt > 0)) * bias).to(logits.dtype))
    logits[..., 0] = float("-inf")
    return logits


def _gather_targets(
    hidden: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, seen: Seen | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Seen | None]:
    """Keep positions with a target: -> hidden `[M, D]`, targets `[M] long`, weights `[M] float`
    and the seen logit of those positions (`seen` holds the `[B, L, L]` window contexts)."""
    if targets.shape != hidden.shape[:-1] or weights.shape != targets.shape:
        raise ValueError(
            f"shapes disagree: hidden {tuple(hidden.shape)}, targets {tuple(targets.shape)}, "
            f"weights {tuple(weights.shape)} (expected [B, L, D], [B, L], [B, L])"
        )
    sel = targets > 0
    seen_sel = None if seen is None else (seen[0][sel], seen[1])
    return hidden[sel], targets[sel], at_least_float32(weights[sel]), seen_sel


class TiedHead(nn.Module):
    """Common part of the heads: the temperature and full-catalog log-probabilities."""

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        self.temperature = temperature

    def log_probs(self, hidden: torch.Tensor, item_weight: torch.Tensor, seen: Seen | None = None) -> torch.Tensor:
        """Full log-softmax over the catalog: `[B, D]` (or `[..., D]`) -> `[B, N+1] float32`,
        column 0 = -inf (with the seen logit of `full_logits`)."""
        return F.log_softmax(at_least_float32(full_logits(hidden, item_weight, self.temperature, seen)), dim=-1)


class FullSoftmaxHead(TiedHead):
    """Softmax over the whole catalog (one matmul per batch)."""

    def loss(
        self,
        hidden: torch.Tensor,
        targets: torch.Tensor,
        weights: torch.Tensor,
        item_weight: torch.Tensor,
        seen: Seen | None = None,
    ) -> tuple[torch.Tensor, dict]:
        """Weighted next-item negative log-likelihood.

        Args:
            hidden: `[B, L, D] float` backbone states.
            targets: `[B, L] long` next-item tokens, 0 = no target.
            weights: `[B, L] float` per-position weights.
            item_weight: `[N+1, D] float` tied item table.
            seen: optional `(window_contexts [B, L, L], bias)`: the seen-item logit.
        Returns:
            `weighted_nll` of the targets' log-softmax over tokens 1..N:
            loss = sum(weights * nll) / max(1, count(targets > 0)) and its diagnostics.
        """
        h, t, w, seen = _gather_targets(hidden, targets, weights, seen)  # [M, D], [M], [M]
        logits = at_least_float32(full_logits(h, item_weight, self.temperature, seen))  # [M, N+1]
        nll = F.cross_entropy(logits, t, reduction="none")  # [M]
        return weighted_nll(-nll, w)


class SampledSoftmaxHead(TiedHead):
    """Sampled softmax for large catalogs: in-batch negatives plus shared sampled negatives, with
    logQ correction (Bengio & Senecal 2008; Jean et al. 2015; Yi et al. 2019 for in-batch).

    For the gathered positions i = 1..M (those with a target) the candidates are the M batch
    targets (column i is position i's own target, the positive) followed by `num_negatives`
    shared negatives drawn with replacement from the proposal. Every candidate column j gets the
    corrected logit `s_ij - log Q_j`, the positive included (each column is treated as a sample
    from its Q, as in Yi et al. 2019 and TensorFlow's sampled softmax):

    - shared negatives: Q = the proposal probability (uniform: 1/N; popularity: count / total);
    - in-batch columns: Q = the unigram probability of the item as a target, count / total from
      `item_counts` when given, otherwise its empirical frequency among the batch's M targets.

    Both are per-draw probabilities (not expected counts), so every sample weighs the same in the
    estimate of the partition function whatever the sizes of the two groups. Accidental hits (a
    non-diagonal candidate equal to the row's own target) are masked to -inf. Memory is
    O(M * (M + num_negatives)) for the logits with every batch target as a negative
    (`in_batch = -1`, the default): quadratic in the batch's targets, which dominates at long
    sequences (benchmarks/bench_throughput.py). `in_batch = S >= 0` uses a random S of the M
    batch targets as negatives instead (each row's own positive gets a column of its own), so
    memory is O(M * (S + num_negatives)): linear in the batch.

    Args:
        num_negatives: shared negatives per batch (K).
        proposal: "uniform" or "popularity".
        item_counts: `[N+1]` counts per token (index 0 ignored); required for "popularity",
            optional otherwise (then it gives the in-batch Q).
        temperature: logits are divided by it before the correction.
        generator: optional `torch.Generator` for the negatives (else the global RNG).

    Attributes:
        sparse_grad: look the candidates up with `F.embedding(..., sparse=True)`, so that the
            item table's gradient from the head is sparse (`Recommender.set_sparse_item_grad`,
            for `torch.optim.SparseAdam`); False (default): `item_weight[cand]`, a dense gradient.
    """

    sparse_grad: bool = False

    def __init__(
        self,
        num_negatives: int,
        proposal: str = "uniform",
        item_counts: np.ndarray | torch.Tensor | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        in_batch: int = -1,
    ):
        super().__init__(temperature)
        if in_batch < -1:
            raise ValueError(f"in_batch must be -1 (all), 0 (none) or a positive count; got {in_batch}")
        self.in_batch = in_batch
        if proposal not in ("uniform", "popularity"):
            raise ValueError(f"unknown proposal {proposal!r}; valid: uniform, popularity")
        if num_negatives < 0:
            raise ValueError(f"num_negatives must be >= 0; got {num_negatives}")
        if proposal == "popularity" and item_counts is None:
            raise ValueError("the popularity proposal needs item_counts")
        self.num_negatives = num_negatives
        self.proposal = proposal
        self.generator = generator
        self.n_tokens: int | None = None
        if item_counts is not None:
            counts = torch.as_tensor(np.asarray(item_counts), dtype=torch.float64).clone()
            if counts.ndim != 1 or counts.numel() < 2:
                raise ValueError(
                    f"item_counts must be 1-D of length N+1; got shape {tuple(counts.shape)}"
                )
            counts[0] = 0.0
            if (counts < 0).any() or counts.sum() <= 0:
                raise ValueError("item_counts must be non-negative counts, not all zero")
            self.n_tokens = counts.numel()
            p = counts / counts.sum()
            floor = p[p > 0].min()  # an item seen as a target has a nonzero frequency
            self.register_buffer("log_unigram", p.clamp(min=floor).log().float(), persistent=False)
            cdf = p.cumsum(0)
            self.register_buffer("cdf", cdf / cdf[-1], persistent=False)

    def sample_negatives(self, n_items: int, device: torch.device) -> torch.Tensor:
        """`[K] long` tokens in 1..N drawn with replacement from the proposal."""
        K = self.num_negatives
        g = self.generator
        gdev = g.device if g is not None else device
        if self.proposal == "uniform":
            neg = torch.randint(1, n_items + 1, (K,), generator=g, device=gdev)
        else:
            u = torch.rand(K, generator=g, device=gdev, dtype=torch.float64)
            neg = torch.searchsorted(self.cdf.to(gdev), u, right=True).clamp(1, n_items)
        return neg.to(device)

    def loss(
        self,
        hidden: torch.Tensor,
        targets: torch.Tensor,
        weights: torch.Tensor,
        item_weight: torch.Tensor,
        seen: Seen | None = None,
        negatives: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict]:
        """Weighted sampled-softmax next-item loss (same normalisation as the full head).

        Args:
            hidden, targets, weights, item_weight, seen: as `FullSoftmaxHead.loss` (the seen
                logit is added to the candidates in each position's context: `in_context`).
            negatives: optional `[K] long` shared negatives (tokens 1..N) to use instead of
                sampling (tests, or a caller that shares them across steps).
        Returns:
            `weighted_nll` of the sampled log-softmax of the positives, with its diagnostics
            (`nll` = unweighted mean of the sampled nll) and `accidental_hits` (masked candidates, in-batch and shared),
            `accidental_hits_shared` (those among the shared negatives).
        """
        n_items = item_weight.shape[0] - 1
        if self.n_tokens is not None and self.n_tokens != n_items + 1:
            raise ValueError(
                f"item_counts has {self.n_tokens} entries but item_weight has {n_items + 1} rows"
            )
        h, t, w, seen = _gather_targets(hidden, targets, weights, seen)  # [M, D], [M], [M]
        M = t.numel()
        neg = self.sample_negatives(n_items, item_weight.device) if negatives is None else negatives
        neg = neg.to(t.device)
        if self.in_batch < 0:
            in_batch = t  # every batch target (column i is row i's own positive)
        else:  # a random subset: the positive of each row gets a column of its own in front
            g = self.generator if self.generator is not None and self.generator.device == t.device else None
            pick = torch.randperm(M, device=t.device, generator=g)[: self.in_batch]
            in_batch = t[pick]
        own = in_batch is not t
        cand = torch.cat(([t] if own else []) + [in_batch, neg])  # [M (+ S) + K]
        lookup = (lambda c: F.embedding(c, item_weight, sparse=True)) if self.sparse_grad else item_weight.__getitem__
        if own:  # only the diagonal of the positives' block is needed: a row-wise dot product
            pos = ((h * lookup(t)).sum(-1, keepdim=True)).float()
            rest = (h @ lookup(cand[M:]).T).float()
            logits = torch.cat([pos, rest], 1) / self.temperature  # [M, 1 + S + K]
            log_q = torch.cat([self._log_q_in_batch(t)[:, None],
                               torch.cat([self._log_q_in_batch(in_batch), self._log_q_proposal(neg, n_items)])
                               .expand(M, -1)], 1)
            logits = logits - log_q
            if seen is not None:
                logits = logits + seen[1] * torch.cat([in_context(seen[0], t[:, None]), in_context(seen[0], cand[M:])], 1)
            hit = torch.cat([torch.zeros(M, 1, dtype=torch.bool, device=t.device), cand[None, M:] == t[:, None]], 1)
            cols = torch.zeros(M, dtype=torch.long, device=t.device)
        else:
            logits = (h @ lookup(cand).T).float() / self.temperature  # [M, M + K]
            logits = logits - torch.cat([self._log_q_in_batch(t), self._log_q_proposal(neg, n_items)])
            if seen is not None:
                logits = logits + seen[1] * in_context(seen[0], cand)
            hit = cand[None, :] == t[:, None]  # [M, M + K]
            cols = torch.arange(M, device=t.device)
            hit[cols, cols] = False  # the positive itself
        logits = logits.masked_fill(hit, float("-inf"))
        nll = F.cross_entropy(logits, cols, reduction="none")  # [M]
        loss, diag = weighted_nll(-nll, w)
        diag.update({
            "accidental_hits": hit.sum(),
            "accidental_hits_shared": hit[:, -neg.numel():].sum() if neg.numel() else hit.new_zeros(()).sum(),
        })
        return loss, diag

    def _log_q_in_batch(self, t: torch.Tensor) -> torch.Tensor:
        """`[M] long` batch targets -> `[M] float` log unigram probability of each."""
        if self.n_tokens is not None:
            return self.log_unigram.to(t.device)[t]
        _, inverse, counts = torch.unique(t, return_inverse=True, return_counts=True)
        return (counts[inverse].float() / max(1, t.numel())).log()

    def _log_q_proposal(self, neg: torch.Tensor, n_items: int) -> torch.Tensor:
        """`[K] long` shared negatives -> `[K] float` log proposal probability of each."""
        if self.proposal == "uniform":
            return torch.full(neg.shape, -float(np.log(n_items)), device=neg.device)
        return self.log_unigram.to(neg.device)[neg]


def make_head(cfg: ModelConfig, item_counts: np.ndarray | torch.Tensor | None = None) -> TiedHead:
    """The output head named by `cfg.head` ("full" or "sampled")."""
    if cfg.head == "full":
        return FullSoftmaxHead(cfg.temperature)
    if cfg.head == "sampled":
        return SampledSoftmaxHead(cfg.num_negatives, cfg.negatives, item_counts, cfg.temperature,
                                  in_batch=cfg.in_batch_negatives)
    raise ValueError(f"unknown head {cfg.head!r}; valid: full, sampled")
