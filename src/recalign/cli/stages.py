"""The stage subcommands: pretrain, reward-model, posttrain, evaluate, recommend. Each maps its
flags to a configuration and calls one function of `recalign.stages`."""

from __future__ import annotations

import argparse
import sys

from recalign.cli.args import (
    add_config_args,
    add_data_args,
    add_json_arg,
    add_set_arg,
    print_json,
    print_metrics,
    public,
    resolve_config,
)
from recalign.errors import InputError

DEVICE_HELP = "auto (cuda if available), cpu or cuda[:N]"


def cmd_pretrain(args: argparse.Namespace) -> int:
    from recalign.configlib import parse_overrides
    from recalign.stages.keys import check_training_keys
    from recalign.stages.pretrain import pretrain

    cfg = resolve_config(args, [f'model.name="{args.model}"'] if args.model else [])
    check_training_keys("pretrain", parse_overrides(args.overrides), cfg)
    if args.dataset is None and cfg.data.name == "sim":
        sys.stderr.write("recalign: no --data given: pretraining on the embedded simulator (data.name = sim)\n")
    summary = pretrain(cfg, args.out, resume=args.resume)
    if args.json:
        print_json(summary)
    else:
        sys.stdout.write(f"pretrained {cfg.model.name} on {cfg.data.name}: best epoch {summary['best_epoch']} "
                         f"of {summary['epochs_run']}, {summary['train_seconds']:.1f} s; run folder {args.out}\n")
        print_metrics(summary["test"], "test metrics:")
    return 0


def cmd_posttrain(args: argparse.Namespace) -> int:
    if args.list:
        return _list_methods(args.json)
    missing = [flag for flag, v in (("--init", args.init), ("--out", args.out)) if not v]
    if missing:
        raise InputError(f"posttrain needs {' and '.join(missing)} (or --list)")
    from recalign.stages.posttrain import posttrain

    summary = posttrain(args.init, args.method, args.out, overrides=args.overrides,
                        reward_model_run=args.reward_model, config_file=args.config, resume=args.resume)
    if args.json:
        print_json(public(summary))
    else:
        setup = summary["setup"]
        extra = f", training-set ESS {setup['ess']:.3f}" if isinstance(setup.get("ess"), float) else ""
        sys.stdout.write(f"post-trained {args.init} with {summary['method']}: {summary['epochs_run']} epochs, "
                         f"{summary['steps']} steps, {summary['train_seconds']:.1f} s{extra}; run folder {args.out}\n")
        print_metrics(summary["test"], "test metrics:")
    return 0


def _list_methods(as_json: bool) -> int:
    from recalign.posttrain.registry import describe_methods

    rows = describe_methods()
    if as_json:
        print_json({"methods": [{"name": n, "description": d, "needs_reward_model": rm} for n, d, rm in rows]})
    else:
        width = max(len(n) for n, _, _ in rows)
        for n, d, _ in rows:
            sys.stdout.write(f"{n:<{width}}  {d}\n")
    return 0


