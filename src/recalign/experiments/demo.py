"""`recalign demo`: the whole story on the embedded simulator, in a few minutes on a laptop CPU.

For each seed: simulate logs (the simulator knows the true reward of every item in every
context), pretrain a SASRec policy π0 on them (behaviour cloning), train one reward model, then
post-train π0 with `sft`, `linear_sft`, `exp_sft`, `ppo` and `dpo` from the same checkpoint, and
evaluate every policy's top-10 list on the test contexts with the simulator's exact oracle.

Intervals (95%): with several seeds, a method's true value is the mean over seeds with a
Student-t interval; with one seed, a bootstrap over users. Deltas against `sft` are paired
bootstrap intervals over (seed, user) pairs: every policy is scored on the same contexts.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from recalign import configlib
from recalign.config import RunConfig
from recalign.eval.stats import mean_ci, paired_bootstrap
from recalign.experiments.compare import compare_methods
from recalign.pipeline import prepare
from recalign.train.checkpoint import atomic_write_text

DEMO_METHODS = ("sft", "linear_sft", "exp_sft", "ppo", "dpo")

# The demo's own starting point: a small world and model that train in minutes on 2 CPU cores.
# Every value is an ordinary config override; `--set` on the command line comes after these.
DEMO_SETTINGS = [
    "data.name=\"sim\"",
    "sim.n_users=1500", "sim.n_items=300", "sim.min_len=15", "sim.max_len=40", "sim.noise_scale=1.0",
    "model.dim=32", "model.layers=2", "model.heads=2", "model.max_len=30", "model.dropout=0.1",
    "train.epochs=40", "train.batch_size=64", "train.lr=2e-3", "train.patience=5", "train.eval_every=2",
    "posttrain.epochs=3", "posttrain.lr=5e-4", "posttrain.lam=0.5", "train.progress=false",
    "train.num_threads=1",  # tiny models: a second thread costs more in synchronisation than it gains
]
QUICK_SETTINGS = [
    "sim.n_users=300", "sim.n_items=80", "sim.min_len=10", "sim.max_len=20",
    "model.dim=16", "model.layers=1", "model.max_len=20", "train.epochs=6", "train.eval_every=2",
    "posttrain.epochs=1",
]


def demo_config(quick: bool, overrides: list[str]) -> RunConfig:
    cfg = RunConfig()
    settings = DEMO_SETTINGS + (QUICK_SETTINGS if quick else [])
    cfg = configlib.update(cfg, configlib.parse_overrides(settings))
    return configlib.update(cfg, configlib.parse_overrides(overrides))


def _log(msg: str) -> None:
    print(f"recalign demo: {msg}", file=sys.stderr, flush=True)


def run_seed(cfg: RunConfig, out: Path, methods: tuple[str, ...]) -> dict[str, Any]:
    """One seed: simulate, pretrain, every method from the same checkpoint; per-user true values
    and the oracle's and logging policy's values in the same contexts."""
    data = prepare(cfg)
    sim, test = data.simulator, data.split.test
    steps = test.context_end - data.split.offsets[test.users]
    oracle = sim.oracle_value(test.users, 10, step=steps)
    logging = sim.logging_value(test.users, 10, step=steps)
    _log(f"seed {cfg.sim.seed}: {len(data.inter):,} logged interactions of {data.inter.n_users:,} users on "
         f"{data.inter.n_items:,} items; true value of the top-10: oracle {oracle.mean():.3f}, logging policy "
         f"{logging.topk.mean():.3f} (one draw from it: {logging.expected.mean():.3f})")
    res = compare_methods(cfg, out, methods, data=data, log=_log)
    return {**res, "oracle": oracle, "logging": logging.topk}


def summarise(seeds: list[dict[str, Any]], methods: tuple[str, ...]) -> dict[str, Any]:
    names = ("pretrained",) + methods
    out: dict[str, Any] = {"methods": {}, "deltas": {}, "seeds": len(seeds)}
    oracle = np.concatenate([s["oracle"] for s in seeds])
    logging = np.concatenate([s["logging"] for s in seeds])
    base = np.concatenate([s["true_value"]["pretrained"] for s in seeds])
    for name in names:
        vals = np.concatenate([s["true_value"][name] for s in seeds])
        if len(seeds) > 1:
            mean, lo, hi = mean_ci([s["true_value"][name].mean() for s in seeds])
        else:
            boot = paired_bootstrap(vals, np.zeros_like(vals))
            mean, lo, hi = boot["mean"], boot["lo"], boot["hi"]
        gap = oracle.mean() - base.mean()
        out["methods"][name] = {
            "true_value": {"mean": float(mean), "lo": float(lo), "hi": float(hi)},
            "normalised_value": float((vals.mean() - base.mean()) / gap) if gap > 0 else None,
            **{k: float(np.mean([s["metrics"][name][k] for s in seeds]))
               for k in ("ndcg@10", "hr@10", "high/ndcg@10") if seeds[0]["metrics"][name].get(k) is not None},
        }
        if name != "sft" and "sft" in names:
            sft = np.concatenate([s["true_value"]["sft"] for s in seeds])
            out["deltas"][name] = {k: float(v) for k, v in paired_bootstrap(vals, sft).items()}
    out["oracle_value"] = float(oracle.mean())
    out["logging_value"] = float(logging.mean())
    return out


def format_table(res: dict[str, Any]) -> str:
    lines = [f"true value of the top-10 on the test contexts (simulator oracle; {res['seeds']} seed(s), 95% intervals)",
             f"  oracle {res['oracle_value']:.3f}   logging policy {res['logging_value']:.3f}",
             "",
             f"  {'policy':<12} {'true value':>24} {'Δ vs sft':>26} {'norm.':>7} {'NDCG@10':>8} {'high NDCG@10':>13}"]
    for name, m in res["methods"].items():
        tv = m["true_value"]
        d = res["deltas"].get(name)
        dtxt = f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]" if d else "—"
        nv = m.get("normalised_value")
        lines.append(f"  {name:<12} {tv['mean']:>8.3f} [{tv['lo']:.3f}, {tv['hi']:.3f}] {dtxt:>26} "
                     f"{'' if nv is None else f'{nv:+.2f}':>7} {m.get('ndcg@10', float('nan')):>8.4f} "
                     f"{m.get('high/ndcg@10', float('nan')):>13.4f}")
    lines.append("")
    lines.append("  norm. = (V(π) − V(π0)) / (V(oracle) − V(π0)); π0 = the pretrained policy")
    return "\n".join(lines)


def run_demo(out_dir: str | Path, quick: bool = False, overrides: list[str] | None = None, seeds: int = 1,
             methods: tuple[str, ...] = DEMO_METHODS) -> dict[str, Any]:
    out = Path(out_dir)
    if (out / "results.json").exists():
        from recalign.errors import InputError

        raise InputError("demo output folder already holds results.json; choose another --out", path=out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = demo_config(quick, list(overrides or []))
    t0 = time.perf_counter()
    per_seed = []
    for s in range(seeds):
        scfg = dataclasses.replace(cfg, sim=dataclasses.replace(cfg.sim, seed=cfg.sim.seed + s),
                                   train=dataclasses.replace(cfg.train, seed=cfg.train.seed + s))
        per_seed.append(run_seed(scfg, out / f"seed{scfg.sim.seed}", methods))
    res = summarise(per_seed, methods)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["config"] = configlib.to_dict(cfg)
    atomic_write_text(out / "results.json", json.dumps(res, indent=2))
    atomic_write_text(out / "table.txt", format_table(res) + "\n")
    return res
