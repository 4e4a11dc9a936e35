"""Evaluate a recommender on held-out targets: full-catalog ranking in user batches and item
chunks, seen items masked by the `mask_seen` flag, every metric also on the high-reward targets
(and, on the simulator, the oracle's true value of the top-10 list).

Under torchrun every rank ranks a disjoint, contiguous share of the targets (whole batches of
`eval.batch_size` users, the batches one process would form); the per-target ranks (and true
values) are gathered in target order, so each target counts exactly once and the metrics,
computed from the gathered arrays, are the same on every rank and the same as one process
computes for the same weights."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from recalign import distributed
from recalign.config import EvalConfig
from recalign.data.sequences import SequenceData
from recalign.data.split import Targets
from recalign.eval.metrics import ranking_metrics, reward_metrics, target_ranks, topk_items
from recalign.models.recommender import Recommender


@torch.no_grad()
def user_states(model: Recommender, seq: SequenceData, targets: Targets, idx: np.ndarray,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The last states `[B, D] float` of the targets `idx` and their contexts' tokens `[B, L]`
    (the second argument of `model.log_probs`), on `device`."""
    items, ts = seq.context_batch(targets, idx)
    items = items.to(device)
    return model.last_hidden(items, ts.to(device)).float(), items


class Queries(NamedTuple):
    """What ranks the catalog for a batch of targets: `metrics.target_ranks(query, weight,
    targets, exclude=exclude, offset=offset, temperature=τ)`, `topk_items` alike."""

    query: torch.Tensor  # [B, D] last states
    exclude: Any  # with eval.mask_seen: CSR (indptr, tokens) of the whole history; else None
    offset: Any  # the model's seen logit on its context (Recommender.seen_offset), or None


def queries_and_exclusions(model: Recommender, seq: SequenceData, targets: Targets, idx: np.ndarray,
                           device: torch.device, mask_seen: bool) -> Queries:
    """The query vectors of the targets `idx`, with `mask_seen` the seen items to exclude from
    their ranking, and the model's own seen-logit offset."""
    q, items = user_states(model, seq, targets, idx, device)
    offset = model.seen_offset(items)
    if not mask_seen:
        return Queries(q, None, offset)
    indptr, seen = seq.seen_items(targets, idx)
    return Queries(q, (indptr.to(device), seen.to(device)), offset)


@torch.no_grad()
def evaluate_targets(model: Recommender, seq: SequenceData, targets: Targets, cfg: EvalConfig,
                     high_reward: float, simulator: Any = None, return_ranks: bool = False,
                     return_top10: bool = False) -> dict[str, Any]:
    """Metrics of `model` on `targets` (`hr@k`, `ndcg@k`, `mrr`, `high/...`, `rw_ndcg@k`; and
    `true_value` when a simulator is given). With `return_ranks`, also `_ranks` (per-user array);
    with `return_top10`, also `_top10` (`[n_targets, 10]` item codes, seen items excluded as
    `cfg.mask_seen` says: the lists `true_value` scores on the simulator, and the ones
    `eval.judge.judge_topk` scores, same batches and ranking calls).

    Collective under torchrun: every rank must call it (with the same targets)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    weight = model.item_weight.float()
    ranks, values, tops = [], [], []
    n = len(targets)
    # under torchrun each rank takes a contiguous run of whole user batches: the batches are the
    # ones a single process forms, so the ranks are bit-identical to a single-process evaluation
    first, end = distributed.shard_batches(n, cfg.batch_size)  # (0, n) for one process
    for lo in range(first, end, cfg.batch_size):
        idx = np.arange(lo, min(end, lo + cfg.batch_size))
        q, exclude, offset = queries_and_exclusions(model, seq, targets, idx, device, cfg.mask_seen)
        tgt, _ = seq.target_tokens(targets, idx)
        ranks.append(target_ranks(q, weight, tgt.to(device), exclude=exclude, offset=offset, item_chunk=cfg.item_chunk,
                                  temperature=model.cfg.temperature).cpu())
        if simulator is not None or return_top10:
            _, tokens = topk_items(q, weight, 10, exclude=exclude, offset=offset, item_chunk=cfg.item_chunk,
                                   temperature=model.cfg.temperature)
            codes = tokens.cpu().numpy() - 1
            if simulator is not None:
                values.append(simulator.policy_value(targets.users[idx], codes, step=seq.context_steps(targets, idx)))
            tops.append(codes)
    r = torch.cat(ranks).numpy() if ranks else np.zeros(0, dtype=np.int64)
    if distributed.is_distributed():
        r = distributed.all_gather_array(r.astype(np.int64))
        if simulator is not None:
            values = [distributed.all_gather_array(np.concatenate(values).astype(np.float64) if values
                                                   else np.zeros(0))]
        if r.shape[0] != n:
            raise RuntimeError(f"gathered {r.shape[0]} ranks for {n} targets")
    rewards = seq.reward[targets.target_row]
    out: dict[str, Any] = ranking_metrics(r, cfg.ks)
    out.update(reward_metrics(r, rewards, cfg.ks, high_reward))
    if simulator is not None:
        per_user = np.concatenate(values) if values else np.zeros(0)
        out["true_value"] = float(per_user.mean()) if per_user.size else float("nan")
        if return_ranks:
            out["_true_values"] = per_user
    if return_top10:
        top = np.concatenate(tops).astype(np.int64) if tops else np.zeros((0, 10), dtype=np.int64)
        if distributed.is_distributed():  # flattened: all_gather_array takes 1-D arrays
            top = distributed.all_gather_array(top.ravel()).reshape(-1, 10)
        out["_top10"] = top
    if return_ranks:
        out["_ranks"] = r
    if was_training:
        model.train()
    return out
