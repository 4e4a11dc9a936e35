"""The machinery every loader shares: read columns with pyarrow, check them, build `Interactions`.

A loader's job is to say *where* the four (or five) columns of a file are; this module reads
them and turns them into the internal table. Each column has a role:

- `user`, `item`: ids of any type. Integer columns, and text columns in which every id is a
  plainly written integer, give int64 ids (codes follow numeric order, as in
  `recalign.data.schema`); anything else is text (so `0042` keeps its zeros).
- `reward`: a finite number (float32 range). NaN, inf, empty cells and text are errors.
- `timestamp`: integer or float Unix time (in `time_unit`: seconds, or milliseconds for Amazon
  2023), or ISO 8601 text such as `2019-11-24 00:00:34.762830+00:00`, `2019-11-24T00:00:34Z` or
  `2019-11-24` (text without a zone offset is read as UTC). The table keeps whole seconds,
  rounded down; when the file holds finer times (fractions of a second, milliseconds), rows
  that share a user and a second are ordered by the exact time, then by file row, so the table's
  row order keeps sub-second order.
- `propensity` (optional): a number in (0, 1].

Errors name the file, the 1-based data row (header excluded, blank lines not counted) and the
file's own name of the column, and show the offending value. The happy path has no Python loop
over rows: the first bad row is found with a vectorised mask, or, for conversions that can only
fail as a whole (text to number, text to time), by halving the failing range (about 2n work).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from recalign.data.schema import Interactions
from recalign.errors import InputError

ROLES = ("user", "item", "reward", "timestamp", "propensity")
REQUIRED = ("user", "item", "reward", "timestamp")
TIME_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_ARROW_UNIT = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT64_SAFE = 9.2e18
BLOCK_SIZE = 1 << 24  # bytes per arrow read block (tests shrink it to cross block boundaries)


# ---------------------------------------------------------------------------- the raw columns
@dataclass
class Columns:
    """The raw columns of one file, by role, in file order.

    Attributes:
        path: the file (used in every error message).
        arrays: role -> arrow array (ChunkedArray or Array) of length `n_rows`.
        labels: role -> the column's name in the file, for error messages.
        time_unit: unit of numeric timestamps (`s`, `ms`, `us`, `ns`).
    """

    path: Path
    arrays: dict[str, pa.ChunkedArray | pa.Array]
    labels: dict[str, str]
    time_unit: str = "s"
    n_rows: int = field(init=False)

    def __post_init__(self) -> None:
        lens = {len(a) for a in self.arrays.values()}
        if len(lens) > 1:  # pragma: no cover - readers always give equal lengths
            raise InputError("columns have different lengths", path=self.path)
        self.n_rows = lens.pop() if lens else 0

    def fail(self, role: str, index: int | None, message: str) -> InputError:
        """An `InputError` at 0-based data row `index` (None: the whole column)."""
        return InputError(message, path=self.path, row=None if index is None else int(index) + 1,
                          column=self.labels.get(role, role))


def build_interactions(
    cols: Columns,
    *,
    duplicates: str = "keep",
    meta: dict[str, Any] | None = None,
    row_meta: dict[str, np.ndarray] | None = None,
    item_catalog: np.ndarray | None = None,
) -> Interactions:
    """Check and convert the raw columns, then build the table with `Interactions.from_raw`.

    This module's part is the file-specific one: every value is checked and converted here, so
    that errors name the file, the data row and the file's column. Encoding, sorting and the
    duplicate count are `from_raw`'s.

    Args:
        cols: the raw columns (`user`, `item`, `reward`, `timestamp`, optional `propensity`).
        duplicates: `keep` or `drop` exact duplicate rows (see `Interactions.from_raw`).
        meta: extra facts kept in `Interactions.meta`.
        row_meta: per-row arrays in file order (e.g. OBD's slot `position`); they are reordered
            (and thinned by `duplicates="drop"`) with the rows and stored in `meta` under their
            names, so that `meta[name][k]` belongs to row `k` of the table.
        item_catalog: the full item catalog (original ids) when it is larger than the items that
            occur.
    """
    if duplicates not in ("keep", "drop"):
        raise InputError(f"duplicates policy must be keep or drop; got {duplicates!r}")
    if cols.n_rows == 0:
        raise InputError("the file has no data rows", path=cols.path)
    # each arrow column is released once converted, to keep the peak memory down
    user = parse_ids(cols, "user")
    _release(cols, "user")
    item = parse_ids(cols, "item")
    _release(cols, "item")
    reward = to_reward(cols, "reward")
    _release(cols, "reward")
    seconds, exact = to_seconds(cols, "timestamp")
    _release(cols, "timestamp")
    prop = to_propensity(cols) if "propensity" in cols.arrays else None
    try:
        return Interactions.from_raw(
            user, item, seconds, reward, prop, source=str(cols.path), duplicates=duplicates,  # type: ignore[arg-type]
            meta=meta, item_ids=item_catalog, tiebreak=exact, extra_columns=row_meta,
        )
    except InputError as e:  # rows are file rows already; name the file's column
        if e.row is not None and isinstance(e.column, str) and e.column in cols.labels:
            raise cols.fail(e.column, e.row - 1, e.detail) from None
        raise


def _release(cols: Columns, role: str) -> None:
    cols.arrays[role] = pa.nulls(0)


# ---------------------------------------------------------------------------- arrow -> numpy
_NP_TYPES = {pa.int8(): np.int8, pa.int16(): np.int16, pa.int32(): np.int32, pa.int64(): np.int64,
             pa.uint8(): np.uint8, pa.uint16(): np.uint16, pa.uint32(): np.uint32,
             pa.uint64(): np.uint64, pa.float32(): np.float32, pa.float64(): np.float64}


def to_np(a: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Arrow -> numpy without pyarrow's pandas shim (`to_numpy` imports pandas when it is
    installed, ~0.3 s): fixed-width numbers without nulls are viewed straight from the buffer,
    booleans go through uint8; anything else falls back to `to_numpy`."""
    if isinstance(a, pa.ChunkedArray):
        parts = [to_np(c) for c in a.chunks]
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=_NP_TYPES.get(a.type, object))
    t = a.type
    if a.null_count == 0 and t in _NP_TYPES:
        dtype = np.dtype(_NP_TYPES[t])
        return np.frombuffer(a.buffers()[1], dtype=dtype, count=len(a), offset=a.offset * dtype.itemsize)
    if a.null_count == 0 and pa.types.is_boolean(t):
        return to_np(pc.cast(a, pa.uint8())).astype(bool)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return np.asarray(a.to_pylist(), dtype=object)
    return a.to_numpy(zero_copy_only=False)


