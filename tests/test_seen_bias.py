"""The learned seen-item logit (`model.seen_bias`): one scalar `b` added to the logit of every
item in a state's context. It must be the same policy everywhere it is scored (training heads,
`log_probs`, ranking offsets), learn its sign from the data, and leave old runs loadable."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recalign.eval.metrics import target_ranks, topk_items
from recalign.models.config import ModelConfig
from recalign.models.heads import (
    FullSoftmaxHead,
    SampledSoftmaxHead,
    full_logits,
    in_context,
    window_contexts,
)
from recalign.models.recommender import Recommender
from recalign.train.runfolder import migrate_old_keys

N_ITEMS = 12


def model(name: str = "sasrec", bias: float = 0.0, **kw) -> Recommender:
    torch.manual_seed(0)
    rec = Recommender(ModelConfig(name=name, dim=8, layers=1, heads=2, max_len=6, dropout=0.0, **kw), N_ITEMS)
    if rec.cfg.seen_bias:
        with torch.no_grad():
            rec.seen_param.fill_(bias / 10.0)
    return rec.eval()


def test_window_contexts_are_the_causal_prefixes():
    items = torch.tensor([[0, 0, 4, 7], [1, 2, 3, 1]])
    ctx = window_contexts(items)
    assert ctx.shape == (2, 4, 4)
    assert ctx[0, 2].tolist() == [0, 0, 4, 0] and ctx[0, 3].tolist() == [0, 0, 4, 7]
    assert ctx[1, 0].tolist() == [1, 0, 0, 0] and ctx[1, 3].tolist() == [1, 2, 3, 1]


def test_in_context_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    ctx = torch.randint(0, 9, (5, 6), generator=g)  # 0 = padding, duplicates likely
    cand = torch.randint(1, 9, (5, 7), generator=g)
    want = torch.tensor([[int(c) in set(ctx[i].tolist()) - {0} for c in cand[i]] for i in range(5)])
    assert torch.equal(in_context(ctx, cand), want)
    shared = torch.arange(1, 9)
    assert torch.equal(in_context(ctx, shared), torch.stack([torch.isin(shared, r[r > 0]) for r in ctx]))


def test_full_logits_add_the_bias_once_to_context_items():
    W = torch.eye(4)[:, :3]  # 4 tokens (0 = padding), D = 3
    h = torch.tensor([[1.0, 2.0, 3.0]])
    ctx = torch.tensor([[0, 2, 2, 3]])  # padding ignored, item 2 twice
    got = full_logits(h, W, 2.0, (ctx, torch.tensor(-5.0)))
    assert math.isinf(got[0, 0]) and got[0, 0] < 0
    assert got[0, 1:].tolist() == pytest.approx([0.5 * 2, 0.5 * 3 - 5.0, 0.0 - 5.0])


def test_sampled_head_adds_the_bias_to_candidates_in_context_by_hand():
    """One position, h = 1, W = (0, 1, 2, 3), target 1, context {2}; counts (1, 1, 2) give the
    in-batch Q of item 1 = 1/4, uniform negatives 2 and 3 (Q = 1/3); b = -1.5 on item 2. With the
    target itself in the context (a repeat), the positive's column gets b too."""
    W = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    head = SampledSoftmaxHead(2, "uniform", item_counts=np.array([0, 1, 1, 2]))
    b = torch.tensor(-1.5)
    args = torch.ones(1, 1, 1), torch.tensor([[1]]), torch.ones(1, 1), W
    loss, _ = head.loss(*args, seen=(torch.tensor([[[2]]]), b), negatives=torch.tensor([2, 3]))
    s = torch.tensor([1 + math.log(4), 2 + math.log(3) - 1.5, 3 + math.log(3)], dtype=torch.float64)
    assert loss.item() == pytest.approx((torch.logsumexp(s, 0) - s[0]).item(), rel=1e-6)
    loss, _ = head.loss(*args, seen=(torch.tensor([[[1]]]), b), negatives=torch.tensor([2, 3]))
    s = torch.tensor([1 + math.log(4) - 1.5, 2 + math.log(3), 3 + math.log(3)], dtype=torch.float64)
    assert loss.item() == pytest.approx((torch.logsumexp(s, 0) - s[0]).item(), rel=1e-6)
    own = SampledSoftmaxHead(2, "uniform", item_counts=np.array([0, 1, 1, 2]), in_batch=1)
    got, _ = own.loss(*args, seen=(torch.tensor([[[1]]]), b), negatives=torch.tensor([2, 3]))
    assert got.item() == pytest.approx(loss.item(), rel=1e-6)


