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
from recalign.models.heads import SampledSoftmaxHead, full_logits, make_head


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
    def __init__(self, cfg: ModelConfig, n_items: int, item_counts: np.ndarray | None = None):
        super().__init__(cfg, n_items)
        counts = None if item_counts is None else np.asarray(item_counts, dtype=np.float64)
        self.head = make_head(cfg, counts)

    def next_item_loss(self, hidden: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor):
        """The head's weighted next-item loss `sum(w * nll) / count(targets > 0)`."""
        return self.head.loss(hidden, targets, weights, self.item_weight)

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """Full-catalog log-probabilities `log π(· | s)`: states `[..., D]` -> `[..., N + 1]`
        (at least float32; column 0 = -inf). The one place they are computed."""
        return self.head.log_probs(hidden, self.item_weight)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Full-catalog logits `[..., N + 1]` (column 0 = -inf)."""
        return full_logits(hidden, self.item_weight, self.cfg.temperature)

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
