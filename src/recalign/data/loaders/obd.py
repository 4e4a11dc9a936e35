"""The Open Bandit Dataset (ZOZOTOWN logged bandit feedback).

Layout: `<data_dir>/obd/<policy>/<campaign>/<campaign>.csv` with `policy` in {random, bts} and
`campaign` in {all, men, women}, and `item_context.csv` beside each log. A log row is one
impression: `timestamp` (e.g. `2019-11-24 00:00:34.762830+00:00`), `item_id` (the action),
`position` (slot 1-3), `click` (the reward), `propensity_score` (the logging probability),
`user_feature_0..3` (hashed user attributes) and one `user-item_affinity_<k>` column per item.

Users. The data have no user ids. Each distinct tuple (user_feature_0, ..., user_feature_3) is
one pseudo-user, with the id `f0|f1|f2|f3`. That tuple is all the logged context a policy or a
reward model r(user, item) can condition on apart from the affinity columns, so a pseudo-user
is a context class: a reward model learns per-context click rates, and an off-policy estimate
sees the same contexts the logging policy saw. (Treating each row as its own user would give
length-1 sequences and a reward model that cannot generalise from any row to another.) The
sample of 10,000 rows per log holds about 240 such contexts. Their "sequences" are impressions
in time order, not a person's history, so these data suit bandit and reward-model work, not
next-item pretraining.

Time. Timestamps become whole UTC seconds; rows are in time order in the file, and sub-second
order is kept by the table's secondary sort key (the row order).

Kept in `meta`: `position` and `file_row` (0-based data row of the log) for every table row,
aligned with the table; `item_features` ({column: array aligned with the item codes}) from
`item_context.csv`; `policy`, `campaign` and `users` (how pseudo-users are formed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recalign.data.loaders import tabular
from recalign.data.schema import Interactions
from recalign.errors import InputError

POLICIES = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
USER_FEATURES = tuple(f"user_feature_{k}" for k in range(4))
USERS_NOTE = "one pseudo-user per distinct (user_feature_0, ..., user_feature_3) tuple"


def locate(data_dir: Path, policy: str = "random", campaign: str = "all") -> Path:
    if policy not in POLICIES:
        raise InputError(f"unknown Open Bandit policy {policy!r}; valid: {', '.join(POLICIES)}")
    if campaign not in CAMPAIGNS:
        raise InputError(f"unknown Open Bandit campaign {campaign!r}; valid: {', '.join(CAMPAIGNS)}")
    path = data_dir / "obd" / policy / campaign / f"{campaign}.csv"
    if not path.is_file():
        raise InputError(
            f"dataset obd ({policy}/{campaign}) not found: looked for {path}; download it with "
            "`recalign data download obd`, or point --data-dir (or $RECALIGN_DATA) at the folder "
            "that holds obd/", path=path,
        )
    return path


def is_obd_header(found: list[str]) -> bool:
    return {"item_id", "click", "propensity_score", "timestamp", *USER_FEATURES} <= set(found)


def load_file(path: Path, *, duplicates: str = "keep", meta: dict | None = None) -> Interactions:
    """Load one Open Bandit log (see the module docstring)."""
    select = {"item": "item_id", "reward": "click", "timestamp": "timestamp",
              "propensity": "propensity_score", "position": "position"}
    select.update({f: f for f in USER_FEATURES})
    cols = tabular.read_delimited(path, delimiter=",", names=None, select=select)
    feats = [cols.arrays.pop(f) for f in USER_FEATURES]
    for f in USER_FEATURES:
        cols.labels.pop(f)
    feats = [pc.cast(f, pa.string()) for f in feats]
    cols.arrays["user"] = pc.binary_join_element_wise(*feats, pa.scalar("|"))
    cols.labels["user"] = "user_feature_0..3"
    position = cols.arrays.pop("position")
    try:
        position = tabular.to_np(position).astype(np.int64)
    except (pa.ArrowException, ValueError, TypeError):
        raise InputError("the position column must hold integers", path=path, column="position") from None
    catalog, features = _item_context(path.parent / "item_context.csv")
    info = {"format": "obd", "users": USERS_NOTE, **(meta or {})}
    if features:
        info["item_features"] = features
    return tabular.build_interactions(
        cols, duplicates=duplicates, meta=info, item_catalog=catalog,
        row_meta={"position": position, "file_row": np.arange(cols.n_rows, dtype=np.int64)},
    )


def _item_context(path: Path) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """The item catalog and features of `item_context.csv` (sorted by item id), if present."""
    if not path.is_file():
        return None, {}
    try:
        table = pacsv.read_csv(path)
    except pa.ArrowException as e:
        raise InputError(f"cannot read the item features: {e}", path=path) from None
    if "item_id" not in table.column_names or not pa.types.is_integer(table.column("item_id").type):
        raise InputError("item_context.csv needs an integer item_id column", path=path, column="item_id")
    ids = tabular.to_np(table.column("item_id"))
    order = np.argsort(ids, kind="stable")
    features = {
        name: np.asarray(tabular.to_np(table.column(name)))[order]
        for name in table.column_names if name.startswith("item_feature")
    }
    return ids[order].astype(np.int64), features
