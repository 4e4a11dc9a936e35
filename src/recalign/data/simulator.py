"""Ground-truth simulator (stub: the full implementation lands with issue [1])."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from recalign.configlib import field


@dataclass
class SimConfig:
    seed: int = field(0, "random seed: the same seed gives the same users, items and logs")
    n_users: int = field(1000, "number of simulated users")
    n_items: int = field(500, "catalog size")
    dim: int = field(16, "dimension of the latent user and item vectors")
    noise: Literal["gaussian", "student_t", "flip", "popularity_bias"] = field(
        "gaussian", "observation noise model of the logged rewards"
    )
    noise_scale: float = field(0.5, "scale of the observation noise")
