"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

A causal Transformer over a user's item history. The hidden state at position t represents the
history up to and including item t, and is used to predict the item at t+1; items are scored
against the same embedding table that embeds the inputs (tied output, see `models/heads.py`).

Choices (the paper's where it states one):

- Pre-LN blocks, as in the paper's eq. (4): `x = x + Dropout(sublayer(LayerNorm(x)))`, with a
  final LayerNorm on the output.
- Point-wise feed-forward as in the paper: `ReLU(x W1 + b1) W2 + b2` with inner size
  `ffn_mult * D` (the paper: 1; RecBole's SASRec: 4).
- Initialisation and input: item and position embeddings N(0, `init_std`²), default 0.02 (as
  BERT and RecBole), item embeddings scaled by sqrt(D) at the input (`scale_emb`, as the HSTU
  reference code) plus the positional embedding. The item table is also the output layer, and
  Adam moves a parameter by about `lr` per step whatever its scale, so a small table moves its
  logits fast; the earlier N(0, 1/D) table needed two to three times the epochs. Without the sqrt(D)
  scaling SASRec learned far more slowly on ml-latest-small (9.7k items, most rarely seen), but
  ranked better on ml-100k with seen items left in the ranking (RecBole's protocol): it puts
  fewer already-rated items in its top-10 (benchmarks/README.md, "Which π0" and
  "Initialisation"). `model.score = cosine` scores L2-normalised states and item vectors instead
  of raw dot products (the HSTU reference code's choice; `recommender.py`). Positions are right-aligned: the
  most recent item (position L-1 of the left-padded input) always gets index `max_len - 1`, so a
  history's states do not depend on how much padding precedes it.
- Attention: `scaled_dot_product_attention` with a boolean mask `causal AND (key is an item OR
  key is the query itself)`. Real queries therefore never see padding (so their states are
  independent of the padding length); a padded query sees only itself, so no softmax row is
  empty and no NaN appears. Padded positions are zeroed after the embedding and after every block.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from recalign.models.config import ModelConfig


def attention_mask(items: torch.Tensor) -> torch.Tensor:
    """Boolean attention mask (True = may attend) for left-padded histories.

    Args:
        items: `[B, L] long` tokens, 0 = padding.
    Returns:
        `[B, 1, L, L] bool`: query i may attend key j iff j <= i and (key j is an item or j == i).
    """
    L = items.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=items.device).tril()
    eye = torch.eye(L, dtype=torch.bool, device=items.device)
    key_ok = (items > 0)[:, None, :] | eye  # [B, L, L]
    return (causal & key_ok)[:, None]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention over `[B, L, D] float`."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads = cfg.heads
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.out = nn.Linear(cfg.dim, cfg.dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: `[B, L, D] float`, mask: `[B, 1, L, L] bool` -> `[B, L, D] float`."""
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )  # [B, H, L, D/H]
        return self.out(y.transpose(1, 2).reshape(B, L, D))


class FeedForward(nn.Module):
    """The paper's point-wise feed-forward: D -> ffn_mult*D -> D with a ReLU between."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        inner = cfg.ffn_mult * cfg.dim
        self.net = nn.Sequential(
            nn.Linear(cfg.dim, inner),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(inner, cfg.dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    """Pre-LN Transformer block: attention then feed-forward, each with a residual."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_attn = nn.LayerNorm(cfg.dim)
        self.attn = CausalSelfAttention(cfg)
        self.ln_ffn = nn.LayerNorm(cfg.dim)
        self.ffn = FeedForward(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln_attn(x), mask))
        return x + self.drop(self.ffn(self.ln_ffn(x)))


class SASRec(nn.Module):
    """SASRec backbone.

    Args:
        cfg: the backbone configuration (`dim`, `layers`, `heads`, `max_len`, `dropout` are used).
        n_items: catalog size N; item code c is token c+1 and token 0 is padding.

    Attributes:
        item_emb: `nn.Embedding(N + 1, D, padding_idx=0)`, also the tied output table.
    """

    def __init__(self, cfg: ModelConfig, n_items: int):
        super().__init__()
        self.cfg = cfg
        self.n_items = n_items
        self.item_emb = nn.Embedding(n_items + 1, cfg.dim, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_out = nn.LayerNorm(cfg.dim)
        nn.init.normal_(self.item_emb.weight, std=cfg.init_std)
        nn.init.normal_(self.pos_emb.weight, std=cfg.init_std)
        self.emb_scale = math.sqrt(cfg.dim) if cfg.scale_emb else 1.0
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def encode(self, items: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states of left-padded histories.

        Args:
            items: `[B, L] long` tokens, 0 = padding (at the start), most recent item at L-1;
                L <= max_len.
            timestamps: ignored (accepted so that every backbone has the same signature).
        Returns:
            `[B, L, D] float` after the final LayerNorm; position t predicts the item at t+1.
            Padded positions hold finite values that carry no information.
        """
        B, L = items.shape
        if L > self.cfg.max_len:
            raise ValueError(f"sequence length {L} exceeds model.max_len={self.cfg.max_len}")
        valid = (items > 0).unsqueeze(-1)  # [B, L, 1]
        pos = torch.arange(self.cfg.max_len - L, self.cfg.max_len, device=items.device)  # [L]
        x = self.item_emb(items) * self.emb_scale + self.pos_emb(pos)  # [B, L, D]
        x = self.drop(x) * valid
        mask = attention_mask(items)  # [B, 1, L, L]
        for block in self.blocks:
            x = block(x, mask) * valid
        return self.ln_out(x)

    forward = encode
