"""Output heads: hand-worked loss values, weighting, logQ correction, accidental hits."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from recalign.models.config import ModelConfig
from recalign.models.heads import (
    FullSoftmaxHead,
    SampledSoftmaxHead,
    full_logits,
    make_head,
)

# Tokens 0 (padding), 1, 2 with 2-d embeddings e1 = (1, 0), e2 = (0, 1).
W2 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])




def test_full_logits_pads_column_zero():
    logits = full_logits(torch.tensor([[2.0, 4.0]]), W2, temperature=2.0)
    assert logits[0, 0] == float("-inf")
    torch.testing.assert_close(logits[0, 1:], torch.tensor([1.0, 2.0]))


def test_full_softmax_loss_by_hand():
    """Three positions, one padded (target 0, weight 1: ignored).

    h = (1, 0), target 1: logits (1, 0) -> nll = log(e^1 + e^0) - 1 = log(1 + e^-1) = 0.31326
    h = (0, 2), target 1: logits (0, 2) -> nll = log(1 + e^2) - 0            = 2.12693
    weights 1 and 0.5; count(targets > 0) = 2:
    loss = (1 * 0.31326 + 0.5 * 2.12693) / 2 = 0.68836
    """
    hidden = torch.tensor([[[9.0, 9.0], [1.0, 0.0], [0.0, 2.0]]])
    targets = torch.tensor([[0, 1, 1]])
    weights = torch.tensor([[1.0, 1.0, 0.5]])
    loss, diag = FullSoftmaxHead().loss(hidden, targets, weights, W2)
    expected = (math.log(1 + math.exp(-1)) + 0.5 * math.log(1 + math.exp(2))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert diag["n_targets"] == 2
    assert diag["weight_sum"].item() == pytest.approx(1.5)


def test_full_softmax_log_probs():
    lp = FullSoftmaxHead().log_probs(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), W2)
    assert lp.shape == (2, 3) and torch.all(lp[:, 0] == float("-inf"))
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(2))
    assert lp[0, 1].item() == pytest.approx(-math.log(1 + math.exp(-1)), rel=1e-6)


def _random_batch(seed: int = 0, n: int = 10, d: int = 4):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(2, 5, d, generator=g, requires_grad=True)
    targets = torch.randint(1, n + 1, (2, 5), generator=g)
    targets[0, :2] = 0
    weight = torch.randn(n + 1, d, generator=g, requires_grad=True)
    return hidden, targets, weight


@pytest.mark.parametrize("head", ["full", "sampled"])
def test_zero_weights_do_not_contribute_and_weights_scale_linearly(head):
    hidden, targets, weight = _random_batch()
    h = FullSoftmaxHead() if head == "full" else SampledSoftmaxHead(3, "uniform")
    neg = torch.tensor([1, 5, 9])
    kw = {} if head == "full" else {"negatives": neg}
    w = torch.rand(2, 5)
    base, _ = h.loss(hidden, targets, w, weight, **kw)
    doubled, _ = h.loss(hidden, targets, 2 * w, weight, **kw)
    torch.testing.assert_close(doubled, 2 * base)
    # Zeroing the weight of one position removes exactly its term; changing its hidden state then
    # changes nothing (for the full head; in the sampled head it is still a candidate for others).
    w0 = w.clone()
    w0[1, 3] = 0.0
    loss0, _ = h.loss(hidden, targets, w0, weight, **kw)
    if head == "full":
        moved = hidden.detach().clone()
        moved[1, 3] += 5.0
        torch.testing.assert_close(h.loss(moved, targets, w0, weight)[0], loss0)
    loss0.backward()
    assert torch.all(hidden.grad[1, 3] == 0)


def test_sampled_logq_correction_by_hand():
    """Tokens 1..3 with 1-d embeddings e_j = j; one position, h = 1, target 1 (M = 1).

    item_counts (1, 1, 2) -> in-batch Q(1) = 1/4. Uniform proposal over N = 3 -> Q = 1/3 for the
    shared negatives 2 and 3. Corrected logits:
        positive: 1*1 - log(1/4) = 1 + log 4 = 2.38629
        neg 2:    1*2 - log(1/3) = 2 + log 3 = 3.09861
        neg 3:    1*3 - log(1/3) = 3 + log 3 = 4.09861
    loss = logsumexp(2.38629, 3.09861, 4.09861) - 2.38629 = 4.53579 - 2.38629 = 2.14949
    """
    W = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    head = SampledSoftmaxHead(2, "uniform", item_counts=np.array([0, 1, 1, 2]))
    loss, diag = head.loss(
        torch.ones(1, 1, 1),
        torch.tensor([[1]]),
        torch.ones(1, 1),
        W,
        negatives=torch.tensor([2, 3]),
    )
    s = torch.tensor([1 + math.log(4), 2 + math.log(3), 3 + math.log(3)], dtype=torch.float64)
    expected = (torch.logsumexp(s, 0) - s[0]).item()
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(2.14949, abs=1e-5)
    assert diag["accidental_hits"] == 0


def test_sampled_popularity_and_empirical_in_batch_q_by_hand():
    """Popularity proposal, counts (1, 1, 2): Q = 1/4, 1/4, 1/2. Two positions with h = 1 and
    targets 1, 3; shared negative 2. Row 1 (target 1), candidates [1, 3 | 2]:
        1 - log(1/4), 3 - log(1/2), 2 - log(1/4).
    Without item_counts (uniform proposal, N = 3) the in-batch Q is the batch frequency 1/2 for
    both targets: 1 - log(1/2), 3 - log(1/2), 2 - log(1/3).
    """
    W = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    hidden, targets, w = torch.ones(1, 2, 1), torch.tensor([[1, 3]]), torch.tensor([[1.0, 0.0]])
    neg = torch.tensor([2])
    pop = SampledSoftmaxHead(1, "popularity", item_counts=[0, 1, 1, 2])
    s = torch.tensor([1 + math.log(4), 3 + math.log(2), 2 + math.log(4)])
    expected = (torch.logsumexp(s, 0) - s[0]) / 2  # weight 0 on row 2, divided by M = 2
    torch.testing.assert_close(pop.loss(hidden, targets, w, W, negatives=neg)[0], expected)
    uni = SampledSoftmaxHead(1, "uniform")
    s = torch.tensor([1 + math.log(2), 3 + math.log(2), 2 + math.log(3)])
    expected = (torch.logsumexp(s, 0) - s[0]) / 2
    torch.testing.assert_close(uni.loss(hidden, targets, w, W, negatives=neg)[0], expected)


def test_sampled_accidental_hits_are_masked():
    """Targets (1, 1, 2), shared negatives (1, 2, 3). Hits: row 0 -> in-batch col 1 and shared 1;
    row 1 -> in-batch col 0 and shared 1; row 2 -> shared 2. Total 5, of which 3 shared."""
    hidden, _, W = _random_batch(seed=1, n=3)
    hidden = hidden[:1, :3].detach()
    targets = torch.tensor([[1, 1, 2]])
    neg = torch.tensor([1, 2, 3])
    head = SampledSoftmaxHead(3, "uniform")
    loss, diag = head.loss(hidden, targets, torch.ones(1, 3), W, negatives=neg)
    assert diag["accidental_hits"] == 5 and diag["accidental_hits_shared"] == 3
    # Same loss by hand: corrected logits with the hits removed.
    h, Wd = hidden[0], W.detach()
    cand = torch.cat([targets[0], neg])
    log_q = torch.tensor([2 / 3, 2 / 3, 1 / 3]).log().tolist() + [-math.log(3)] * 3
    keep = [[0, 2, 4, 5], [1, 2, 4, 5], [2, 0, 1, 3, 5]]  # the positive first
    nll = []
    for i, cols in enumerate(keep):
        s = torch.stack([h[i] @ Wd[cand[c]] - log_q[c] for c in cols])
        nll.append(torch.logsumexp(s, 0) - s[0])
    torch.testing.assert_close(loss, torch.stack(nll).mean())


@pytest.mark.parametrize("proposal", ["uniform", "popularity"])
def test_sampled_with_more_negatives_than_items_is_finite_and_trains(proposal):
    hidden, targets, W = _random_batch(n=6)
    counts = np.arange(7.0)
    head = SampledSoftmaxHead(50, proposal, counts, generator=torch.Generator().manual_seed(0))
    loss, diag = head.loss(hidden, targets, (targets > 0).float(), W)
    assert torch.isfinite(loss) and diag["accidental_hits_shared"] > 0
    loss.backward()
    assert torch.isfinite(hidden.grad).all() and hidden.grad.abs().sum() > 0
    assert torch.isfinite(W.grad).all() and W.grad.abs().sum() > 0


def test_popularity_sampling_follows_counts():
    counts = np.array([5.0, 0.0, 1.0, 3.0, 0.0])  # index 0 ignored; items 1 and 4 never drawn
    head = SampledSoftmaxHead(
        20000, "popularity", counts, generator=torch.Generator().manual_seed(0)
    )
    neg = head.sample_negatives(4, torch.device("cpu"))
    freq = torch.bincount(neg, minlength=5).double() / neg.numel()
    assert freq[0] == 0 and freq[1] == 0 and freq[4] == 0
    assert freq[3].item() == pytest.approx(0.75, abs=0.02)
    uni = SampledSoftmaxHead(1000, "uniform").sample_negatives(4, torch.device("cpu"))
    assert uni.min() >= 1 and uni.max() <= 4


def test_no_targets_gives_zero_loss():
    hidden, _, W = _random_batch()
    for head in (FullSoftmaxHead(), SampledSoftmaxHead(4)):
        loss, diag = head.loss(hidden, torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5), W)
        assert loss.item() == 0.0 and diag["n_targets"] == 0


def test_make_head_and_errors():
    cfg = ModelConfig()
    assert isinstance(make_head(cfg), FullSoftmaxHead)
    h = make_head(
        dataclasses.replace(cfg, head="sampled", negatives="popularity", num_negatives=7), [0, 1, 2]
    )
    assert isinstance(h, SampledSoftmaxHead) and h.num_negatives == 7 and h.proposal == "popularity"
    with pytest.raises(ValueError, match="full, sampled"):
        make_head(dataclasses.replace(cfg, head="bogus"))
    with pytest.raises(ValueError, match="item_counts"):
        SampledSoftmaxHead(4, "popularity")
    with pytest.raises(ValueError, match="uniform, popularity"):
        SampledSoftmaxHead(4, "zipf")


def test_in_batch_subset_all_equals_every_target_and_zero_uses_shared_negatives_only():
    """`in_batch = M` (every target, in random order, each row's positive in a column of its own)
    gives the same loss as the default layout (column i = row i's positive); `in_batch = 0` is the
    loss over the positive and the shared negatives alone, computed by hand."""
    hidden, targets, weight = _random_batch()
    w = torch.rand(2, 5)
    neg = torch.tensor([1, 5, 9])
    counts = np.r_[0, np.arange(1, 11)]
    full = SampledSoftmaxHead(3, "uniform", item_counts=counts)
    M = int((targets > 0).sum())
    every = SampledSoftmaxHead(3, "uniform", item_counts=counts, in_batch=M)
    torch.testing.assert_close(every.loss(hidden, targets, w, weight, negatives=neg)[0],
                               full.loss(hidden, targets, w, weight, negatives=neg)[0])
    none = SampledSoftmaxHead(3, "uniform", item_counts=counts, in_batch=0)
    got, diag = none.loss(hidden, targets, w, weight, negatives=neg)
    sel = targets > 0
    h, t, ww = hidden[sel], targets[sel], w[sel]
    log_q_t = torch.log(torch.as_tensor(counts / counts.sum(), dtype=torch.float32))[t]
    pos = (h * weight[t]).sum(-1) - log_q_t
    negs = h @ weight[neg].T + np.log(10)
    negs = negs.masked_fill(neg[None, :] == t[:, None], float("-inf"))
    want = (ww * (torch.logsumexp(torch.cat([pos[:, None], negs], 1), 1) - pos)).sum() / t.numel()
    torch.testing.assert_close(got, want)
    sub = SampledSoftmaxHead(3, "uniform", item_counts=counts, in_batch=2, generator=torch.Generator().manual_seed(0))
    loss, _ = sub.loss(hidden, targets, w, weight, negatives=neg)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="in_batch"):
        SampledSoftmaxHead(3, in_batch=-2)
