"""The experiment subcommands (demo, sweep, contest, phase, reproduce, rank) and the `theory` calculator."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from recalign.cli.args import (
    DATA_DIR_HELP,
    add_config_args,
    add_json_arg,
    add_set_arg,
    csv,
    out_dir,
    print_json,
)
from recalign.errors import InputError
from recalign.experiments.presets import grid_names

GRID_NAMES = tuple(grid_names())


def cmd_demo(args: argparse.Namespace) -> int:
    from recalign.experiments.demo import default_out_dir, format_files, format_table, run_demo
    from recalign.experiments.presets import world_overrides

    overrides = world_overrides(args.world, args.quick) + args.overrides  # the world first: --set wins
    out = args.out or default_out_dir()
    res = run_demo(out, quick=args.quick, overrides=overrides, seeds=args.seeds, jobs=args.jobs,
                   config_file=args.config, grid=args.grid)
    if args.json:
        print_json({k: v for k, v in res.items() if k != "config"})
        sys.stderr.write(format_files(res, out) + "\n")
    else:
        sys.stdout.write(format_table(res) + "\n\n" + format_files(res, out) + "\n")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from recalign.experiments import report
    from recalign.experiments.presets import preset_config
    from recalign.experiments.sweep import run_sweep
    from recalign.train.checkpoint import atomic_write_text

    out = Path(out_dir(args, "recalign-sweep-"))
    if (out / "results.json").exists():
        raise InputError("output folder already holds results.json; choose another --out", path=out)
    cfg = preset_config(args.dataset or "sim", args.quick, args.overrides, args.data_dir, args.config,
                        world=args.world)
    trace = tuple(m for m in csv(args.methods) if m in ("ppo", "dpo")) if args.trace else ()
    res = run_sweep(cfg, args.param, csv(args.values), csv(args.methods), out, seeds=args.seeds,
                    fixed=csv(args.fixed), judges=cfg.eval.judges if args.judges else 0, trace=trace,
                    select=args.select, checkpoints=args.checkpoints)
    summary = res["summary"]
    report.plot_sweep(summary, out / "sweep.png")
    hack = report.plot_traces(res["traces"], out / "trace.png")
    read = (f"Each run read at its checkpoint selected on validation by the `{args.select}` rule (argmax of the "
            f"validation `{summary['select']['metric']}` over step 0, {args.checkpoints} checkpoints and the end; "
            "the steps are in results.json's `select`)." if args.select else
            "Each run read at its end (its final policy; `--select` reads the checkpoint selected on validation).")
    md = [f"# recalign sweep: {args.param}", "", f"`{' '.join(sys.argv)}`", "", read, "",
          report.sweep_markdown(summary), "", "![sweep](sweep.png)"]
    if hack:
        md += ["", "![trace](trace.png)", "", f"Trace: {report.traces_verdict(res['traces'])}."]
    if summary["fixed"]:
        md[6:6] = [report.methods_markdown(summary["fixed"], [summary["metric"], "ndcg@10"]), ""]
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    atomic_write_text(out / "results.json", json.dumps(summary, indent=2))
    if args.json:
        print_json(summary)
    else:
        sys.stdout.write(report.sweep_markdown(summary) + f"\n\nreport.md, sweep.png{', trace.png' if hack else ''} "
                         f"and results.json are in {out}\n")
    return 0


def cmd_contest(args: argparse.Namespace) -> int:
    import os

    from recalign.experiments.contest import contest_markdown, epochs_override, run_contest
    from recalign.experiments.presets import preset_config

    out = Path(out_dir(args, "recalign-contest-"))
    dataset = args.dataset or "sim"
    cfg = preset_config(dataset, args.quick, args.overrides, args.data_dir, args.config, world=args.world)
    epochs = epochs_override(args.overrides)  # --set wins over the grid
    grid = args.grid or ("quick" if args.quick else "full")
    res = run_contest(cfg, out, csv(args.methods), grid=grid, seeds=args.seeds,
                      jobs=args.jobs or (os.cpu_count() or 1), epochs=epochs)
    if args.json:
        print_json({k: v for k, v in res.items() if k != "config"})
    else:
        sys.stdout.write(contest_markdown(res) + f"\ncontest.md, contest.json and frontier.png are in {out} "
                         f"({res['seconds'] / 60:.1f} min)\n")
    return 0


def cmd_phase(args: argparse.Namespace) -> int:
    import os

    from recalign import configlib
    from recalign.experiments.contest import check_methods, load_grid
    from recalign.experiments.phase import parse_axis, phase_markdown, run_phase
    from recalign.experiments.presets import preset_config

    out = Path(out_dir(args, "recalign-phase-"))
    cfg = preset_config(args.dataset or "sim", args.quick, args.overrides, None, args.config, world=args.world)
    epochs = configlib.parse_overrides(args.overrides).get("posttrain", {}).get("epochs")  # --set wins over the grid
    grid = args.grid or ("quick" if args.quick else "full")
    methods = check_methods(load_grid(grid), csv(args.methods))
    x = parse_axis("--x", args.x, cfg, load_grid(grid), methods)
    y = parse_axis("--y", args.y, cfg, load_grid(grid), methods)
    res = run_phase(cfg, out, x, y, methods, grid=grid, seeds=args.seeds, jobs=args.jobs or (os.cpu_count() or 1),
                    epochs=epochs, world=args.world)
    if args.json:
        print_json(res)
    else:
        sys.stdout.write(phase_markdown(res) + f"\nphase.md, phase.json and phase.png are in {out}\n")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from recalign.experiments.presets import world_overrides
    from recalign.experiments.reproduce import (
        LAMS,
        METHODS,
        NOISE_MODELS,
        NOISE_SCALES,
        run_reproduce,
    )

    if args.world is not None and "sim" not in csv(args.datasets):
        raise InputError(f"--world {args.world} sets the simulator's world; --datasets has no sim")
    overrides = world_overrides(args.world, args.quick) + args.overrides  # the world first: --set wins
    out = out_dir(args, "recalign-reproduce-")

    def pick(given: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(csv(given)) if given is not None else default

    res = run_reproduce(csv(args.datasets), out, seeds=args.seeds, methods=pick(args.methods, METHODS),
                        lams=pick(args.lams, LAMS), noise_scales=pick(args.noise_scales, NOISE_SCALES),
                        noise_models=pick(args.noise_models, NOISE_MODELS), quick=args.quick,
                        overrides=overrides, data_dir=args.data_dir, judges=not args.no_judges, jobs=args.jobs,
                        resume=args.resume, grid=args.grid)
    if args.json:
        print_json({k: v for k, v in res.items() if k != "traces"})
    else:
        sys.stdout.write((Path(out) / "report.md").read_text())
        sys.stdout.write(f"\nreport.md, results.json and the figures are in {out} "
                         f"({res['seconds']['total (wall)'] / 60:.1f} min)\n")
    return 0


def cmd_rank(args: argparse.Namespace) -> int:
    from recalign.experiments.rank import contest_scores, rank_candidates, rank_markdown

    contests = [contest_scores(f, args.method) for f in args.contests]
    rows = rank_candidates(contests)
    if args.json:
        print_json({"contests": [{k: c[k] for k in ("name", "metric", "seeds")} for c in contests], "ranking": rows})
    else:
        sys.stdout.write(rank_markdown(contests, rows, args.top))
    return 0


def cmd_theory(args: argparse.Namespace) -> int:
    from recalign.theory import theory_report

    if args.lam is None and args.tau is None:
        raise InputError("give --lam (the bound at this λ) and/or --tau (the smallest λ for this loss); "
                         "see `recalign theory --help` for an example")
    rep = theory_report(args.sigma, args.n_items, args.delta, args.r_max, lam=args.lam, tau=args.tau,
                        r_min=args.r_min)
    if args.json:
        print_json(rep)
        return 0
    sys.stdout.write(f"noise radius ε = σ·sqrt(2·log(2|A|/δ)) = {rep['epsilon']:.6g}\n")
    if "value_loss_bound" in rep:
        sys.stdout.write(f"value loss bound at λ = {args.lam:g}: R_max·(exp(2ε/λ) − 1) = {rep['value_loss_bound']:.6g}\n")
    if "min_lambda" in rep:
        sys.stdout.write(f"smallest λ keeping the loss below τ = {args.tau:g}: 2ε / log(1 + τ/R_max) = "
                         f"{rep['min_lambda']:.6g}\n")
    sys.stdout.write(rep["verdict"] + "\n")
    sys.stdout.write(f"({rep['note']})\n")
    return 0


WORLD_HELP = ("named simulator world, configs/worlds/NAME.toml (clean, ratings, watch-time, popular; see "
              "docs/data.md): its sim.* values apply after the dataset preset, before --quick and --set")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    _add_demo(sub)
    _add_sweep(sub)
    _add_contest(sub)
    _add_phase(sub)
    _add_reproduce(sub)
    _add_rank(sub)
    _add_theory(sub)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole story on the embedded simulator, each method selected on validation "
                       "from a small grid, in a few minutes on a CPU")
    p.add_argument("--quick", action="store_true", help="a smaller world and model (about a minute; used by CI)")
    p.add_argument("--out", help="folder for results.json, table.txt, the figures and the runs (default: "
                   "runs/demo-<date>-<time> in the working folder)")
    p.add_argument("--seeds", type=int, default=3, help="simulator/training seeds: each a new world (default 3; "
                   "intervals over seeds)")
    p.add_argument("--jobs", type=int, default=0, help="seeds run in parallel processes (default: one per CPU core)")
    p.add_argument("--grid", choices=GRID_NAMES, default="quick", help="each method's grid in "
                   "configs/contest/grids.toml (default quick: 2 points per method, 2 epochs, 2 checkpoints; full: "
                   "4 points, 6 epochs, 6 checkpoints, about 10x longer)")
    p.add_argument("--world", metavar="NAME", default="ratings", help=WORLD_HELP + "; default ratings, the world "
                   "closest to logged ratings (docs/reproduce/worlds.md); clean = the demo's world before session 6")
    add_config_args(p)
    add_json_arg(p, "print the results (as in results.json) as one JSON object on stdout")
    p.set_defaults(func=cmd_demo)


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="one config field over a grid: methods x values x seeds, with a figure")
    p.add_argument("--data", dest="dataset", help="dataset name or file path (default: sim); its preset applies first")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--param", required=True, help="the config field to sweep, e.g. posttrain.lam or sim.noise_scale")
    p.add_argument("--values", required=True, help="comma-separated values, e.g. 0.1,0.3,1,3")
    p.add_argument("--methods", default="exp_sft", help="methods run at every value (default exp_sft)")
    p.add_argument("--fixed", default="sft", help="methods run once per seed at the base config when the field is "
                   "posttrain.* (default sft, the baseline of every delta)")
    p.add_argument("--seeds", type=int, default=1, help="seeds (each: new simulated world, new π0)")
    p.add_argument("--judges", action="store_true", help="also score with the held-out judge ensemble (eval.judges)")
    p.add_argument("--trace", action="store_true", help="trace ppo/dpo training (reward model vs true value figure)")
    p.add_argument("--select", choices=("practical", "oracle"), help="read every run at its checkpoint selected on "
                   "validation by this rule (practical: validation high NDCG@10; oracle: validation true value, "
                   "simulator only) instead of at its end (the default)")
    p.add_argument("--checkpoints", type=int, default=4, help="with --select: checkpoints after step 0 in every run "
                   "(default 4; step 0 and the end are candidates too)")
    _add_run_args(p, "the preset's quick variant (smoke test)", WORLD_HELP + " (the dataset must be sim)",
                  "output folder (default: a new temp folder)", "the summary (as in results.json)")
    p.set_defaults(func=cmd_sweep)


def _add_run_args(p: argparse.ArgumentParser, quick_help: str, world_help: str, out_help: str, what: str) -> None:
    """The options every multi-run experiment shares: --quick, --world, --out, --config/--set, --json."""
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--world", metavar="NAME", help=world_help)
    p.add_argument("--out", help=out_help)
    add_config_args(p)
    add_json_arg(p, f"print {what} as one JSON object on stdout")


def _add_contest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("contest", help="methods at equal tuning budgets, selected on validation only, with a "
                       "reward-KL frontier (contest.json, contest.md, frontier.png)")
    p.add_argument("--data", dest="dataset", help="dataset name or file path (default: sim); its preset applies first")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--methods", default="sft,linear_sft,exp_sft,ppo,dpo",
                   help="comma-separated methods with a grid in configs/contest/grids.toml (default "
                   "sft,linear_sft,exp_sft,ppo,dpo; sft, the baseline of every delta, is always added)")
    p.add_argument("--grid", choices=GRID_NAMES, help="the grid of configs/contest/grids.toml (default: quick "
                   "with --quick, else full)")
    p.add_argument("--seeds", type=int, default=3, help="seeds (each: new simulated world, new π0 and reward model; "
                   "default 3)")
    p.add_argument("--jobs", type=int, default=0, help="seeds run in parallel processes (default: one per CPU core)")
    _add_run_args(p, "the preset's quick variant and the quick grid (smoke test)",
                  WORLD_HELP + " (the dataset must be sim)", "output folder (default: a new temp folder)",
                  "the results (as in contest.json, without the config)")
    p.set_defaults(func=cmd_contest)


def _add_phase(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("phase", help="a contest in every cell of a 2-D grid of settings: where exp_sft beats ppo "
                       "and dpo (phase.png, phase.json, phase.md)")
    p.add_argument("--data", dest="dataset", help="the dataset: sim (the default and the only one: the phase "
                   "diagram reads the simulator's true values)")
    p.add_argument("--x", required=True, metavar="FIELD=V1,V2,...", help="the horizontal axis: a config field and "
                   "its values, e.g. sim.noise_scale=0.25,0.5,1")
    p.add_argument("--y", required=True, metavar="FIELD=V1,V2,...", help="the vertical axis, e.g. sim.selection=0,1,2")
    p.add_argument("--methods", default="sft,exp_sft,ppo,dpo", help="comma-separated methods with a contest grid "
                   "(default sft,exp_sft,ppo,dpo); exp_sft and at least one other: exp_sft is compared with each")
    p.add_argument("--seeds", type=int, default=3, help="seeds per cell (each: a new world, π0 and reward model; "
                   "default 3)")
    p.add_argument("--jobs", type=int, default=0, help="seeds of a cell run in parallel processes (default: one per "
                   "CPU core)")
    p.add_argument("--grid", choices=GRID_NAMES, help="the contest grid of every cell, from "
                   "configs/contest/grids.toml (default: quick with --quick, else full; quick on a full-size world "
                   "is the cheap slice: 2 points per method, 2 epochs)")
    _add_run_args(p, "the preset's quick variant and the quick contest grid (smoke test)", WORLD_HELP,
                  "output folder (default: a new temp folder); finished cells found there are reused",
                  "the results (as in phase.json)")
    p.set_defaults(func=cmd_phase)


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="the contest x datasets x seeds, with λ and noise sweeps -> report.md + "
                       "figures")
    p.add_argument("--datasets", default="sim", help="comma-separated dataset names (default sim), e.g. "
                   "sim,ml-100k,ml-latest-small")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--seeds", type=int, default=3, help="seeds per dataset (each: new π0, new simulated world; "
                   "default 3)")
    p.add_argument("--methods", help="comma-separated methods with a contest grid (default "
                   "sft,linear_sft,exp_sft,ppo,dpo)")
    p.add_argument("--grid", choices=GRID_NAMES, help="the contest's grid in configs/contest/grids.toml "
                   "(default: quick with --quick, else full)")
    p.add_argument("--lams", help="λ grid of exp_sft (default 0.1,0.3,1,3,10)")
    p.add_argument("--noise-scales", help="simulator noise scales of the robustness sweep (default 0,1,2; empty = skip)")
    p.add_argument("--noise-models", help="simulator noise models of the robustness sweep (default "
                   "gaussian,popularity_bias)")
    p.add_argument("--no-judges", action="store_true", help="skip the held-out judge ensemble on real data")
    p.add_argument("--jobs", type=int, default=1, help="parts run in parallel processes (one torch thread each; "
                   "2 on a 2-core machine)")
    p.add_argument("--quick", action="store_true", help="tiny settings: checks the pipeline, not the science (CI)")
    p.add_argument("--world", metavar="NAME", help=WORLD_HELP + "; for the dataset sim")
    p.add_argument("--resume", action="store_true", help="continue an interrupted reproduce in --out: finished runs "
                   "are reused, interrupted ones resumed")
    p.add_argument("--out", help="output folder (default: a new temp folder)")
    add_set_arg(p, "override a config field for every dataset (after its preset)")
    add_json_arg(p, "print the results (as in results.json) as one JSON object on stdout")
    p.set_defaults(func=cmd_reproduce)


THEORY_DESCRIPTION = """\
The noise-robustness bound of exp_sft (recalign/theory.py, METHOD.md): with probability
≥ 1 − δ, V(π) ≥ V_β − R_max·(exp(2ε/λ) − 1), where ε = σ·sqrt(2·log(2|A|/δ)); and the
smallest λ that keeps this value loss below τ. Give --lam (the bound at this λ) and/or --tau
(the smallest λ for this loss). The last line is the verdict: "vacuous" when the bound is not
below the reward range R_max − R_min (no policy can lose more than that: the bound says
nothing), with the λ that a loss below τ needs (τ = 10% of the range when --tau is not given).
"""

THEORY_EXAMPLE = """\
example: ratings 1 to 5, observed with noise σ = 1, on 1682 items:
  $ recalign theory --sigma 1 --n-items 1682 --r-min 1 --r-max 5 --lam 0.5
  noise radius ε = σ·sqrt(2·log(2|A|/δ)) = 4.71521
  value loss bound at λ = 0.5: R_max·(exp(2ε/λ) − 1) = 7.76488e+08
  vacuous: the bound 7.76e+08 exceeds the reward range 4 (1 to 5) — λ must be ≥ 123 for a loss below τ = 0.4 (10% of the reward range)
  $ recalign theory --sigma 1 --n-items 1682 --r-min 1 --r-max 5 --tau 0.4
  noise radius ε = σ·sqrt(2·log(2|A|/δ)) = 4.71521
  smallest λ keeping the loss below τ = 0.4: 2ε / log(1 + τ/R_max) = 122.535
  informative: λ ≥ 123 keeps the value loss below τ = 0.4, 10% of the reward range 4 (1 to 5)
