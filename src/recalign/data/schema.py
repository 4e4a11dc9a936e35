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
        user: Any,
        item: Any,
        timestamp: np.ndarray,
        reward: np.ndarray,
        propensity: np.ndarray | None = None,
        *,
        source: str = "",
        duplicates: DuplicatePolicy = "keep",
        meta: dict[str, Any] | None = None,
        item_ids: np.ndarray | None = None,
        tiebreak: np.ndarray | None = None,
        extra_columns: dict[str, np.ndarray] | None = None,
    ) -> Interactions:
        """Encode raw ids to codes, sort, count (and drop if asked) exact duplicates, validate.

        This is the one builder of the table: the file loaders parse and check their columns,
        then call it. It is built for large inputs (10M rows in a few CPU-seconds; see
        `encode_ids`, `_sort_rows` and `_exact_duplicate_mask` for how), and the result is the
        same as the plain definition: codes in sorted order of the original ids, rows in
        lexicographic (user, timestamp, row) order.

        Args:
            user, item: original ids, one per row in input order: numpy arrays (or anything
                `np.asarray` accepts) of any sortable dtype (integer ids sort numerically, text
                by code point), or pyarrow string arrays (the loaders pass those, which saves
                a conversion). The id maps keep the input's dtype.
            timestamp: int64-convertible times; reward: finite floats (stored as float32).
            propensity: optional logging probabilities in (0, 1].
            source: where the rows come from (file path or a name), used in error messages.
            duplicates: `keep` every row (default), or `drop` exact duplicate rows (same user,
                item, timestamp and reward), keeping the first in table order. The count of
                exact duplicates is recorded in `meta["exact_duplicates"]` either way, the policy
                in `meta["duplicates_policy"]`.
            meta: extra facts kept in `Interactions.meta` (copied).
            item_ids: the full catalog of original item ids, if it is larger than the items that
                occur (codes then follow this array's sorted order); an item outside it is an
                `InputError` naming its (1-based) input row.
            tiebreak: optional finer sort key for rows that tie on (user, timestamp), applied
                before the input row (the loaders pass exact sub-second times when `timestamp`
                holds whole seconds). It does not enter the duplicate test.
            extra_columns: per-row arrays in input order (e.g. OBD's slot `position` and
                `file_row`); they are reordered (and thinned by `duplicates="drop"`) with the
                rows and stored in `meta` under their names, so `meta[name][k]` belongs to row
                `k` of the table.

        The returned arrays never share memory with the inputs.
        """
        extra = _check_lengths(user, item, timestamp, reward, propensity, tiebreak, extra_columns,
                               source=source, duplicates=duplicates)
        # the columns travel in a dict so that each unsorted array is freed as soon as its
        # sorted copy exists (10M rows: 80 MB per int64 column)
        cols, user_ids, item_ids = _encode_columns(user, item, timestamp, reward, propensity,
                                                   item_ids, source)
        meta = dict(meta or {})
        order = _sort_rows(cols, len(user_ids), len(item_ids), tiebreak)
        if order is None:  # already in order: the arrays may still be the caller's
            _unshare(cols, timestamp=timestamp, reward=reward, propensity=propensity)
        extra = _reorder(extra, order)
        del order
        extra = _count_duplicates(cols, extra, duplicates, meta)
        meta.update(extra)
        out = cls(**cols, user_ids=user_ids, item_ids=item_ids, source=source, meta=meta)
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


# ---------------------------------------------------------------------------- building blocks of from_raw
def _check_lengths(user: Any, item: Any, timestamp: Any, reward: Any, propensity: Any,
                   tiebreak: Any, extra_columns: dict[str, np.ndarray] | None, *, source: str,
                   duplicates: str) -> dict[str, np.ndarray]:
    """The duplicates policy is known, every column has the same number of rows, and there is at
    least one row; returns the extra columns as a new dict (name -> per-row array)."""
    if duplicates not in ("keep", "drop"):
        raise InputError(f"duplicates policy must be keep or drop; got {duplicates!r}")
    n = len(user)
    if not (len(item) == len(timestamp) == len(reward) == n):
        raise InputError(f"{source}: columns have different lengths")
    extra = dict(extra_columns or {})
    for name, col in [("propensity", propensity), ("tiebreak", tiebreak), *extra.items()]:
        if col is not None and len(col) != n:
            raise InputError(f"{source}: column {name!r} has {len(col)} rows, expected {n}")
    if n == 0:
        raise InputError("no interactions (the file has no data rows)", path=source or None)
    return extra


