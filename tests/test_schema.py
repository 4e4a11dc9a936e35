"""`Interactions.from_raw` (count/hash encoding, one argsort of a combined key, duplicates looked
for among (user, time) ties only) against a slow, obviously correct reference written here with
Python sorts, on random tables with ties, duplicates, and integer and text ids of many kinds."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recalign.data.schema import Interactions, encode_ids
from recalign.errors import InputError


# ---------------------------------------------------------------------------- the reference
def reference(user, item, ts, reward, prop=None, *, duplicates="keep", item_ids=None, tiebreak=None,
              extra=None) -> dict:
    """The table by definition: codes = rank among the sorted distinct ids, rows sorted by
    (user code, timestamp, tiebreak, input row), a row is a duplicate when an earlier row of the
    sorted table has the same (user, item, timestamp, reward)."""
    users, items = list(user), list(item)
    user_map = sorted(set(users))
    item_map = sorted(set(items if item_ids is None else list(item_ids)))
    ucode = {v: k for k, v in enumerate(user_map)}
    icode = {v: k for k, v in enumerate(item_map)}
    n = len(users)
    rows = [(ucode[users[k]], icode[items[k]], int(ts[k]), float(np.float32(reward[k])), k) for k in range(n)]
    rows.sort(key=lambda r: (r[0], r[2], 0 if tiebreak is None else tiebreak[r[4]], r[4]))
    seen: set = set()
    dup = []
    for r in rows:
        dup.append(r[:4] in seen)
        seen.add(r[:4])
    kept = [r for r, d in zip(rows, dup) if not (d and duplicates == "drop")]
    out = {
        "user": [r[0] for r in kept], "item": [r[1] for r in kept], "timestamp": [r[2] for r in kept],
        "reward": [r[3] for r in kept], "user_ids": user_map, "item_ids": item_map,
        "exact_duplicates": sum(dup),
        "propensity": None if prop is None else [float(np.float32(prop[r[4]])) for r in kept],
    }
    for name, col in (extra or {}).items():
        out[name] = [col[r[4]] for r in kept]
    return out


def check_equal(inter: Interactions, ref: dict, duplicates: str) -> None:
    for col in ("user", "item", "timestamp", "reward"):
        assert getattr(inter, col).tolist() == ref[col], col
    assert inter.user.dtype == inter.item.dtype == inter.timestamp.dtype == np.int64
    assert inter.reward.dtype == np.float32
    assert inter.user_ids.tolist() == ref["user_ids"]
    assert inter.item_ids.tolist() == ref["item_ids"]
    assert (inter.propensity is None) == (ref["propensity"] is None)
    if inter.propensity is not None:
        assert inter.propensity.tolist() == ref["propensity"]
    assert inter.meta["exact_duplicates"] == ref["exact_duplicates"]
    assert inter.meta["duplicates_policy"] == duplicates


# ---------------------------------------------------------------------------- random tables
ID_KINDS = ("int64", "int32", "uint64", "int8", "sparse", "text", "text_U", "arrow_text", "object_int")


def make_ids(kind: str, pool: list[int]) -> np.ndarray | pa.Array:
    """Ids of one kind from small non-negative integers (so ties and repeats are common)."""
    p = np.asarray(pool)
    if kind == "int64":
        return (p - 3).astype(np.int64)  # some negative
    if kind == "int32":
        return (p * 7 - 10).astype(np.int32)
    if kind == "uint64":
        return (np.uint64(2**64 - 40) + p.astype(np.uint64)).astype(np.uint64)  # near the top
    if kind == "int8":
        return np.array([(-128, 127, 0, -1, 5, 100)[v % 6] for v in pool], dtype=np.int8)
    if kind == "sparse":  # a wide range: hash-encoded, not counted
        return np.array([(-(10**15), 10**12, 3, 2**62, -7, 10**9)[v % 6] + v // 6 for v in pool], dtype=np.int64)
    texts = ["a", "b", "0042", "42", "é", "Z", "ab", "", "日本", "a\x00"]
    if kind == "text":
        return np.array([texts[v % len(texts)] + "x" * (v // len(texts)) for v in pool], dtype=object)
    if kind == "text_U":
        return np.array([texts[v % 8] + "y" * (v // 8) for v in pool], dtype=str)  # no '\x00' in U
    if kind == "arrow_text":
        vals = [texts[v % len(texts)] + str(v) for v in pool]
        return pa.chunked_array([vals[: len(vals) // 2], vals[len(vals) // 2:]], type=pa.string())
    if kind == "object_int":
        return np.array([int(v) * 3 - 5 for v in pool], dtype=object)
    raise AssertionError(kind)


def as_list(ids) -> list:
    return ids.to_pylist() if isinstance(ids, (pa.Array, pa.ChunkedArray)) else ids.tolist()


@st.composite
def tables(draw):
    n = draw(st.integers(1, 60))
    n_users = draw(st.integers(1, 8))
    n_items = draw(st.integers(1, 12))
    users = draw(st.lists(st.integers(0, n_users - 1), min_size=n, max_size=n))
    items = draw(st.lists(st.integers(0, n_items - 1), min_size=n, max_size=n))
    scale = draw(st.sampled_from([1, 1000, 10**9, 2**61]))  # 2**61: the key would overflow: lexsort
    ts = [scale * t for t in draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n))]
    rewards = draw(st.lists(st.sampled_from([0.0, 1.0, -0.5, 2.5, -0.0]), min_size=n, max_size=n))
    n_copy = draw(st.integers(0, n))  # exact duplicates: copies of some rows, anywhere
    cols = [users, items, ts, rewards]
    if n_copy:
        picks = draw(st.lists(st.integers(0, n - 1), min_size=n_copy, max_size=n_copy))
        cols = [c + [c[k] for k in picks] for c in cols]
        perm = draw(st.permutations(range(len(cols[0]))))
        cols = [[c[k] for k in perm] for c in cols]
    users, items, ts, rewards = cols
    m = len(users)
    prop = draw(st.one_of(st.none(), st.lists(st.sampled_from([0.1, 0.5, 1.0]), min_size=m, max_size=m)))
    presorted = draw(st.booleans())
    if presorted:  # exercise the no-sort path
        order = sorted(range(m), key=lambda k: (users[k], ts[k]))
        users, items, ts, rewards = ([c[k] for k in order] for c in (users, items, ts, rewards))
        prop = None if prop is None else [prop[k] for k in order]
    return {
        "users": users, "items": items, "ts": np.array(ts, dtype=np.int64),
        "reward": np.array(rewards, dtype=np.float64), "prop": None if prop is None else np.array(prop),
        "ukind": draw(st.sampled_from(ID_KINDS)), "ikind": draw(st.sampled_from(ID_KINDS)),
        "duplicates": draw(st.sampled_from(["keep", "drop"])),
        "tiebreak": draw(st.one_of(st.none(), st.lists(st.integers(0, 2), min_size=m, max_size=m))),
        "catalog_extra": draw(st.integers(0, 3)),
    }


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_from_raw_equals_reference(t):
    user = make_ids(t["ukind"], t["users"])
    item = make_ids(t["ikind"], t["items"])
    catalog = None
    if t["catalog_extra"] and t["ikind"] not in ("arrow_text",):
        more = make_ids(t["ikind"], list(range(max(t["items"]) + 1, max(t["items"]) + 1 + t["catalog_extra"])))
        catalog = np.concatenate([np.asarray(item), np.asarray(more)])[::-1]  # unsorted, repeats
    tiebreak = None if t["tiebreak"] is None else np.array(t["tiebreak"])
    extra = {"file_row": np.arange(len(t["ts"])), "tag": np.array([f"r{k}" for k in range(len(t["ts"]))])}
    inter = Interactions.from_raw(user, item, t["ts"], t["reward"], t["prop"], duplicates=t["duplicates"],
                                  item_ids=catalog, tiebreak=tiebreak, extra_columns=extra)
    ref = reference(as_list(user), as_list(item), t["ts"], t["reward"], t["prop"], duplicates=t["duplicates"],
                    item_ids=None if catalog is None else catalog.tolist(), tiebreak=t["tiebreak"],
                    extra={k: v.tolist() for k, v in extra.items()})
    check_equal(inter, ref, t["duplicates"])
    for name in extra:
        assert inter.meta[name].tolist() == ref[name]
    if not isinstance(user, pa.ChunkedArray):  # the id maps keep the input's dtype
        assert inter.user_ids.dtype == np.asarray(user).dtype
    if catalog is None and not isinstance(item, pa.ChunkedArray):
        assert inter.item_ids.dtype == np.asarray(item).dtype


@pytest.mark.parametrize("seed", range(4))
def test_larger_random_tables_against_reference(seed):
    """A few thousand rows: many users per key span, dense and sparse ids, many duplicates."""
    rng = np.random.default_rng(seed)
    n = 3000
    user = rng.integers(0, 300, n) * (1 if seed % 2 else 10**10)  # odd seeds: dense (counted)
    item = np.array([f"i{k}" for k in rng.integers(0, 80, n)], dtype=object)
    ts = rng.integers(0, 20, n) * 3600
    reward = rng.integers(0, 3, n).astype(np.float32)
    user, item, ts, reward = (np.concatenate([a, a[: n // 3]]) for a in (user, item, ts, reward))
    for duplicates in ("keep", "drop"):
        inter = Interactions.from_raw(user, item, ts, reward, duplicates=duplicates)
        check_equal(inter, reference(user.tolist(), item.tolist(), ts, reward, duplicates=duplicates), duplicates)
        assert inter.meta["exact_duplicates"] >= n // 3


# ---------------------------------------------------------------------------- contract details
def test_numeric_ids_sort_numerically_and_text_by_code_point():
    inter = Interactions.from_raw(np.array([10, 9, 100]), np.array(["b", "B", "a"], dtype=object),
                                  np.zeros(3, int), np.ones(3))
    assert inter.user_ids.tolist() == [9, 10, 100] and inter.user.tolist() == [0, 1, 2]
    assert inter.item_ids.tolist() == ["B", "a", "b"] and inter.item.tolist() == [0, 2, 1]  # rows by user


def test_encode_ids_kinds():
    codes, ids = encode_ids(np.array([127, -128, 0, 127], dtype=np.int8))
    assert ids.dtype == np.int8 and ids.tolist() == [-128, 0, 127] and codes.tolist() == [2, 0, 1, 2]
    codes, ids = encode_ids(np.array([2**64 - 1, 5, 2**63], dtype=np.uint64))
    assert ids.dtype == np.uint64 and ids.tolist() == [5, 2**63, 2**64 - 1] and codes.tolist() == [2, 0, 1]
    codes, ids = encode_ids(np.array([0.5, -1.0, 0.5]))  # floats: np.unique
    assert ids.tolist() == [-1.0, 0.5] and codes.tolist() == [1, 0, 1]
    codes, ids = encode_ids(pa.array(["b", "a", "b"]))
    assert ids.dtype == object and ids.tolist() == ["a", "b"] and codes.dtype == np.int64
    codes, ids = encode_ids(np.array([2**70, 1], dtype=object))  # too big for int64: np.unique
    assert ids.tolist() == [1, 2**70] and codes.tolist() == [1, 0]


def test_ties_keep_input_order_and_tiebreak_comes_first():
    user, item = np.zeros(4, int), np.array([3, 1, 2, 0])
    ts = np.array([5, 5, 5, 1])
    assert Interactions.from_raw(user, item, ts, np.ones(4)).item.tolist() == [0, 3, 1, 2]
    inter = Interactions.from_raw(user, item, ts, np.ones(4), tiebreak=np.array([0.9, 0.1, 0.5, 0.0]))
    assert inter.item.tolist() == [0, 1, 2, 3]


def test_sorted_input_is_not_aliased():
    """Already sorted rows skip the sort; the table must still own its arrays."""
    user, item = np.arange(5), np.arange(5)
    ts, reward, prop = np.arange(5, dtype=np.int64), np.ones(5, np.float32), np.full(5, 0.5, np.float32)
    extra = np.arange(5)
    inter = Interactions.from_raw(user, item, ts, reward, prop, extra_columns={"x": extra})
    for mine, theirs in ((inter.timestamp, ts), (inter.reward, reward), (inter.propensity, prop),
                         (inter.meta["x"], extra)):
        assert not np.shares_memory(mine, theirs) and mine.flags.writeable


def test_simulator_style_catalog():
    """The simulator passes int codes and the catalog `arange(n_items)` with rows in order."""
    n_items = 50
    user = np.repeat(np.arange(4), 3)
    item = np.array([7, 7, 1, 0, 2, 3, 49, 48, 7, 1, 1, 1])
    ts = np.tile(np.arange(3), 4) + 100
    inter = Interactions.from_raw(user, item, ts, np.ones(12), item_ids=np.arange(n_items))
    assert inter.n_items == n_items and np.array_equal(inter.item, item) and np.array_equal(inter.user, user)


def test_item_outside_catalog_names_the_row():
    with pytest.raises(InputError, match="item 9 is not in the item catalog") as e:
        Interactions.from_raw(np.zeros(3, int), np.array([1, 9, 9]), np.arange(3), np.ones(3),
                              item_ids=np.arange(5), source="f.csv")
    assert e.value.row == 2 and e.value.column == "item" and e.value.path == "f.csv"
    with pytest.raises(InputError, match="not in the item catalog"):  # text ids, numeric catalog
        Interactions.from_raw(np.zeros(1, int), np.array(["a"], dtype=object), np.arange(1), np.ones(1),
                              item_ids=np.arange(5))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reward": np.array([1.0, np.nan, 1.0])}, "reward is not finite"),
        ({"propensity": np.array([0.5, 0.5, 0.0])}, "propensity must lie in"),
        ({"duplicates": "first"}, "duplicates policy"),
        ({"timestamp": np.arange(2)}, "different lengths"),
        ({"extra_columns": {"x": np.arange(2)}}, "'x' has 2 rows"),
    ],
)
def test_input_errors(kwargs, message):
    args = {"user": np.array([3, 1, 2]), "item": np.arange(3), "timestamp": np.arange(3), "reward": np.ones(3)}
    args.update(kwargs)
    with pytest.raises(InputError, match=message):
        Interactions.from_raw(**args)


def test_bad_values_are_named_by_input_row():
    with pytest.raises(InputError) as e:  # row 1 of the input sorts last
        Interactions.from_raw(np.array([9, 1, 2]), np.arange(3), np.arange(3), np.array([np.inf, 1, 1]))
    assert e.value.row == 1 and e.value.column == "reward"


def test_empty_input():
    with pytest.raises(InputError, match="no interactions"):
        Interactions.from_raw(np.zeros(0, int), np.zeros(0, int), np.zeros(0, int), np.zeros(0))
