"""Which π0? Candidate pretraining settings on both protocols, both MovieLens sets, several seeds.

Each candidate is a named list of `--set` overrides on top of the frozen config
`configs/pretrain/<dataset>-<model>.toml`. Every (dataset, model, candidate, seed) is trained
once through the CLI (model selection on validation with seen items masked, the config's own
protocol), then its selected checkpoint is scored on the test split twice: seen items masked
(recalign's protocol) and left in the ranking (`eval.mask_seen=false`, RecBole's). The RecBole
comparison proper, with selection on unmasked validation too, is `peer_recbole.py`.

Results are appended, one JSON line per run, to `--out` (a rerun skips what is there), and a table
of mean ± std over seeds with seconds per epoch is printed:

    .venv/bin/python benchmarks/pi0_candidates.py --data-dir ../shared/data --datasets ml-100k \
        --models sasrec --candidates default unscaled cosine --seeds 0 1 2 --jobs 2
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
COSINE = ["model.score=cosine", "model.temperature=0.05"]
HSTU_REFERENCE = ["model.abs_pos=true", "model.inner_dropout=true", "model.proj_bias=false", "model.rab_init_std=0.02"]
# Written down before any of them was run (session 5): the question each answers is in the name.
CANDIDATES: dict[str, list[str]] = {
    "default": [],
    # session 6: the learned seen-item logit (model.seen_bias), on and off whatever the default is
    "seen-bias": ["model.seen_bias=true"],
    "no-seen-bias": ["model.seen_bias=false"],
    "unscaled": ["model.scale_emb=false"],  # RecBole's input: no sqrt(D)
    "unscaled-std0.16": ["model.scale_emb=false", "model.init_std=0.16"],  # same input as default, 8x output table
    "stride25": ["train.window_stride=25"],  # every target keeps >= 25 items of history
    "cosine": COSINE,  # the HSTU reference code's scoring: L2-normalised vectors, temperature 0.05
    "cosine-stride25": COSINE + ["train.window_stride=25"],
    "cosine-unscaled": COSINE + ["model.scale_emb=false"],
    "lr2e-3": ["train.lr=2e-3"],
    "dropout0.5": ["model.dropout=0.5"],  # RecBole's SASRec dropout
    "epochs40": ["train.epochs=40"],  # ml-latest-small's frozen budget is 15
    # HSTU as its authors built it, one change at a time and all together
    "hstu-abs-pos": ["model.abs_pos=true"],
    "hstu-inner-dropout": ["model.inner_dropout=true"],
    "hstu-no-bias": ["model.proj_bias=false"],
    "hstu-rab-init": ["model.rab_init_std=0.02"],
    "hstu-reference": HSTU_REFERENCE,
    "hstu-reference-cosine": HSTU_REFERENCE + COSINE,
}
KEYS = ("ndcg@10", "hr@10", "high/ndcg@10")


def run_one(job: tuple[str, str, str, int], args: argparse.Namespace, work: Path) -> dict:
    dataset, model, cand, seed = job
    out = work / f"{dataset}-{model}-{cand}-seed{seed}"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "recalign.cli", "pretrain", "--config",
           str(REPO / "configs" / "pretrain" / f"{dataset}-{model}.toml"), "--data-dir", args.data_dir,
           "--set", f"train.seed={seed}", "--set", "train.progress=false", "--set", "train.device=cpu",
           "--out", str(out), "--json"]
    for kv in CANDIDATES[cand] + args.extra:
        cmd += ["--set", kv]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    rec = {"dataset": dataset, "model": model, "candidate": cand, "seed": seed, "sets": CANDIDATES[cand] + args.extra,
           "load_at_start": round(load, 2)}
    if proc.returncode != 0:
        return {**rec, "error": proc.stderr[-2000:]}
    summary = json.loads(proc.stdout)
    ev = subprocess.run([sys.executable, "-m", "recalign.cli", "evaluate", str(out), "--split", "test", "--device", "cpu",
                         "--set", "eval.mask_seen=false", "--json"], capture_output=True, text=True, env=env)
    if ev.returncode != 0:
        return {**rec, "error": ev.stderr[-2000:]}
    epochs = summary["epochs_run"]
    return {**rec, "wall_seconds": round(wall, 1), "best_epoch": summary["best_epoch"], "epochs_run": epochs,
            "train_seconds": summary["train_seconds"],
            "seconds_per_epoch": round(summary["train_seconds"] / max(1, epochs), 2),
            "valid": summary["valid"], "test": summary["test"], "test_unmasked": json.loads(ev.stdout)}


def table(results: list[dict]) -> str:
    rows = ["| dataset | model | candidate | seeds | masked NDCG@10 | masked high/NDCG@10 | unmasked NDCG@10 | "
            "unmasked HR@10 | best epoch (by seed) | s/epoch | load |", "|" + "---|" * 11]
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        if "error" not in r:
            groups.setdefault((r["dataset"], r["model"], r["candidate"]), []).append(r)

    def ms(v: list[float]) -> str:
        a = np.asarray(v, dtype=float)
        return f"{a.mean():.4f} ± {a.std(ddof=1) if len(a) > 1 else 0:.4f}"

    for (d, m, c), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seed"])  # best epochs in seed order
        rows.append(f"| {d} | {m} | {c} | {len(rs)} | {ms([r['test']['ndcg@10'] for r in rs])} | "
                    f"{ms([r['test']['high/ndcg@10'] for r in rs])} | {ms([r['test_unmasked']['ndcg@10'] for r in rs])} | "
                    f"{ms([r['test_unmasked']['hr@10'] for r in rs])} | "
                    f"{', '.join(str(r['best_epoch']) for r in rs)} | {np.mean([r['seconds_per_epoch'] for r in rs]):.1f} | "
                    f"{np.mean([r['load_at_start'] for r in rs]):.1f} |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("RECALIGN_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--datasets", nargs="+", default=["ml-100k", "ml-latest-small"])
    ap.add_argument("--models", nargs="+", default=["sasrec"])
    ap.add_argument("--candidates", nargs="+", default=["default"], choices=sorted(CANDIDATES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time, one torch thread each")
    ap.add_argument("--set", dest="extra", action="append", default=[], help="extra override for every run")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "_work" / "pi0_candidates.jsonl"))
    ap.add_argument("--table-only", action="store_true", help="print the table of what --out holds")
    args = ap.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
    if not args.table_only:
        have = {(r["dataset"], r["model"], r["candidate"], r["seed"]) for r in done if "error" not in r}
        jobs = [(d, m, c, s) for d in args.datasets for m in args.models for c in args.candidates for s in args.seeds
                if (d, m, c, s) not in have]
        work = Path(tempfile.mkdtemp(prefix="recalign-pi0-"))

        def go(job: tuple) -> dict:
            rec = run_one(job, args, work)
            with out.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            print(("FAILED " if "error" in rec else "done ") + " ".join(map(str, job)), flush=True)
            return rec

        with ThreadPoolExecutor(args.jobs) as pool:
            done += list(pool.map(go, jobs))
    for r in done:
        if "error" in r:
            print(f"FAILED {r['dataset']} {r['model']} {r['candidate']} seed {r['seed']}:\n{r['error']}", file=sys.stderr)
    print(table(done))
    return 1 if any("error" in r for r in done) else 0


if __name__ == "__main__":
    sys.exit(main())
