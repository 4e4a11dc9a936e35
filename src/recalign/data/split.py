"""Train / validation / test splits over an `Interactions` table (rows sorted by user, time).

A split never copies the table: it says, per user, which rows are training rows and, per
evaluated user, where the context ends and which row is the held-out target.

- `leave_one_out` (the protocol of SASRec, HSTU and the paper): the last interaction of each user
  is the test target, the one before it the validation target; training uses the rest. The test
  context includes the validation item. Users with fewer than `min_interactions` are dropped
  (three are needed for one train, one validation and one test row).
- `temporal`: one global time cut-off at the `cutoff` quantile of all timestamps (validation
  starts `valid_width` earlier). Training rows are those before the validation cut-off; the
  validation target of a user is their first row in [valid cut-off, test cut-off), the test
  target their first row at or after the test cut-off; each context is everything before it.

Targets with reward >= `high_reward` form the high-reward subset (METHOD.md: the paper keeps
held-out items rated >= 4.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recalign.data.schema import Interactions
from recalign.errors import InputError


@dataclass(frozen=True)
class Targets:
    """Held-out targets: for evaluated user `users[j]`, the context is rows
    `inter offsets[users[j]] : context_end[j]` and the target is row `target_row[j]`."""

    users: np.ndarray
    context_end: np.ndarray
    target_row: np.ndarray

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def subset(self, mask: np.ndarray) -> Targets:
        return Targets(self.users[mask], self.context_end[mask], self.target_row[mask])


@dataclass(frozen=True)
class Split:
    inter: Interactions
    offsets: np.ndarray  # [n_users + 1] row offsets of each user
    train_end: np.ndarray  # [n_users] training rows of u are offsets[u]:train_end[u]
    valid: Targets
    test: Targets
    kind: str

    def targets(self, which: str) -> Targets:
        if which not in ("valid", "test"):
            raise InputError(f"split must be valid or test; got {which!r}")
        return self.valid if which == "valid" else self.test

    def train_rows(self) -> np.ndarray:
        """Boolean mask over the table's rows: True for training rows."""
        n = len(self.inter)
        starts = self.offsets[:-1]
        delta = np.zeros(n + 1, dtype=np.int64)
        np.add.at(delta, starts, 1)
        np.add.at(delta, self.train_end, -1)
        return np.cumsum(delta[:-1]) > 0

    def high_reward(self, which: str, threshold: float) -> np.ndarray:
        t = self.targets(which)
        return self.inter.reward[t.target_row] >= threshold


def leave_one_out(inter: Interactions, min_interactions: int = 3) -> Split:
    if min_interactions < 3:
        raise InputError("leave-one-out needs min_user_interactions >= 3")
    offsets = inter.user_offsets()
    start, end = offsets[:-1], offsets[1:]
    keep = (end - start) >= min_interactions
    users = np.flatnonzero(keep)
    if users.size == 0:
        raise InputError(f"no user has at least {min_interactions} interactions", path=inter.source or None)
    train_end = np.where(keep, end - 2, start)  # dropped users contribute no training rows
    valid = Targets(users, end[users] - 2, end[users] - 2)
    test = Targets(users, end[users] - 1, end[users] - 1)
    return Split(inter, offsets, train_end, valid, test, "loo")


def temporal(inter: Interactions, cutoff: float = 0.8, valid_width: float = 0.1) -> Split:
    if not (0 < cutoff - valid_width < cutoff < 1):
        raise InputError(f"temporal cutoff must satisfy 0 < cutoff - {valid_width} < cutoff < 1; got {cutoff}")
    ts = inter.timestamp
    t_valid, t_test = np.ceil(np.quantile(ts, [cutoff - valid_width, cutoff])).astype(np.int64)
    offsets = inter.user_offsets()
    start = offsets[:-1]
    # rows are sorted by (user, time): the first row at or after a cut-off is a per-user search
    train_end = _first_at_or_after(inter.user, ts, offsets, t_valid)
    test_first = _first_at_or_after(inter.user, ts, offsets, t_test)
    end = offsets[1:]

    def targets(first: np.ndarray, upper: np.ndarray | None) -> Targets:
        ok = (first < end) & (first > start)  # a target exists and has some context
        if upper is not None:
            ok &= inter.timestamp[np.minimum(first, len(ts) - 1)] < upper
        users = np.flatnonzero(ok)
        return Targets(users, first[users], first[users])

    valid = targets(train_end, t_test)
    test = targets(test_first, None)
    if len(test) == 0:
        raise InputError("temporal split: no user has both history and an interaction after the cut-off")
    return Split(inter, offsets, train_end, valid, test, "temporal")


def _first_at_or_after(user: np.ndarray, ts: np.ndarray, offsets: np.ndarray, t: int) -> np.ndarray:
    """For every user, the index of their first row with timestamp >= t (their end if none)."""
    n_users = offsets.shape[0] - 1
    before = np.bincount(user[ts < t], minlength=n_users)
    return offsets[:-1] + before


def make_split(inter: Interactions, kind: str = "loo", min_interactions: int = 3, cutoff: float = 0.8) -> Split:
    if kind == "loo":
        return leave_one_out(inter, min_interactions)
    if kind == "temporal":
        return temporal(inter, cutoff)
    raise InputError(f"unknown split {kind!r}; valid: loo, temporal")
