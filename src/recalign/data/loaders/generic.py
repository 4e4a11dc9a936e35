"""Generic files: CSV, TSV (or any one-character delimiter), Parquet and JSON Lines.

Which column holds what:

- With a header, a column is found by the `--columns` mapping (`user=uid,item=iid,reward=rating,
  timestamp=ts`, optionally `propensity=ps`), else by its usual names (case and `_` ignored):
  user: `user`, `user_id`, `userId`, `uid`, `reviewerID`, `customer_id`, `visitor_id`;
  item: `item`, `item_id`, `movieId`, `iid`, `asin`, `parent_asin`, `product_id`, `video_id`;
  reward: `reward`, `rating`, `overall`, `click`, `label`, `score`;
  timestamp: `timestamp`, `ts`, `time`, `unixReviewTime`, `datetime`, `date`;
  propensity (optional): `propensity`, `propensity_score`, `pscore`.
  A required role that matches no column, or several, is an error naming the columns found;
  nothing is guessed beyond these names (there is no default reward: a file without one must
  say which column it is).
- Without a header (`no_header=True`), `--columns` lists the roles in file order, `_` for a
  column to skip: `item,user,reward,timestamp` or `user,item,_,reward,timestamp`.

`fmt` is `csv` (comma), `tsv` (tab), `csv:<char>` (any one-character delimiter, e.g. `csv:;`),
`parquet` or `jsonl` (`json` is the same); `auto` goes by the extension (`.csv`, `.tsv`,
`.parquet`, `.jsonl`, `.json`, `.ndjson`, each optionally `.gz`).
"""

from __future__ import annotations

import re
from pathlib import Path

from recalign.data.loaders import tabular
from recalign.data.schema import Interactions
from recalign.errors import InputError

ALIASES: dict[str, tuple[str, ...]] = {
    "user": ("user", "userid", "uid", "reviewerid", "customerid", "visitorid"),
    "item": ("item", "itemid", "movieid", "iid", "asin", "parentasin", "productid", "videoid"),
    "reward": ("reward", "rating", "overall", "click", "label", "score"),
    "timestamp": ("timestamp", "ts", "time", "unixreviewtime", "datetime", "date"),
    "propensity": ("propensity", "propensityscore", "pscore"),
}
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet",
              ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
