"""`recalign data stats` and `recalign data download`."""

from __future__ import annotations

import argparse
import sys

from recalign.cli.args import (
    DATA_DIR_HELP,
    add_config_args,
    add_data_args,
    add_json_arg,
    print_json,
    resolve_config,
)


def cmd_data_stats(args: argparse.Namespace) -> int:
    from recalign.data.loaders import load_from_config
    from recalign.data.stats import dataset_stats, format_stats
    from recalign.data.summary import summarize

    cfg = resolve_config(args)
    inter = load_from_config(cfg)
    stats = dataset_stats(inter, high_reward=cfg.data.high_reward, min_user_interactions=cfg.data.min_user_interactions)
    stats["data_summary"] = summarize(inter, cfg)
    if args.json:
        print_json(stats)
    else:
        sys.stdout.write(format_stats(stats) + "\n")
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    from recalign.data.download import download
    from recalign.data.paths import resolve_data_dir

    path = download(args.dataset, resolve_data_dir(args.data_dir), allow_unpinned=args.insecure_skip_checksum)
    sys.stdout.write(f"{path}\n")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="inspect and download datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    p = dsub.add_parser("stats", help="users, items, interactions, rewards, lengths, ties, duplicates, and what "
                        "preparing drops (too few interactions, duplicates) and which targets repeat a seen item")
    add_data_args(p, positional=True)
    add_config_args(p)
    add_json_arg(p)
    p.set_defaults(func=cmd_data_stats)
    from recalign.data.download import SOURCES, describe_sources  # standard library only: cheap

    p = dsub.add_parser("download", help="download a dataset from its official source (sha256-checked)",
                        description="Download a dataset from its official source into DATA_DIR/<folder>, "
                        "check its sha256 and unpack it.", epilog=describe_sources(),
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", help=f"dataset name: {', '.join(SOURCES)}")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--insecure-skip-checksum", action="store_true",
                   help="allow sources whose sha256 is not pinned in recalign")
    p.set_defaults(func=cmd_data_download)
