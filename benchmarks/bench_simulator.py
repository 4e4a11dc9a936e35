"""Simulator at scale: generate ~10M logged interactions over a 1M-item catalog, then score the
oracle and the logging policy on a sample of users (true expected rewards).

    python benchmarks/bench_simulator.py                       # 100k users, 1M items, ~10M rows
    python benchmarks/bench_simulator.py --n-users 2000 --n-items 100000   # a quick look

Prints wall time and peak resident memory (`ru_maxrss`) of each stage; `--json` prints one JSON
object on stdout instead (progress on stderr). No peer exists to compare with, so the figure of
merit is throughput (interactions per second) and the peak memory against the users × items
matrix that is never built (n_users · n_items · 4 bytes).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np

from recalign.data.simulator import SimConfig, simulate


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-users", type=int, default=100_000)
    ap.add_argument("--n-items", type=int, default=1_000_000)
    ap.add_argument("--min-len", type=int, default=50)
    ap.add_argument("--max-len", type=int, default=150)
    ap.add_argument("--noise", default="gaussian")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-users", type=int, default=1000, help="users sampled for the true values")
    ap.add_argument("--k", type=int, default=10, help="length of the top-k lists")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout, nothing else")
    args = ap.parse_args(argv)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    cfg = SimConfig(seed=args.seed, n_users=args.n_users, n_items=args.n_items, min_len=args.min_len,
                    max_len=args.max_len, noise=args.noise)
    say(f"config: {cfg}")
    t0 = time.perf_counter()
    inter, sim = simulate(cfg)
    t_sim = time.perf_counter() - t0
    rss_sim = peak_rss_mb()
    dense_mb = cfg.n_users * cfg.n_items * 4 / 2**20
    say(f"simulate: {len(inter):,} interactions in {t_sim:.1f} s ({len(inter) / t_sim:,.0f}/s), "
        f"peak RSS {rss_sim:,.0f} MB (a dense users x items float32 matrix would be {dense_mb:,.0f} MB)")

    users = np.random.default_rng(123).choice(cfg.n_users, size=min(args.eval_users, cfg.n_users), replace=False)
    users.sort()
    t0 = time.perf_counter()
    oracle = sim.oracle_value(users, args.k)
    t_oracle = time.perf_counter() - t0
    t0 = time.perf_counter()
    logging = sim.logging_value(users, args.k)
    t_logging = time.perf_counter() - t0
    rand_items = np.random.default_rng(7).integers(0, cfg.n_items, size=(users.size, args.k))
    rand = sim.policy_value(users, rand_items)
    logged_test = sim.true_reward(users, inter.item[sim.offsets[users + 1] - 1])
    k = args.k
    say(f"true values on {users.size} users, test context (history before the last item), k={k}:")
    say(f"  oracle top-{k}          {oracle.mean():.4f}   ({t_oracle:.1f} s)")
    say(f"  logging top-{k} by pi_b {logging.topk.mean():.4f}")
    say(f"  logging one draw E[r*]  {logging.expected.mean():.4f}   ({t_logging:.1f} s for both)")
    say(f"  logged test item r*     {logged_test.mean():.4f}")
    say(f"  uniform random top-{k}  {rand.mean():.4f}")
    say(f"  reward scale [{sim.r_min}, {sim.r_max}]; peak RSS overall {peak_rss_mb():,.0f} MB")
    out = {
        "n_users": cfg.n_users, "n_items": cfg.n_items, "interactions": len(inter),
        "simulate_s": round(t_sim, 2), "peak_rss_mb_after_simulate": round(rss_sim),
        "peak_rss_mb": round(peak_rss_mb()), "eval_users": int(users.size), "k": k,
        "oracle_topk": float(oracle.mean()), "logging_topk": float(logging.topk.mean()),
        "logging_expected": float(logging.expected.mean()), "logged_test_item": float(logged_test.mean()),
        "random_topk": float(rand.mean()), "oracle_s": round(t_oracle, 2), "logging_s": round(t_logging, 2),
    }
    if args.json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
