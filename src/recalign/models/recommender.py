"""A generative recommender: a backbone (SASRec or HSTU) plus an output head over its tied item
embeddings. This is the policy `π_θ(a|s) = softmax_a(h_θ(s) · e_a)` of METHOD.md."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recalign.errors import InputError
from recalign.models.build import build_backbone
from recalign.models.config import ModelConfig
from recalign.models.heads import SampledSoftmaxHead, Seen, full_logits, make_head, window_contexts

# The seen-item logit is SEEN_RATE × its parameter. A single scalar whose gradient keeps one sign
# (on data without repeats every seen item's probability is wasted mass) moves about lr per Adam
# step; at lr 1e-3 it would need thousands of steps to reach the -5 to -8 that ml-100k's selected
# SASRec and HSTU checkpoints learn scaled (benchmarks/README.md, "The seen-item logit").
SEEN_RATE = 10.0


class SequenceEncoder(nn.Module):
    """A backbone over left-padded histories with its item table (the shared part of the policy
    and the reward model)."""

    def __init__(self, cfg: ModelConfig, n_items: int):
        super().__init__()
        self.cfg = cfg
        self.n_items = n_items
        self.backbone = build_backbone(cfg, n_items)

    @property
    def item_table(self) -> torch.nn.Parameter:
        """The item embedding parameter `[N + 1, D]` (the input table; row 0 = padding)."""
        return self.backbone.item_emb.weight

    @property
    def item_weight(self) -> torch.Tensor:
        """Item vectors that states are scored against, `[N + 1, D]` (row 0 = padding, never a
        candidate): the input table itself (`model.score = dot`) or its rows L2-normalised
        (`cosine`; the padding row stays zero)."""
        table = self.backbone.item_emb.weight
        return F.normalize(table, dim=-1) if self.cfg.score == "cosine" else table

    def encode(self, items: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        """`[B, L] long` tokens (left-padded) -> hidden states `[B, L, D] float` (L2-normalised
        when `model.score = cosine`, so that `state · item_weight` is a cosine)."""
        hidden = self.backbone.encode(items, timestamps)
        return F.normalize(hidden, dim=-1) if self.cfg.score == "cosine" else hidden

    def last_hidden(self, items: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        """The state that scores the next item: hidden at the last position, `[B, D]`."""
        return self.encode(items, timestamps)[:, -1, :]


class Recommender(SequenceEncoder):
    """The policy. Its logits are `h(s) · e_a / τ`, plus, with `model.seen_bias`, one learned
    logit `b` for every item in the state's context (the items `h(s)` attends to): the model
    learns from the logs whether users consume an item again (`b` > 0) or never do (`b` → very
    negative: MovieLens), instead of having to push seen items down through `h(s)`. Every
    score therefore needs the state's context beside the state: `log_probs(hidden, context)`,
    `logits(hidden, context)`, `next_item_loss(..., items)`, `seen_offset(items)` for ranking."""

    def __init__(self, cfg: ModelConfig, n_items: int, item_counts: np.ndarray | None = None):
        super().__init__(cfg, n_items)
        counts = None if item_counts is None else np.asarray(item_counts, dtype=np.float64)
        self.head = make_head(cfg, counts)
        if cfg.seen_bias:
            self.seen_param = nn.Parameter(torch.zeros(()))

    @property
    def seen_logit(self) -> torch.Tensor | None:
        """The learned logit `b` of an item already in the context (0-dim), None without one."""
        return self.seen_param * SEEN_RATE if self.cfg.seen_bias else None

    def _seen(self, context: torch.Tensor | None) -> Seen | None:
        if not self.cfg.seen_bias or context is None:
            return None
        return context, self.seen_logit

    def next_item_loss(self, hidden: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                       items: torch.Tensor):
        """The head's weighted next-item loss `sum(w * nll) / count(targets > 0)` over windows
        `items [B, L]` (their states `hidden [B, L, D]`)."""
        return self.head.loss(hidden, targets, weights, self.item_weight, self._seen(window_contexts(items)))

    def log_probs(self, hidden: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Full-catalog log-probabilities `log π(· | s)`: states `[..., D]` and their contexts
        `[..., L]` (tokens; None = empty) -> `[..., N + 1]` (at least float32; column 0 = -inf).
        The one place they are computed. Contexts of window positions: `window_contexts`; of a
        last state: its input tokens."""
        return self.head.log_probs(hidden, self.item_weight, self._seen(context))

    def logits(self, hidden: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Full-catalog logits `[..., N + 1]` (column 0 = -inf), contexts as in `log_probs`."""
        return full_logits(hidden, self.item_weight, self.cfg.temperature, self._seen(context))

    def zero_loss(self, hidden: torch.Tensor) -> torch.Tensor:
        """A loss of 0 that every trainable parameter takes part in (a batch with nothing to
        score still gives every parameter a gradient, as DistributedDataParallel requires)."""
        zero = hidden.sum() * 0.0
        return zero if self.seen_logit is None else zero + self.seen_logit * 0.0

    def position_log_probs(self, items: torch.Tensor, timestamps: torch.Tensor | None,
                           sel: torch.Tensor) -> torch.Tensor:
        """`log π(· | s_t)` at the positions `sel [B, L] bool` of windows `items [B, L]`: `[M, N+1]`."""
        return self.log_probs(self.encode(items, timestamps)[sel], window_contexts(items)[sel])

    def seen_offset(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float] | None:
        """The seen logit as a ranking offset for last states of `items [B, L]`: CSR
        `(indptr [B+1], tokens, b)` for `eval.metrics.target_ranks` / `topk_items`; None without one."""
        if not self.cfg.seen_bias:
            return None
        nz = items > 0
        indptr = torch.zeros(items.shape[0] + 1, dtype=torch.long, device=items.device)
        indptr[1:] = nz.sum(1).cumsum(0)
        return indptr, items[nz], float(self.seen_logit.detach())

    def set_sparse_item_grad(self, on: bool) -> None:
        """Give the item table a sparse gradient (only the rows of the batch's input items and
        candidates) instead of a dense `[N + 1, D]` one, for `torch.optim.SparseAdam`
        (`train.optimizer = sparse_adam`). Both uses of the tied table then look rows up with
        `F.embedding(..., sparse=True)`: the input embedding and the sampled head's candidates.
        The full-softmax head scores every item, so its gradient is dense by nature: refused.
        Losses that form full-catalog logits (`logits`, e.g. dpo/ppo) still give a dense
        gradient; the training loop names them when it sees one."""
        if on and not isinstance(self.head, SampledSoftmaxHead):
            raise InputError("train.optimizer = sparse_adam needs model.head = sampled: the full softmax scores every "
                             "item, so the item table's gradient is dense anyway (use train.optimizer = adamw)")
        if on and self.cfg.score == "cosine":
            raise InputError("train.optimizer = sparse_adam needs model.score = dot: cosine scoring normalises the "
                             "whole item table, so its gradient is not a sparse lookup")
        self.backbone.item_emb.sparse = on
        if isinstance(self.head, SampledSoftmaxHead):
            self.head.sparse_grad = on