def cmd_reward_model(args: argparse.Namespace) -> int:
    from recalign.stages.reward_model import reward_model_stage, true_error_lines

    if (args.init is None) == (args.dataset is None):
        raise InputError("reward-model needs exactly one of --init RUN (a pretrained run) or --data DATASET")
    if args.init is not None:
        if args.config:
            raise InputError("--config goes with --data; with --init the run's config is used (use --set)")
        diag = reward_model_stage(args.out, init_run=args.init, overrides=args.overrides)
    else:
        from recalign.configlib import parse_overrides
        from recalign.stages.keys import check_training_keys

        cfg = resolve_config(args)
        check_training_keys("reward-model", parse_overrides(args.overrides), cfg)
        diag = reward_model_stage(args.out, cfg=cfg)
    if args.json:
        print_json(diag)
    else:
        sys.stdout.write(f"reward model ({'binary, BCE' if diag['binary'] else 'graded, MSE'}) in {args.out}\n")
        for which in ("valid", "test"):
            for metric, row in diag[which].items():
                cells = "  ".join(f"{k} {v:.4f}" for k, v in row.items())
                sys.stdout.write(f"  {which} {metric}: {cells}\n")
        for line in true_error_lines(diag):  # the simulator only: error against r* by propensity decile
            sys.stdout.write(f"  {line}\n")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from recalign.stages.inference import evaluate_run
    from recalign.train.runfolder import run_status

    metrics = evaluate_run(args.run, args.split, device=args.device, overrides=args.overrides)
    if args.json:
        print_json({**public(metrics), "run": run_status(args.run)})
    else:
        print_metrics(metrics, f"{args.split} metrics of {args.run}:")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from recalign.stages.inference import recommend_run
    from recalign.train.runfolder import run_status

    history = None if args.history is None else [h for h in args.history.split(",") if h]
    out = recommend_run(args.run, user=args.user, history=history, k=args.k, exclude_seen=not args.include_seen,
                        device=args.device, items_file=args.items)
    if args.json:
        print_json({**out, "run": run_status(args.run)})
    else:
        who = f"user {out['user']}" if args.user is not None else f"a history of {out['history_length']} items"
        sys.stdout.write(f"top {out['k']} for {who}:\n")
        width = max((len(str(rec["item"])) for rec in out["items"] if "title" in rec), default=0)
        for rank, rec in enumerate(out["items"], 1):
            title = f"  {rec['title']}" if "title" in rec else ""
            sys.stdout.write(f"  {rank:>3}. {str(rec['item']):<{width}}{title}  (score {rec['score']:.3f})\n")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="stage 1: next-item pretraining (behaviour cloning)")
    add_data_args(p, positional=False)
    p.add_argument("--model", choices=["sasrec", "hstu"], help="backbone (same as --set model.name=...)")
    add_config_args(p)
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    add_json_arg(p, "print the summary as one JSON object on stdout")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("reward-model", help="train a reward model r(s, a) on the training split")
    p.add_argument("--init", metavar="RUN", help="pretrained run: its data, config and backbone")
    add_data_args(p, positional=False)
    add_config_args(p)
    p.add_argument("--out", metavar="RUN", required=True, help="run folder to write")
    add_json_arg(p, "print the diagnostics as one JSON object on stdout")
    p.set_defaults(func=cmd_reward_model)

    p = sub.add_parser("posttrain", help="stage 2: post-train a pretrained run with exp_sft or a baseline")
    p.add_argument("--init", metavar="RUN", help="pretrained run folder to start from (π_0)")
    p.add_argument("--method", help="method name (default: posttrain.method, exp_sft); see --list")
    add_config_args(p)
    p.add_argument("--out", metavar="RUN", help="run folder to write")
    p.add_argument("--reward-model", metavar="RM_RUN",
                   help="reward-model run folder (methods that need one train it otherwise)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--list", action="store_true", help="list the methods with one-line descriptions")
    add_json_arg(p, "print the summary (or, with --list, the methods) as one JSON object on stdout")
    p.set_defaults(func=cmd_posttrain)

    p = sub.add_parser("evaluate", help="full-ranking metrics of a run on its validation or test targets")
    p.add_argument("run", help="run folder")
    p.add_argument("--split", choices=["valid", "test"], default="test",
                   help="which held-out targets to score (default test; select models on valid)")
    p.add_argument("--device", default="auto", help=f"where to score: {DEVICE_HELP} (default auto)")
    add_set_arg(p, "override an evaluation field, e.g. --set eval.mask_seen=false")
    add_json_arg(p, "print the metrics as one JSON object on stdout")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("recommend", help="top-k items for a user or an explicit history (original ids)")
    p.add_argument("run", help="run folder")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--user", help="original user id: their whole logged history is the context")
    g.add_argument("--history", help="comma-separated original item ids, oldest first")
    p.add_argument("--k", type=int, default=10, help="how many items (default 10)")
    p.add_argument("--include-seen", action="store_true", help="allow items already in the history")
    p.add_argument("--items", metavar="FILE", help="CSV/TSV with a header naming an item id and a title column, to show "
                   "titles (MovieLens datasets find theirs: u.item, movies.dat, movies.csv)")
    p.add_argument("--device", default="cpu", help=f"where to score: {DEVICE_HELP} (default cpu)")
    add_json_arg(p, "print the list as one JSON object on stdout")
    p.set_defaults(func=cmd_recommend)
