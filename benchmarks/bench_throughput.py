"""Training throughput against sequence length and catalog size, full vs sampled softmax.

    .venv/bin/python benchmarks/bench_throughput.py                       # the default grid (~2 min on 1 core)
    .venv/bin/python benchmarks/bench_throughput.py --lens 50,200 --items 1000,100000 --steps 5

For each (max length L, catalog size N, head) it times full training steps of recalign's SASRec
(dim 64, 2 layers, 2 heads, batch `--batch` sequences of L random items, every position a
target): forward, loss, backward, gradient clipping and AdamW, through the project's own
`Recommender` and `NextItemObjective`. It prints ms per step and target tokens per second, and
for each (L, N) the ratios full / sampled and full / s<S> (the named peer of the sampled head is the full softmax
measured in the same run). `sampled` uses every batch target as a negative (the default, memory
quadratic in B·L); `s<S>` a random S of them (`model.in_batch_negatives`). The full head is skipped where its logits (B·L·(N+1) float32, plus
their gradient) would exceed `--full-max-gb`. The 1-minute load average is printed with every
row: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

from recalign.data.sequences import SeqBatch
from recalign.models.config import ModelConfig
from recalign.models.recommender import Recommender
from recalign.train.loop import NextItemObjective


def step_times(model: Recommender, batch: SeqBatch, steps: int) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    objective = NextItemObjective()
    out = []
    for i in range(steps + 1):  # the first step warms up (allocations, lazy init)
        t0 = time.perf_counter()
        loss, _ = objective(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lens", default="50,100,200", help="max sequence lengths L")
    ap.add_argument("--items", default="1000,10000,100000", help="catalog sizes N")
    ap.add_argument("--batch", type=int, default=32, help="sequences per step")
    ap.add_argument("--negatives", type=int, default=1024, help="shared negatives of the sampled head")
    ap.add_argument("--in-batch", type=int, default=256, help="the capped variant: this many batch targets as "
                    "negatives (model.in_batch_negatives) instead of all of them")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per case (median reported)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--full-max-gb", type=float, default=4.0)
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout (table on stderr)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out = sys.stderr if args.json else sys.stdout
    rows = []
    print(f"SASRec 64x2, batch {args.batch}, {args.threads} thread(s), sampled head with {args.negatives} "
          f"shared uniform negatives + every in-batch target (sampled) or {args.in_batch} of them (s{args.in_batch})",
          file=out)
    print(f"{'L':>5} {'N':>8} {'head':>8} {'ms/step':>9} {'tokens/s':>10} {'full/sampled, /s':>17} {'load':>5}", file=out)
    for L in [int(x) for x in args.lens.split(",")]:
        for N in [int(x) for x in args.items.split(",")]:
            items = torch.randint(1, N + 1, (args.batch, L + 1))
            B = args.batch
            batch = SeqBatch(items=items[:, :-1], timestamps=torch.zeros(B, L, dtype=torch.long), targets=items[:, 1:],
                             rewards=torch.ones(B, L), target_rows=torch.full((B, L), -1), users=torch.arange(B))
            per_head = {}
            for head in ("sampled", f"s{args.in_batch}", "full"):
                logits_gb = 2 * args.batch * L * (N + 1) * 4 / 1e9
                if head == "full" and logits_gb > args.full_max_gb:
                    print(f"{L:>5} {N:>8} {head:>8} {'skipped':>9} (logits + grad {logits_gb:.1f} GB)", file=out)
                    continue
                cfg = ModelConfig(name="sasrec", dim=64, layers=2, heads=2, max_len=L, dropout=0.0,
                                  head="full" if head == "full" else "sampled", num_negatives=args.negatives,
                                  in_batch_negatives=args.in_batch if head.startswith("s") and head != "sampled" else -1)
                model = Recommender(cfg, N)
                ms = statistics.median(step_times(model, batch, args.steps)) * 1e3
                per_head[head] = ms
                tok = args.batch * L / (ms / 1e3)
                ratio = " / ".join(f"{per_head['full'] / per_head[k]:.2f}" for k in per_head if k != "full") \
                    if head == "full" else ""
                load = os.getloadavg()[0]
                print(f"{L:>5} {N:>8} {head:>8} {ms:>9.1f} {tok:>10.0f} {ratio:>17} {load:>5.1f}", file=out)
                rows.append({"len": L, "items": N, "head": head, "ms_per_step": round(ms, 2),
                             "tokens_per_s": round(tok), "load1": round(load, 2)})
                del model
    if args.json:
        print(json.dumps({"rows": rows, "batch": args.batch, "threads": args.threads, "negatives": args.negatives}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
