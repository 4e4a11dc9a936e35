"""RecBole atomic `.inter` files (any dataset in RecBole's layout).

A tab-separated file whose header names each column as `name:type`, e.g.
`user_id:token  item_id:token  rating:float  timestamp:float`. Roles come from the names (the
type suffix is ignored): `user_id` -> user, `item_id` -> item, `rating` or `label` -> reward,
`timestamp` -> timestamp; `--columns reward=label` (names without the type) overrides. Other
columns (`token_seq`, `float_seq`, ...) are ignored. Ids are read as RecBole tokens but keep
integer order when every token is an integer, so `ml-100k.inter` and `u.data` load to identical
tables.
"""

from __future__ import annotations

from pathlib import Path

from recalign.data.loaders import generic, tabular
from recalign.data.schema import Interactions
from recalign.errors import InputError

_DEFAULTS = {"user": ("user_id",), "item": ("item_id",), "reward": ("rating", "label"),
             "timestamp": ("timestamp",)}


def read_file(path: Path, columns: str = "") -> tabular.Columns:
    if path.stat().st_size == 0:
        raise InputError("the file is empty", path=path)
    lines = tabular.first_lines(path, 1)
    if not lines:
        raise InputError("the file is empty (only blank lines)", path=path)
    header = tabular.split_line(lines[0], "\t")
    base = {h.split(":", 1)[0]: h for h in header}  # name -> full header field
    mapping = generic.parse_mapping(columns)
    select: dict[str, str] = {}
    for role in tabular.ROLES:
        if role in mapping:
            if mapping[role] not in base:
                raise tabular.missing_column_error(path, role, mapping[role], list(base), "\t", lines[0])
            select[role] = base[mapping[role]]
            continue
        hits = [base[n] for n in _DEFAULTS.get(role, ()) if n in base]
        if len(hits) > 1:
            raise InputError(f"several columns could be the {role}: {', '.join(map(repr, hits))}; say "
                             f"which with --columns {role}=NAME", path=path, column=hits[0])
        if hits:
            select[role] = hits[0]
        elif role in tabular.REQUIRED:
            raise tabular.missing_column_error(path, role, None, header, "\t", lines[0])
    return tabular.read_delimited(path, delimiter="\t", names=None, select=select)


def load_file(path: Path, *, columns: str = "", duplicates: str = "keep",
              meta: dict | None = None) -> Interactions:
    """Load a RecBole `.inter` file."""
    return tabular.build_interactions(read_file(path, columns), duplicates=duplicates,
                                      meta={"format": "recbole", **(meta or {})})
