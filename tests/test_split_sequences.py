"""Splits and sequence batches on tiny hand-made tables."""

import numpy as np
import pytest
import torch

from recalign.data.schema import Interactions
from recalign.data.sequences import SequenceData, gather_windows
from recalign.data.split import leave_one_out, temporal
from recalign.errors import InputError


def table():
    # user a: items 10,11,12,13,14 at t=1..5; user b: 20,21,22 at t=1..3 ; user c: only 2 rows
    users = ["a"] * 5 + ["b"] * 3 + ["c"] * 2
    items = [10, 11, 12, 13, 14, 20, 21, 22, 10, 20]
    ts = [1, 2, 3, 4, 5, 1, 2, 3, 7, 8]
    rw = [1, 2, 3, 4, 5, 5, 4, 3, 1, 1]
    return Interactions.from_raw(np.array(users), np.array(items), np.array(ts), np.array(rw, float))


def test_leave_one_out_targets_and_training_rows():
    inter = table()
    sp = leave_one_out(inter)
    assert list(sp.test.users) == [0, 1]  # c has 2 interactions: dropped
    # item codes: 10->0, 11->1, ..., 14->4, 20->5, 21->6, 22->7
    assert list(inter.item[sp.test.target_row]) == [4, 7]
    assert list(inter.item[sp.valid.target_row]) == [3, 6]
    assert list(np.flatnonzero(sp.train_rows())) == [0, 1, 2, 5]
    assert list(sp.high_reward("test", 4.5)) == [True, False]
    with pytest.raises(InputError):
        leave_one_out(inter, min_interactions=2)


def test_temporal_split_uses_one_cutoff():
    inter = table()
    sp = temporal(inter, cutoff=0.6, valid_width=0.2)
    t_test = np.quantile(inter.timestamp, 0.6)
    assert all(inter.timestamp[sp.test.target_row] >= t_test)
    assert all(sp.test.context_end == sp.test.target_row)
    assert not sp.train_rows()[sp.test.target_row].any()


def test_gather_windows_left_pads():
    rows, valid = gather_windows(np.array([0, 5]), np.array([3, 6]), 4)
    assert rows.tolist() == [[0, 0, 1, 2], [0, 0, 0, 5]]
    assert valid.tolist() == [[False, True, True, True], [False, False, False, True]]


def test_training_windows_cover_each_transition_once():
    n = 23
    inter = Interactions.from_raw(np.zeros(n, int), np.arange(n), np.arange(n), np.ones(n))
    sp = leave_one_out(inter)
    seq = SequenceData(sp, max_len=5)
    b = seq.train_batch(np.arange(seq.n_windows))
    pairs = {(int(i), int(t)) for i, t in zip(b.items.flatten(), b.targets.flatten()) if t > 0}
    # training rows 0..20 -> 20 transitions (token k -> k+1), each exactly once
    assert len(pairs) == 20 == seq.n_train_targets == int((b.targets > 0).sum())
    assert pairs == {(k + 1, k + 2) for k in range(20)}
    assert (b.target_rows[b.targets > 0] >= 0).all()


def test_context_and_seen_items():
    inter = table()
    sp = leave_one_out(inter)
    seq = SequenceData(sp, max_len=3)
    items, ts = seq.context_batch(sp.test, np.arange(2))
    assert items.tolist() == [[2, 3, 4], [0, 6, 7]]  # last 3 of a: items 11,12,13
    indptr, tok = seq.seen_items(sp.test, np.arange(2))
    assert indptr.tolist() == [0, 4, 6]
    assert tok.tolist() == [1, 2, 3, 4, 6, 7]
    tgt, rw = seq.target_tokens(sp.test, np.arange(2))
    assert tgt.tolist() == [5, 8] and rw.tolist() == [5.0, 3.0]


@pytest.mark.parametrize("stride", [1, 2, 3, 5])
def test_overlapping_windows_score_each_target_once_with_history(stride):
    n = 23
    inter = Interactions.from_raw(np.zeros(n, int), np.arange(n), np.arange(n), np.ones(n))
    seq = SequenceData(leave_one_out(inter), max_len=5, stride=stride)
    b = seq.train_batch(np.arange(seq.n_windows))
    scored = b.targets > 0
    rows = sorted(b.target_rows[scored].tolist())
    assert rows == list(range(1, 21)) == sorted(set(rows))  # training targets are rows 1..20, once each
    assert seq.n_train_targets == 20
    # history before each scored target: at least max_len - stride items unless the user has fewer
    history = (b.items > 0).cumsum(dim=1)[scored]
    assert (history >= torch.clamp(b.target_rows[scored], max=5 - stride + 1)).all()
