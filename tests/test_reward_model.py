"""The reward model: its head (score vs score_all), the trivial predictors it is judged against,
and that it learns a synthetic reward that depends on the context and the item."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from recalign.config import load_config
from recalign.data.prepared import Prepared
from recalign.data.schema import Interactions
from recalign.data.sequences import SequenceData
from recalign.data.split import make_split
from recalign.models.config import ModelConfig
from recalign.models.reward_model import (
    RewardModel,
    is_binary,
    prediction_errors,
    reference_predictors,
)
from recalign.stages.reward_model import load_reward_model, train_reward_model


def _rm(binary=False) -> RewardModel:
    torch.manual_seed(0)
    rm = RewardModel(ModelConfig(dim=8, layers=1, heads=1, max_len=6), n_items=12, binary=binary, init_mean=0.3)
    with torch.no_grad():  # a non-trivial head
        rm.bilinear.normal_()
        rm.item_bias.normal_()
        rm.context.weight.normal_()
    return rm


@pytest.mark.parametrize("binary", [False, True])
def test_score_and_score_all_agree(binary):
    rm = _rm(binary)
    h = torch.randn(4, 8)
    items = torch.randint(1, 13, (4, 5))
    all_ = rm.score_all(h)
    assert all_.shape == (4, 13) and torch.isneginf(all_[:, 0]).all()
    torch.testing.assert_close(rm.score(h, items), all_.gather(1, items))
    if binary:
        assert ((all_[:, 1:] > 0) & (all_[:, 1:] < 1)).all()


def test_initial_prediction_is_the_mean():
    """W, item bias and context weights start at 0: every item scores the mean (0.3)."""
    for binary in (False, True):
        rm = RewardModel(ModelConfig(dim=8, layers=1, heads=1, max_len=6), 12, binary=binary, init_mean=0.3)
        torch.testing.assert_close(rm.score_all(torch.randn(3, 8))[:, 1:], torch.full((3, 12), 0.3))


def test_is_binary():
    assert is_binary(np.array([0, 1, 1.0])) and not is_binary(np.array([0, 1, 2]))
    assert not is_binary(np.array([0.5, 1.0])) and not is_binary(np.zeros(0))


def test_reference_predictors_by_hand():
    """Training rows (user, item, r): (0, 0, 1), (0, 1, 3), (1, 0, 5). Global mean 3; user means
    2 and 5, user 2 unseen -> 3; item means 3 and 3, item 2 unseen -> 3."""
    p = reference_predictors(np.array([0, 0, 1]), np.array([0, 1, 0]), np.array([1.0, 3.0, 5.0]),
                             users=np.array([0, 1, 2]), items=np.array([0, 1, 2]), n_users=3, n_items=3)
    assert p["global_mean"].tolist() == [3, 3, 3]
    assert p["user_mean"].tolist() == [2, 5, 3]
    assert p["item_mean"].tolist() == [3, 3, 3]


def test_prediction_errors_by_hand():
    """pred (0.5, 0.5) vs (0, 1): RMSE 0.5, log-loss log 2."""
    e = prediction_errors(np.array([0.5, 0.5]), np.array([0.0, 1.0]), binary=True)
    assert e["rmse"] == pytest.approx(0.5) and e["log_loss"] == pytest.approx(math.log(2))
    assert "log_loss" not in prediction_errors(np.array([1.0]), np.array([2.0]), binary=False)


def _synthetic(binary: bool, n_users=150, length=14, n_items=16, seed=0) -> Prepared:
    """Items drawn uniformly; reward = 1[item < 8] + 2·1[item ≡ previous item (mod 2)] (+ noise),
    or, binary, 1[item ≡ previous item (mod 2)]: the parity half depends on the context, so
    neither the item mean nor the user mean can predict it."""
    rng = np.random.default_rng(seed)
    items = rng.integers(0, n_items, size=(n_users, length))
    prev = np.concatenate([rng.integers(0, n_items, size=(n_users, 1)), items[:, :-1]], axis=1)
    match = (items % 2) == (prev % 2)
    if binary:
        r = match.astype(np.float32)
    else:
        r = ((items < n_items // 2) + 2.0 * match + 0.1 * rng.standard_normal(items.shape)).astype(np.float32)
    users = np.repeat(np.arange(n_users), length)
    inter = Interactions.from_raw(users, items.ravel(), np.tile(np.arange(length), n_users), r.ravel(),
                                  item_ids=np.arange(n_items))
    cfg = load_config(None, ["model.dim=16", "model.layers=1", "model.heads=1", "model.max_len=10",
                             "model.dropout=0.0", "train.epochs=8", "train.batch_size=32", "train.lr=0.01",
                             "train.warmup_steps=5", "train.progress=false",
                             'train.device="cpu"'])
    split = make_split(inter)
    return Prepared(cfg, inter, split, SequenceData(split, cfg.model.max_len))


@pytest.mark.parametrize("binary", [False, True])
def test_learns_a_context_dependent_reward(tmp_path, binary):
    data = _synthetic(binary)
    rm, diag = train_reward_model(data.cfg, data, tmp_path / "rm")
    assert rm.binary == binary and diag["binary"] == binary
    for which in ("valid", "test"):
        rmse = diag[which]["rmse"]
        assert set(rmse) == {"reward_model", "global_mean", "user_mean", "item_mean"}
        # the first item of a window lacks its previous item, so not all of the parity is learnable
        assert rmse["reward_model"] < 0.8 * min(rmse["global_mean"], rmse["user_mean"], rmse["item_mean"]), rmse
        if binary:
            assert set(diag[which]["log_loss"]) == set(rmse)
    saved = json.loads((tmp_path / "rm" / "rm_diagnostics.json").read_text())
    assert saved["valid"]["rmse"] == pytest.approx(diag["valid"]["rmse"])
    state = json.loads((tmp_path / "rm" / "state.json").read_text())
    assert state["stage"] == "reward_model" and state["binary"] == binary
    # the saved model scores the same
    back = load_reward_model(tmp_path / "rm", data)
    h = torch.randn(3, 16)
    torch.testing.assert_close(back.score_all(h), rm.to("cpu").eval().score_all(h))
