"""DDP on CPU as a functional check: `recalign pretrain` on a small simulator config with one
process and with `--nproc` processes under torchrun (gloo), the same global batch.

    .venv/bin/python benchmarks/bench_ddp.py                 # 1 process vs 2 processes
    .venv/bin/python benchmarks/bench_ddp.py --n-users 500 --epochs 2   # a quick look

Cases (each a fresh `python -m recalign.cli pretrain ... --json` subprocess, run one after the
other, every process with `OMP_NUM_THREADS=1`):

- `1 proc x T threads` for T in `--threads-1proc` (default 1,2): `train.batch_size = nproc x B`;
- `nproc procs x 1 thread`: torchrun, `train.batch_size = B` per process.

All cases see the same windows in every optimizer step (rank r takes the r-th share of the
global batch that one process would draw) and run the same number of steps. Validation runs only
after the last epoch (`train.eval_every` larger than the epochs), so the per-epoch times are
training only: the differences of the `seconds` stamps in `metrics.jsonl` (epoch 1, which holds
the warm-up, is left out of the median). Reported: seconds per epoch, speed-up over 1 process x 1
thread, wall time of the whole command (process start, data simulation, the final evaluation),
and the test metrics, which must agree within the tolerance of tests/test_distributed.py (dropout
0 by default; they are not bit-identical: the two ranks average their own losses, see the test's
docstring). The machine is shared: the 1-minute load average is printed with every case.
Results go to stdout (`--json`: one JSON object, the table on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("hr@10", "ndcg@10", "mrr", "true_value")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_case(args, out: Path, nproc: int, threads: int) -> dict:
    batch = args.batch_size * (args.nproc if nproc == 1 else 1)
    sets = [f"sim.n_users={args.n_users}", f"sim.n_items={args.n_items}", f"model.dim={args.dim}",
            f"model.layers={args.layers}", f"model.max_len={args.max_len}", f"model.dropout={args.dropout}",
            f"train.epochs={args.epochs}", f"train.batch_size={batch}", f"train.eval_every={args.epochs + 1}",
            "train.patience=1000", f"train.num_threads={threads}", "train.progress=false", 'train.device="cpu"',
            f"train.seed={args.seed}", f"sim.seed={args.seed}"]
    cli = ["-m", "recalign.cli", "pretrain", "--data", "sim", "--out", str(out), "--json"]
    for s in sets:
        cli += ["--set", s]
    if nproc == 1:
        cmd = [sys.executable, *cli]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               f"--master_port={free_port()}", *cli]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT / "src")}
    load0 = round(os.getloadavg()[0], 2)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"case {nproc} x {threads} failed:\n{r.stderr[-3000:]}")
    state = json.loads((out / "state.json").read_text())
    stamps = [json.loads(line)["seconds"] for line in (out / "metrics.jsonl").read_text().splitlines()
              if "epoch" in json.loads(line)]
    per_epoch = [b - a for a, b in zip([0.0] + stamps[:-1], stamps)]
    steady = per_epoch[1:] or per_epoch
    return {"procs": nproc, "threads_per_proc": threads, "batch_per_proc": batch,
            "global_batch": batch * nproc, "steps": state["steps"], "epoch_s": [round(x, 3) for x in per_epoch],
            "epoch_s_median": round(statistics.median(steady), 3), "train_s": state["train_seconds"],
            "wall_s": round(wall, 1), "load_start": load0, "load_end": round(os.getloadavg()[0], 2),
            "test": {k: state["test"].get(k) for k in METRICS}, "n_test": state["test"].get("n")}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nproc", type=int, default=2, help="processes of the torchrun case")
    ap.add_argument("--n-users", type=int, default=2000)
    ap.add_argument("--n-items", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64, help="per process; 1 process gets nproc x this")
    ap.add_argument("--threads-1proc", default="1,2", help="torch threads of the 1-process cases")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    out_stream = sys.stderr if args.json else sys.stdout

    def say(msg: str) -> None:
        print(msg, file=out_stream, flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="bench_ddp_"))
    cases = []
    try:
        plan = [(1, int(t)) for t in args.threads_1proc.split(",") if t] + [(args.nproc, 1)]
        for nproc, threads in plan:
            say(f"{nproc} proc x {threads} thread(s) (load {os.getloadavg()[0]:.2f}) ...")
            c = run_case(args, tmp / f"p{nproc}t{threads}", nproc, threads)
            cases.append(c)
            say(f"  {c['epoch_s_median']:.2f} s/epoch, wall {c['wall_s']:.1f} s, steps {c['steps']}, "
                f"test {c['test']}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ref = next((c for c in cases if c["procs"] == 1 and c["threads_per_proc"] == 1), cases[0])
    rows = ["| processes x threads | batch per process (global) | steps | s/epoch (median of 2..E) | speed-up | "
            "wall s | load | test hr@10 / ndcg@10 / true_value |", "|---|---|---|---|---|---|---|---|"]
    for c in cases:
        c["speedup"] = round(ref["epoch_s_median"] / c["epoch_s_median"], 2)
        t = c["test"]
        rows.append(f"| {c['procs']} x {c['threads_per_proc']} | {c['batch_per_proc']} ({c['global_batch']}) | "
                    f"{c['steps']} | {c['epoch_s_median']:.2f} | {c['speedup']:.2f}x | {c['wall_s']:.1f} | "
                    f"{c['load_start']}→{c['load_end']} | {t['hr@10']:.4f} / {t['ndcg@10']:.4f} / "
                    f"{t['true_value']:.4f} |")
    ddp = cases[-1]
    diffs = {k: round(abs(ddp["test"][k] - ref["test"][k]), 4) for k in METRICS}
    say("\n" + "\n".join(rows))
    say(f"\n|metric difference| {args.nproc} procs vs 1 proc x 1 thread: {diffs}; "
        f"test users evaluated: {[c['n_test'] for c in cases]}")
    result = {"args": vars(args), "cases": cases, "metric_abs_diff": diffs, "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
