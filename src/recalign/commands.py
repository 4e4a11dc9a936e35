"""Subcommands beyond `data`: pretrain, evaluate, recommend, posttrain, reward-model, theory and
demo. Each maps its flags to config overrides and calls one function of `recalign.pipeline` (or
the module that owns the stage)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _cli():  # late import: cli imports this module
    from recalign import cli

    return cli


def _print_metrics(metrics: dict[str, Any], title: str) -> None:
    keys = [k for k in metrics if not k.startswith("_") and isinstance(metrics[k], (int, float))]
    sys.stdout.write(f"{title}\n")
    for k in keys:
        v = metrics[k]
        sys.stdout.write(f"  {k:<16} {v:.4f}\n" if isinstance(v, float) else f"  {k:<16} {v}\n")


def _public(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if not k.startswith("_")}


def cmd_pretrain(args: argparse.Namespace) -> int:
    from recalign.pipeline import pretrain

    extra = [f"model.name={json.dumps(args.model)}"] if args.model else []
    cfg = _cli().resolve_config(args)
    if extra:
        from recalign.config import load_config

        cfg = load_config(None, extra, base=cfg)
    summary = pretrain(cfg, args.out, resume=args.resume)
    if args.json:
        _cli()._print_json(summary)
    else:
        sys.stdout.write(f"pretrained {cfg.model.name} on {cfg.data.name}: best epoch {summary['best_epoch']} "
                         f"of {summary['epochs_run']}, {summary['train_seconds']:.1f} s; run folder {args.out}\n")
        _print_metrics(summary["test"], "test metrics:")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from recalign.pipeline import evaluate_run

    metrics = evaluate_run(args.run, args.split, device=args.device, overrides=args.overrides)
    if args.json:
        _cli()._print_json(_public(metrics))
    else:
        _print_metrics(metrics, f"{args.split} metrics of {args.run}:")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from recalign.pipeline import recommend_run

    history = None if args.history is None else [h for h in args.history.split(",") if h]
    out = recommend_run(args.run, user=args.user, history=history, k=args.k, exclude_seen=not args.include_seen,
                        device=args.device)
    if args.json:
        _cli()._print_json(out)
    else:
        who = f"user {args.user}" if args.user is not None else f"a history of {out['history_length']} items"
        sys.stdout.write(f"top {out['k']} for {who}:\n")
        for rank, rec in enumerate(out["items"], 1):
            sys.stdout.write(f"  {rank:>3}. {rec['item']}  (score {rec['score']:.3f})\n")
    return 0


def cmd_theory(args: argparse.Namespace) -> int:
    from recalign.theory import theory_report

    if args.lam is None and args.tau is None:
        from recalign.errors import InputError

        raise InputError("give --lam (the bound at this λ) and/or --tau (the smallest λ for this loss)")
    rep = theory_report(args.sigma, args.n_items, args.delta, args.r_max, lam=args.lam, tau=args.tau)
    if args.json:
        _cli()._print_json(rep)
        return 0
    sys.stdout.write(f"noise radius ε = σ·sqrt(2·log(2|A|/δ)) = {rep['epsilon']:.6g}\n")
    if "value_loss_bound" in rep:
        sys.stdout.write(f"value loss bound at λ = {args.lam:g}: R_max·(exp(2ε/λ) − 1) = {rep['value_loss_bound']:.6g}\n")
    if "min_lambda" in rep:
        sys.stdout.write(f"smallest λ keeping the loss below τ = {args.tau:g}: 2ε / log(1 + τ/R_max) = "
                         f"{rep['min_lambda']:.6g}\n")
    sys.stdout.write(f"({rep['note']})\n")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import tempfile

    from recalign.experiments.demo import format_table, run_demo

    out = args.out or tempfile.mkdtemp(prefix="recalign-demo-")
    res = run_demo(out, quick=args.quick, overrides=args.overrides, seeds=args.seeds)
    if args.json:
        _cli()._print_json({k: v for k, v in res.items() if k != "config"})
    else:
        sys.stdout.write(format_table(res) + "\n")
        sys.stdout.write(f"\n{res['seconds']:.0f} s; results.json, table.txt and every run folder are in {out}\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the model subcommands to the `recalign` parser."""
    cli = _cli()

    p = sub.add_parser("demo", help="the whole story on the embedded simulator, in a few minutes on a CPU")
    p.add_argument("--quick", action="store_true", help="a smaller world and model (about a minute; used by CI)")
    p.add_argument("--out", help="folder for results.json, table.txt and the runs (default: a new temp folder)")
    p.add_argument("--seeds", type=int, default=1, help="simulator/training seeds (intervals over seeds when > 1)")
    cli._add_config_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("theory", help="METHOD.md's bound: value loss of exp_sft under noise, smallest safe λ")
    p.add_argument("--sigma", type=float, required=True, help="sub-Gaussian noise scale σ of the rewards")
    p.add_argument("--n-items", type=float, required=True, help="catalog size |A|")
    p.add_argument("--delta", type=float, default=0.05, help="failure probability δ (default 0.05)")
    p.add_argument("--r-max", type=float, required=True, help="largest reward R_max")
    p.add_argument("--lam", type=float, help="temperature λ: print the value-loss bound at this λ")
    p.add_argument("--tau", type=float, help="tolerated value loss τ: print the smallest λ that keeps it")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_theory)

    p = sub.add_parser("pretrain", help="stage 1: next-item pretraining (behaviour cloning)")
    cli._add_data_args(p, positional=False)
    p.add_argument("--model", choices=["sasrec", "hstu"], help="backbone (same as --set model.name=...)")
    cli._add_config_args(p)
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    p.set_defaults(func=cmd_pretrain)

    from recalign.posttrain.cli import register as register_posttrain

    register_posttrain(sub)

    p = sub.add_parser("evaluate", help="full-ranking metrics of a run on its validation or test targets")
    p.add_argument("run", help="run folder")
    p.add_argument("--split", choices=["valid", "test"], default="test")
    p.add_argument("--device", default="auto")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override an evaluation field, e.g. --set eval.mask_seen=false")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("recommend", help="top-k items for a user or an explicit history (original ids)")
    p.add_argument("run", help="run folder")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--user", help="original user id: their whole logged history is the context")
    g.add_argument("--history", help="comma-separated original item ids, oldest first")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--include-seen", action="store_true", help="allow items already in the history")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_recommend)
