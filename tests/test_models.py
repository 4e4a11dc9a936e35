"""Backbones: shapes, finiteness under left padding, causality, padding invariance, and a few
training steps on a toy task."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from recalign.errors import InputError
from recalign.models.build import build_backbone
from recalign.models.config import ModelConfig
from recalign.models.heads import FullSoftmaxHead
from recalign.models.hstu import HSTU, gap_buckets

N_ITEMS = 20
NAMES = ["sasrec", "hstu"]




def tiny(name: str, **kw) -> ModelConfig:
    base = dict(name=name, dim=16, layers=2, heads=2, max_len=16, dropout=0.1, time_buckets=8)
    base.update(kw)
    return ModelConfig(**base)


def model(name: str, seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = build_backbone(tiny(name, **kw), N_ITEMS).eval()
    if isinstance(m, HSTU):  # make the (zero-initialised) relative biases matter
        with torch.no_grad():
            for layer in m.layers:
                layer.rab.pos.normal_()
                layer.rab.time.normal_()
    return m


def left_pad(seqs: list[list[int]], L: int) -> torch.Tensor:
    return torch.tensor([[0] * (L - len(s)) + s for s in seqs])


def times_for(items: torch.Tensor) -> torch.Tensor:
    """Increasing timestamps with irregular gaps, right-aligned (the most recent item is always
    at the same time, whatever the padding), 0 at padding."""
    gaps = torch.tensor([1, 30, 3600, 5, 86400 * 7, 2, 600, 40000] * 4)[: items.shape[1]]
    t = 1_600_000_000 - gaps.cumsum(0).flip(0)  # [L]: column c is sum(gaps[:L-c]) before
    return t.expand_as(items) * (items > 0)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_forward_is_encode(name):
    m = model(name)
    items = torch.randint(1, N_ITEMS + 1, (3, 10))
    h = m.encode(items)
    assert h.shape == (3, 10, 16) and h.dtype == torch.float32
    assert torch.equal(m(items), h)
    assert m.item_emb.weight.shape == (N_ITEMS + 1, 16)
    assert torch.all(m.item_emb.weight[0] == 0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("with_time", [False, True])
def test_heavy_left_padding_is_finite_in_forward_and_backward(name, with_time):
    m = model(name).train()
    items = left_pad([[], [7], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]], 12)  # row 0: all padding
    ts = times_for(items) if with_time else None
    h = m(items, ts)
    assert torch.isfinite(h).all()
    h.pow(2).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("with_time", [False, True])
def test_causal(name, with_time):
    """Changing the item (and time) at position 7 leaves positions 0..6 unchanged."""
    m = model(name)
    items = left_pad([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3]], 12)
    ts = times_for(items) if with_time else None
    changed = items.clone()
    changed[0, 7] = 17
    ts2 = None
    if with_time:
        ts2 = ts.clone()
        ts2[0, 7:] += 999_999
    a, b = m(items, ts), m(changed, ts2)
    torch.testing.assert_close(a[:, :7], b[:, :7], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 7:], b[:, 7:])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("with_time", [False, True])
def test_padding_invariance(name, with_time):
    """A history's states do not depend on how much padding precedes it (eval mode)."""
    m = model(name)
    seq = [4, 8, 15, 16, 2]
    short, long = left_pad([seq], 8), left_pad([seq], 15)  # 3 vs 10 padding tokens
    h_short = m(short, times_for(short) if with_time else None)
    h_long = m(long, times_for(long) if with_time else None)
    torch.testing.assert_close(h_short[:, -5:], h_long[:, -5:], rtol=1e-5, atol=1e-5)


def test_hstu_time_bias_used_only_with_timestamps():
    m = model("hstu")
    items = left_pad([[3, 1, 4, 1, 5, 9]], 8)
    h_none, h_time = m(items), m(items, times_for(items))
    assert torch.isfinite(h_time).all()
    assert not torch.allclose(h_none[:, -1], h_time[:, -1])
    with torch.no_grad():
        for layer in m.layers:
            layer.rab.time.zero_()
    torch.testing.assert_close(m(items, times_for(items)), h_none)


def test_gap_buckets():
    day = 86400
    ts = torch.tensor([[0, 0, 1, 60, day, 365 * day, 100 * 365 * day]])
    b = gap_buckets(ts, 8)[0, :, 0]  # gap of each timestamp to the first one
    assert b.tolist()[:3] == [0, 0, 1]  # < 1 s -> 0; 1 s -> first log bucket
    assert torch.all(b.diff() >= 0) and b[-1] == 7 and b.max() <= 7
    all_pairs = gap_buckets(ts, 8)
    assert torch.equal(all_pairs, all_pairs.transpose(1, 2))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("std", [0.02, 0.5])