# ---------------------------------------------------------------------------- column conversions
def _as_array(a: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(a, pa.ChunkedArray):
        return a.combine_chunks() if a.num_chunks != 1 else a.chunk(0)
    return a


def _first_true(mask: np.ndarray) -> int | None:
    return int(np.argmax(mask)) if mask.any() else None


def _check_nulls(cols: Columns, role: str, what: str) -> None:
    arr = cols.arrays[role]
    if arr.null_count:
        idx = _first_true(to_np(pc.is_null(arr)))
        raise cols.fail(role, idx, f"{what} is empty")


def first_failure(arr: pa.Array, convert: Callable[[pa.Array], Any]) -> int:
    """Index of the first element on which `convert` fails (it fails on `arr` as a whole).

    Halves the failing range: convert(left half) fails -> the bad element is there, else it is in
    the right half. Costs about 2n element conversions, no Python loop over rows.
    """
    lo, hi = 0, len(arr)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            convert(arr.slice(lo, mid - lo))
        except (pa.ArrowException, ValueError, OverflowError):
            hi = mid
        else:
            lo = mid
    return lo


def _value(arr: pa.Array, idx: int) -> str:
    v = arr[idx].as_py()
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _binary_to_text(cols: Columns, role: str, arr: pa.Array) -> pa.Array:
    """Binary (bytes that are not valid UTF-8 text) -> text, or an error at the first bad row."""
    def conv(a: pa.Array) -> pa.Array:
        return pc.cast(a, pa.string())

    try:
        return conv(arr)
    except pa.ArrowInvalid:
        idx = first_failure(arr, conv)
        raise cols.fail(role, idx, f"the value {_value(arr, idx)} is not valid UTF-8 text") from None


def parse_ids(cols: Columns, role: str) -> np.ndarray | pa.Array | pa.ChunkedArray:
    """Ids, checked: int64 numpy ids, or an arrow text column (encoded by `from_raw`).

    Integer columns, and text columns in which every id is an integer written plainly (digits
    with an optional '-', no leading zeros or spaces: `0042` stays text), give int64 ids (codes
    then follow numeric order); everything else gives text ids (code-point order). A missing
    id, or bytes that are not UTF-8 text, is an error at its row.
    """
    _check_nulls(cols, role, f"{role} id")
    arr = cols.arrays[role]
    t = arr.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        arr = _binary_to_text(cols, role, _as_array(arr))
    elif not (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)):
        try:
            arr = pc.cast(arr, pa.string())
        except pa.ArrowException:
            raise cols.fail(role, None, f"{role} ids of type {t} cannot be read as text") from None
    if pa.types.is_uint64(arr.type):
        arr = pc.cast(arr, pa.string())
    ints = _plain_integers(arr)
    return arr if ints is None else ints


