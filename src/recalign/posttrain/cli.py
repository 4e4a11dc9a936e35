"""`recalign posttrain` and `recalign reward-model`: flags -> `recalign.posttrain.run`.

    recalign posttrain --init RUN --method NAME [--config F] [--set k=v ...] --out RUN
                       [--reward-model RM_RUN] [--resume] [--json]
    recalign posttrain --list
    recalign reward-model (--init RUN | --data DATASET ...) [--config F] [--set k=v ...] --out RUN [--json]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from recalign.errors import InputError


def _cli():  # late import: recalign.cli imports the modules that register here
    from recalign import cli

    return cli


def _public(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (_public(v) if isinstance(v, dict) else v) for k, v in d.items() if not k.startswith("_")}


def _print_metrics(metrics: dict[str, Any], title: str) -> None:
    sys.stdout.write(f"{title}\n")
    for k, v in metrics.items():
        if k.startswith("_") or not isinstance(v, (int, float)):
            continue
        sys.stdout.write(f"  {k:<16} {v:.4f}\n" if isinstance(v, float) else f"  {k:<16} {v}\n")


def cmd_posttrain(args: argparse.Namespace) -> int:
    from recalign.posttrain.registry import describe_methods

    if args.list:
        rows = describe_methods()
        if args.json:
            _cli()._print_json({"methods": [{"name": n, "description": d, "needs_reward_model": rm}
                                            for n, d, rm in rows]})
        else:
            width = max(len(n) for n, _, _ in rows)
            for n, d, _ in rows:
                sys.stdout.write(f"{n:<{width}}  {d}\n")
        return 0
    missing = [flag for flag, v in (("--init", args.init), ("--out", args.out)) if not v]
    if missing:
        raise InputError(f"posttrain needs {' and '.join(missing)} (or --list)")
    from recalign.posttrain.run import posttrain

    summary = posttrain(args.init, args.method, args.out, overrides=args.overrides,
                        reward_model_run=args.reward_model, config_file=args.config, resume=args.resume)
    if args.json:
        _cli()._print_json(_public(summary))
    else:
        setup = summary["setup"]
        extra = f", training-set ESS {setup['ess']:.3f}" if isinstance(setup.get("ess"), float) else ""
        sys.stdout.write(f"post-trained {args.init} with {summary['method']}: {summary['epochs_run']} epochs, "
                         f"{summary['steps']} steps, {summary['train_seconds']:.1f} s{extra}; run folder {args.out}\n")
        _print_metrics(summary["test"], "test metrics:")
    return 0


def cmd_reward_model(args: argparse.Namespace) -> int:
    from recalign.posttrain.run import reward_model_stage

    if (args.init is None) == (args.dataset is None):
        raise InputError("reward-model needs exactly one of --init RUN (a pretrained run) or --data DATASET")
    if args.init is not None:
        if args.config:
            raise InputError("--config goes with --data; with --init the run's config is used (use --set)")
        diag = reward_model_stage(args.out, init_run=args.init, overrides=args.overrides)
    else:
        diag = reward_model_stage(args.out, cfg=_cli().resolve_config(args))
    if args.json:
        _cli()._print_json(diag)
    else:
        sys.stdout.write(f"reward model ({'binary, BCE' if diag['binary'] else 'graded, MSE'}) in {args.out}\n")
        for which in ("valid", "test"):
            for metric, row in diag[which].items():
                cells = "  ".join(f"{k} {v:.4f}" for k, v in row.items())
                sys.stdout.write(f"  {which} {metric}: {cells}\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `posttrain` and `reward-model` to the `recalign` parser."""
    cli = _cli()

    p = sub.add_parser("posttrain", help="stage 2: post-train a pretrained run with exp_sft or a baseline")
    p.add_argument("--init", metavar="RUN", help="pretrained run folder to start from (π_0)")
    p.add_argument("--method", help="method name (default: posttrain.method, exp_sft); see --list")
    cli._add_config_args(p)
    p.add_argument("--out", metavar="RUN", help="run folder to write")
    p.add_argument("--reward-model", metavar="RM_RUN",
                   help="reward-model run folder (methods that need one train it otherwise)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--list", action="store_true", help="list the methods with one-line descriptions")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    p.set_defaults(func=cmd_posttrain)

    p = sub.add_parser("reward-model", help="train a reward model r(s, a) on the training split")
    p.add_argument("--init", metavar="RUN", help="pretrained run: its data, config and backbone")
    cli._add_data_args(p, positional=False)
    cli._add_config_args(p)
    p.add_argument("--out", metavar="RUN", required=True, help="run folder to write")
    p.add_argument("--json", action="store_true", help="print the diagnostics as one JSON object on stdout")
    p.set_defaults(func=cmd_reward_model)
