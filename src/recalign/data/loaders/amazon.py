"""Amazon Reviews (McAuley lab), 2014, 2018 and 2023 releases; plain or `.gz`.

- Ratings-only CSV, no header: 2014 `ratings_<Category>.csv` is `user,item,rating,timestamp`;
  2018 `<Category>.csv` is `item,user,rating,timestamp`. The order is taken from the file name
  (`ratings_` prefix = 2014) and checked against the data: item ids must look like ASINs (ten
  characters, `B` + 9 or 9 digits + digit/X). `--columns item,user,reward,timestamp` (file
  order) overrides the order.
- Review JSON Lines: 2014/2018 keys `reviewerID`, `asin`, `overall`, `unixReviewTime` (seconds);
  2023 keys `user_id`, `parent_asin` (used when present, else `asin`), `rating`, `timestamp`
  (milliseconds; the table keeps seconds and sub-second order). `--columns` (ROLE=KEY) overrides.

The reward is the star rating (1-5).

Named datasets (`NAMES`, looked up in the data folder like the MovieLens names):

| name | folder (in the data folder) | file |
| --- | --- | --- |
| amazon-books-2018 | `amazon-books-2018/` | `Books.csv` (or `Books.csv.gz`): the 2018 Books ratings-only CSV, as `recalign data download amazon-books-2018` leaves it |
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recalign.data.loaders import generic, tabular
from recalign.data.schema import Interactions
from recalign.errors import InputError

ASIN = r"^(B[0-9A-Z]{9}|[0-9]{9}[0-9X])$"
# name -> (folder in the data folder, file names in order of preference); the folder and the
# first file are those of the download source of the same name (`recalign.data.download`)
_NAMED = {"amazon-books-2018": ("amazon-books-2018", ("Books.csv", "Books.csv.gz"))}
NAMES = tuple(_NAMED)
_KEYS_2014 = {"user": "reviewerID", "item": "asin", "reward": "overall", "timestamp": "unixReviewTime"}


def locate(name: str, data_dir: Path) -> Path:
    """The ratings file of the named Amazon dataset `name` under `data_dir` (module table)."""
    folder, files = _NAMED[name]
    candidates = [d / f for d in (data_dir / folder, data_dir / folder / folder) for f in files]
    for c in candidates:
        if c.is_file():
            return c
    raise InputError(
        f"dataset {name} not found: looked for {', '.join(str(c) for c in candidates[:2])}; download it with "
        f"`recalign data download {name} --insecure-skip-checksum` (no published sha256), or point --data-dir "
        "(or $RECALIGN_DATA) at the folder that holds it",
        path=data_dir / folder,
    )


def json_layout(keys: list[str]) -> tuple[dict[str, str], str] | None:
    """(role -> key, time unit) for Amazon review keys, or None if `keys` are not Amazon's."""
    ks = set(keys)
    if set(_KEYS_2014.values()) <= ks:
        return dict(_KEYS_2014), "s"
    if {"user_id", "rating", "timestamp"} <= ks and ({"parent_asin", "asin"} & ks):
        item = "parent_asin" if "parent_asin" in ks else "asin"
        return {"user": "user_id", "item": item, "reward": "rating", "timestamp": "timestamp"}, "ms"
    return None


def looks_like_ratings_line(line: str) -> bool:
    """True for a header-less `id,id,rating,unix-time` line with one ASIN-like id."""
    parts = tabular.split_line(line, ",")
    if len(parts) != 4:
        return False
    a, b, r, t = (p.strip() for p in parts)
    try:
        float(r)
        int(t)
    except ValueError:
        return False
    return bool(re.match(ASIN, a) or re.match(ASIN, b))


def load_file(path: Path, *, columns: str = "", duplicates: str = "keep",
              meta: dict | None = None) -> Interactions:
    """Load an Amazon ratings CSV or review JSON Lines file (see the module docstring)."""
    fmt = generic.format_of(path)
    if fmt == "jsonl":
        cols = _read_json(path, columns)
    else:
        cols = _read_csv(path, columns)
    return tabular.build_interactions(cols, duplicates=duplicates,
                                      meta={"format": "amazon", **(meta or {})})


def _read_json(path: Path, columns: str) -> tabular.Columns:
    _, keys = tabular.json_sample(path)
    layout = json_layout(keys)
    mapping = generic.parse_mapping(columns)
    if layout is None and not mapping:
        raise InputError(
            "not an Amazon review file: expected the keys reviewerID, asin, overall, "
            "unixReviewTime (2014/2018) or user_id, parent_asin, rating, timestamp (2023); found "
            f"{', '.join(map(repr, keys[:30]))}", path=path,
        )
    select, unit = layout if layout is not None else ({}, "s")
    select = {**select, **mapping}
    return tabular.read_json_lines(path, generic.resolve_columns(path, keys, select), unit)


def _read_csv(path: Path, columns: str) -> tabular.Columns:
    if "=" in columns:
        raise _mapping_on_ratings_csv(path, columns)
    if columns:
        names = generic.parse_order(columns, path)
    elif path.name.lower().startswith("ratings_"):
        names = ["user", "item", "reward", "timestamp"]  # 2014
    else:
        names = ["item", "user", "reward", "timestamp"]  # 2018
    select = {n: n for n in names if n in tabular.ROLES}
    cols = tabular.read_delimited(path, delimiter=",", names=names, select=select)
    if not columns:
        _check_order(cols, names)
    return cols


def _mapping_on_ratings_csv(path: Path, columns: str) -> InputError:
    """`--columns ROLE=NAME` on an Amazon ratings CSV, which has no header line to name."""
    lines = tabular.first_lines(path, 1)
    line = lines[0] if lines else ""
    line = line if len(line) <= 80 else line[:77] + "..."
    named = ", ".join(repr(p.split("=", 1)[1].strip()) for p in columns.split(",") if "=" in p)
    order = "user,item,reward,timestamp" if path.name.lower().startswith("ratings_") else "item,user,reward,timestamp"
    return InputError(
        f"the file has no header: it was read as an Amazon ratings CSV (its first line, {line!r}, is data with "
        f"an ASIN-like id), so the named columns {named} cannot be found. List the roles in file order "
        f"instead, e.g. --columns {order} (no --no-header needed), or read it as a generic file with "
        "--format csv (add --no-header and roles in file order if it has no header)", path=path,
    )


def _asin_share(arr: pa.ChunkedArray) -> float:
    head = arr.slice(0, 1000)
    if not (pa.types.is_string(head.type) or pa.types.is_large_string(head.type)):
        head = pc.cast(head, pa.string())
    hits = tabular.to_np(pc.fill_null(pc.match_substring_regex(head, ASIN), False))
    return float(np.mean(hits)) if len(hits) else 0.0


def _check_order(cols: tabular.Columns, names: list[str]) -> None:
    try:
        item, user = _asin_share(cols.arrays["item"]), _asin_share(cols.arrays["user"])
    except pa.ArrowException:
        return
    if item < 0.5 and user >= 0.9:
        order = ",".join([names[1], names[0], *names[2:]])
        raise InputError(
            "the item column does not hold ASINs but the user column does: the columns seem to be "
            f"in another order; pass --columns with the roles in file order (e.g. {order})",
            path=cols.path,
        )