def _plain_integers(arr: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    """int64 values of an integer column, or of a text column written as plain integers."""
    if pa.types.is_integer(arr.type):
        return to_np(arr).astype(np.int64, copy=False)
    try:
        v = to_np(pc.cast(arr, pa.int64()))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    # plain iff the text is exactly as long as the number's digits (+1 for '-'): this rejects
    # leading zeros, '+' signs and spaces without a regular expression over every row.
    # Checked in slices of 1M rows to keep the temporary arrays small.
    text = arr if isinstance(arr, pa.ChunkedArray) else pa.chunked_array([arr])
    step = 1 << 20
    for start in range(0, len(v), step):
        part = v[start:start + step]
        length = to_np(pc.utf8_length(text.slice(start, step)))
        digits = 1 + np.searchsorted(_POW10, np.abs(part), side="right")  # exact integer arithmetic
        if not np.array_equal(length, digits + (part < 0)):
            return None
    return v


_POW10 = np.array([10**k for k in range(1, 19)], dtype=np.int64)


def _numbers(cols: Columns, role: str, what: str) -> np.ndarray:
    """A numeric column as float64 numpy; text that is not a number is an error at its row."""
    _check_nulls(cols, role, what)
    arr = _as_array(cols.arrays[role])
    t = arr.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        arr = _binary_to_text(cols, role, arr)
        t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        def conv(a: pa.Array) -> pa.Array:
            return pc.cast(pc.utf8_trim_whitespace(a), pa.float64())

        try:
            arr = conv(arr)
        except pa.ArrowInvalid:
            idx = first_failure(arr, conv)
            raise cols.fail(role, idx, f"{what} {_value(arr, idx)} is not a number") from None
    elif not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
              or pa.types.is_decimal(t)):
        raise cols.fail(role, None, f"{what} must be numeric; the column has type {t}")
    return to_np(arr).astype(np.float64, copy=False)


def to_reward(cols: Columns, role: str = "reward") -> np.ndarray:
    """Finite float32 rewards in file order; the first NaN, inf or non-number is an error."""
    x = _numbers(cols, role, "reward")
    bad = _first_true(~np.isfinite(x) | (np.abs(x) > _FLOAT32_MAX))
    if bad is not None:
        v = x[bad]
        why = "NaN" if np.isnan(v) else ("infinite" if np.isinf(v) else "too large for float32")
        raise cols.fail(role, bad, f"reward is {why} ({float(v)!r}); rewards must be finite numbers")
    return x.astype(np.float32)


