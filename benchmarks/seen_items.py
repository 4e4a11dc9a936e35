"""The seen-item effect, measured directly: for trained run folders, on the test targets with
seen items left in the ranking (RecBole's protocol), how many of each user's top-10 are items the
user has already rated, and the target's rank and NDCG@10 split by whether the top-10 holds any.

On MovieLens a user rates an item once, so a seen item in the top-10 is a wasted slot: the
unmasked NDCG@10 of a model is its masked NDCG@10 minus what those slots cost.

    .venv/bin/python benchmarks/seen_items.py RUN [RUN ...]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from recalign.eval.evaluate import queries_and_exclusions
from recalign.eval.metrics import ndcg, target_ranks, topk_items
from recalign.stages.common import load_run


@torch.no_grad()
def seen_item_effect(run: str) -> dict:
    cfg, data, model = load_run(run, "cpu")
    seq, test = data.seq, data.split.test
    weight = model.item_weight.float()
    n_seen_top, r_unmasked, r_masked = [], [], []
    for lo in range(0, len(test), 256):
        idx = np.arange(lo, min(len(test), lo + 256))
        q, exclude, offset = queries_and_exclusions(model, seq, test, idx, torch.device("cpu"), True)
        tgt, _ = seq.target_tokens(test, idx)
        tau = model.cfg.temperature
        r_masked.append(target_ranks(q, weight, tgt, exclude=exclude, offset=offset, temperature=tau).numpy())
        r_unmasked.append(target_ranks(q, weight, tgt, offset=offset, temperature=tau).numpy())
        _, top = topk_items(q, weight, 10, offset=offset, temperature=tau)  # [U, 10] tokens, nothing excluded
        indptr, seen = exclude
        for u in range(len(idx)):
            s = seen[indptr[u]:indptr[u + 1]].numpy()
            n_seen_top.append(int(np.isin(top[u].numpy(), s).sum()))
    n_seen = np.asarray(n_seen_top)
    ru, rm = np.concatenate(r_unmasked), np.concatenate(r_masked)
    any_seen = n_seen > 0
    out = {"run": run, "users": len(n_seen), "seen_share_of_top10": float(n_seen.mean() / 10),
           "users_with_seen_in_top10": float(any_seen.mean()),
           "ndcg@10_masked": float(ndcg(rm, 10).mean()), "ndcg@10_unmasked": float(ndcg(ru, 10).mean()),
           "mean_rank_shift": float((ru - rm).mean()),
           # what the unmasked NDCG@10 pays: seen items ranked above a target that is in the masked top-10
           "seen_above_top10_target": float((ru - rm)[rm <= 10].mean()) if (rm <= 10).any() else float("nan"),
           "top10_targets_kept": float((ru[rm <= 10] <= 10).mean()) if (rm <= 10).any() else float("nan")}
    for name, sel in (("with_seen", any_seen), ("without_seen", ~any_seen)):
        if sel.any():
            out[f"ndcg@10_unmasked_{name}"] = float(ndcg(ru[sel], 10).mean())
            out[f"ndcg@10_masked_{name}"] = float(ndcg(rm[sel], 10).mean())
            out[f"median_rank_unmasked_{name}"] = float(np.median(ru[sel]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+")
    args = ap.parse_args()
    for run in args.runs:
        r = seen_item_effect(run)
        print(r["run"])
        print(f"  seen items: {r['seen_share_of_top10']:.3f} of top-10 slots; users with any: "
              f"{r['users_with_seen_in_top10']:.3f}; target rank moves by {r['mean_rank_shift']:.1f} when unmasked")
        print(f"  NDCG@10 masked {r['ndcg@10_masked']:.4f}, unmasked {r['ndcg@10_unmasked']:.4f} "
              f"(ratio {r['ndcg@10_unmasked'] / r['ndcg@10_masked']:.3f})")
        print(f"  targets in the masked top-10: {r['seen_above_top10_target']:.2f} seen items above each when unmasked; "
              f"{r['top10_targets_kept']:.3f} of them stay in the top-10")
        for name in ("with_seen", "without_seen"):
            if f"ndcg@10_unmasked_{name}" in r:
                print(f"  users {name.replace('_', ' ')} in top-10: NDCG@10 unmasked {r[f'ndcg@10_unmasked_{name}']:.4f}, "
                      f"masked {r[f'ndcg@10_masked_{name}']:.4f}, median unmasked rank {r[f'median_rank_unmasked_{name}']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
