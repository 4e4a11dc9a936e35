"""A dataset ready for training and evaluation: the interaction table, its split, the training
windows and, on the simulator, the ground truth. Every stage starts from `prepare(cfg)`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from recalign.data.loaders import load_from_config
from recalign.data.schema import Interactions
from recalign.data.sequences import SequenceData
from recalign.data.simulator import simulate
from recalign.data.split import Split, make_split
from recalign.data.summary import data_summary, report

if TYPE_CHECKING:
    from recalign.config import RunConfig


@dataclass
class Prepared:
    """A dataset ready for training and evaluation."""

    cfg: RunConfig
    inter: Interactions
    split: Split
    seq: SequenceData
    simulator: Any = None  # the ground-truth simulator when data.name == "sim"
    # what preparing dropped, kept and holds out (`data/summary.py`); `state.json`'s data_summary
    summary: dict[str, Any] = field(default_factory=dict)

    def item_counts(self) -> np.ndarray:
        """Training-row counts per token (index 0 = padding), for popularity negatives."""
        items = self.inter.item[self.split.train_rows()]
        return np.concatenate([[0], np.bincount(items, minlength=self.inter.n_items)]).astype(np.float64)


def load_interactions(cfg: RunConfig) -> tuple[Interactions, Any]:
    """The table named by `cfg.data` (the simulator's logs for `sim`) and the simulator, if any."""
    if cfg.data.name == "sim":
        return simulate(cfg.sim)
    return load_from_config(cfg), None


def prepare(cfg: RunConfig) -> Prepared:
    """Load, split and window the data of `cfg` (`data.*`, `sim.*`, `model.max_len`,
    `train.window_stride`). What was dropped or kept on the way (`Prepared.summary`) is said on
    stderr when there is anything to say (`data/summary.py`)."""
    inter, sim = load_interactions(cfg)
    split = make_split(inter, cfg.data.split, cfg.data.min_user_interactions, cfg.data.temporal_cutoff)
    summary = data_summary(inter, split, cfg.data.min_user_interactions, cfg.eval.mask_seen)
    report(summary, inter.source)
    seq = SequenceData(split, cfg.model.max_len, cfg.train.window_stride)
    return Prepared(cfg, inter, split, seq, sim, summary)


def fingerprint(inter: Interactions) -> str:
    """A short hash of the table's contents (users, items, timestamps, rewards)."""
    h = hashlib.sha256()
    for a in (inter.user, inter.item, inter.timestamp, inter.reward):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]
