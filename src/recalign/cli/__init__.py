"""`recalign` command line (the CLI contract of DESIGN.md).

The one place that registers subcommands is `build_parser` below; each group lives in its own
module (`config.py`, `data.py`, `stages.py`, `experiments.py`) as `cmd_<name>(args) -> int` functions that map
flags to a configuration and call one library function, with the shared options and printing in
`args.py`. Heavy imports (torch) happen inside the `cmd_` functions, so `recalign --help` is fast.
Exit codes: 0 success, 2 bad usage or bad input (one paragraph, no traceback unless --debug),
1 anything else. `--json` prints exactly one JSON object on stdout; logs go to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from recalign import __version__
from recalign.cli import config, data, experiments, stages
from recalign.errors import InputError, RecalignError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recalign", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"recalign {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    config.add_parsers(sub)
    data.add_parsers(sub)
    stages.add_parsers(sub)
    experiments.add_parsers(sub)
    return parser


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
    except BrokenPipeError:  # `recalign ... | head`: the reader has gone; say nothing more
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (the interpreter flushes stdout at exit)
        return 0
    except Exception as e:  # anything unexpected: one line, traceback with --debug
        if args.debug:
            traceback.print_exc()
        else:
            sys.stderr.write(f"recalign: internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)\n")
        return 1
