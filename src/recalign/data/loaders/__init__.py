"""Dataset loaders: a dataset name or a file -> the `Interactions` table.

    >>> from recalign.data.loaders import load_dataset
    >>> inter = load_dataset("ml-100k", "/data")               # /data/ml-100k/u.data
    >>> inter = load_dataset("logs.csv", columns="user=uid,item=iid,reward=rating,timestamp=ts")
    >>> inter = load_dataset("Books.csv.gz", fmt="amazon")       # Amazon 2018 ratings-only CSV

Names (`DATASETS`): the MovieLens sets `ml-100k`, `ml-1m`, `ml-10m`, `ml-20m`, `ml-25m`,
`ml-32m`, `ml-latest-small`, `ml-latest` (GroupLens or RecBole layout, see `movielens.py`),
`amazon-books-2018` (the Amazon 2018 Books ratings CSV, see `amazon.py`), `obd` (Open Bandit
Dataset, see `obd.py`) and `sim` (the simulator). A name is looked up in the data
folder (`data_dir`, else `$RECALIGN_DATA`, else the per-user cache).

Anything else is a path: a file, or a folder holding one of the MovieLens/RecBole layouts.
`fmt="auto"` tells the format from the file: `u.data`/`ratings.dat` (MovieLens), `.inter`
(RecBole), a CSV whose header has OBD's columns (OBD), a header-less `id,id,rating,time` CSV
with ASINs or a JSON file with Amazon's review keys (Amazon, see `amazon.py`), else by extension
(`.csv`, `.tsv`, `.parquet`, `.jsonl`/`.json`/`.ndjson`, each optionally `.gz`) a generic file
(see `generic.py` for the column mapping). `fmt` can also be given: movielens, recbole, obd,
amazon, csv, tsv, `csv:<char>` (another delimiter), parquet, jsonl.

Every failure caused by the input is an `InputError` naming the file, the data row and the
column where they are known; the input is only ever read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from recalign.data.loaders import amazon, generic, movielens, obd, recbole, tabular
from recalign.data.schema import Interactions
from recalign.errors import InputError

if TYPE_CHECKING:
    from recalign.config import RunConfig

DATASETS = (*movielens.NAMES, *amazon.NAMES, "obd", "sim")
FORMATS = ("auto", "movielens", "recbole", "obd", "amazon", "csv", "tsv", "parquet", "jsonl", "json")

__all__ = ["DATASETS", "FORMATS", "load_dataset", "load_from_config", "load_path", "detect_format"]


def load_from_config(cfg: RunConfig) -> Interactions:
    """The dataset of a run configuration (`cfg.data`; `sim` uses `cfg.sim`)."""
    d = cfg.data
    if d.name == "sim":
        from recalign.data.simulator import simulate

        return simulate(cfg.sim)[0]
    return load_dataset(
        d.name, d.data_dir or None, fmt=d.format, columns=d.columns, no_header=d.no_header,
        duplicates=d.duplicates, obd_policy=d.obd_policy, obd_campaign=d.obd_campaign,
    )


def load_dataset(
    name_or_path: str | Path,
    data_dir: str | Path | None = None,
    *,
    fmt: str = "auto",
    columns: str = "",
    no_header: bool = False,
    duplicates: str = "keep",
    obd_policy: str = "random",
    obd_campaign: str = "all",
) -> Interactions:
    """Load a dataset by name or a file by path (see the module docstring).

    Args:
        name_or_path: a name in `DATASETS`, or a file/folder path.
        data_dir: folder holding the named datasets (None: `$RECALIGN_DATA`, then the cache).
        fmt: `auto` or a format (see the module docstring). For a MovieLens name, `movielens`
            or `recbole` chooses the layout (default: GroupLens file, else `.inter`).
        columns: column mapping of generic files, `user=uid,item=iid,reward=rating,timestamp=ts`
            (with `no_header`: the roles in file order, `_` to skip a column).
        no_header: the (delimited text) file has no header row.
        duplicates: `keep` or `drop` exact duplicate rows.
        obd_policy, obd_campaign: which Open Bandit log (`random`/`bts`, `all`/`men`/`women`).
    """
    _check_fmt(fmt)
    if duplicates not in ("keep", "drop"):
        raise InputError(f"duplicates policy must be keep or drop; got {duplicates!r}")
    name = str(name_or_path)
    if name in DATASETS:
        if columns or no_header:
            raise InputError(f"--columns and --no-header apply to files, not to the dataset {name}")
        if name == "sim":
            from recalign.data.simulator import SimConfig, simulate

            return simulate(SimConfig())[0]
        folder = _data_dir(data_dir)
        if name == "obd":
            if fmt not in ("auto", "obd"):
                raise InputError(f"format {fmt!r} does not apply to the dataset obd")
            path = obd.locate(folder, obd_policy, obd_campaign)
            meta = {"dataset": "obd", "policy": obd_policy, "campaign": obd_campaign}
            return _guard(path, lambda: obd.load_file(path, duplicates=duplicates, meta=meta))
        if name in amazon.NAMES:
            if fmt not in ("auto", "amazon"):
                raise InputError(f"format {fmt!r} does not apply to the dataset {name}; use auto or amazon")
            path = amazon.locate(name, folder)
            return load_path(path, "amazon", duplicates=duplicates, meta={"dataset": name})
        path = movielens.locate(name, folder, fmt)
        return load_path(path, "recbole" if path.suffix == ".inter" else "movielens",
                         duplicates=duplicates, meta={"dataset": name})
    path = Path(name).expanduser()
    if path.exists():
        return load_path(path, fmt, columns=columns, no_header=no_header, duplicates=duplicates)
    if _looks_like_path(name):
        raise InputError("no such file or folder", path=path)
    raise InputError(
        f"unknown dataset {name!r}: valid names are {', '.join(DATASETS)}; or give the path of a "
        "file (.csv, .tsv, .parquet, .jsonl, ...)"
    )


def load_path(path: str | Path, fmt: str = "auto", *, columns: str = "", no_header: bool = False,
              duplicates: str = "keep", meta: dict | None = None) -> Interactions:
    """Load one file (or a folder holding a MovieLens/RecBole layout) in format `fmt`."""
    _check_fmt(fmt)
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError("no such file or folder", path=path)
    if path.is_dir():
        path = _file_in_folder(path, fmt)
    if not path.is_file():
        raise InputError("not a regular file", path=path)
    if fmt == "auto":
        fmt = detect_format(path, no_header)
    if fmt in ("movielens", "recbole", "obd") and no_header:
        raise InputError(f"--no-header does not apply to {fmt} files (their layout is fixed)")
    if fmt in ("movielens", "obd") and columns:
        raise InputError(f"--columns does not apply to {fmt} files (their layout is fixed)")

    def load() -> Interactions:
        if fmt == "movielens":
            return movielens.load_file(path, duplicates=duplicates, meta=meta)
        if fmt == "recbole":
            return recbole.load_file(path, columns=columns, duplicates=duplicates, meta=meta)
        if fmt == "obd":
            return obd.load_file(path, duplicates=duplicates, meta=meta)
        if fmt == "amazon":
            return amazon.load_file(path, columns=columns, duplicates=duplicates, meta=meta)
        inter = generic.load_generic(path, fmt, columns=columns, no_header=no_header,
                                     duplicates=duplicates)
        inter.meta.update(meta or {})
        return inter

    return _guard(path, load)


def detect_format(path: Path, no_header: bool = False) -> str:
    """The format `auto` stands for, from the file's name and first line (see module doc)."""
    name = path.name.lower()
    base = name[:-3] if name.endswith(".gz") else name[:-4] if name.endswith(".bz2") else name
    if base in ("u.data", "ratings.dat"):
        return "movielens"
    if base.endswith(".inter"):
        return "recbole"
    fmt = generic.format_of(path)
    if fmt == "jsonl":
        _, keys = tabular.json_sample(path)
        return "amazon" if amazon.json_layout(keys) is not None else "jsonl"
    if fmt == "csv" and not no_header:
        lines = tabular.first_lines(path, 1)
        if lines:
            found = tabular.split_line(lines[0], ",")
            if obd.is_obd_header(found):
                return "obd"
            if amazon.looks_like_ratings_line(lines[0]):
                return "amazon"
    if fmt is None:
        raise InputError(
            "cannot tell the format from the file name; pass --format (csv, tsv, csv:<char>, "
            "parquet, jsonl, movielens, recbole, obd or amazon)", path=path,
        )
    return fmt