def to_propensity(cols: Columns, role: str = "propensity") -> np.ndarray:
    """Logging propensities in (0, 1] (float32); the first one outside is an error."""
    x = _numbers(cols, role, "propensity")
    bad = _first_true(~((x > 0) & (x <= 1)) | (x.astype(np.float32) <= 0))
    if bad is not None:
        raise cols.fail(role, bad, f"propensity {float(x[bad])!r} is outside (0, 1]")
    return x.astype(np.float32)


_ZONE = r"\d\d:\d\d(:\d\d([.,]\d*)?)?\s*(Z|z|[+-]\d\d(:?\d\d)?)$"  # a time, then a zone


def _time_text_to_us(a: pa.Array) -> np.ndarray:
    """ISO 8601 text -> int64 microseconds since the epoch (UTC); raises ArrowInvalid."""
    a = pc.utf8_trim_whitespace(a)
    zoned = to_np(pc.match_substring_regex(a, _ZONE))
    out = np.empty(len(a), dtype=np.int64)
    if zoned.any():
        aware = pc.cast(a.filter(pa.array(zoned)), pa.timestamp("us", tz="UTC"))
        out[zoned] = to_np(pc.cast(aware, pa.int64()))
    if not zoned.all():
        naive = pc.cast(a.filter(pa.array(~zoned)), pa.timestamp("us"))
        out[~zoned] = to_np(pc.cast(naive, pa.int64()))
    return out


def to_seconds(cols: Columns, role: str = "timestamp") -> tuple[np.ndarray, np.ndarray | None]:
    """Timestamps -> (int64 whole seconds rounded down, exact key or None).

    The exact key (int64 or float64, same order as the exact times) is returned only when some
    time has a fraction of a second; it is used to keep sub-second order.
    """
    _check_nulls(cols, role, "timestamp")
    arr = _as_array(cols.arrays[role])
    t = arr.type
    scale = TIME_UNITS[cols.time_unit]
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        arr = _binary_to_text(cols, role, arr)
        t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        # Text: Unix times written as text, or ISO 8601. The first row decides which; the first
        # row that is not of that kind is the error.
        trimmed = pc.utf8_trim_whitespace(arr)
        numeric = None
        for target in (pa.int64(), pa.float64()):
            try:
                numeric = pc.cast(trimmed, target)
                break
            except pa.ArrowInvalid:
                continue
        if numeric is not None:
            arr, t = numeric, numeric.type
        else:
            try:
                pc.cast(trimmed.slice(0, 1), pa.float64())
                first_is_number = True
            except pa.ArrowInvalid:
                first_is_number = False
            if first_is_number:
                def as_number(a: pa.Array) -> pa.Array:
                    return pc.cast(pc.utf8_trim_whitespace(a), pa.float64())

                idx = first_failure(arr, as_number)
                raise cols.fail(role, idx, f"timestamp {_value(arr, idx)} is not a number (the "
                                "first rows hold numeric Unix times)") from None
            try:
                us = _time_text_to_us(arr)
            except pa.ArrowInvalid:
                idx = first_failure(arr, _time_text_to_us)
                raise cols.fail(
                    role, idx,
                    f"timestamp {_value(arr, idx)} is neither a number nor an ISO 8601 date/time "
                    "(such as 2019-11-24 00:00:34+00:00)",
                ) from None
            return _split_integer_time(us, 1_000_000)
    if pa.types.is_integer(t):
        if pa.types.is_uint64(t) and pc.max(arr).as_py() > np.iinfo(np.int64).max:
            idx = _first_true(to_np(pc.greater(arr, np.iinfo(np.int64).max)))
            raise cols.fail(role, idx, "timestamp is too large")
        return _split_integer_time(to_np(arr).astype(np.int64, copy=False), scale)
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        x = to_np(arr).astype(np.float64, copy=False)
        bad = _first_true(~np.isfinite(x) | (np.abs(x / scale) > _INT64_SAFE / 1e3))
        if bad is not None:
            raise cols.fail(role, bad, f"timestamp {float(x[bad])!r} is not a finite time in range")
        sec = np.floor(x / scale)
        exact = x if np.any(x != sec * scale) else None
        return sec.astype(np.int64), exact
    if pa.types.is_timestamp(t):
        return _split_integer_time(to_np(pc.cast(arr, pa.int64())),
                                   _ARROW_UNIT[t.unit])
    if pa.types.is_date32(t):
        return to_np(pc.cast(arr, pa.int32())).astype(np.int64) * 86_400, None
    if pa.types.is_date64(t):
        return _split_integer_time(to_np(pc.cast(arr, pa.int64())), 1_000)
    raise cols.fail(role, None, f"timestamps must be numbers or ISO 8601 text; the column has type {t}")