def _encode_columns(user: Any, item: Any, timestamp: Any, reward: Any, propensity: Any,
                    item_ids: np.ndarray | None, source: str
                    ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Raw columns (input order) -> `(cols, user_ids, item_ids)`.

    `cols` maps user, item (int64 codes), timestamp (int64), reward (float32) and propensity
    (float32 or None) to arrays of the input's length, still in input order; values are checked
    first, so a bad one is named by its input row. `item_ids` is the catalog if one is given
    (an item outside it is an `InputError`), else the distinct items found."""
    ts = np.asarray(timestamp).astype(np.int64, copy=False)
    rw = np.ascontiguousarray(reward, dtype=np.float32)
    prop = None if propensity is None else np.asarray(propensity, dtype=np.float32)
    _check_values(rw, prop, source)  # rows named in input order, before the sort
    ucode, user_ids = encode_ids(user)
    icode, found = encode_ids(item)
    if item_ids is None:
        item_ids = found
    else:
        icode, item_ids = _to_catalog(icode, found, item_ids, source)
    cols = {"user": ucode, "item": icode, "timestamp": ts, "reward": rw, "propensity": prop}
    return cols, user_ids, item_ids


def _unshare(cols: dict[str, Any], **inputs: Any) -> None:
    """Replace each column of `cols` named in `inputs` by a copy if it is (a view of) the
    caller's input array of that name or read-only (rows that were already in order were not
    moved, so the casts may have returned the inputs themselves)."""
    for name, src in inputs.items():
        cols[name] = None if cols[name] is None else _fresh(cols[name], src)


def _reorder(extra: dict[str, Any], order: np.ndarray | None) -> dict[str, np.ndarray]:
    """The extra per-row columns in table order: gathered by the row `order`, or copied when
    `order` is None (rows already in order)."""
    out = {}
    for name, col in extra.items():
        v = np.asarray(col)
        out[name] = v.copy() if order is None else v[order]
    return out


def _count_duplicates(cols: dict[str, Any], extra: dict[str, np.ndarray], duplicates: str,
                      meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """Record the number of exact duplicate rows and the policy in `meta`; under `drop`, remove
    the duplicates from the sorted columns in `cols` (in place) and from `extra` (returned)."""
    dup = _exact_duplicate_mask(cols["user"], cols["item"], cols["timestamp"], cols["reward"])
    meta["exact_duplicates"] = int(dup.sum())
    meta["duplicates_policy"] = duplicates
    if duplicates == "drop" and dup.any():
        keep = ~dup
        for name in list(cols):
            cols[name] = None if cols[name] is None else cols[name][keep]
        extra = {name: v[keep] for name, v in extra.items()}
    return extra


def _check_values(reward: np.ndarray, prop: np.ndarray | None, source: str) -> None:
    """Rewards finite, propensities in (0, 1]; the first bad one is named by its input row."""
    bad = ~np.isfinite(reward)
    if bad.any():
        raise InputError("reward is not finite", row=int(np.argmax(bad)) + 1, column="reward",
                         path=source or None)
    if prop is not None:
        bad = ~((prop > 0) & (prop <= 1))
        if bad.any():
            raise InputError("propensity must lie in (0, 1]", row=int(np.argmax(bad)) + 1,
                             column="propensity", path=source or None)


def encode_ids(ids: Any) -> tuple[np.ndarray, np.ndarray]:
    """Original ids -> (codes, id map): int64 codes 0..k-1 per row, and the k distinct ids sorted
    (`id_map[codes]` gives the ids back). Integer ids sort numerically, text by code point.

    No sort of all the rows: integers in a dense range are encoded by counting, other integers
    and text are hash-encoded by arrow, and only the k distinct ids are sorted. Other dtypes
    (floats, bytes, mixed objects) fall back to `np.unique`. The id map keeps the input's dtype;
    a pyarrow string array gives an object array of `str`.
    """
    if _is_arrow(ids):
        import pyarrow as pa

        if pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type):
            if ids.null_count:
                raise InputError("ids must not be missing")
            return _encode_arrow_text(ids)
        ids = ids.to_numpy(zero_copy_only=False)
    a = np.asarray(ids)
    if a.ndim != 1:
        a = a.reshape(-1)
    if a.dtype.kind in "iu":
        return _encode_integers(a)
    if a.dtype.kind in "OU":
        out = _encode_text(a)
        if out is not None:
            return out
    id_map, codes = np.unique(a, return_inverse=True)
    return codes.astype(np.int64).reshape(-1), id_map


def _is_arrow(x: Any) -> bool:
    return type(x).__module__.startswith("pyarrow") and hasattr(x, "type")


def _encode_integers(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(v) == 0:
        return np.zeros(0, dtype=np.int64), v[:0].copy()
    lo, hi = int(v.min()), int(v.max())
    if hi - lo <= 4 * len(v) + 1024:  # dense range: count, no sort
        # offsets from lo, computed in the input's dtype where that is exact (unsigned) and in
        # int64 otherwise (small signed dtypes would overflow)
        off = (v - v.dtype.type(lo)).astype(np.int64) if v.dtype.kind == "u" else v.astype(np.int64) - lo
        present = np.zeros(hi - lo + 1, dtype=bool)
        present[off] = True
        rank = np.cumsum(present, dtype=np.int64)
        rank -= 1
        id_map = np.flatnonzero(present).astype(v.dtype)
        id_map += v.dtype.type(lo)  # wraps in small dtypes, exact modulo 2**bits: the ids fit
        return rank[off], id_map
    import pyarrow as pa
    import pyarrow.compute as pc

    enc = pc.dictionary_encode(pa.array(v))
    values = _arrow_index(enc.dictionary).astype(v.dtype, copy=False)
    order = np.argsort(values, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order), dtype=np.int64)
    return rank[_arrow_index(enc.indices)], values[order]


def _encode_text(a: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """str (`U` or object) ids by arrow's hash; object arrays of Python ints as integers; None
    (use `np.unique`) for anything else."""
    import pyarrow as pa

    try:
        arr = pa.array(a)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None
    if arr.null_count:
        return None
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        codes, id_map = _encode_arrow_text(arr)
        return codes, (id_map if a.dtype.kind == "O" else id_map.astype(a.dtype))
    if a.dtype.kind == "O" and pa.types.is_integer(arr.type):
        codes, id_map = _encode_integers(np.asarray(arr.to_numpy(zero_copy_only=False)))
        return codes, id_map.astype(object)
    return None


def _encode_arrow_text(arr: Any) -> tuple[np.ndarray, np.ndarray]:
    """Text ids: arrow hash-encodes them and sorts the distinct texts (UTF-8 byte order, which
    is code-point order, as Python sorts `str`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    enc = pc.dictionary_encode(arr)
    chunks = enc.chunks if isinstance(enc, pa.ChunkedArray) else [enc]
    if len(chunks) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object)
    if any(not c.dictionary.equals(chunks[0].dictionary) for c in chunks[1:]):  # pragma: no cover
        chunks = enc.unify_dictionaries().chunks  # arrow shares one dictionary across chunks
    dictionary = chunks[0].dictionary
    index = np.concatenate([_arrow_index(c.indices) for c in chunks]) if len(chunks) > 1 \
        else _arrow_index(chunks[0].indices)
    order = _arrow_index(pc.sort_indices(dictionary))
    id_map = np.asarray(dictionary.take(pa.array(order)).to_pylist(), dtype=object)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order), dtype=np.int64)
    return rank[index], id_map