"""


def _count(text: str) -> int:
    """A whole number, also written as 1e6 (catalog sizes times contexts are large)."""
    try:
        x = float(text)
    except ValueError:
        x = math.nan
    if not x.is_integer():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(x)


def _add_rank(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rank", help="one method's grid points x checkpoints ranked across finished contests on "
                       "validation only (how recalign's defaults are chosen)")
    p.add_argument("contests", nargs="+", metavar="CONTEST_DIR", help="folders of finished `recalign contest` runs "
                   "(one per dataset or world)")
    p.add_argument("--method", default="exp_sft", help="the method whose settings are ranked (default exp_sft)")
    p.add_argument("--top", type=int, default=10, help="rows of the table (default 10)")
    add_json_arg(p, "print every candidate's ranks as one JSON object on stdout")
    p.set_defaults(func=cmd_rank)


def _add_theory(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("theory", help="METHOD.md's bound: value loss of exp_sft under noise, smallest safe λ "
                       "(give --lam and/or --tau)",
                       description=THEORY_DESCRIPTION,
                       epilog=THEORY_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sigma", type=float, required=True, help="sub-Gaussian noise scale σ of the rewards")
    p.add_argument("--n-items", type=_count, required=True, help="catalog size |A| (contexts × items for a guarantee "
                   "in every context at once)")
    p.add_argument("--delta", type=float, default=0.05, help="failure probability δ (default 0.05)")
    p.add_argument("--r-max", type=float, required=True, help="largest reward R_max (the bound assumes |r| ≤ R_max)")
    p.add_argument("--r-min", type=float, default=0.0, help="smallest reward R_min (default 0): the verdict compares "
                   "the bound with the range R_max − R_min; -R_max for signed rewards")
    p.add_argument("--lam", type=float, help="temperature λ: print the value-loss bound at this λ")
    p.add_argument("--tau", type=float, help="tolerated value loss τ: print the smallest λ that keeps it")
    add_json_arg(p, "print the figures as one JSON object on stdout (with `verdict` and `vacuous`)")
    p.set_defaults(func=cmd_theory)