def _split_integer_time(v: np.ndarray, per_second: int) -> tuple[np.ndarray, np.ndarray | None]:
    v = v.astype(np.int64, copy=False)
    if per_second == 1:
        return v, None
    sec = np.floor_divide(v, per_second)
    return sec, (v if np.any(v - sec * per_second) else None)


# ---------------------------------------------------------------------------- delimited text
def open_text(path: Path) -> io.BufferedIOBase:
    """Open a file for reading bytes, decompressing `.gz` and `.bz2`."""
    name = path.name.lower()
    try:
        if name.endswith(".gz"):
            return gzip.open(path, "rb")  # type: ignore[return-value]
        if name.endswith(".bz2"):
            return bz2.open(path, "rb")  # type: ignore[return-value]
        return open(path, "rb")  # noqa: SIM115
    except OSError as e:
        raise InputError(f"cannot open the file: {e.strerror or e}", path=path) from None


def first_lines(path: Path, k: int = 1, max_bytes: int = 1 << 20) -> list[str]:
    """The first `k` non-blank lines (decoded leniently, BOM and line ends stripped), reading at
    most `max_bytes` (a longer line is cut there)."""
    out: list[str] = []
    budget = max_bytes
    try:
        with open_text(path) as f:
            while len(out) < k and budget > 0:
                raw = f.readline(budget)
                if not raw:
                    break
                budget -= len(raw)
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if not out:
                    line = line.lstrip("\ufeff")
                if line.strip():
                    out.append(line)
    except (OSError, EOFError, ValueError) as e:
        raise InputError(f"cannot read the file: {e}", path=path) from None
    return out


def split_line(line: str, delimiter: str) -> list[str]:
    """Split one delimited line the way a CSV reader would (quotes respected)."""
    try:
        return next(csv.reader([line], delimiter=delimiter))
    except (csv.Error, StopIteration):
        return line.split(delimiter)


def delimiter_hint(line: str, delimiter: str) -> str:
    """A hint naming the likely delimiter of `line`, or ''."""
    counts = {d: line.count(d) for d in (",", "\t", ";", "|", ":") if d != delimiter}
    best = max(counts, key=lambda d: counts[d])
    if counts[best] == 0:
        return ""
    shown = "\\t" if best == "\t" else best
    fmt = "tsv" if best == "\t" else f"csv:{best}"
    return f"; is the delimiter {shown!r}? (then pass --format {fmt!r})"