def _arrow_index(a: Any) -> np.ndarray:
    """An arrow integer array without nulls as numpy, viewed from its buffer (pyarrow's
    `to_numpy` imports pandas when it is installed, ~0.3 s)."""
    import pyarrow.types as pat

    dtype = np.dtype(f"{'u' if pat.is_unsigned_integer(a.type) else 'i'}{a.type.bit_width // 8}")
    return np.frombuffer(a.buffers()[1], dtype=dtype, count=len(a), offset=a.offset * dtype.itemsize)


def _to_catalog(icode: np.ndarray, found: np.ndarray, catalog: np.ndarray, source: str
                ) -> tuple[np.ndarray, np.ndarray]:
    """Codes into the sorted catalog; only the distinct items found are looked up."""
    cat = np.unique(np.asarray(catalog))
    ok = np.zeros(len(found), dtype=bool)
    pos = np.zeros(len(found), dtype=np.int64)
    if len(cat):
        try:
            pos = np.clip(np.searchsorted(cat, found), 0, len(cat) - 1)
            ok = np.asarray(cat[pos] == found, dtype=bool).reshape(len(found))
        except (TypeError, ValueError):  # ids and catalog of different kinds (text vs numbers)
            pass
    if not ok.all():
        idx = int(np.argmax(~ok[icode]))
        bad = found[icode[idx]]
        bad = bad.item() if isinstance(bad, np.generic) else bad
        raise InputError(f"item {bad!r} is not in the item catalog", row=idx + 1, column="item",
                         path=source or None)
    return pos[icode].astype(np.int64), cat


