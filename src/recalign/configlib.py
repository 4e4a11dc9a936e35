"""Typed configuration: dataclasses with defaults, TOML files and `--set key=value` overrides.

Defaults live only in the dataclasses (each field carries a `help` line in its metadata). A TOML
file or a `--set` override may only override a field that exists, with a value of the field's
type: unknown keys and wrong types raise `InputError` naming the key.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from recalign.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")


Check = tuple[Callable[[Any], bool], str]  # (predicate, what it requires, e.g. "> 0")
POSITIVE: Check = (lambda v: v > 0, "> 0")
NON_NEGATIVE: Check = (lambda v: v >= 0, ">= 0")
AT_LEAST_ONE: Check = (lambda v: v >= 1, ">= 1")
FRACTION: Check = (lambda v: 0 <= v <= 1, "in [0, 1]")
OPEN_FRACTION: Check = (lambda v: 0 < v < 1, "in (0, 1)")


def field(default: Any, help: str, check: Check | None = None, **kwargs: Any) -> Any:
    """A dataclass field with a help line (type, default and meaning are shown by `recalign
    config`) and, optionally, a check of its value (applied by `update` to every value a file or
    `--set` gives, so a bad value is refused before anything runs)."""
    meta = {"help": help, "check": check}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta, **kwargs)
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: dataclasses.replace(default), metadata=meta, **kwargs)
    return dataclasses.field(default=default, metadata=meta, **kwargs)


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "|".join(str(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check (and where lossless, convert) `value` to the annotated type `tp`, or raise."""
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        raise InputError(f"config key {key!r} must be one of {', '.join(map(str, choices))}; got {value!r}")
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, key)
            except InputError as e:
                errors.append(str(e))
        raise InputError(f"config key {key!r} expects {' or '.join(_type_name(a) for a in args)}; got {value!r}")
    if origin in (list, tuple):
        (inner, *_) = get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [parse_scalar(v.strip()) for v in value.split(",") if v.strip() != ""]
        if not isinstance(value, (list, tuple)):
            raise InputError(f"config key {key!r} expects a list; got {value!r}")
        out = [coerce(v, inner, key) if inner is not Any else v for v in value]
        return tuple(out) if origin is tuple else out
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise InputError(f"config key {key!r} expects true or false; got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise InputError(f"config key {key!r} expects an integer; got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise InputError(f"config key {key!r} expects a number; got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise InputError(f"config key {key!r} expects a string; got {value!r}")
    if tp is Any:
        return value
    raise InputError(f"config key {key!r} has an unsupported type {tp!r}")  # pragma: no cover


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def update(cfg: T, values: dict[str, Any], prefix: str = "") -> T:
    """Return a copy of dataclass `cfg` with the (nested) `values` applied; unknown keys raise."""
    hints = _hints(type(cfg))
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    names = set(fields)
    changes: dict[str, Any] = {}
    for k, v in values.items():
        key = f"{prefix}{k}"
        if k not in names:
            valid = ", ".join(f"{prefix}{n}" for n in sorted(names))
            raise InputError(f"unknown config key {key!r}; valid keys here: {valid}")
        cur = getattr(cfg, k)
        if dataclasses.is_dataclass(cur):
            if not isinstance(v, dict):
                raise InputError(f"config key {key!r} is a section; give its fields (e.g. {key}.x=...)")
            changes[k] = update(cur, v, prefix=f"{key}.")
        else:
            changes[k] = _checked(coerce(v, hints[k], key), fields[k], key)
    return dataclasses.replace(cfg, **changes)


def _checked(value: Any, f: dataclasses.Field, key: str) -> Any:
    check = f.metadata.get("check")
    if check is None:
        return value
    ok, requirement = check
    values = value if isinstance(value, (list, tuple)) else [value]
    if not all(ok(v) for v in values):
        raise InputError(f"config key {key!r} must be {requirement}; got {value!r}")
    return value


def parse_scalar(text: str) -> Any:
    """Parse the right-hand side of `--set key=value` as a TOML value, falling back to a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`["a.b=1", "c=x"]` -> `{"a": {"b": 1}, "c": "x"}`."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise InputError(f"--set expects key=value; got {pair!r}")
        key, text = pair.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise InputError(f"--set has an empty key in {pair!r}")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise InputError(f"--set {key!r} conflicts with another override")
        node[parts[-1]] = parse_scalar(text.strip())
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, with errors naming the file and line."""
    p = Path(path)
    if not p.is_file():
        raise InputError("config file not found", path=p)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"not valid TOML: {e}", path=p) from None


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} to TOML")


def to_toml(cfg: Any) -> str:
    """Serialise a (nested) config dataclass to TOML; `None` fields are left out (their default)."""
    lines: list[str] = []

    def emit(d: dict[str, Any], section: str) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in d.items() if isinstance(v, dict)}
        if section and scalars:
            lines.append(f"[{section}]")
        for k, v in scalars.items():
            if v is not None:
                lines.append(f"{k} = {toml_value(v)}")
        if scalars:
            lines.append("")
        for k, v in tables.items():
            emit(v, f"{section}.{k}" if section else k)

    emit(to_dict(cfg), "")
    return "\n".join(lines)


def describe(cfg: Any, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) for every field, for `recalign config` and the docs; the help
    line ends with the field's check when it has one ("(must be > 0)")."""
    out = []
    hints = _hints(type(cfg))
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out.extend(describe(v, f"{prefix}{f.name}."))
        else:
            help_line = f.metadata.get("help", "")
            if f.metadata.get("check"):
                help_line += f" (must be {f.metadata['check'][1]})"
            out.append((f"{prefix}{f.name}", _type_name(hints[f.name]), v, help_line))
    return out
