"""Shared fixtures. Real datasets come from $RECALIGN_DATA or ../shared/data; tests that need them
skip with a reason where neither exists (CI has them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def find_shared_data() -> Path | None:
    env = os.environ.get("RECALIGN_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (cand / "ml-100k").is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only folder of real datasets; never write into it."""
    p = find_shared_data()
    if p is None:
        pytest.skip("real datasets not found: set RECALIGN_DATA or place shared/data beside the repo")
    return p


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tests use tiny tensors: a second intra-op thread only adds synchronisation (and, on a
    shared CPU, contention that made a tiny training run 15x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pretrained_with_reward_model(out: Path, sets: list[str]):
    """A tiny pretrained run at `out` (config: `sets`) and a reward model beside it (`rm`, one
    short epoch from scratch): `(run folder, its prepared data, reward-model folder)`."""
    from recalign.config import load_config
    from recalign.stages.common import load_run
    from recalign.stages.pretrain import pretrain
    from recalign.stages.reward_model import train_reward_model

    pretrain(load_config(None, sets), out)
    _, data, _ = load_run(out)
    train_reward_model(load_config(None, sets + ["train.epochs=1", "train.max_steps=3"]), data, out.parent / "rm")
    return out, data, out.parent / "rm"