def _sort_rows(cols: dict[str, Any], n_users: int, n_items: int, tiebreak: np.ndarray | None
               ) -> np.ndarray | None:
    """Sort the columns in `cols` (user, item, timestamp, reward, propensity: equal-length
    arrays, propensity may be None) by (user, timestamp, tiebreak, input row), replacing them in
    the dict one by one so that each unsorted array can be freed early. The rows are ordered by
    one stable argsort of a combined int64 (user, time) key where that fits (a lexsort
    otherwise), and not moved at all when they are already in order.

    Returns the row order, or None when the rows were already in order (nothing was moved)."""
    u, ts = cols["user"], cols["timestamp"]
    n = len(u)
    tmin = int(ts.min())
    span = int(ts.max()) - tmin + 1
    if tiebreak is not None or span >= 2**62 // max(n_users, 1):
        keys = (ts, u) if tiebreak is None else (np.asarray(tiebreak), ts, u)
        order = np.lexsort(keys)  # lexsort is stable: the input row is the last key
        del keys
        cols["user"] = u[order]
        del u
        cols["timestamp"] = ts[order]
    else:
        # (user, time) as one int64 in [0, n_users * span) < 2**62. Intermediate sums may wrap
        # around; numpy's int64 arithmetic is modular, so the final key is exact.
        key = u * np.int64(span)
        key += ts
        key -= tmin
        if n < 2 or bool(np.all(key[1:] >= key[:-1])):  # already in order: no sort
            return None
        cols["user"] = None
        del u
        order = np.argsort(key, kind="stable")  # stable: ties keep the input order
        key = key[order]
        u = key // span
        key -= u * np.int64(span)
        key += tmin
        cols["user"], cols["timestamp"] = u, key
        del u, key
    del ts
    icode = cols.pop("item")
    rw = cols.pop("reward")
    if n_items < 2**31:  # one gather instead of two: (item code, reward bits) packed in an int64
        packed = icode << 32
        del icode
        packed |= rw.view(np.uint32)
        del rw
        packed = packed[order]
        cols["reward"] = (packed & 0xFFFFFFFF).astype(np.uint32).view(np.float32)
        packed >>= 32
        cols["item"] = packed
    else:
        cols["item"] = icode[order]
        del icode
        cols["reward"] = rw[order]
    if cols["propensity"] is not None:
        cols["propensity"] = cols["propensity"][order]
    return order


def _fresh(x: np.ndarray, src: Any) -> np.ndarray:
    """`x`, copied if it is (a view of) the caller's array `src` or read-only."""
    if not x.flags.writeable or (isinstance(src, np.ndarray) and np.may_share_memory(x, src)):
        return x.copy()
    return x


def _exact_duplicate_mask(u: np.ndarray, i: np.ndarray, t: np.ndarray, r: np.ndarray) -> np.ndarray:
    """True for every row that repeats an earlier row exactly; rows sorted by (user, time).

    A duplicate ties with its original on (user, time), and in sorted rows those ties are
    neighbours, so only rows that tie with a neighbour are compared."""
    n = len(u)
    out = np.zeros(n, dtype=bool)
    if n < 2:
        return out
    same = (u[1:] == u[:-1]) & (t[1:] == t[:-1])
    if not same.any():
        return out
    tied = np.zeros(n, dtype=bool)
    tied[1:] |= same
    tied[:-1] |= same
    pos = np.flatnonzero(tied)
    su, si, st, sr = u[pos], i[pos], t[pos], r[pos]
    o = np.lexsort((pos, sr, si, st, su))
    su, si, st, sr = su[o], si[o], st[o], sr[o]
    rep = np.zeros(len(pos), dtype=bool)
    rep[1:] = (su[1:] == su[:-1]) & (si[1:] == si[:-1]) & (st[1:] == st[:-1]) & (sr[1:] == sr[:-1])
    out[pos[o]] = rep
    return out
