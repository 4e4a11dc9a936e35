"""Large catalogs on CPU: sampled-softmax training and chunked full-catalog evaluation at 1M items
(and, for comparison, 100k items), on the recalign simulator.

    .venv/bin/python benchmarks/bench_large_catalog.py --threads 1     # 1M items, then 100k
    .venv/bin/python benchmarks/bench_large_catalog.py --n-users 5000 --steps 20 --catalogs 100000  # a quick look

For each catalog size N it
1. simulates `--n-users` users with short logs (`--sim-len`) over N items (`recalign.data.prepared.prepare`);
2. trains SASRec (dim 64, 2 layers, max_len 50, batch 128) with `model.head=sampled` for
   `--steps` optimizer steps per negative count (`--negatives`) and per `train.optimizer`
   (`--optimizers`, default adamw; `adamw,sparse_adam` compares the two), through
   `recalign.train.loop.fit` with `train.max_steps`: time per step, sequences/s, peak RSS, loss
   first vs last steps; then a breakdown of one step (forward+loss, backward, grad clip,
   optimizer step) on the same model with the loop's optimizer(s) and clip;
3. gives the size of the full-softmax logits a step would need (B·L·N·4 bytes, float32) and runs
   the full head only where that fits in `--full-max-gb`;
4. ranks the held-out test item of `--eval-users` users among all N items with
   `recalign.eval.evaluate.evaluate_targets` (seen items masked, 512 users per batch) for each
   `--item-chunks`, plus one `topk_items` (k=10) pass: users/s and peak RSS.

Peak RSS is per stage: the kernel's high-water mark is reset (`/proc/self/clear_refs`, "5")
before each stage and read back with `resource.getrusage(RUSAGE_SELF).ru_maxrss`; `rss0` is the
resident size when the stage began (the data and the model already held). The 1-minute load
average (`os.getloadavg`) is printed with every figure: the machine is shared, and timings scale
with the CPU share this process gets. `--json` prints one JSON object on stdout (progress on
stderr). On a shared 2-core box `--threads 1` was 1.5-3x faster than torch's default 2 threads
(see README_scale.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from recalign.config import EvalConfig, RunConfig, TrainConfig
from recalign.data.prepared import prepare
from recalign.data.simulator import SimConfig
from recalign.eval.evaluate import evaluate_targets, user_states
from recalign.eval.metrics import topk_items
from recalign.models.config import ModelConfig
from recalign.stages.common import build_model
from recalign.train.loop import NextItemObjective, clip_grad_norm, fit, make_optimizers

OUT = sys.stdout


def say(msg: str) -> None:
    print(msg, file=OUT, flush=True)


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark so that ru_maxrss measures the next stage only."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class Stage:
    """Context manager: wall time, load average before/after, RSS at start, peak RSS within."""

    def __init__(self) -> None:
        self.info: dict = {}

    def __enter__(self) -> Stage:
        gc.collect()
        self.info["rss0_mb"] = round(rss_mb())
        self.info["peak_reset"] = reset_peak()
        self.info["load_start"] = load1()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.info["wall_s"] = round(time.perf_counter() - self.t0, 3)
        self.info["load_end"] = load1()
        self.info["peak_rss_mb"] = round(peak_rss_mb())


class TimedObjective:
    """`NextItemObjective` that records, per call, the start time and the loss (one call per
    optimizer step with grad_accum = 1, so consecutive starts are the full step time)."""

    def __init__(self) -> None:
        self.inner = NextItemObjective()
        self.starts: list[float] = []
        self.losses: list[float] = []
        self.n_targets: list[int] = []

    def __call__(self, model, batch):
        self.starts.append(time.perf_counter())
        loss, diag = self.inner(model, batch)
        self.losses.append(float(loss.detach()))
        self.n_targets.append(int(diag["n_targets"]))
        return loss, diag


def make_cfg(args, n_items: int, head: str, negatives: int, optimizer: str = "adamw") -> RunConfig:
    cfg = RunConfig()
    lo, hi = (int(x) for x in args.sim_len.split(","))
    sim = SimConfig(seed=args.seed, n_users=args.n_users, n_items=n_items, min_len=lo, max_len=hi)
    model = ModelConfig(name=args.model, dim=args.dim, layers=args.layers, heads=2, max_len=args.max_len,
                        head=head, num_negatives=negatives)
    train = TrainConfig(epochs=1000, max_steps=args.steps, batch_size=args.batch_size, lr=1e-3,
                        warmup_steps=10, device="cpu", progress=False, seed=args.seed, optimizer=optimizer)
    return dataclasses.replace(cfg, sim=sim, model=model, train=train)


def train_case(args, data, n_items: int, head: str, negatives: int, steps: int, optimizer: str = "adamw") -> dict:
    cfg = make_cfg(args, n_items, head, negatives, optimizer)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=steps))
    run_dir = Path(tempfile.mkdtemp(prefix="bench_large_"))
    obj = TimedObjective()
    try:
        with Stage() as st:
            model = build_model(cfg, data)
            t_fit = time.perf_counter()
            res = fit(model, data.seq, obj, cfg.train, run_dir, validate=None)
            t_end = time.perf_counter()
        n_params = sum(p.numel() for p in model.parameters())
        # step times: consecutive objective starts; the last step ends where fit's loop ends,
        # which we do not see, so it is left out (steps 1..n-1). Warm-up: the first 3 steps.
        dts = np.diff(obj.starts)
        warm = dts[3:] if dts.size > 6 else dts
        step_s = float(np.median(warm))
        seq_per_step = args.batch_size
        k = max(1, min(10, len(obj.losses) // 3))
        out = {
            "n_items": n_items, "head": head, "negatives": negatives if head == "sampled" else None,
            "optimizer": optimizer,
            "steps": res.steps, "params": n_params,
            "step_s_median": round(step_s, 4), "step_s_mean": round(float(warm.mean()), 4),
            "step_s_min": round(float(warm.min()), 4), "step_s_max": round(float(warm.max()), 4),
            "sequences_per_s": round(seq_per_step / step_s, 1),
            "targets_per_step_mean": round(float(np.mean(obj.n_targets)), 1),
            "loss_first": round(float(np.mean(obj.losses[:k])), 4),
            "loss_last": round(float(np.mean(obj.losses[-k:])), 4),
            "loss_all_finite": bool(np.all(np.isfinite(obj.losses))),
            "losses": [round(x, 4) for x in obj.losses],
            "fit_wall_s": round(t_end - t_fit, 2),
            # after the last step fit writes model.safetensors and the resume checkpoint
            "fit_after_last_step_s": round(t_end - obj.starts[-1], 2),
            **st.info,
        }
        out["loss_decreased"] = out["loss_last"] < out["loss_first"]
        if args.breakdown and head == "sampled":
            out["breakdown"] = step_breakdown(model, data, cfg, reps=args.breakdown)
        del model
        return out
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def step_breakdown(model, data, cfg, reps: int) -> dict:
    """Median seconds of the parts of one optimizer step, with the loop's own settings (its
    optimizer(s) for `train.optimizer`, clip 1.0): forward+loss, backward, clip, opt.step (+ zero_grad)."""
    model.train()
    opts = make_optimizers(model, cfg.train, torch.device("cpu"))
    params = [p for o in opts for g in o.param_groups for p in g["params"]]
    rng = np.random.default_rng(1)
    obj = NextItemObjective()
    parts: dict[str, list[float]] = {"forward_loss": [], "backward": [], "clip": [], "opt_step": []}
    for r in range(reps + 1):
        batch = data.seq.train_batch(rng.choice(data.seq.n_windows, size=cfg.train.batch_size, replace=False))
        t0 = time.perf_counter()
        loss, _ = obj(model, batch)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        clip_grad_norm(params, 1.0)
        t3 = time.perf_counter()
        for o in opts:
            o.step()
            o.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        if r == 0:
            continue  # first one allocates the optimizer state
        for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            parts[key].append(dt)
    if len(opts) > 1:
        model.set_sparse_item_grad(False)
    return {k: round(statistics.median(v), 4) for k, v in parts.items()} | {"reps": reps, "load": load1()}


def full_softmax_bytes(batch: int, max_len: int, n_items: int, n_targets: float | None) -> dict:
    """float32 logits of a full-softmax step: B·L·(N+1)·4 (every position), and for the mean
    number of positions with a target actually gathered (the head scores only those)."""
    out = {"B_L_N_4_bytes": batch * max_len * (n_items + 1) * 4}
    if n_targets:
        out["M_N_4_bytes"] = int(n_targets * (n_items + 1) * 4)
    return out


def eval_case(args, data, model, chunk: int, users_idx: np.ndarray) -> dict:
    ecfg = EvalConfig(batch_size=args.eval_batch, item_chunk=chunk, mask_seen=True)
    targets = data.split.test.subset(users_idx)
    model.eval()
    with Stage() as st, torch.no_grad():
        m = evaluate_targets(model, data.seq, targets, ecfg, high_reward=4.5, simulator=None)
    return {"item_chunk": chunk, "eval_batch": args.eval_batch, "users": len(targets),
            "users_per_s": round(len(targets) / st.info["wall_s"], 1),
            "gflop_per_s": round(2 * len(targets) * data.inter.n_items * args.dim / st.info["wall_s"] / 1e9, 1),
            "hr@10": m["hr@10"], "ndcg@10": m["ndcg@10"], **st.info}


def topk_case(args, data, model, chunk: int, users_idx: np.ndarray, k: int = 10) -> dict:
    targets = data.split.test.subset(users_idx)
    weight = model.item_weight.float()
    dev = torch.device("cpu")
    model.eval()
    with Stage() as st, torch.no_grad():
        for lo in range(0, len(targets), args.eval_batch):
            idx = np.arange(lo, min(len(targets), lo + args.eval_batch))
            q, _ = user_states(model, data.seq, targets, idx, dev)
            indptr, seen = data.seq.seen_items(targets, idx)
            topk_items(q, weight, k, exclude=(indptr, seen), item_chunk=chunk)
    return {"item_chunk": chunk, "k": k, "users": len(targets),
            "users_per_s": round(len(targets) / st.info["wall_s"], 1), **st.info}


def run_catalog(args, n_items: int) -> dict:
    cfg = make_cfg(args, n_items, "sampled", 1024)
    say(f"\n=== {n_items:,} items: simulating {args.n_users:,} users, log lengths {args.sim_len} "
        f"(load {load1()}) ===")
    with Stage() as st:
        data = prepare(cfg)
    sim_info = {"interactions": len(data.inter), "n_items": data.inter.n_items, "n_users": data.inter.n_users,
                "train_windows": data.seq.n_windows, "train_targets": data.seq.n_train_targets, **st.info}
    say(f"simulate + split: {len(data.inter):,} interactions in {st.info['wall_s']:.1f} s, "
        f"{data.seq.n_windows:,} training windows, peak RSS {st.info['peak_rss_mb']:,} MB "
        f"(load {st.info['load_start']} -> {st.info['load_end']})")
    data.simulator = None  # not needed any more (evaluation here is ranking only)
    out: dict = {"n_items": n_items, "simulate": sim_info, "train": [], "eval": [], "topk": []}

    for k in args.negatives:
        for optimizer in args.optimizers:
            say(f"train: sampled softmax, {k} negatives, {optimizer}, {args.steps} steps ...")
            r = train_case(args, data, n_items, "sampled", k, args.steps, optimizer)
            out["train"].append(r)
            say(f"  {r['step_s_median']:.3f} s/step (min {r['step_s_min']:.3f}, max {r['step_s_max']:.3f}), "
                f"{r['sequences_per_s']:.0f} seq/s, loss {r['loss_first']:.3f} -> {r['loss_last']:.3f} "
                f"(finite {r['loss_all_finite']}), peak RSS {r['peak_rss_mb']:,} MB (start {r['rss0_mb']:,}), "
                f"load {r['load_start']} -> {r['load_end']}")
            if "breakdown" in r:
                say(f"  one step: {r['breakdown']}")

    n_t = np.mean(out["train"][0]["targets_per_step_mean"]) if out["train"] else None
    fb = full_softmax_bytes(args.batch_size, args.max_len, n_items, n_t)
    out["full_softmax_logits"] = fb
    fits = fb["M_N_4_bytes" if "M_N_4_bytes" in fb else "B_L_N_4_bytes"] * 3 / 2**30 <= args.full_max_gb
    say(f"full softmax at N={n_items:,}: B*L*(N+1)*4 = {fb['B_L_N_4_bytes'] / 2**30:.2f} GiB of float32 logits "
        f"per step (B={args.batch_size}, L={args.max_len})"
        + (f"; for the {n_t:.0f} positions with a target: {fb['M_N_4_bytes'] / 2**30:.2f} GiB" if n_t else "")
        + f"; forward+backward hold ~3x that -> {'run' if fits else 'not run'} (limit {args.full_max_gb} GB)")
    if fits and args.full_steps > 0:
        say(f"train: full softmax, {args.full_steps} steps ...")
        r = train_case(args, data, n_items, "full", 0, args.full_steps)
        out["train"].append(r)
        say(f"  {r['step_s_median']:.3f} s/step, {r['sequences_per_s']:.0f} seq/s, loss {r['loss_first']:.3f} -> "
            f"{r['loss_last']:.3f}, peak RSS {r['peak_rss_mb']:,} MB (start {r['rss0_mb']:,}), "
            f"load {r['load_start']} -> {r['load_end']}")

    # evaluation: a fresh model (ranking cost does not depend on the weights)
    cfg_e = make_cfg(args, n_items, "sampled", 1024)
    model = build_model(cfg_e, data)
    n_eval = min(args.eval_users, len(data.split.test))
    users_idx = np.sort(np.random.default_rng(7).choice(len(data.split.test), size=n_eval, replace=False))
    for chunk in args.item_chunks:
        say(f"eval: {n_eval:,} users x {n_items:,} items, item_chunk {chunk:,} ...")
        r = eval_case(args, data, model, chunk, users_idx)
        out["eval"].append(r)
        say(f"  {r['wall_s']:.2f} s, {r['users_per_s']:.0f} users/s ({r['gflop_per_s']} GFLOP/s in the scoring "
            f"matmul), peak RSS {r['peak_rss_mb']:,} MB (start {r['rss0_mb']:,}), load {r['load_start']} -> {r['load_end']}")
    if args.topk:
        chunk = args.item_chunks[-1]
        r = topk_case(args, data, model, chunk, users_idx)
        out["topk"].append(r)
        say(f"topk_items k=10, item_chunk {chunk:,}: {r['wall_s']:.2f} s, {r['users_per_s']:.0f} users/s, "
            f"peak RSS {r['peak_rss_mb']:,} MB (start {r['rss0_mb']:,}), load {r['load_start']} -> {r['load_end']}")
    del model, data
    gc.collect()
    return out


def table(results: list[dict]) -> str:
    rows = ["| N items | case | time | throughput | peak RSS (start) MB | load 1-min | notes |",
            "|---|---|---|---|---|---|---|"]
    for c in results:
        n = f"{c['n_items']:,}"
        s = c["simulate"]
        rows.append(f"| {n} | simulate {s['n_users']:,} users + split | {s['wall_s']:.1f} s | "
                    f"{s['interactions'] / s['wall_s']:,.0f} rows/s | {s['peak_rss_mb']:,} ({s['rss0_mb']:,}) | "
                    f"{s['load_start']}→{s['load_end']} | {s['interactions']:,} rows |")
        for t in c["train"]:
            name = (f"train {t['head']}" + (f" K={t['negatives']}" if t["head"] == "sampled" else "")
                    + f", {t.get('optimizer', 'adamw')}")
            note = (f"loss {t['loss_first']:.2f}→{t['loss_last']:.2f}, finite={t['loss_all_finite']}, "
                    f"{t['targets_per_step_mean']:.0f} targets/step")
            if "breakdown" in t:
                b = t["breakdown"]
                note += (f"; fwd {b['forward_loss']:.3f} / bwd {b['backward']:.3f} / clip {b['clip']:.3f} / "
                         f"opt {b['opt_step']:.3f} s")
            rows.append(f"| {n} | {name} ({t['steps']} steps) | {t['step_s_median']:.3f} s/step | "
                        f"{t['sequences_per_s']:,.0f} seq/s | {t['peak_rss_mb']:,} ({t['rss0_mb']:,}) | "
                        f"{t['load_start']}→{t['load_end']} | {note} |")
        for e in c["eval"]:
            rows.append(f"| {n} | eval {e['users']:,} users, chunk {e['item_chunk']:,} | {e['wall_s']:.2f} s | "
                        f"{e['users_per_s']:,.0f} users/s | {e['peak_rss_mb']:,} ({e['rss0_mb']:,}) | "
                        f"{e['load_start']}→{e['load_end']} | {e['gflop_per_s']} GFLOP/s |")
        for e in c["topk"]:
            rows.append(f"| {n} | topk_items k=10, chunk {e['item_chunk']:,} | {e['wall_s']:.2f} s | "
                        f"{e['users_per_s']:,.0f} users/s | {e['peak_rss_mb']:,} ({e['rss0_mb']:,}) | "
                        f"{e['load_start']}→{e['load_end']} | |")
        fb = c["full_softmax_logits"]
        rows.append(f"| {n} | full-softmax logits per step | | | | | B·L·(N+1)·4 = "
                    f"{fb['B_L_N_4_bytes'] / 2**30:.2f} GiB" + (f"; M·(N+1)·4 = {fb['M_N_4_bytes'] / 2**30:.2f} GiB"
                                                               if "M_N_4_bytes" in fb else "") + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict:
    global OUT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalogs", default="1000000,100000", help="catalog sizes, comma-separated")
    ap.add_argument("--n-users", type=int, default=20_000)
    ap.add_argument("--sim-len", default="10,30", help="min,max interactions per simulated user")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="sasrec")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--negatives", default="1024,8192")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--optimizers", default="adamw", help="train.optimizer values to train the sampled head with, "
                    "comma-separated (adamw, sparse_adam)")
    ap.add_argument("--breakdown", type=int, default=5, help="steps timed part by part (0 = off)")
    ap.add_argument("--full-steps", type=int, default=10, help="full-softmax steps where the logits fit")
    ap.add_argument("--full-max-gb", type=float, default=6.0, help="run the full head only below this (3x logits)")
    ap.add_argument("--eval-users", type=int, default=2000)
    ap.add_argument("--eval-batch", type=int, default=512, help="eval.batch_size (users per batch)")
    ap.add_argument("--item-chunks", default="65536,262144")
    ap.add_argument("--no-topk", dest="topk", action="store_false")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout, nothing else")
    args = ap.parse_args(argv)
    args.negatives = [int(x) for x in args.negatives.split(",") if x]
    args.optimizers = [x for x in args.optimizers.split(",") if x]
    args.item_chunks = [int(x) for x in args.item_chunks.split(",") if x]
    catalogs = [int(x) for x in args.catalogs.split(",") if x]
    if args.json:
        OUT = sys.stderr
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
           "load_start": [round(x, 2) for x in os.getloadavg()], "argv": sys.argv}
    say(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load {env['load_start']}")
    t0 = time.perf_counter()
    results = [run_catalog(args, n) for n in catalogs]
    env["load_end"] = [round(x, 2) for x in os.getloadavg()]
    env["total_s"] = round(time.perf_counter() - t0, 1)
    say("\n" + table(results))
    say(f"\ntotal {env['total_s']:.0f} s, load at the end {env['load_end']}")
    out = {"env": env, "args": {k: v for k, v in vars(args).items()}, "catalogs": results}
    if args.json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