# ---------------------------------------------------------------------------- helpers
def _check_fmt(fmt: str) -> None:
    if fmt in FORMATS or (fmt.startswith("csv:") and len(fmt) == 5):
        return
    raise InputError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}, or csv:<char> for "
                     "another one-character delimiter")


def _data_dir(data_dir: str | Path | None) -> Path:
    from recalign.data.paths import resolve_data_dir

    return resolve_data_dir(data_dir)


def _looks_like_path(name: str) -> bool:
    return any(s in name for s in ("/", "\\")) or name.startswith((".", "~")) or Path(name).suffix != ""


def _file_in_folder(folder: Path, fmt: str) -> Path:
    """The ratings file of a MovieLens/RecBole folder."""
    for fname in ("u.data", "ratings.dat", "ratings.csv"):
        if fmt in ("auto", "movielens") and (folder / fname).is_file():
            return folder / fname
    inter = sorted(folder.glob("*.inter"))
    if fmt in ("auto", "recbole") and len(inter) == 1:
        return inter[0]
    raise InputError("the folder holds no ratings file recalign knows (u.data, ratings.dat, "
                     "ratings.csv or one .inter file); give the file's path", path=folder)


def _guard(path: Path, load):  # type: ignore[no-untyped-def]
    """Run a loader; reading failures of the input become `InputError`s naming the file."""
    try:
        return load()
    except InputError:
        raise
    except pa.ArrowException as e:
        raise InputError(f"cannot read the file: {e}", path=path) from None
    except UnicodeDecodeError as e:
        raise InputError(f"the file is not valid UTF-8 text ({e.reason} at byte {e.start})", path=path) from None
    except (OSError, EOFError) as e:
        raise InputError(f"cannot read the file: {e}", path=path) from None
