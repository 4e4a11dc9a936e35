"""Shared pieces of the methods' steps: which positions are scored, full-catalog log-probs at
them, sampling items from a policy, per-row tables over the training targets, and one pass over
the training windows with frozen models (to cache reference log-probs or reward-model values).

Scored positions: every position of a batch with a target (`targets > 0`), i.e. every logged
training transition, exactly as in pretraining. The SFT family scores them through the model's
head (`next_item_loss`, so the sampled-softmax head works too); the methods that need exact
probabilities (`dpo`, `ipo`, `ppo`, `cql`, `ips`, and the `asft` baseline) form full-catalog
log-probabilities (`model.log_probs`) or logits at those positions: `[M, N+1]` per batch, the
memory of full-softmax pretraining. Lower
`posttrain.batch_size` to bound it on large catalogs.

Per-row tables: a tensor over the rows of the interaction table, indexed with
`batch.target_rows`; only training targets hold meaningful values.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from recalign.data.split import Split
from recalign.posttrain.weights import transform_rewards

if TYPE_CHECKING:
    from recalign.data.sequences import SeqBatch
    from recalign.posttrain.registry import PostTrainContext

# elements of a `[positions, N+1]` logit block in the no-grad passes over the training set
_PASS_LOGIT_ELEMS = 1 << 25


def training_target_rows(split: Split) -> np.ndarray:
    """Boolean mask over the table's rows: the training targets (training rows that follow
    another training row of the same user, i.e. every row the training windows predict)."""
    mask = split.train_rows().copy()
    first = split.offsets[:-1]
    first = first[first < mask.shape[0]]
    mask[first] = False
    return mask


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy in eval mode with `requires_grad=False` everywhere (the reference π_0)."""
    import copy

    ref = copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def row_table(n_rows: int, rows: np.ndarray, values: Tensor | np.ndarray, fill: float,
              device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    """`[n_rows]` tensor holding `values` at `rows` and `fill` elsewhere."""
    out = torch.full((n_rows,), fill, dtype=dtype)
    out[torch.as_tensor(rows, dtype=torch.long)] = torch.as_tensor(values).to(dtype)
    return out.to(device)


def lookup(table: Tensor, target_rows: Tensor) -> Tensor:
    """`table[target_rows]` with `-1` (no target) mapped to row 0; mask the result yourself."""
    return table[target_rows.clamp_min(0)]


def reward_table(ctx: PostTrainContext, kind: str) -> tuple[Tensor, np.ndarray]:
    """Rewards of the training targets after the transform `kind` (statistics over the
    training targets), as a per-row float32 table; also returns the target rows."""
    inter = ctx.data.inter
    rows = np.flatnonzero(training_target_rows(ctx.data.split))
    r = transform_rewards(torch.from_numpy(inter.reward[rows].astype(np.float64)),
                          torch.from_numpy(inter.user[rows]), kind)
    return row_table(len(inter), rows, r, 0.0, ctx.device), rows


def sample_items(logp: Tensor, k: int, replacement: bool, generator: torch.Generator | None = None) -> Tensor:
    """`k` item tokens per row drawn from `exp(logp)` `[M, N+1]` -> `[M, k] long` (never 0)."""
    probs = logp.detach().float().exp()
    probs[:, 0] = 0.0
    return torch.multinomial(probs, k, replacement=replacement, generator=generator)


def expected_value(logp: Tensor, values: Tensor) -> Tensor:
    """`Σ_{a ≥ 1} exp(logp[:, a]) · values[:, a]` -> `[M]`; column 0 (padding) is ignored."""
    return (logp[:, 1:].exp() * values[:, 1:]).sum(-1)


def training_batches(ctx: PostTrainContext) -> Iterator[SeqBatch]:
    """Every training window once, in order, on `ctx.device`, in batches small enough that a
    `[positions, N+1]` logit block stays bounded."""
    seq = ctx.data.seq
    per_window = seq.max_len * (ctx.data.inter.n_items + 1)
    bs = ctx.pt.batch_size or ctx.cfg.train.batch_size
    bs = max(1, min(bs, _PASS_LOGIT_ELEMS // max(1, per_window)))
    for lo in range(0, seq.n_windows, bs):
        yield seq.train_batch(np.arange(lo, min(seq.n_windows, lo + bs))).to(ctx.device)


@torch.no_grad()
def reference_target_logp(ctx: PostTrainContext) -> Tensor:
    """`log π_0(a_t | s_t)` of every training target as a per-row float32 table (NaN elsewhere):
    one pass of the frozen reference over the training windows, so methods need no second
    forward per step for the logged items."""
    ref = ctx.reference
    out = torch.full((len(ctx.data.inter),), float("nan"), device=ctx.device)
    for batch in training_batches(ctx):
        sel = batch.targets > 0
        lp = ref.position_log_probs(batch.items, batch.timestamps, sel).gather(1, batch.targets[sel].unsqueeze(1)).squeeze(1)
        out[batch.target_rows[sel]] = lp
    return out
