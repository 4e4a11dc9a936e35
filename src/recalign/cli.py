"""`recalign` command line (the CLI contract of DESIGN.md).

Every subcommand is a small function `cmd_<name>(args) -> int` that parses nothing itself: the
argparse tree below maps flags to config fields, and the work happens in library functions.
Exit codes: 0 success, 2 bad usage or bad input (one paragraph, no traceback unless --debug),
1 anything else. `--json` prints exactly one JSON object on stdout; logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any

from recalign.errors import InputError, RecalignError


# ---------------------------------------------------------------------------- shared helpers
def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="F.toml", help="TOML file overriding the defaults")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field, e.g. --set posttrain.lam=0.5 (repeatable)")


def _add_data_args(p: argparse.ArgumentParser, positional: bool) -> None:
    if positional:
        p.add_argument("dataset", help="dataset name (ml-100k, ml-latest-small, obd, sim, ...) or a file path")
    else:
        p.add_argument("--data", dest="dataset", help="dataset name or file path (default: sim)")
    p.add_argument("--data-dir", help="folder holding datasets (default: $RECALIGN_DATA, then ~/.cache/recalign)")
    p.add_argument("--columns", help="column mapping for generic files: user=uid,item=iid,reward=rating,timestamp=ts "
                   "(with --no-header: the names in file order, e.g. item,user,reward,timestamp)")
    p.add_argument("--no-header", action="store_true", default=None, help="the file has no header row")
    p.add_argument("--format", help="file format: auto, movielens, recbole, obd, amazon, csv, tsv, parquet, jsonl")


def _data_overrides(args: argparse.Namespace) -> list[str]:
    """Turn the data flags into `--set` overrides, so flags and config share one path."""
    out = []
    for flag, key in (("dataset", "name"), ("data_dir", "data_dir"), ("columns", "columns"), ("format", "format")):
        v = getattr(args, flag, None)
        if v is not None:
            out.append(f"data.{key}={json.dumps(str(v))}")
    if getattr(args, "no_header", None):
        out.append("data.no_header=true")
    return out


def resolve_config(args: argparse.Namespace, base=None):
    from recalign.config import load_config

    return load_config(getattr(args, "config", None),
                       _data_overrides(args) + list(getattr(args, "overrides", []) or []), base=base)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


# ---------------------------------------------------------------------------- subcommands
def cmd_data_stats(args: argparse.Namespace) -> int:
    from recalign.data.loaders import load_from_config
    from recalign.data.stats import dataset_stats, format_stats

    cfg = resolve_config(args)
    inter = load_from_config(cfg)
    stats = dataset_stats(inter, high_reward=cfg.data.high_reward)
    if args.json:
        _print_json(stats)
    else:
        sys.stdout.write(format_stats(stats) + "\n")
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    from recalign.data.download import download
    from recalign.data.paths import resolve_data_dir

    path = download(args.dataset, resolve_data_dir(args.data_dir), allow_unpinned=args.insecure_skip_checksum)
    sys.stdout.write(f"{path}\n")
    return 0


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from recalign import __version__

    parser = argparse.ArgumentParser(prog="recalign", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"recalign {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    data = sub.add_parser("data", help="inspect and download datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    p = dsub.add_parser("stats", help="users, items, interactions, rewards, lengths, ties, duplicates")
    _add_data_args(p, positional=True)
    _add_config_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=cmd_data_stats)
    p = dsub.add_parser("download", help="download a dataset from its official source (sha256-checked)")
    p.add_argument("dataset")
    p.add_argument("--data-dir")
    p.add_argument("--insecure-skip-checksum", action="store_true",
                   help="allow sources whose sha256 is not pinned in recalign")
    p.set_defaults(func=cmd_data_download)

    _register_more(sub)
    return parser


def _register_more(sub: argparse._SubParsersAction) -> None:
    """Subcommands defined in other modules register here (pretrain, posttrain, evaluate, ...)."""
    from recalign import commands

    commands.register(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: exit 2 on bad usage, 0 on --help
        return int(e.code or 0)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 prints
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    try:
        return int(args.func(args) or 0)
    except InputError as e:
        if args.debug:
            traceback.print_exc()
        sys.stderr.write(f"recalign: error: {e}\n")
        return 2
    except RecalignError as e:
        if args.debug:
            traceback.print_exc()
        sys.stderr.write(f"recalign: error: {e}\n")
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("recalign: interrupted\n")
        return 130
    except Exception as e:  # anything unexpected: one line, traceback with --debug
        if args.debug:
            traceback.print_exc()
        else:
            sys.stderr.write(f"recalign: internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
