"""Independent judges: the matrix-factorisation family, out-of-fold validation of every family,
judges of either family scoring a policy's top-10, the agreement rule, reuse of the judge folder."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from recalign.config import load_config
from recalign.data.prepared import Prepared, prepare
from recalign.data.sequences import SequenceData
from recalign.errors import InputError
from recalign.eval.judge import MFJudge, SeqJudge, judge_summary, judge_topk, judges_agree
from recalign.experiments.presets import preset_config
from recalign.models.mf import MFParams, fit_mf, spearman
from recalign.stages.common import build_model
from recalign.stages.judge import heldout_targets, train_judges, validate_families

TINY = ["sim.n_users=120", "sim.n_items=40", "sim.min_len=8", "sim.max_len=12", "model.dim=8", "model.layers=1",
        "model.max_len=12", "train.epochs=2", "train.batch_size=32", "eval.judge_epochs=2", "train.progress=false"]


@pytest.fixture(scope="module")
def tiny():
    cfg = preset_config("sim", quick=True, overrides=TINY)
    return cfg, prepare(cfg)


def test_mf_recovers_a_planted_low_rank_matrix():
    rng = np.random.default_rng(0)
    n_users, n_items, noise = 60, 40, 0.1
    p, q = rng.normal(0, 0.7, (n_users, 3)), rng.normal(0, 0.7, (n_items, 3))
    truth = 3.0 + rng.normal(0, 0.5, n_users)[:, None] + rng.normal(0, 0.5, n_items)[None] + p @ q.T
    users, items = (a.ravel() for a in np.meshgrid(np.arange(n_users), np.arange(n_items), indexing="ij"))
    y = truth.ravel() + rng.normal(0, noise, users.size)
    seen = rng.random(users.size) < 0.7
    mf = fit_mf(users[seen], items[seen], y[seen], n_users, n_items, MFParams(dim=3, reg=0.01, steps=300))
    pred = mf.predict(torch.as_tensor(users), torch.as_tensor(items)).detach().numpy()
    assert np.sqrt(np.mean((pred[seen] - y[seen]) ** 2)) < 1.2 * noise  # fits down to the noise, not below
    assert np.sqrt(np.mean((pred[~seen] - truth.ravel()[~seen]) ** 2)) < noise  # and fills the unseen cells
    assert np.std(truth) > 10 * noise  # (a matrix far from constant)


def test_spearman_ranks_with_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2], [5, 5, 6]) == pytest.approx(1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def _poisoned(cfg, data: Prepared, rows: np.ndarray) -> Prepared:
    """The same data with the rewards of `rows` replaced by nonsense."""
    reward = data.inter.reward.copy()
    reward[rows] = 100.0
    inter = dataclasses.replace(data.inter, reward=reward)
    split = dataclasses.replace(data.split, inter=inter)
    return Prepared(cfg, inter, split, SequenceData(split, cfg.model.max_len, cfg.train.window_stride), data.simulator)


def test_out_of_fold_never_trains_on_the_fold_it_validates(tiny, tmp_path):
    cfg, data = tiny
    held = heldout_targets(data.split)
    train = data.split.train_rows()
    assert not train[held.target_row].any()  # held-out rows are not training rows
    assert len(np.unique(held.target_row)) == 2 * data.split.offsets.size - 2  # each user's last two
    a = validate_families(cfg, data, tmp_path / "a")
    b = validate_families(cfg, _poisoned(cfg, data, held.target_row), tmp_path / "b")
    for family in ("seq", "mf"):  # the held-out rewards changed, the out-of-fold models did not
        wa = (tmp_path / "a" / f"oof-{family}" / "model.safetensors").read_bytes()
        assert wa == (tmp_path / "b" / f"oof-{family}" / "model.safetensors").read_bytes()
        assert b[family]["rmse"] > a[family]["rmse"] + 50  # ... but they are scored on those rewards
        assert set(a[family]["reference"]) == {"global_mean", "user_mean", "item_mean"}
        assert a[family]["beats_means"] == (a[family]["rmse"] < a[family]["best_mean_rmse"])
    assert json.loads((tmp_path / "a" / "validation.json").read_text())["mf"]["n_heldout"] == held.target_row.size


def test_judge_topk_scores_with_both_families_and_the_folder_is_reused(tiny, tmp_path):
    cfg, data = tiny
    judges = train_judges(cfg, data, tmp_path, k=2)
    assert [j.family for j in judges] == ["seq", "seq", "mf", "mf"]
    assert all(j.validation is not None and "beats_means" in j.validation for j in judges)
    assert (tmp_path / "mf1" / "model.safetensors").is_file() and (tmp_path / "mf1" / "mf.json").is_file()
    model = build_model(cfg, data)
    test = data.split.test
    vals = judge_topk(judges, model, data.seq, test, cfg.eval)
    assert vals.shape == (4, len(test)) and np.isfinite(vals).all()
    bare = judge_topk([judges[0].rm], model, data.seq, test, cfg.eval)  # a bare reward model still works
    assert np.array_equal(bare[0], vals[0])
    # the MF judge scores the user's top-10, whatever the context
    mf = judges[2]
    tokens = torch.tensor([[1, 2, 3]])
    ctx = data.seq.context_batch(test, np.array([0]))
    got = mf.score_lists(test.users[:1], tokens, ctx)
    want = mf.mf.predict(torch.tensor([[int(test.users[0])]]), tokens - 1)
    assert torch.allclose(got, want)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.safetensors")}
    again = train_judges(cfg, data, tmp_path, k=2)  # reused: nothing is rewritten
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.safetensors")} == stamps
    assert np.array_equal(judge_topk(again, model, data.seq, test, cfg.eval), vals)
    assert isinstance(again[0], SeqJudge) and isinstance(again[3], MFJudge)


def test_judge_summary_per_family():
    vals = np.array([[1.0, 3.0], [2.0, 4.0], [5.0, 5.0]])
    old = judge_summary(vals)
    assert old["judge_value"] == pytest.approx(vals.mean()) and len(old["judge_values"]) == 3
    s = judge_summary(vals, ["seq", "seq", "mf"], {"seq": True, "mf": False})
    assert s["judge_value"] == pytest.approx(2.5) and s["judge_spread"] == pytest.approx(np.std([2, 3], ddof=1))
    assert s["judge/seq"] == pytest.approx(2.5) and s["judge/mf"] == 5.0 and s["judge/mf_spread"] == 0.0
    assert s["judge/seq_validated"] is True and s["judge/mf_validated"] is False
    assert "judge_value" not in judge_summary(vals[2:], ["mf"])


def test_judges_agree_on_hand_made_numbers():
    assert judges_agree({"seq": 0.2, "mf": 0.1}) == "up"
    assert judges_agree({"seq": -0.2, "mf": -0.1}) == "down"
    assert judges_agree({"seq": 0.2, "mf": -0.1}) == "disagree"
    assert judges_agree({"seq": 0.2, "mf": -0.1}, {"seq": True, "mf": False}) == "up"  # mf not validated
    assert judges_agree({"seq": 0.2, "mf": 0.1}, {"seq": False, "mf": False}) == "no validated judge"
    assert judges_agree({"seq": 0.0, "mf": 0.1}) == "disagree"  # a zero is no sign
    up = {"mean": 0.2, "lo": 0.1, "hi": 0.3}
    assert judges_agree({"seq": up, "mf": {"mean": 0.1, "lo": 0.05, "hi": 0.2}}) == "up"
    assert judges_agree({"seq": up, "mf": {"mean": 0.1, "lo": -0.05, "hi": 0.2}}) == "inconclusive"
    assert judges_agree({"seq": up, "mf": {"mean": 0.1, "lo": float("nan"), "hi": float("nan")}}) == "inconclusive"
    assert judges_agree({"seq": {"mean": -0.2, "lo": -0.3, "hi": -0.1}, "mf": -0.1}) == "down"


def test_judge_families_config_is_checked():
    assert load_config().eval.judge_families == ["seq", "mf"]
    assert load_config(overrides=["eval.judge_families=mf"]).eval.judge_families == ["mf"]
    with pytest.raises(InputError, match="judge_families"):
        load_config(overrides=["eval.judge_families=seq,knn"])