FORMATS = ("csv", "tsv", "parquet", "jsonl", "json")


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def parse_mapping(spec: str) -> dict[str, str]:
    """`user=uid,item=iid,...` -> {role: column}; unknown roles and malformed parts raise."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if "=" not in part:
            raise InputError(
                f"--columns: {part!r} is not ROLE=COLUMN (for a file without a header, pass "
                "--no-header and list the roles in file order, e.g. item,user,reward,timestamp)"
            )
        role, col = (s.strip() for s in part.split("=", 1))
        if role not in tabular.ROLES:
            raise InputError(f"--columns: unknown role {role!r}; roles are {', '.join(tabular.ROLES)}")
        if not col:
            raise InputError(f"--columns: no column given for {role!r}")
        out[role] = col
    return out


def parse_order(spec: str, path: Path | None = None) -> list[str]:
    """`item,user,reward,timestamp` (file order, `_` = skip) -> names for a file read with
    `--no-header` (`path`: named in the errors)."""
    if not spec.strip():
        raise InputError("a file without a header needs --columns listing the roles in file order, "
                         "e.g. --columns user,item,reward,timestamp (`_` skips a column)", path=path)
    names: list[str] = []
    for i, part in enumerate(p.strip() for p in spec.split(",")):
        if "=" in part:
            raise InputError(
                f"--no-header was given, so --columns lists the roles in file order (`_` skips a column), "
                f"e.g. --columns user,item,reward,timestamp; {part!r} is a ROLE=NAME mapping, which needs a "
                "header line naming the columns (drop --no-header if the file has one)", path=path)
        if part in ("_", ""):
            names.append(f"_skip{i}")
        elif part in tabular.ROLES:
            if part in names:
                raise InputError(f"--columns names the role {part!r} twice")
            names.append(part)
        else:
            raise InputError(f"--columns: unknown role {part!r}; roles are {', '.join(tabular.ROLES)} "
                             "(or _ to skip a column)")
    return names


def resolve_columns(path: Path, found: list[str], mapping: dict[str, str],
                    delimiter: str | None = None, first_line: str = "") -> dict[str, str]:
    """role -> column name: the explicit mapping first, then the usual names (see module doc)."""
    select: dict[str, str] = {}
    for role in tabular.ROLES:
        if role in mapping:
            if mapping[role] not in found:
                raise tabular.missing_column_error(path, role, mapping[role], found, delimiter, first_line, mapping)
            select[role] = mapping[role]
            continue
        taken = set(select.values()) | set(mapping.values())
        hits = [c for c in found if _norm(c) in ALIASES[role] and c not in taken]
        if len(hits) > 1:
            raise InputError(
                f"several columns could be the {role}: {', '.join(map(repr, hits))}; say which with "
                f"--columns {role}=NAME", path=path, column=hits[0],
            )
        if hits:
            select[role] = hits[0]
        elif role in tabular.REQUIRED:
            raise tabular.missing_column_error(path, role, None, found, delimiter, first_line)
    return select


def delimiter_of(fmt: str) -> str:
    if fmt == "csv":
        return ","
    if fmt == "tsv":
        return "\t"
    if fmt.startswith("csv:") and len(fmt) == 5:
        return fmt[4]
    raise InputError(f"unknown format {fmt!r}: a delimiter is one character, as in csv:;")


def format_of(path: Path) -> str | None:
    """The generic format an extension implies (None if it implies none)."""
    name = path.name.lower()
    for comp in (".gz", ".bz2"):
        if name.endswith(comp):
            name = name[: -len(comp)]
    return EXTENSIONS.get(Path(name).suffix)


def load_generic(path: Path, fmt: str, *, columns: str = "", no_header: bool = False,
                 duplicates: str = "keep", time_unit: str = "s") -> Interactions:
    """Load a generic CSV/TSV/Parquet/JSON Lines file (see the module docstring)."""
    cols = read_generic(path, fmt, columns=columns, no_header=no_header, time_unit=time_unit)
    return tabular.build_interactions(cols, duplicates=duplicates, meta={"format": fmt})


def read_generic(path: Path, fmt: str, *, columns: str = "", no_header: bool = False,
                 time_unit: str = "s") -> tabular.Columns:
    if fmt in ("parquet", "jsonl", "json"):
        if no_header:
            raise InputError(f"--no-header applies to delimited text, not to {fmt} files")
        mapping = parse_mapping(columns)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            try:
                found = pq.read_schema(path).names
            except Exception as e:  # noqa: BLE001 - any failure to read the footer is bad input
                raise InputError(f"not a readable Parquet file: {e}", path=path) from None
            return tabular.read_parquet(path, resolve_columns(path, found, mapping), time_unit)
        _, keys = tabular.json_sample(path)
        return tabular.read_json_lines(path, resolve_columns(path, keys, mapping), time_unit)
    delimiter = delimiter_of(fmt)
    if no_header:
        names = parse_order(columns, path)
        select = {n: n for n in names if n in tabular.ROLES}
        missing = [r for r in tabular.REQUIRED if r not in select]
        if missing:
            raise InputError(f"--columns must name the roles {', '.join(missing)} (file order, `_` to skip)")
        return tabular.read_delimited(path, delimiter=delimiter, names=names, select=select,
                                      time_unit=time_unit)
    if path.stat().st_size == 0:
        raise InputError("the file is empty", path=path)
    lines = tabular.first_lines(path, 1)
    if not lines:
        raise InputError("the file is empty (only blank lines)", path=path)
    found = tabular.split_line(lines[0], delimiter)
    select = resolve_columns(path, found, parse_mapping(columns), delimiter, lines[0])
    return tabular.read_delimited(path, delimiter=delimiter, names=None, select=select,
                                  time_unit=time_unit)
