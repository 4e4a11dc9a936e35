"""Item titles, for `recalign recommend`: from the item file a MovieLens folder ships beside its
ratings, or from a CSV/TSV file the user names (`--items FILE`).

| ratings | titles read from (same folder) | format |
| --- | --- | --- |
| `u.data` (ml-100k) | `u.item` | `|`-separated, latin-1, no header: id, title (with year), ... |
| `ratings.dat` (ml-1m, ml-10m) | `movies.dat` | `::`-separated, no header: id, title, genres (UTF-8, else latin-1) |
| `ratings.csv` (ml-20m, 25m, 32m, latest, latest-small) | `movies.csv` | CSV with header `movieId,title,genres` |
| `<name>.inter` (RecBole) | `<name>.item` | TSV, header `item_id:token movie_title:token_seq release_year:token ...`; the title gets ` (year)` |

A MovieLens folder without its item file gives no titles (None), and so does any other dataset
unless `--items` names a file. A file found on its own that cannot be read is reported on
stderr and ignored (recommendations do not need titles); a file the user named that cannot be
read is an `InputError` naming the file, the 1-based data row and the column.

`--items FILE`: comma- (or, for `.tsv`/`.tab` or a header with tabs and no comma, tab-)
separated UTF-8 text with a header line; the id column is the first whose name is one of
`item_id`, `item`, `movieId`, `iid`, `asin`, `parent_asin`, `product_id`, `video_id`, `id`
(case and `_` ignored), the title column one of `title`, `name`, `movie_title`, `item_title`,
`item_name`, `product_title`. Other columns are ignored. Titles are keyed by the id *as
written* (text), so they match the table's ids by `str(id)` (`42` for the integer id 42).
"""

from __future__ import annotations

import csv
import io
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from recalign.data.loaders import movielens
from recalign.errors import InputError

if TYPE_CHECKING:
    from recalign.config import RunConfig

ID_COLUMNS = ("itemid", "item", "movieid", "iid", "asin", "parentasin", "productid", "videoid", "id")
TITLE_COLUMNS = ("title", "name", "movietitle", "itemtitle", "itemname", "producttitle")
_BESIDE = {"u.data": "u.item", "ratings.dat": "movies.dat", "ratings.csv": "movies.csv"}


def item_titles(cfg: RunConfig, items_file: str | Path | None = None) -> dict[str, str] | None:
    """Titles by item id (text) for the dataset of `cfg`: from `items_file` when given, else
    from the MovieLens item file beside the ratings (see the module table); None when there is
    none."""
    if items_file:
        return read_titles(Path(items_file).expanduser())
    path = titles_file(cfg)
    if path is None:
        return None
    try:
        return read_movielens_titles(path)
    except (InputError, OSError) as e:
        print(f"recalign: warning: item titles not shown: {e}", file=sys.stderr)
        return None


def titles_file(cfg: RunConfig) -> Path | None:
    """The MovieLens item file beside the ratings of `cfg.data` (None if there is none)."""
    from recalign.data.paths import resolve_data_dir

    d = cfg.data
    try:
        if d.name in movielens.NAMES:
            ratings = movielens.locate(d.name, resolve_data_dir(d.data_dir or None), d.format)
        else:
            ratings = Path(d.name).expanduser()
    except InputError:
        return None
    if ratings.is_dir():
        candidates = [ratings / f for f in _BESIDE.values()] + sorted(ratings.glob("*.item"))
    else:
        name = ratings.name.lower()
        beside = _BESIDE.get(name) or (ratings.name[:-len(".inter")] + ".item" if name.endswith(".inter") else None)
        candidates = [ratings.parent / beside] if beside else []
    return next((c for c in candidates if c.is_file()), None)


def read_movielens_titles(path: Path) -> dict[str, str]:
    """Titles from a MovieLens item file (`u.item`, `movies.dat`, `movies.csv`, `<name>.item`)."""
    name = path.name.lower()
    if name == "u.item":
        return _from_rows(path, _split_lines(path, "|", "latin-1"), 0, 1)
    if name == "movies.dat":
        return _from_rows(path, _split_lines(path, "::", None), 0, 1)
    if name.endswith(".item"):
        return _recbole_titles(path)
    return read_titles(path)


