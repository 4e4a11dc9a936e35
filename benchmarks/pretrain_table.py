"""Pretraining quality table: SASRec and HSTU on ml-100k and ml-latest-small, several seeds.

Runs the frozen reference configs (`configs/pretrain/<dataset>-<model>.toml`) through the CLI,
`--jobs` at a time (each with one torch thread), and prints test metrics as mean ± std over
seeds, plus the wall-clock of each run. Results go to `benchmarks/_work/pretrain_table.json`.

    .venv/bin/python benchmarks/pretrain_table.py --data-dir ../shared/data --seeds 0 1 2 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
KEYS = ("hr@10", "ndcg@10", "hr@50", "ndcg@50", "mrr", "high/ndcg@10")


def run_one(dataset: str, model: str, seed: int, data_dir: str, work: Path, extra: list[str]) -> dict:
    out = work / f"{dataset}-{model}-seed{seed}"
    cmd = [sys.executable, "-m", "recalign.cli", "pretrain", "--config",
           str(REPO / "configs" / "pretrain" / f"{dataset}-{model}.toml"), "--data-dir", data_dir,
           "--set", f"train.seed={seed}", "--set", "train.progress=false", "--out", str(out), "--json"]
    for kv in extra:
        cmd += ["--set", kv]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"dataset": dataset, "model": model, "seed": seed, "error": proc.stderr[-2000:]}
    summary = json.loads(proc.stdout)
    return {"dataset": dataset, "model": model, "seed": seed, "wall_seconds": round(wall, 1),
            "best_epoch": summary["best_epoch"], "epochs_run": summary["epochs_run"],
            "train_seconds": summary["train_seconds"], "test": summary["test"], "valid": summary["valid"]}


def collect(run: Path) -> dict:
    """The result record of a finished run folder (as `run_one` returns it, without wall time)."""
    dataset, model, seed = run.name.rsplit("-", 2)
    state = json.loads((run / "state.json").read_text())
    if "test" not in state:
        return {"dataset": dataset, "model": model, "seed": int(seed[4:]), "error": f"{run} has not finished"}
    return {"dataset": dataset, "model": model, "seed": int(seed[4:]), "best_epoch": state["best_epoch"],
            "epochs_run": state["epochs_run"], "train_seconds": state["train_seconds"], "test": state["test"],
            "valid": state["valid"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("RECALIGN_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--datasets", nargs="+", default=["ml-100k", "ml-latest-small"])
    ap.add_argument("--models", nargs="+", default=["sasrec", "hstu"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--set", dest="extra", action="append", default=[], help="extra override for every run")
    ap.add_argument("--out-json", default=str(REPO / "benchmarks" / "_work" / "pretrain_table.json"))
    ap.add_argument("--collect", nargs="+", default=None, metavar="RUN",
                    help="no training: build the table from finished run folders named <dataset>-<model>-seed<S>")
    args = ap.parse_args()

    load0 = os.getloadavg()
    t0 = time.perf_counter()
    if args.collect:
        results = [collect(Path(p)) for p in args.collect]
        args.datasets = sorted({r["dataset"] for r in results}, key=args.datasets.index)
        args.models = sorted({r["model"] for r in results}, key=args.models.index)
        jobs = results
    else:
        work = Path(tempfile.mkdtemp(prefix="recalign-pretrain-table-"))
        jobs = [(d, m, s) for d in args.datasets for m in args.models for s in args.seeds]
        with ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda j: run_one(*j, args.data_dir, work, args.extra), jobs))
    total = time.perf_counter() - t0

    errors = [r for r in results if "error" in r]
    for r in errors:
        print(f"FAILED {r['dataset']} {r['model']} seed {r['seed']}:\n{r['error']}", file=sys.stderr)
    rows = []
    header = "| dataset | model | seeds | " + " | ".join(KEYS) + " | best epoch | train s |"
    rows.append(header)
    rows.append("|" + "---|" * (header.count("|") - 1))
    for d in args.datasets:
        for m in args.models:
            rs = [r for r in results if r["dataset"] == d and r["model"] == m and "error" not in r]
            if not rs:
                continue
            cells = []
            for k in KEYS:
                v = np.array([r["test"][k] for r in rs if r["test"].get(k) is not None], dtype=float)
                cells.append(f"{v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else 0:.4f}")
            be = np.mean([r["best_epoch"] for r in rs])
            ts = np.mean([r["train_seconds"] for r in rs])
            rows.append(f"| {d} | {m} | {len(rs)} | " + " | ".join(cells) + f" | {be:.0f} | {ts:.0f} |")
    table = "\n".join(rows)
    print(table)
    if args.collect:
        print(f"\ncollected {len(results)} finished runs")
    else:
        print(f"\n{len(jobs)} runs, {args.jobs} at a time, {total:.0f} s wall; load average at start "
              f"{load0[0]:.1f}, at end {os.getloadavg()[0]:.1f}")
    out = Path(args.out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results, "table": table,
                                                         "total_seconds": total}, indent=2))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
