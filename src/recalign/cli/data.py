"""`recalign data stats` and `recalign data download`."""

from __future__ import annotations

import argparse
import sys

from recalign.cli.args import (
    DATA_DIR_HELP,
    add_config_args,
    add_data_args,
    add_json_arg,
    data_overrides,
    print_json,
    resolve_config,
)


def cmd_data_stats(args: argparse.Namespace) -> int:
    from recalign.data.prepared import load_interactions
    from recalign.data.stats import dataset_stats, format_stats
    from recalign.data.summary import summarize

    cfg = _stats_config(args)
    inter, sim = load_interactions(cfg)
    stats = dataset_stats(inter, high_reward=cfg.data.high_reward, min_user_interactions=cfg.data.min_user_interactions)
    stats["data_summary"] = summarize(inter, cfg)
    if sim is not None:
        from recalign.data.worlds import world_diagnostics

        diag = world_diagnostics(inter, sim)  # NaN (no unrated consumption) -> null: strict JSON
        stats["world_diagnostics"] = {k: None if isinstance(v, float) and v != v else v for k, v in diag.items()}
    if args.json:
        print_json(stats)
    else:
        text = format_stats(stats)
        if sim is not None:
            text += "\n" + format_world(stats["world_diagnostics"])
        sys.stdout.write(text + "\n")
    return 0


def _stats_config(args: argparse.Namespace):
    """`resolve_config`, with the named world's `sim` values (`--world`) under `--config` and `--set`."""
    if args.world is None:
        return resolve_config(args)
    from recalign import configlib
    from recalign.config import RunConfig, load_config
    from recalign.errors import InputError
    from recalign.experiments.presets import read_world

    if args.dataset != "sim":
        raise InputError(f"--world {args.world} sets the simulator's world; the dataset is {args.dataset!r}, not sim")
    base = configlib.update(RunConfig(), {"sim": read_world(args.world)})
    return load_config(args.config, data_overrides(args) + list(args.overrides), base=base)


def format_world(d: dict) -> str:
    """`world_diagnostics` in a few lines (METHOD.md, "Worlds": coverage, selection, missing
    ratings, the reward scale)."""
    def pct(x: float) -> str:
        return f"{100 * x:.1f}%"

    unrated = "" if d["unrated_true_reward_mean"] is None else f" (mean r* of the unrated {d['unrated_true_reward_mean']:.2f})"
    return "\n".join([
        "world diagnostics (recalign.data.worlds):",
        f"  logged rows per item min / median / max  {d['exposures_min']:,} / {d['exposures_median']:g} / "
        f"{d['exposures_max']:,}; items with < 10 rows {pct(d['share_items_under_10'])}, with none "
        f"{pct(d['share_items_unlogged'])}",
        f"  selection: mean observed / r* of logged rows {d['observed_reward_mean']:.2f} / "
        f"{d['logged_true_reward_mean']:.2f} against E_{{a~pi_beta}}[r*] {d['shown_true_reward_mean']:.2f} "
        f"(gap {d['selection_gap_true']:+.2f} in r*, {d['contexts']:,} contexts)",
        f"  consumptions rated {pct(d['share_rated'])}{unrated}",
        f"  observed rewards outside [r_min, r_max] {pct(d['share_rewards_outside_range'])}, whole numbers "
        f"{pct(d['share_rewards_whole'])}",
    ])


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
    p.add_argument("--world", metavar="NAME", help="for sim: a named world, configs/worlds/NAME.toml (clean, ratings, "
                   "watch-time, popular), under --config and --set. For sim the output adds world_diagnostics: "
                   "coverage, outcome selection, rated share, rewards outside the range")
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