def test_full_head_loss_is_the_nll_of_log_probs_with_the_seen_logit():
    rec = model(bias=-2.0)
    items = torch.tensor([[0, 3, 5, 3, 8, 2], [4, 4, 1, 9, 11, 6]])
    targets = torch.tensor([[0, 5, 3, 8, 2, 7], [4, 1, 9, 11, 6, 12]])
    hidden = rec.encode(items)
    loss, _ = rec.next_item_loss(hidden, targets, torch.ones(2, 6), items)
    sel = targets > 0
    lp = rec.position_log_probs(items, None, sel).gather(1, targets[sel][:, None])
    torch.testing.assert_close(loss, -lp.mean())
    assert isinstance(rec.head, FullSoftmaxHead)


@pytest.mark.parametrize("name", ["sasrec", "hstu"])
def test_ranking_with_the_offset_equals_ranking_by_log_probs(name):
    """Evaluation ranks with `seen_offset`; the policy is `log_probs(h, context)`: same order."""
    rec = model(name, bias=1.7)
    g = torch.Generator().manual_seed(2)
    items = torch.randint(0, N_ITEMS + 1, (16, 6), generator=g)
    targets = torch.randint(1, N_ITEMS + 1, (16,), generator=g)
    with torch.no_grad():
        q = rec.last_hidden(items)
        lp = rec.log_probs(q, items)
        want = 1 + ((lp[:, 1:] >= lp.gather(1, targets[:, None])).sum(1) - 1)
        got = target_ranks(q, rec.item_weight, targets, offset=rec.seen_offset(items))
        assert torch.equal(got, want)
        _, top = topk_items(q, rec.item_weight, 3, offset=rec.seen_offset(items))
        # the same lists up to near-ties: the policy's log-probs of the returned items are its top 3
        torch.testing.assert_close(lp.gather(1, top), lp.topk(3, dim=1).values)


def test_the_seen_logit_learns_its_sign_from_the_data():
    """Next items never in the context push `b` down; next items that repeat the last one push it up."""
    fresh = torch.tensor([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]])
    repeat = torch.tensor([[3, 3, 3, 3, 3, 3], [9, 9, 9, 9, 9, 9]])
    for items, sign in ((fresh, -1), (repeat, 1)):
        rec = model().train()
        targets = torch.cat([items[:, 1:], items[:, -1:] if sign > 0 else items[:, :1] % N_ITEMS + 1], 1)
        opt = torch.optim.Adam(rec.parameters(), lr=1e-2)
        for _ in range(20):
            loss, _ = rec.next_item_loss(rec.encode(items), targets, torch.ones_like(items, dtype=torch.float), items)
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert sign * float(rec.seen_logit.detach()) > 0.5


def test_without_the_seen_logit_scores_ignore_contexts_and_old_runs_load_without_it():
    rec = model(seen_bias=False)
    assert rec.seen_logit is None and rec.seen_offset(torch.tensor([[1, 2]])) is None
    assert not any("seen" in k for k in rec.state_dict())
    q = rec.last_hidden(torch.tensor([[1, 2]]))
    assert torch.equal(rec.log_probs(q, torch.tensor([[1, 2]])), rec.log_probs(q, None))
    assert migrate_old_keys({"model": {"name": "sasrec"}})["model"]["seen_bias"] is False
    assert migrate_old_keys({"model": {"seen_bias": True}})["model"]["seen_bias"] is True