def missing_column_error(path: Path, role: str, column: str | None, found: list[str],
                         delimiter: str | None = None, first_line: str = "",
                         mapping: dict[str, str] | None = None) -> InputError:
    """'column X not found: found N columns ...' with the columns found and a delimiter hint;
    when the first line looks like data, says that the file seems to have no header (`mapping`:
    the `--columns` roles and names the user gave, for the message)."""
    what = f"the {role} column {column!r} is not in the file" if column else f"no {role} column"
    sep = f" ({_describe(delimiter)}-separated)" if delimiter else ""
    hint = delimiter_hint(first_line, delimiter) if delimiter else ""
    if not hint and any(re.fullmatch(r"\s*[-+]?\d+(\.\d*)?([eE][-+]?\d+)?\s*", c) for c in found):
        return _no_header_error(path, role, column, found, first_line, mapping or {})
    if column is None and not hint:
        hint = f"; name it with --columns {role}=NAME"
    return InputError(
        f"{what}: found {len(found)} column{'s' if len(found) != 1 else ''}{sep}: "
        f"{', '.join(map(repr, found[:30]))}{' ...' if len(found) > 30 else ''}{hint}",
        path=path, column=column or role,
    )


def _no_header_error(path: Path, role: str, column: str | None, found: list[str], first_line: str,
                     mapping: dict[str, str]) -> InputError:
    """The first line of a file read with a header looks like data: say so, and suggest
    `--no-header --columns` with the roles in file order (the roles the user named, in the order
    named, `_` for the other columns)."""
    line = first_line if len(first_line) <= 80 else first_line[:77] + "..."
    named = list(mapping.values()) or ([column] if column else [])
    if named:
        what = f"the column{'s' if len(named) > 1 else ''} named by --columns ({', '.join(map(repr, named))}) "
        what += "are not there" if len(named) > 1 else "is not there"
    else:
        what = f"no {role} column can be found"
    roles = [r for r in mapping if r in ROLES]
    roles += [r for r in REQUIRED if r not in roles]
    example = ",".join(roles + ["_"] * max(0, len(found) - len(roles)))
    return InputError(
        f"the file seems to have no header: its first line, {line!r}, looks like data, so {what}. "
        f"Pass --no-header and list the roles in file order instead, e.g. --no-header --columns {example} "
        f"(the first line has {len(found)} field{'s' if len(found) != 1 else ''}; `_` skips one)",
        path=path, column=column or role,
    )


def _describe(delimiter: str) -> str:
    return {"\t": "tab", ",": "comma"}.get(delimiter, repr(delimiter))


def read_delimited(
    path: Path,
    *,
    delimiter: str,
    names: list[str] | None,
    select: dict[str, str],
    time_unit: str = "s",
) -> Columns:
    """Read the selected columns of a delimited text file with pyarrow (multi-threaded).

    Args:
        delimiter: one character.
        names: the column names in file order for a file without a header (None: the first line
            is the header).
        select: role -> column name (in the header or in `names`).
        time_unit: unit of numeric timestamps.

    The header (or the first line) is checked first, so a missing column or a wrong delimiter is
    reported with the columns actually found. Rewards and propensities are read straight as
    float64, timestamps with arrow's type inference; if any conversion fails the columns
    are read again as text and the conversions in this module find the first bad row. Ids are
    read as text (see `parse_ids`).
    """
    if path.stat().st_size == 0:
        raise InputError("the file is empty", path=path)
    lines = first_lines(path, 1)
    if not lines:
        raise InputError("the file is empty (only blank lines)", path=path)
    first = lines[0]
    header = names is None
    found = split_line(first, delimiter)
    labels = dict(select)
    if header:
        missing = [role for role, col in select.items() if col not in found]
        if missing:
            raise missing_column_error(path, missing[0], select[missing[0]], found, delimiter, first)
    elif len(found) != len(names or []):
        raise InputError(
            f"the first line has {len(found)} field{'s' if len(found) != 1 else ''} "
            f"({_describe(delimiter)}-separated) but {len(names or [])} columns were named "
            f"({', '.join(names or [])}){delimiter_hint(first, delimiter)}",
            path=path, row=1,
        )
    read = pacsv.ReadOptions(column_names=names,
                             block_size=BLOCK_SIZE)
    parse = pacsv.ParseOptions(delimiter=delimiter)
    wanted = list(dict.fromkeys(select.values()))
    # ids as text (so `0042` keeps its zeros; plain integers become int ids in `parse_ids`),
    # rewards as float64, timestamps inferred (integers, floats or ISO times)
    numeric = {select[r]: pa.float64() for r in ("reward", "propensity") if r in select}
    numeric.update({select[r]: pa.string() for r in ("user", "item") if r in select})
    base = dict(include_columns=wanted, null_values=[""], strings_can_be_null=True,
                quoted_strings_can_be_null=True)
    try:
        table = pacsv.read_csv(path, read_options=read, parse_options=parse,
                               convert_options=pacsv.ConvertOptions(column_types=numeric, **base))
    except pa.ArrowInvalid as e:
        msg = str(e)
        if "parse error" in msg.lower():
            raise _parse_error(path, delimiter, len(found) if header else len(names or []), header,
                               msg) from None
        if "conversion error" not in msg.lower():
            raise InputError(f"cannot read the file: {msg}", path=path) from None
        table = _read_as_text(path, read, parse, base, wanted)
    except pa.ArrowKeyError as e:
        raise InputError(f"cannot read the file: {e}", path=path) from None
    arrays = {role: table.column(col) for role, col in select.items()}
    if table.num_rows == 0:
        raise InputError("the file has a header but no data rows" if header else "the file has no data rows",
                         path=path)
    return Columns(path, arrays, labels, time_unit)


