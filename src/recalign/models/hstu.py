"""HSTU: Hierarchical Sequential Transduction Units (Zhai et al., ICML 2024, "Actions Speak Louder
than Words").

Each layer, with X `[B, L, D]` and H heads of size D/H:

    U, V, Q, K = split(SiLU(f1(LayerNorm(X))))                      f1: D -> 4D
    A          = SiLU(Q K^T + rab_{p,t}) * mask / n                 pointwise, no softmax
    Y          = f2(LayerNorm(A V) * U)                             f2: D -> D
    X          = X + Dropout(Y)

Choices (this is the plain PyTorch reference; a fused kernel must match it):

- Normalisation `n = max_len` (a constant). The reference code divides by a constant too (its
  padded maximum length plus a few slots), not by the batch's length; a constant keeps a
  history's states independent of how much padding precedes it and A V in a moderate numeric
  range (bf16). Since LayerNorm(A V) follows, any per-query positive scale only matters through
  LayerNorm's eps.
- mask: query i sees key j iff j <= i and key j is an item. A padded query sees nothing, so its
  row of A is zero and its state stays finite. Padded positions are zeroed after every layer.
- rab_{p,t}: per layer and per head, a learned bias indexed by the distance i - j (one entry per
  distance 0 .. max_len-1), plus, when timestamps are given, a learned bias indexed by the bucket
  of the time gap |t_i - t_j| between the query's and the key's own timestamps. The reference
  code writes the *target's* timestamp into the sequence, so its time bias sees when the item
  to be predicted was consumed, a leak at evaluation; here the query's own timestamp is used,
  so nothing about the item being predicted leaks in. Buckets: 0 for gaps under one second,
  then `1 + floor(log(gap) / log(MAX_GAP) * (time_buckets - 2))`, capped at `time_buckets - 1`,
  i.e. log-uniform from one second to MAX_GAP (about ten years). Initialised at zero
  (`model.rab_init_std = 0`; the reference: N(0, 0.02²)).
- Input: item embeddings, initialised N(0, `init_std`²) (default 0.02, like the reference code's
  truncated normal; sasrec.py says why small), scaled by sqrt(D) (`scale_emb`), and dropout;
  order enters through rab, and with `model.abs_pos` also through a learned absolute position
  embedding added to the input (the reference code has both; right-aligned as in sasrec.py).
  Output: a final LayerNorm.
- Where the reference code differs and recalign offers it as a knob (benchmarks/README.md,
  "Which π0", measures each): `abs_pos`; dropout before the output projection,
  `x + f2(drop(LN(AV) ⊙ U))` (`inner_dropout`); bias-free f1/f2 initialised N(0, 0.02²)
  (`proj_bias = false`); relative biases N(0, 0.02²) (`rab_init_std`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from recalign.models.config import ModelConfig

MAX_GAP = 10 * 365 * 24 * 3600  # seconds; gaps at or beyond this share the last time bucket


def gap_buckets(timestamps: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """Log-scaled buckets of the pairwise time gaps.

    Args:
        timestamps: `[B, L] long` seconds.
        n_buckets: number of buckets (>= 2).
    Returns:
        `[B, L, L] long` in [0, n_buckets): bucket of |t_i - t_j| for query i and key j.
    """
    gap = (timestamps[:, :, None] - timestamps[:, None, :]).abs().float()  # [B, L, L]
    scaled = gap.clamp(min=1.0).log() / math.log(MAX_GAP) * (n_buckets - 2)
    bucket = 1 + scaled.floor().long()
    return torch.where(gap < 1.0, 0, bucket).clamp(max=n_buckets - 1)


class RelativeBias(nn.Module):
    """rab_{p,t}: learned per-head biases by relative position and by time-gap bucket."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(cfg.heads, cfg.max_len))
        self.time = nn.Parameter(torch.zeros(cfg.heads, cfg.time_buckets))
        if cfg.rab_init_std > 0:
            nn.init.normal_(self.pos, std=cfg.rab_init_std)
            nn.init.normal_(self.time, std=cfg.rab_init_std)

    def forward(self, distance: torch.Tensor, buckets: torch.Tensor | None) -> torch.Tensor:
        """distance: `[L, L] long` (i - j, clamped to >= 0); buckets: `[B, L, L] long` or None.

        Returns `[1 or B, H, L, L] float`.
        """
        bias = self.pos[:, distance].unsqueeze(0)  # [1, H, L, L]
        if buckets is not None:
            bias = bias + self.time[:, buckets].transpose(0, 1)  # [B, H, L, L]
        return bias


