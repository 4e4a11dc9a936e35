"""MovieLens, in the GroupLens layouts (and RecBole's, see `recbole.py`).

| name | folder (in the data folder) | GroupLens file | format |
| --- | --- | --- | --- |
| ml-100k | `ml-100k/` | `u.data` | tab-separated, no header: user, item, rating, timestamp |
| ml-1m | `ml-1m/` | `ratings.dat` | `::`-separated, no header: UserID::MovieID::Rating::Timestamp |
| ml-10m | `ml-10m/` or `ml-10M100K/` | `ratings.dat` | as ml-1m |
| ml-20m, ml-25m, ml-32m, ml-latest, ml-latest-small | `<name>/` | `ratings.csv` | header `userId,movieId,rating,timestamp` (CRLF in latest-small) |

The reward is the rating; timestamps are Unix seconds. A folder may also hold the RecBole atomic
file `<name>.inter` (ml-100k ships with both); the GroupLens file is preferred when both exist,
and `fmt="recbole"` picks the `.inter` file. The two load to identical tables.
"""

from __future__ import annotations

from pathlib import Path

from recalign.data.loaders import recbole, tabular
from recalign.data.schema import Interactions
from recalign.errors import InputError

NAMES = ("ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-32m", "ml-latest-small", "ml-latest")
_FOLDERS = {"ml-10m": ("ml-10m", "ml-10M100K")}
_GROUPLENS_FILE = {"ml-100k": "u.data", "ml-1m": "ratings.dat", "ml-10m": "ratings.dat"}
_UDATA_NAMES = ["user_id", "item_id", "rating", "timestamp"]
# `::` read with the one-character delimiter `:` gives empty fields between the real ones
_DAT_NAMES = ["UserID", "_1", "MovieID", "_3", "Rating", "_5", "Timestamp"]
_CSV_MAPPING = {"user": "userId", "item": "movieId", "reward": "rating", "timestamp": "timestamp"}


def locate(name: str, data_dir: Path, fmt: str = "auto") -> Path:
    """The ratings file of MovieLens dataset `name` under `data_dir` (see the module table).

    `fmt`: `auto` (GroupLens file, else RecBole `.inter`), `movielens` (GroupLens only) or
    `recbole` (`.inter` only).
    """
    if fmt not in ("auto", "movielens", "recbole"):
        raise InputError(f"format {fmt!r} does not apply to the dataset {name}; use auto, movielens or recbole")
    folders = []
    for f in _FOLDERS.get(name, (name,)):
        folders += [data_dir / f, data_dir / f / f]
    grouplens = _GROUPLENS_FILE.get(name, "ratings.csv")
    candidates = []
    for folder in folders:
        if fmt in ("auto", "movielens"):
            candidates.append(folder / grouplens)
        if fmt in ("auto", "recbole"):
            candidates.append(folder / f"{name}.inter")
    for c in candidates:
        if c.is_file():
            return c
    looked = ", ".join(str(c) for c in candidates[:4])
    raise InputError(
        f"dataset {name} not found: looked for {looked}; download it with "
        f"`recalign data download {name}`, or point --data-dir (or $RECALIGN_DATA) at the folder "
        "that holds it",
        path=data_dir / name,
    )


def load_file(path: Path, *, duplicates: str = "keep", meta: dict | None = None) -> Interactions:
    """Load a GroupLens ratings file (`u.data`, `ratings.dat` or `ratings.csv`, by name)."""
    cols = read_file(path)
    return tabular.build_interactions(cols, duplicates=duplicates,
                                      meta={"format": "movielens", **(meta or {})})


def read_file(path: Path) -> tabular.Columns:
    name = path.name.lower()
    if name.startswith("u.data"):
        select = dict(zip(("user", "item", "reward", "timestamp"), _UDATA_NAMES))
        return tabular.read_delimited(path, delimiter="\t", names=_UDATA_NAMES, select=select)
    if name.startswith("ratings.dat"):
        select = {"user": "UserID", "item": "MovieID", "reward": "Rating", "timestamp": "Timestamp"}
        return tabular.read_delimited(path, delimiter=":", names=_DAT_NAMES, select=select)
    if name.startswith("ratings.csv"):
        return tabular.read_delimited(path, delimiter=",", names=None, select=dict(_CSV_MAPPING))
    if name.endswith(".inter"):
        return recbole.read_file(path)
    raise InputError("not a MovieLens ratings file (u.data, ratings.dat or ratings.csv)", path=path)


def is_movielens_file(path: Path) -> bool:
    name = path.name.lower()
    return name in ("u.data", "ratings.dat", "u.data.gz", "ratings.dat.gz")
