"""What the subcommands share: the config and data options, turning them into a configuration,
and printing results (`--json`: one JSON object on stdout, nothing else there)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from typing import Any

JSON_HELP = "print the result as one JSON object on stdout (logs stay on stderr)"
DATA_DIR_HELP = "folder holding datasets (default: $RECALIGN_DATA, then ~/.cache/recalign)"


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="F.toml", help="TOML file overriding the defaults")
    add_set_arg(p, "override one config field, e.g. --set posttrain.lam=0.5 (repeatable)")


def add_set_arg(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def add_json_arg(p: argparse.ArgumentParser, help: str = JSON_HELP) -> None:
    p.add_argument("--json", action="store_true", help=help)


def add_data_args(p: argparse.ArgumentParser, positional: bool) -> None:
    if positional:
        p.add_argument("dataset", help="dataset name (ml-100k, ml-latest-small, obd, sim, ...) or a file path")
    else:
        p.add_argument("--data", dest="dataset", help="dataset name or file path (default: sim)")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--columns", help="column mapping for generic files: user=uid,item=iid,reward=rating,timestamp=ts "
                   "(with --no-header: the names in file order, e.g. item,user,reward,timestamp)")
    p.add_argument("--no-header", action="store_true", default=None, help="the file has no header row")
    p.add_argument("--format", help="file format: auto, movielens, recbole, obd, amazon, csv, tsv, parquet, jsonl")


def data_overrides(args: argparse.Namespace) -> list[str]:
    """Turn the data flags into `--set` overrides, so flags and config share one path."""
    out = []
    for flag, key in (("dataset", "name"), ("data_dir", "data_dir"), ("columns", "columns"), ("format", "format")):
        v = getattr(args, flag, None)
        if v is not None:
            out.append(f"data.{key}={json.dumps(str(v))}")
    if getattr(args, "no_header", None):
        out.append("data.no_header=true")
    return out


def resolve_config(args: argparse.Namespace, extra: list[str] | None = None):
    """Defaults, `--config`, the data flags, `--set`, then `extra` (flags such as `--model`)."""
    from recalign.config import load_config  # late: `recalign --help` should not import torch

    return load_config(getattr(args, "config", None),
                       data_overrides(args) + list(getattr(args, "overrides", []) or []) + list(extra or []))


def csv(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def out_dir(args: argparse.Namespace, prefix: str) -> str:
    return args.out or tempfile.mkdtemp(prefix=prefix)


def public(d: dict[str, Any]) -> dict[str, Any]:
    """`d` without its private (`_`-prefixed) entries, recursively."""
    return {k: (public(v) if isinstance(v, dict) else v) for k, v in d.items() if not k.startswith("_")}


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def print_metrics(metrics: dict[str, Any], title: str) -> None:
    """The numeric, public entries of `metrics`, one per line under `title`."""
    sys.stdout.write(f"{title}\n")
    for k, v in metrics.items():
        if k.startswith("_") or not isinstance(v, (int, float)):
            continue
        sys.stdout.write(f"  {k:<16} {v:.4f}\n" if isinstance(v, float) else f"  {k:<16} {v}\n")
