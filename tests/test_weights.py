"""Reward weights (`recalign.posttrain.weights`): hand-worked values, extreme temperatures,
normalisation invariants."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recalign.posttrain.losses import weighted_nll
from recalign.posttrain.weights import (
    ess,
    global_log_max,
    global_log_z,
    log_weights,
    normalize,
    transform_rewards,
)

R3 = torch.tensor([0.0, 1.0, 2.0])


def test_transform_rewards_by_hand():
    """standardize [1, 2, 3]: mean 2, population std sqrt(2/3) = 0.816497 → [−1.224745, 0, 1.224745].
    user_center, users [7, 3, 7, 3], rewards [1, 2, 3, 6]: user 7 mean 2, user 3 mean 4 →
    [−1, −2, 1, 2]."""
    r = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(transform_rewards(r, kind="standardize"), torch.tensor([-1.224745, 0.0, 1.224745]))
    out = transform_rewards(torch.tensor([1.0, 2.0, 3.0, 6.0]), torch.tensor([7, 3, 7, 3]), "user_center")
    torch.testing.assert_close(out, torch.tensor([-1.0, -2.0, 1.0, 2.0]))
    none = transform_rewards(r, kind="none")
    torch.testing.assert_close(none, r)
    assert none.data_ptr() != r.data_ptr()
    torch.testing.assert_close(transform_rewards(torch.full((3,), 4.0), kind="standardize"), torch.zeros(3))
    with pytest.raises(ValueError, match="user"):
        transform_rewards(r, None, "user_center")
    with pytest.raises(ValueError, match="none, standardize, user_center"):
        transform_rewards(r, kind="zscore")


def test_log_weights_by_hand():
    """r = [−1, 0, 2], b = [0, −1, 1], threshold 0:
    exp (λ = 2): r/λ = [−0.5, 0, 1];  linear: [−inf, −inf, log 2];
    adv_exp (λ = 1): r − b = [−1, 1, 1];  adv_pos: [−inf, 0, 0];  filter: [−inf, 0, 0]."""
    r = torch.tensor([-1.0, 0.0, 2.0])
    b = torch.tensor([0.0, -1.0, 1.0])
    inf = math.inf
    lw = log_weights(r, "exp", lam=2.0)
    assert lw.dtype == torch.float64
    torch.testing.assert_close(lw, torch.tensor([-0.5, 0.0, 1.0], dtype=torch.float64))
    assert log_weights(r, "linear").tolist() == [-inf, -inf, pytest.approx(math.log(2.0))]
    assert log_weights(r, "adv_exp", lam=1.0, baseline=b).tolist() == [-1.0, 1.0, 1.0]
    assert log_weights(r, "adv_pos", baseline=b).tolist() == [-inf, 0.0, 0.0]
    assert log_weights(r, "filter", threshold=0.0).tolist() == [-inf, 0.0, 0.0]
    with pytest.raises(ValueError, match="exp, linear, adv_exp, adv_pos, filter"):
        log_weights(r, "softmax")
    with pytest.raises(ValueError, match="lam"):
        log_weights(r, "exp", lam=0.0)
    with pytest.raises(ValueError, match="baseline"):
        log_weights(r, "adv_exp")
    with pytest.raises(ValueError, match="threshold"):
        log_weights(r, "filter")


def test_exp_weights_by_hand():
    """r = [0, 1, 2], λ = 1: exp(r) = [1, 2.718282, 7.389056], mean 3.702446, log mean 1.308994;
    normalised: [0.270092, 0.734185, 1.995723] (global over this set = batch)."""
    lw = log_weights(R3, "exp", lam=1.0)
    log_z = global_log_z(lw)
    assert log_z == pytest.approx(1.308994, rel=1e-6)
    expected = torch.tensor([0.270092, 0.734185, 1.995723])
    torch.testing.assert_close(normalize(lw, norm="global", global_log_z=log_z), expected)
    torch.testing.assert_close(normalize(lw, norm="batch"), expected)
    # none: exp((r − r_max)/λ) = [e^−2, e^−1, 1]; the logged constant is exp(r_max/λ) = e².
    shift = global_log_max(lw)
    assert shift == 2.0
    w_none = normalize(lw, norm="none", log_shift=shift, dtype=torch.float64)
    torch.testing.assert_close(w_none * math.exp(shift), torch.exp(R3.double()))


def test_ess_by_hand():
    """[1, 1, 1, 1] → 1;  [1, 0, 0, 0] → 1/4;  [1, 2] → 3²/(2·5) = 0.9;  zeros → 0."""
    assert ess(torch.ones(4)) == pytest.approx(1.0)
    assert ess(torch.tensor([1.0, 0.0, 0.0, 0.0])) == pytest.approx(0.25)
    assert ess(torch.tensor([1.0, 2.0])) == pytest.approx(0.9)
    assert ess(torch.tensor([1.0, 2.0, 5.0]), mask=torch.tensor([True, True, False])) == pytest.approx(0.9)
    assert ess(torch.zeros(3)) == 0.0
    assert ess(torch.tensor([1e300, 2e300], dtype=torch.float64)) == pytest.approx(0.9)


@pytest.mark.parametrize("norm", ["global", "batch", "context", "none"])
def test_finite_for_tiny_lambda_and_huge_rewards(norm):
    """λ = 1e-4 and rewards up to 1e4: r/λ reaches 1e8; exp of it would be inf."""
    g = torch.Generator().manual_seed(0)
    r = torch.rand(200, generator=g) * 1e4
    r[:3] = torch.tensor([1e4, 1e4, -1e4])
    ctx = torch.randint(0, 7, (200,), generator=g)
    lw = log_weights(r, "exp", lam=1e-4)
    w = normalize(lw, norm=norm, context=ctx, global_log_z=global_log_z(lw), log_shift=global_log_max(lw))
    assert torch.isfinite(w).all() and (w >= 0).all() and w.max() > 0
    e = ess(w)
    assert 0 < e <= 1
    if norm in ("global", "batch"):
        # two tied best rewards share all the weight: [n/2, n/2, 0, ...]
        assert w[:2].tolist() == pytest.approx([100.0, 100.0], rel=1e-5)
        assert e == pytest.approx(2 / 200)


def test_batch_norm_averages_one_over_real_positions():
    r = torch.tensor([0.3, -1.0, 2.0, 5.0, 0.7])
    mask = torch.tensor([True, True, True, False, True])
    w = normalize(log_weights(r, "exp", lam=0.5), mask, "batch", dtype=torch.float64)
    assert w[3] == 0.0
    assert float(w[mask].mean()) == pytest.approx(1.0, rel=1e-12)


def test_context_norm_averages_one_per_context():
    """Contexts [5, 5, 9, 9, 9, 2]; context 2 has one position → weight 1."""
    r = torch.tensor([1.0, 3.0, 0.0, 10.0, -2.0, 7.0])
    ctx = torch.tensor([5, 5, 9, 9, 9, 2])
    w = normalize(log_weights(r, "exp", lam=1.0), norm="context", context=ctx, dtype=torch.float64)
    assert float(w[:2].mean()) == pytest.approx(1.0)
    assert float(w[2:5].mean()) == pytest.approx(1.0)
    assert float(w[5]) == pytest.approx(1.0)
    # by hand, context 5: exp([1, 3]) / mean = 2·[e, e³]/(e + e³) = [0.238406, 1.761594]
    assert w[:2].tolist() == pytest.approx([0.238406, 1.761594], rel=1e-5)


def test_zero_weights_stay_zero_not_nan():
    """`filter` dropping a whole context or a whole batch gives weights 0, never NaN."""
    r = torch.tensor([1.0, 2.0, 5.0, 6.0])
    lw = log_weights(r, "filter", threshold=4.0)
    ctx = torch.tensor([0, 0, 1, 1])
    assert normalize(lw, norm="context", context=ctx).tolist() == [0.0, 0.0, 1.0, 1.0]
    lw_none = log_weights(r, "filter", threshold=100.0)
    assert normalize(lw_none, norm="batch").tolist() == [0.0] * 4
    assert normalize(lw_none, norm="global", global_log_z=global_log_z(lw_none)).tolist() == [0.0] * 4
    assert normalize(lw_none, norm="context", context=ctx).tolist() == [0.0] * 4


def test_max_weight_clips_after_normalisation():
    lw = log_weights(R3, "exp", lam=1.0)
    w = normalize(lw, norm="batch", max_weight=1.5)
    torch.testing.assert_close(w, torch.tensor([0.270092, 0.734185, 1.5]))
    with pytest.raises(ValueError):
        normalize(lw, norm="batch", max_weight=-1.0)


def test_missing_arguments_and_unknown_norm_raise():
    lw = log_weights(R3, "exp", lam=1.0)
    with pytest.raises(ValueError, match="global_log_z"):
        normalize(lw, norm="global")
    with pytest.raises(ValueError, match="log_shift"):
        normalize(lw, norm="none")
    with pytest.raises(ValueError, match="context"):
        normalize(lw, norm="context")
    with pytest.raises(ValueError, match="global, batch, context, none"):
        normalize(lw, norm="user")


def test_huge_lambda_is_plain_sft():
    """λ = 1e6: weights exp(r/λ)/Z = 1 + O(1e-5), so exp_sft's gradient equals SFT's within 1e-5."""
    g = torch.Generator().manual_seed(1)
    r = torch.rand(64, generator=g) * 5.0
    lw = log_weights(r, "exp", lam=1e6)
    w = normalize(lw, norm="global", global_log_z=global_log_z(lw))
    assert (w - 1).abs().max() < 1e-5
    logits = torch.randn(64, 10, generator=g)
    target = torch.randint(0, 10, (64,), generator=g)
    grads = []
    for weights in (w, torch.ones(64)):
        x = logits.clone().requires_grad_(True)
        logp = torch.log_softmax(x, -1).gather(1, target[:, None]).squeeze(1)
        weighted_nll(logp, weights)[0].backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(
    rewards=st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=30),
    lam=st.floats(1e-4, 1e4),
    n_ctx=st.integers(1, 4),
)
def test_property_batch_and_context_average_one(rewards, lam, n_ctx):
    r = torch.tensor(rewards, dtype=torch.float64)
    ctx = torch.arange(len(rewards)) % n_ctx
    lw = log_weights(r, "exp", lam=lam)
    wb = normalize(lw, norm="batch", dtype=torch.float64)
    assert torch.isfinite(wb).all()
    assert float(wb.mean()) == pytest.approx(1.0, rel=1e-9)
    wc = normalize(lw, norm="context", context=ctx, dtype=torch.float64)
    assert torch.isfinite(wc).all()
    for c in range(min(n_ctx, len(rewards))):
        assert float(wc[ctx == c].mean()) == pytest.approx(1.0, rel=1e-9)
    assert 0 < ess(wb) <= 1 + 1e-12
