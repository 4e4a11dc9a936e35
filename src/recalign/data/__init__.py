"""Data layer: the Interactions table, loaders, downloads, splits, sequences and the simulator."""

from recalign.data.schema import Interactions

__all__ = ["Interactions"]
