"""Subcommands beyond `data`: pretrain, evaluate, recommend, posttrain, reward-model, theory,
demo, sweep and reproduce. Each maps its flags to config overrides and calls one function of `recalign.pipeline` (or
the module that owns the stage)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from recalign.errors import InputError


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
    res = run_demo(out, quick=args.quick, overrides=args.overrides, seeds=args.seeds, jobs=args.jobs)
    if args.json:
        _cli()._print_json({k: v for k, v in res.items() if k != "config"})
    else:
        sys.stdout.write(format_table(res) + "\n")
        sys.stdout.write(f"\n{res['seconds']:.0f} s; results.json, table.txt and every run folder are in {out}\n")
    return 0


def _csv(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _out_dir(args: argparse.Namespace, prefix: str) -> str:
    import tempfile

    return args.out or tempfile.mkdtemp(prefix=prefix)


def cmd_sweep(args: argparse.Namespace) -> int:
    import json as _json

    from recalign.experiments import report
    from recalign.experiments.presets import preset_config
    from recalign.experiments.sweep import run_sweep
    from recalign.train.checkpoint import atomic_write_text

    out = Path(_out_dir(args, "recalign-sweep-"))
    if (out / "results.json").exists():
        raise InputError("output folder already holds results.json; choose another --out", path=out)
    cfg = preset_config(args.dataset or "sim", args.quick, args.overrides, args.data_dir, args.config)
    trace = tuple(m for m in _csv(args.methods) if m in ("ppo", "dpo")) if args.trace else ()
    res = run_sweep(cfg, args.param, _csv(args.values), _csv(args.methods), out, seeds=args.seeds,
                    fixed=_csv(args.fixed), judges=cfg.eval.judges if args.judges else 0, trace=trace)
    summary = res["summary"]
    report.plot_sweep(summary, out / "sweep.png")
    hack = report.plot_traces(res["traces"], out / "trace.png")
    md = [f"# recalign sweep: {args.param}", "", f"`{' '.join(sys.argv)}`", "",
          report.sweep_markdown(summary), "", "![sweep](sweep.png)"] + (["", "![trace](trace.png)"] if hack else [])
    if summary["fixed"]:
        md[4:4] = [report.methods_markdown(summary["fixed"], [summary["metric"], "ndcg@10"]), ""]
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    atomic_write_text(out / "results.json", _json.dumps(summary, indent=2))
    if args.json:
        _cli()._print_json(summary)
    else:
        sys.stdout.write(report.sweep_markdown(summary) + f"\n\nreport.md, sweep.png and results.json are in {out}\n")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from recalign.experiments.reproduce import (
        LAMS,
        METHODS,
        NOISE_MODELS,
        NOISE_SCALES,
        run_reproduce,
    )

    out = _out_dir(args, "recalign-reproduce-")
    def pick(given: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_csv(given)) if given is not None else default

    res = run_reproduce(_csv(args.datasets), out, seeds=args.seeds, methods=pick(args.methods, METHODS),
                        lams=pick(args.lams, LAMS), noise_scales=pick(args.noise_scales, NOISE_SCALES),
                        noise_models=pick(args.noise_models, NOISE_MODELS), quick=args.quick,
                        overrides=args.overrides, data_dir=args.data_dir, judges=not args.no_judges, jobs=args.jobs,
                        resume=args.resume)
    if args.json:
        _cli()._print_json({k: v for k, v in res.items() if k != "traces"})
    else:
        sys.stdout.write((Path(out) / "report.md").read_text())
        sys.stdout.write(f"\nreport.md, results.json and the figures are in {out} "
                         f"({res['seconds']['total (wall)'] / 60:.1f} min)\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the model subcommands to the `recalign` parser."""
    cli = _cli()

    p = sub.add_parser("demo", help="the whole story on the embedded simulator, in a few minutes on a CPU")
    p.add_argument("--quick", action="store_true", help="a smaller world and model (about a minute; used by CI)")
    p.add_argument("--out", help="folder for results.json, table.txt and the runs (default: a new temp folder)")
    p.add_argument("--seeds", type=int, default=3, help="simulator/training seeds: each a new world (default 3; "
                   "intervals over seeds)")
    p.add_argument("--jobs", type=int, default=0, help="seeds run in parallel processes (default: one per CPU core)")
    cli._add_config_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("sweep", help="one config field over a grid: methods x values x seeds, with a figure")
    p.add_argument("--data", dest="dataset", help="dataset name or file path (default: sim); its preset applies first")
    p.add_argument("--data-dir", help="folder holding datasets (default: $RECALIGN_DATA, then ~/.cache/recalign)")
    p.add_argument("--param", required=True, help="the config field to sweep, e.g. posttrain.lam or sim.noise_scale")
    p.add_argument("--values", required=True, help="comma-separated values, e.g. 0.1,0.3,1,3")
    p.add_argument("--methods", default="exp_sft", help="methods run at every value (default exp_sft)")
    p.add_argument("--fixed", default="sft", help="methods run once per seed at the base config when the field is "
                   "posttrain.* (default sft, the baseline of every delta)")
    p.add_argument("--seeds", type=int, default=1, help="seeds (each: new simulated world, new π0)")
    p.add_argument("--judges", action="store_true", help="also score with the held-out judge ensemble (eval.judges)")
    p.add_argument("--trace", action="store_true", help="trace ppo/dpo training (reward model vs true value figure)")
    p.add_argument("--quick", action="store_true", help="the preset's quick variant (smoke test)")
    p.add_argument("--out", help="output folder (default: a new temp folder)")
    cli._add_config_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("reproduce", help="methods x datasets x seeds with λ and noise sweeps -> report.md + figures")
    p.add_argument("--datasets", default="sim", help="comma-separated dataset names (default sim), e.g. "
                   "sim,ml-100k,ml-latest-small")
    p.add_argument("--data-dir", help="folder holding datasets (default: $RECALIGN_DATA, then ~/.cache/recalign)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--methods", help="comma-separated methods (default sft,linear_sft,exp_sft,ppo,dpo)")
    p.add_argument("--lams", help="λ grid of exp_sft (default 0.1,0.3,1,3,10)")
    p.add_argument("--noise-scales", help="simulator noise scales of the robustness sweep (default 0,1,2; empty = skip)")
    p.add_argument("--noise-models", help="simulator noise models of the robustness sweep (default "
                   "gaussian,popularity_bias)")
    p.add_argument("--no-judges", action="store_true", help="skip the held-out judge ensemble on real data")
    p.add_argument("--jobs", type=int, default=1, help="parts run in parallel processes (one torch thread each; "
                   "2 on a 2-core machine)")
    p.add_argument("--quick", action="store_true", help="tiny settings: checks the pipeline, not the science (CI)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted reproduce in --out: finished runs "
                   "are reused, interrupted ones resumed")
    p.add_argument("--out", help="output folder (default: a new temp folder)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field for every dataset (after its preset)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_reproduce)

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
