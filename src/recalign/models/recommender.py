"""A generative recommender: a backbone (SASRec or HSTU) plus an output head over its tied item
embeddings. This is the policy `π_θ(a|s) = softmax_a(h_θ(s) · e_a)` of METHOD.md."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from recalign.models.build import build_backbone
from recalign.models.config import ModelConfig
from recalign.models.heads import full_logits, make_head


class SequenceEncoder(nn.Module):
    """A backbone over left-padded histories with its item table (the shared part of the policy
    and the reward model)."""

    def __init__(self, cfg: ModelConfig, n_items: int):
        super().__init__()
        self.cfg = cfg
        self.n_items = n_items
        self.backbone = build_backbone(cfg, n_items)

    @property
    def item_weight(self) -> torch.Tensor:
        """Item embeddings `[N + 1, D]` (row 0 = padding, never a candidate)."""
        return self.backbone.item_emb.weight

    def encode(self, items: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        """`[B, L] long` tokens (left-padded) -> hidden states `[B, L, D] float`."""
        return self.backbone.encode(items, timestamps)

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

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Full-catalog logits `[..., N + 1]` (column 0 = -inf)."""
        return full_logits(hidden, self.item_weight, self.cfg.temperature)