def test_item_table_initialised_with_init_std(name, std):
    torch.manual_seed(0)
    m = build_backbone(ModelConfig(name=name, dim=64, init_std=std), 5000)
    w = m.item_emb.weight[1:]
    assert abs(w.std().item() - std) < 0.05 * std and abs(w.mean().item()) < 0.05 * std


@pytest.mark.parametrize("name", NAMES)
def test_scale_emb_scales_the_input_only(name):
    items = torch.randint(1, N_ITEMS + 1, (2, 8))
    on, off = model(name, scale_emb=True), model(name, scale_emb=False)
    assert all(torch.equal(a, b) for a, b in zip(on.state_dict().values(), off.state_dict().values()))
    assert not torch.allclose(on(items), off(items))


def test_init_std_must_be_positive():
    with pytest.raises(InputError, match="init_std"):
        ModelConfig(init_std=0.0)


@pytest.mark.parametrize("name", NAMES)
def test_too_long_raises(name):
    with pytest.raises(ValueError, match="max_len"):
        model(name)(torch.ones(1, 17, dtype=torch.long))


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError, match="sasrec, hstu"):
        build_backbone(dataclasses.replace(tiny("sasrec"), name="gru4rec"), N_ITEMS)


@pytest.mark.parametrize("name", NAMES)
def test_a_few_steps_reduce_loss_on_repeating_sequences(name):
    """Histories follow the cycle 1, 2, ..., 6, 1, 2, ...; the next item is predictable."""
    torch.manual_seed(0)
    m = build_backbone(tiny(name, dropout=0.0, layers=1), N_ITEMS).train()
    head = FullSoftmaxHead()
    starts = torch.arange(16) % 6
    seq = (starts[:, None] + torch.arange(11)) % 6 + 1  # [16, 11] tokens 1..6
    items, targets = seq[:, :-1], seq[:, 1:]
    items[:4, :3] = 0  # some left padding
    targets = targets * (items > 0)
    weights = (targets > 0).float()
    ts = times_for(items) if name == "hstu" else None
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss, _ = head.loss(m(items, ts), targets, weights, m.item_emb.weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


REFERENCE = dict(abs_pos=True, inner_dropout=True, proj_bias=False, rab_init_std=0.02)


@pytest.mark.parametrize("with_time", [False, True])
def test_hstu_reference_variant_is_causal_padding_invariant_and_finite(with_time):
    """The reference code's choices (absolute positions, inner dropout, bias-free projections,
    random relative biases) keep the properties every backbone must have."""
    m = model("hstu", **REFERENCE)
    assert m.pos_emb is not None and all(layer.f1.bias is None and layer.f2.bias is None for layer in m.layers)
    seq = [4, 8, 15, 16, 2]
    short, long = left_pad([seq], 8), left_pad([seq], 15)
    h_short = m(short, times_for(short) if with_time else None)
    h_long = m(long, times_for(long) if with_time else None)
    torch.testing.assert_close(h_short[:, -5:], h_long[:, -5:], rtol=1e-5, atol=1e-5)
    items = left_pad([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3]], 12)
    changed = items.clone()
    changed[0, 7] = 17
    torch.testing.assert_close(m(items)[:, :7], m(changed)[:, :7], rtol=0, atol=1e-6)
    m.train()
    h = m(left_pad([[], [7], list(range(1, 13))], 12))
    assert torch.isfinite(h).all()


def test_hstu_rab_init_std():
    torch.manual_seed(0)
    zero = build_backbone(tiny("hstu"), N_ITEMS)
    rand = build_backbone(tiny("hstu", rab_init_std=0.02), N_ITEMS)
    assert torch.all(zero.layers[0].rab.pos == 0)
    assert 0.005 < rand.layers[0].rab.pos.std().item() < 0.05


@pytest.mark.parametrize("name", NAMES)
def test_cosine_scoring_normalises_states_and_items(name):
    from recalign.models.recommender import Recommender

    torch.manual_seed(0)
    rec = Recommender(tiny(name, score="cosine", temperature=0.05), N_ITEMS)
    items = left_pad([[3, 1, 4], [5, 9, 2, 6, 5]], 8)
    h = rec.encode(items)
    real = items > 0
    torch.testing.assert_close(h.norm(dim=-1)[real], torch.ones(int(real.sum())), rtol=0, atol=1e-5)
    w = rec.item_weight
    assert torch.all(w[0] == 0)
    torch.testing.assert_close(w[1:].norm(dim=-1), torch.ones(N_ITEMS), rtol=0, atol=1e-5)
    logits = rec.logits(h[:, -1], None)  # the seen logit (0 at init) aside
    assert logits[:, 1:].abs().max() <= 1 / 0.05 + 1e-4 and torch.isinf(logits[:, 0]).all()
    assert rec.item_table is rec.backbone.item_emb.weight  # the parameter, unnormalised
    with pytest.raises(InputError, match="model.score = dot"):
        Recommender(tiny(name, score="cosine", head="sampled"), N_ITEMS).set_sparse_item_grad(True)
