"""Every post-training method from one pretrained checkpoint, on the simulator and on ml-100k.

For each dataset: pretrain once (or reuse `--pretrained-*`), train one reward model for the
methods that need it, post-train all ten methods with their default `posttrain.*` settings, and
evaluate on the test targets: the simulator's true value of the top-10 (oracle), and on ml-100k
NDCG@10 and NDCG@10 on the high-reward (rating >= 4.5) targets. One seed; deltas against `sft`
are paired bootstrap intervals over users.

    .venv/bin/python benchmarks/methods_table.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from recalign import configlib
from recalign.config import load_config
from recalign.eval.stats import paired_bootstrap
from recalign.experiments.compare import compare_methods
from recalign.experiments.presets import preset_config

REPO = Path(__file__).resolve().parents[1]
METHODS = ("sft", "linear_sft", "exp_sft", "filtered_sft", "asft", "dpo", "ipo", "ppo", "cql", "ips")


def log(msg: str) -> None:
    print(f"methods_table: {msg}", file=sys.stderr, flush=True)


def delta(a: np.ndarray, b: np.ndarray) -> str:
    d = paired_bootstrap(a, b)
    return f"{d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("RECALIGN_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--out", default=None)
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--set", dest="extra", action="append", default=[], help="override for both datasets")
    ap.add_argument("--pretrained-ml", default=None,
                    help="reuse this pretrained ml-100k run (e.g. one of benchmarks/pretrain_table.py's)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="recalign-methods-"))
    t0 = time.perf_counter()

    sim_cfg = preset_config("sim", overrides=args.extra)
    ml_cfg = load_config(REPO / "configs" / "pretrain" / "ml-100k-sasrec.toml",
                         [f'data.data_dir="{args.data_dir}"', "train.progress=false", "train.num_threads=1"]
                         + args.extra)
    log(f"simulator: {configlib.to_dict(sim_cfg.sim)}")
    sim = compare_methods(sim_cfg, out / "sim", args.methods, log=log)
    if args.pretrained_ml:
        from recalign.train.runfolder import read_config

        ml_cfg = configlib.update(read_config(args.pretrained_ml), configlib.parse_overrides(
            [f'data.data_dir="{args.data_dir}"', "train.progress=false", "train.num_threads=1"] + args.extra))
    ml = compare_methods(ml_cfg, out / "ml-100k", args.methods, log=log,
                         pretrained=Path(args.pretrained_ml) if args.pretrained_ml else None)
    high = np.asarray(ml["high"])

    rows = ["| method | sim true value | Δ vs sft | ml-100k NDCG@10 | Δ vs sft | ml-100k high/NDCG@10 | Δ vs sft |",
            "|---|---|---|---|---|---|---|"]
    result = {}
    for name in ("pretrained", *args.methods):
        tv, nd = sim["true_value"][name], ml["ndcg@10"][name]
        hi = ml["metrics"][name].get("high/ndcg@10")
        result[name] = {"sim_true_value": float(tv.mean()), "ml100k_ndcg@10": ml["metrics"][name]["ndcg@10"],
                        "ml100k_high/ndcg@10": hi, "sim_ndcg@10": sim["metrics"][name]["ndcg@10"]}
        if name == "sft":
            cells = ["—", "—", "—"]
        else:
            cells = [delta(tv, sim["true_value"]["sft"]), delta(nd, ml["ndcg@10"]["sft"]),
                     delta(nd[high], ml["ndcg@10"]["sft"][high])]
        rows.append(f"| {name} | {tv.mean():.4f} | {cells[0]} | {ml['metrics'][name]['ndcg@10']:.4f} | {cells[1]} | "
                    f"{hi:.4f} | {cells[2]} |")
    table = "\n".join(rows)
    print(table)
    print(f"\n{time.perf_counter() - t0:.0f} s in all; runs in {out}; load average {os.getloadavg()[0]:.1f}")
    (out / "methods_table.json").write_text(json.dumps({"table": table, "results": result,
                                                        "seconds": {"sim": sim["seconds"], "ml-100k": ml["seconds"]}},
                                                       indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