class HSTULayer(nn.Module):
    """One HSTU layer (see the module docstring for the equations)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads = cfg.heads
        self.n = float(cfg.max_len)
        self.ln_in = nn.LayerNorm(cfg.dim)
        self.f1 = nn.Linear(cfg.dim, 4 * cfg.dim, bias=cfg.proj_bias)
        self.rab = RelativeBias(cfg)
        self.ln_attn = nn.LayerNorm(cfg.dim)
        self.f2 = nn.Linear(cfg.dim, cfg.dim, bias=cfg.proj_bias)
        if not cfg.proj_bias:  # the reference code's initialisation of its bias-free projections
            nn.init.normal_(self.f1.weight, std=0.02)
            nn.init.normal_(self.f2.weight, std=0.02)
        self.drop = nn.Dropout(cfg.dropout)
        self.inner_dropout = cfg.inner_dropout

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        distance: torch.Tensor,
        buckets: torch.Tensor | None,
    ) -> torch.Tensor:
        """x: `[B, L, D] float`, mask: `[B, 1, L, L] bool`, distance: `[L, L] long`,
        buckets: `[B, L, L] long` or None -> `[B, L, D] float`."""
        B, L, D = x.shape
        H = self.heads
        u, v, q, k = F.silu(self.f1(self.ln_in(x))).chunk(4, dim=-1)  # 4 x [B, L, D]
        q, k, v = (t.view(B, L, H, D // H).transpose(1, 2) for t in (q, k, v))  # [B, H, L, D/H]
        scores = q @ k.transpose(-1, -2) + self.rab(distance, buckets)  # [B, H, L, L]
        attn = F.silu(scores).masked_fill(~mask, 0.0) / self.n
        av = (attn @ v).transpose(1, 2).reshape(B, L, D)  # [B, L, D]
        if self.inner_dropout:
            return x + self.f2(self.drop(self.ln_attn(av) * u))
        return x + self.drop(self.f2(self.ln_attn(av) * u))


class HSTU(nn.Module):
    """HSTU backbone.

    Args:
        cfg: the backbone configuration (`dim`, `layers`, `heads`, `max_len`, `dropout`,
            `time_buckets` are used).
        n_items: catalog size N; item code c is token c+1 and token 0 is padding.

    Attributes:
        item_emb: `nn.Embedding(N + 1, D, padding_idx=0)`, also the tied output table.
    """

    def __init__(self, cfg: ModelConfig, n_items: int):
        super().__init__()
        if cfg.time_buckets < 2:
            raise ValueError(f"model.time_buckets must be >= 2; got {cfg.time_buckets}")
        self.cfg = cfg
        self.n_items = n_items
        self.item_emb = nn.Embedding(n_items + 1, cfg.dim, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.dim) if cfg.abs_pos else None
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(HSTULayer(cfg) for _ in range(cfg.layers))
        self.ln_out = nn.LayerNorm(cfg.dim)
        nn.init.normal_(self.item_emb.weight, std=cfg.init_std)
        if self.pos_emb is not None:
            nn.init.normal_(self.pos_emb.weight, std=cfg.init_std)
        self.emb_scale = math.sqrt(cfg.dim) if cfg.scale_emb else 1.0
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def encode(self, items: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states of left-padded histories.

        Args:
            items: `[B, L] long` tokens, 0 = padding (at the start), most recent item at L-1;
                L <= max_len.
            timestamps: `[B, L] long` seconds (0 at padding), or None for position bias only.
        Returns:
            `[B, L, D] float` after the final LayerNorm; position t predicts the item at t+1.
            Padded positions hold finite values that carry no information.
        """
        B, L = items.shape
        if L > self.cfg.max_len:
            raise ValueError(f"sequence length {L} exceeds model.max_len={self.cfg.max_len}")
        valid = items > 0  # [B, L]
        idx = torch.arange(L, device=items.device)
        distance = (idx[:, None] - idx[None, :]).clamp(min=0)  # [L, L]
        mask = ((idx[:, None] >= idx[None, :]) & valid[:, None, :])[:, None]  # [B, 1, L, L]
        buckets = None if timestamps is None else gap_buckets(timestamps, self.cfg.time_buckets)
        x = self.item_emb(items) * self.emb_scale
        if self.pos_emb is not None:  # right-aligned, as sasrec's: the last item gets max_len - 1
            x = x + self.pos_emb(torch.arange(self.cfg.max_len - L, self.cfg.max_len, device=items.device))
        x = self.drop(x) * valid.unsqueeze(-1)
        for layer in self.layers:
            x = layer(x, mask, distance, buckets) * valid.unsqueeze(-1)
        return self.ln_out(x)

    forward = encode
