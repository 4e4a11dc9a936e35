"""The `Interactions` table: the one internal form of every dataset.

Columns (numpy arrays of equal length `n`):

- `user`      int64, codes 0..n_users-1 (`user_ids[code]` is the original id)
- `item`      int64, codes 0..n_items-1 (`item_ids[code]` is the original id)
- `timestamp` int64, seconds (or any monotone integer clock)
- `reward`    float32, finite
- `propensity` float32 in (0, 1], optional (logged bandit data)

Rows are kept sorted by `(user, timestamp, source row)`: the original row order of the file is
the stable secondary key that makes sequences deterministic when timestamps tie (ml-100k has
75,772 rows that tie with another row of the same user). Codes are assigned in sorted order of
the original ids (numeric ids sort numerically), so the same file always gives the same codes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from recalign.errors import InputError

DuplicatePolicy = Literal["keep", "drop"]


@dataclass(frozen=True, eq=False)
class Interactions:
    user: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    reward: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    propensity: np.ndarray | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_raw(
        cls,
        user: np.ndarray,
        item: np.ndarray,
        timestamp: np.ndarray,
        reward: np.ndarray,
        propensity: np.ndarray | None = None,
        *,
        source: str = "",
        duplicates: DuplicatePolicy = "keep",
        meta: dict[str, Any] | None = None,
        item_ids: np.ndarray | None = None,
    ) -> Interactions:
        """Encode raw ids to codes, drop exact duplicates if asked, sort, validate.

        Args:
            user, item: original ids (any sortable dtype), one per row in file order.
            timestamp: int64-convertible times; reward: finite floats.
            propensity: optional logging probabilities in (0, 1].
            duplicates: `keep` every row (default), or `drop` exact duplicate rows (same user,
                item, timestamp and reward), keeping the first. The count of exact duplicates is
                recorded in `meta["exact_duplicates"]` either way.
            item_ids: the full catalog of original item ids, if it is larger than the items that
                occur (codes then follow this array's sorted order).
        """
        n = len(user)
        if not (len(item) == len(timestamp) == len(reward) == n):
            raise InputError(f"{source}: columns have different lengths")
        if n == 0:
            raise InputError("no interactions (the file has no data rows)", path=source or None)
        user_ids, ucode = np.unique(np.asarray(user), return_inverse=True)
        if item_ids is None:
            item_ids, icode = np.unique(np.asarray(item), return_inverse=True)
        else:
            item_ids = np.unique(np.asarray(item_ids))
            icode = np.searchsorted(item_ids, np.asarray(item))
            icode = np.clip(icode, 0, len(item_ids) - 1)
            if not np.array_equal(item_ids[icode], np.asarray(item)):
                raise InputError("some items are not in the given item catalog", path=source or None)
        ucode = ucode.astype(np.int64).reshape(-1)
        icode = icode.astype(np.int64).reshape(-1)
        ts = np.asarray(timestamp).astype(np.int64, copy=False)
        rw = np.asarray(reward, dtype=np.float32)
        prop = None if propensity is None else np.asarray(propensity, dtype=np.float32)
        meta = dict(meta or {})

        order = np.lexsort((np.arange(n), ts, ucode))  # user, then time, then file row
        ucode, icode, ts, rw = ucode[order], icode[order], ts[order], rw[order]
        prop = None if prop is None else prop[order]

        dup = _exact_duplicate_mask(ucode, icode, ts, rw)
        meta["exact_duplicates"] = int(dup.sum())
        meta["duplicates_policy"] = duplicates
        if duplicates == "drop" and dup.any():
            keep = ~dup
            ucode, icode, ts, rw = ucode[keep], icode[keep], ts[keep], rw[keep]
            prop = None if prop is None else prop[keep]
        elif duplicates not in ("keep", "drop"):
            raise InputError(f"duplicates policy must be keep or drop; got {duplicates!r}")
        out = cls(ucode, icode, ts, rw, user_ids, item_ids, prop, source, meta)
        out.validate()
        return out

    # ------------------------------------------------------------------ basic facts
    def __len__(self) -> int:
        return int(self.user.shape[0])

    @property
    def n_users(self) -> int:
        return int(self.user_ids.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_ids.shape[0])

    def validate(self) -> None:
        """Raise `InputError` if the table breaks its contract (see module docstring)."""
        n = len(self)
        for name in ("item", "timestamp", "reward"):
            if getattr(self, name).shape != (n,):
                raise InputError(f"column {name!r} has shape {getattr(self, name).shape}, expected ({n},)")
        if self.user.dtype != np.int64 or self.item.dtype != np.int64 or self.timestamp.dtype != np.int64:
            raise InputError("user, item and timestamp must be int64")
        if self.reward.dtype != np.float32:
            raise InputError("reward must be float32")
        if n and (self.user.min() < 0 or self.user.max() >= self.n_users):
            raise InputError("user codes out of range")
        if n and (self.item.min() < 0 or self.item.max() >= self.n_items):
            raise InputError("item codes out of range")
        bad = ~np.isfinite(self.reward)
        if bad.any():
            raise InputError("reward is not finite", row=int(np.argmax(bad)) + 1, column="reward", path=self.source or None)
        if self.propensity is not None:
            p = self.propensity
            bad = ~((p > 0) & (p <= 1))
            if p.shape != (n,) or bad.any():
                raise InputError(
                    "propensity must lie in (0, 1]", row=int(np.argmax(bad)) + 1, column="propensity", path=self.source or None
                )
        if n > 1:
            u, t = self.user, self.timestamp
            unsorted = (u[1:] < u[:-1]) | ((u[1:] == u[:-1]) & (t[1:] < t[:-1]))
            if unsorted.any():
                raise InputError("rows are not sorted by (user, timestamp)")

    # ------------------------------------------------------------------ derived views
    def user_offsets(self) -> np.ndarray:
        """CSR offsets: rows of user `u` are `offsets[u]:offsets[u+1]` (length n_users + 1)."""
        counts = np.bincount(self.user, minlength=self.n_users)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def take(self, rows: np.ndarray) -> Interactions:
        """The rows selected by a boolean mask or sorted index array (codes and id maps kept)."""
        return dataclasses.replace(
            self,
            user=self.user[rows],
            item=self.item[rows],
            timestamp=self.timestamp[rows],
            reward=self.reward[rows],
            propensity=None if self.propensity is None else self.propensity[rows],
            meta=dict(self.meta),
        )

    def equals(self, other: Interactions) -> bool:
        """Same rows, codes and id maps (used to prove two layouts load identically)."""
        same = all(
            np.array_equal(getattr(self, c), getattr(other, c))
            for c in ("user", "item", "timestamp", "reward", "user_ids", "item_ids")
        )
        if (self.propensity is None) != (other.propensity is None):
            return False
        return same and (self.propensity is None or np.array_equal(self.propensity, other.propensity))


def _exact_duplicate_mask(u: np.ndarray, i: np.ndarray, t: np.ndarray, r: np.ndarray) -> np.ndarray:
    """True for every row that repeats an earlier row exactly (rows sorted by user, time)."""
    n = len(u)
    if n < 2:
        return np.zeros(n, dtype=bool)
    order = np.lexsort((np.arange(n), r, i, t, u))
    su, si, st, sr = u[order], i[order], t[order], r[order]
    same = np.zeros(n, dtype=bool)
    same[1:] = (su[1:] == su[:-1]) & (si[1:] == si[:-1]) & (st[1:] == st[:-1]) & (sr[1:] == sr[:-1])
    out = np.zeros(n, dtype=bool)
    out[order] = same
    return out