def read_titles(path: Path) -> dict[str, str]:
    """Titles from a CSV/TSV file with a header naming an id and a title column (module doc)."""
    if not path.is_file():
        raise InputError("no such items file (--items needs a CSV/TSV file with an id and a title column)", path=path)
    text = _decode(path, "utf-8-sig")
    first = text.split("\n", 1)[0]
    tab = path.suffix.lower() in (".tsv", ".tab") or ("\t" in first and "," not in first)
    rows = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if tab else ",")
    header = next(rows, None)
    if not header:
        raise InputError("the items file is empty (it needs a header line with an id and a title column)", path=path)
    norm = [re.sub(r"[^a-z0-9]", "", h.lower()) for h in header]
    id_col = next((norm.index(c) for c in ID_COLUMNS if c in norm), None)
    title_col = next((norm.index(c) for c in TITLE_COLUMNS if c in norm), None)
    if id_col is None or title_col is None:
        missing = "an id column (item_id, movieId, id, ...)" if id_col is None else "a title column (title, name, ...)"
        raise InputError(f"the items file needs {missing} in its header line; found {', '.join(map(repr, header[:20]))}",
                         path=path)
    return _from_rows(path, enumerate(rows, 1), id_col, title_col, header)


def _decode(path: Path, encoding: str | None) -> str:
    """The file's text: in `encoding`, or (None) UTF-8 falling back to latin-1; a UTF-8 error
    names its line."""
    data = path.read_bytes()
    if encoding is None:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        row = data[:e.start].count(b"\n")  # 0-based line = 1-based data row after the header
        what = "UTF-8" if encoding.startswith("utf-8") else encoding
        raise InputError(f"not valid {what} text ({e.reason})", path=path, row=row or None) from None


def _split_lines(path: Path, sep: str, encoding: str | None) -> Iterator[tuple[int, list[str]]]:
    for i, line in enumerate(_decode(path, encoding).splitlines(), 1):
        if line.strip():
            yield i, line.split(sep)


def _from_rows(path: Path, rows, id_col: int, title_col: int,  # type: ignore[no-untyped-def]
               header: list[str] | None = None) -> dict[str, str]:
    """{id: title} from `(row number, fields)` pairs; a short row, an empty id or one id with
    two different titles is an `InputError` at its row."""
    label = (lambda c: header[c]) if header else (lambda c: c + 1)  # noqa: E731
    out: dict[str, str] = {}
    first_row: dict[str, int] = {}
    for row, fields in rows:
        if not fields or not any(f.strip() for f in fields):
            continue
        if len(fields) <= max(id_col, title_col):
            raise InputError(f"the row has {len(fields)} field(s); the title is field {title_col + 1}", path=path,
                             row=row, column=label(title_col))
        key, title = fields[id_col].strip(), fields[title_col].strip()
        if not key:
            raise InputError("empty item id", path=path, row=row, column=label(id_col))
        if key in out and title and out[key] != title:
            raise InputError(f"item {key!r} has two titles: {out[key]!r} (row {first_row[key]}) and {title!r}",
                             path=path, row=row, column=label(title_col))
        if title and key not in out:
            out[key], first_row[key] = title, row
    return out


def _recbole_titles(path: Path) -> dict[str, str]:
    """RecBole `.item`: `movie_title` (+ ` (release_year)`) by `item_id`."""
    lines = _decode(path, "utf-8-sig").splitlines()
    header = [h.split(":", 1)[0] for h in lines[0].split("\t")] if lines else []
    if "item_id" not in header or "movie_title" not in header:
        raise InputError("a RecBole .item file needs item_id and movie_title columns", path=path)
    i, t = header.index("item_id"), header.index("movie_title")
    y = header.index("release_year") if "release_year" in header else None
    rows = []
    for row, line in enumerate(lines[1:], 1):
        f = line.split("\t")
        if y is not None and len(f) > max(t, y) and f[y].strip():
            f[t] = f"{f[t].strip()} ({f[y].strip()})"
        rows.append((row, f))
    return _from_rows(path, rows, i, t, header)
