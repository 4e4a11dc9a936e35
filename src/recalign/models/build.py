"""Build a backbone by name (`model.name`)."""

from __future__ import annotations

from torch import nn

from recalign.models.config import ModelConfig
from recalign.models.hstu import HSTU
from recalign.models.sasrec import SASRec

BACKBONES: dict[str, type[nn.Module]] = {"sasrec": SASRec, "hstu": HSTU}


def build_backbone(cfg: ModelConfig, n_items: int) -> nn.Module:
    """The backbone named by `cfg.name`, for a catalog of `n_items` items (tokens 1..n_items)."""
    try:
        cls = BACKBONES[cfg.name]
    except KeyError:
        raise ValueError(f"unknown model {cfg.name!r}; valid: {', '.join(BACKBONES)}") from None
    return cls(cfg, n_items)