def _read_as_text(path: Path, read: Any, parse: Any, base: dict, wanted: list[str]) -> pa.Table:
    """Slow path after a conversion error: every selected column as text (or bytes)."""
    for typ in (pa.string(), pa.binary()):
        opts = pacsv.ConvertOptions(column_types={c: typ for c in wanted}, **base)
        try:
            return pacsv.read_csv(path, read_options=read, parse_options=parse, convert_options=opts)
        except pa.ArrowInvalid as e:
            last = e
    raise InputError(f"cannot read the file: {last}", path=path)


def _parse_error(path: Path, delimiter: str, expected: int, has_header: bool, msg: str) -> InputError:
    """Locate a structural error (a line with the wrong number of fields). Error path only: a
    Python scan over the lines, stopping at the first bad one (arrow skips empty lines and ends
    a row at every line break, and so does this scan)."""
    row = 0
    header_seen = not has_header
    try:
        with open_text(path) as f:
            for i, raw in enumerate(f):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if i == 0:
                    line = line.lstrip("\ufeff")
                if not line:
                    continue
                if not header_seen:
                    header_seen = True
                    continue
                row += 1
                found = len(split_line(line, delimiter))
                if found != expected:
                    text = line if len(line) <= 60 else line[:57] + "..."
                    return InputError(
                        f"expected {expected} fields ({_describe(delimiter)}-separated), found "
                        f"{found}: {text!r}", path=path, row=row,
                    )
    except (OSError, EOFError, ValueError):
        pass
    detail = re.sub(r"^CSV parse error:\s*", "", msg)
    return InputError(f"the file is not valid delimited text: {detail}", path=path)


# ---------------------------------------------------------------------------- JSON lines
def read_json_lines(path: Path, select: dict[str, str], time_unit: str = "s",
                    sample_lines: int = 2000) -> Columns:
    """Read the selected keys of a JSON Lines file (one object per line, `.gz` allowed).

    The key types are taken from the first lines, then arrow reads the whole file with that
    explicit schema (other keys, e.g. review texts, are skipped unparsed). If arrow fails (bad
    JSON on some line, a key whose type changes), the file is read again in Python, which names
    the first bad line and widens changing types.
    """
    import pyarrow.json as pajson

    sample, keys = json_sample(path, sample_lines)
    missing = [role for role, key in select.items() if key not in keys]
    if missing:
        raise missing_column_error(path, missing[0], select[missing[0]], keys)
    fields = []
    for role, key in select.items():
        fields.append(pa.field(key, _json_type(role, [o.get(key) for o in sample])))
    schema = pa.schema(list({f.name: f for f in fields}.values()))
    try:
        table = pajson.read_json(
            path,
            read_options=pajson.ReadOptions(block_size=BLOCK_SIZE),
            parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
        )
    except pa.ArrowException:
        table = _read_json_slow(path, list(dict.fromkeys(select.values())))
    if table.num_rows == 0:
        raise InputError("the file has no data rows", path=path)
    return Columns(path, {role: table.column(key) for role, key in select.items()}, dict(select), time_unit)


