"""`recalign config`: every configuration key with its type, default and help line, from the
same dataclasses that check `--config` files and `--set` overrides."""

from __future__ import annotations

import argparse
import sys

from recalign.cli.args import add_json_arg, print_json
from recalign.errors import InputError


def cmd_config(args: argparse.Namespace) -> int:
    from recalign import configlib
    from recalign.config import RunConfig

    rows = configlib.describe(RunConfig())
    sections = sorted({key.split(".")[0] for key, *_ in rows}, key=[k.split(".")[0] for k, *_ in rows].index)
    if args.section:
        if args.section not in sections and not any(k == args.section for k, *_ in rows):
            raise InputError(f"unknown config section or key {args.section!r}; sections: {', '.join(sections)}")
        rows = [r for r in rows if r[0] == args.section or r[0].startswith(args.section + ".")]
    if args.json:
        print_json({"keys": [{"key": k, "type": t, "default": d, "help": h} for k, t, d, h in rows]})
        return 0
    for key, tp, default, help_line in rows:
        shown = configlib.toml_value(default) if default is not None else "(none)"
        sys.stdout.write(f"{key} = {shown}    # {tp}: {help_line}\n" if not args.list else f"{key}\n")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="list every config key (type, default, help); what --set and --config accept",
                       epilog="examples: recalign config posttrain | recalign config train.lr | "
                              "recalign config --list")
    p.add_argument("section", nargs="?", help="a section (data, sim, model, train, eval, posttrain) or one key")
    p.add_argument("--list", action="store_true", help="key names only")
    add_json_arg(p, "print the keys as one JSON object on stdout")
    p.set_defaults(func=cmd_config)