def json_sample(path: Path, n: int = 2000) -> tuple[list[dict], list[str]]:
    """The first `n` objects of a JSON Lines file and the keys they use (errors name the line)."""
    if path.stat().st_size == 0:
        raise InputError("the file is empty", path=path)
    lines = first_lines(path, n, max_bytes=8 << 20)
    if not lines:
        raise InputError("the file is empty (only blank lines)", path=path)
    if lines[0].lstrip().startswith("["):
        raise InputError("the file is one JSON array; recalign reads JSON Lines (one object per line)",
                         path=path)
    sample: list[dict] = []
    for i, ln in enumerate(lines):
        try:
            obj = json.loads(ln)
        except ValueError as e:
            raise InputError(f"not valid JSON: {e}", path=path, row=i + 1) from None
        if not isinstance(obj, dict):
            raise InputError("each line must hold one JSON object", path=path, row=i + 1)
        sample.append(obj)
    return sample, list(dict.fromkeys(k for obj in sample for k in obj))


def _json_type(role: str, values: list[Any]) -> pa.DataType:
    vals = [v for v in values if v is not None]
    if role in ("reward", "propensity"):
        return pa.float64()
    if vals and all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        return pa.int64()
    if role == "timestamp" and vals and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        return pa.float64()
    return pa.string()


def _read_json_slow(path: Path, keys: list[str]) -> pa.Table:
    """Python reader (error path only): names the first bad line; ids/times of mixed types are
    kept as text and checked by the column conversions."""
    data: dict[str, list[Any]] = {k: [] for k in keys}
    row = 0
    try:
        with open_text(path) as f:
            for raw in f:
                line = raw.decode("utf-8", errors="strict").strip()
                if not line:
                    continue
                row += 1
                try:
                    obj = json.loads(line)
                except ValueError as e:
                    raise InputError(f"not valid JSON: {e}", path=path, row=row) from None
                if not isinstance(obj, dict):
                    raise InputError("each line must hold one JSON object", path=path, row=row)
                for k in keys:
                    data[k].append(obj.get(k))
    except UnicodeDecodeError:
        raise InputError("the line is not valid UTF-8 text", path=path, row=row + 1) from None
    except (OSError, EOFError) as e:
        raise InputError(f"cannot read the file: {e}", path=path) from None
    return pa.table({k: _py_column(v) for k, v in data.items()})


def _py_column(values: list[Any]) -> pa.Array:
    present = [v for v in values if v is not None]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        try:
            return pa.array(values, type=pa.int64())
        except (pa.ArrowException, OverflowError):
            pass
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        try:
            return pa.array(values, type=pa.float64())
        except (pa.ArrowException, OverflowError):
            pass
    return pa.array([None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in values],
                    type=pa.string())


# ---------------------------------------------------------------------------- Parquet
def read_parquet(path: Path, select: dict[str, str], time_unit: str = "s") -> Columns:
    """Read the selected columns of a Parquet file."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"not a readable Parquet file: {e}", path=path) from None
    missing = [role for role, col in select.items() if col not in names]
    if missing:
        raise missing_column_error(path, missing[0], select[missing[0]], names)
    try:
        table = pq.read_table(path, columns=list(dict.fromkeys(select.values())))
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"cannot read the Parquet file: {e}", path=path) from None
    if table.num_rows == 0:
        raise InputError("the file has no data rows", path=path)
    return Columns(path, {role: table.column(col) for role, col in select.items()}, dict(select), time_unit)
