"""The bound calculator of `recalign.theory` against hand-computed values."""

from __future__ import annotations

import math

import pytest

from recalign.errors import InputError
from recalign.theory import epsilon, min_lambda, theory_report, value_loss_bound

ARGS = dict(sigma=0.1, n_items=1000, delta=0.05)


def test_hand_computed_values():
    """σ = 0.1, |A| = 1000, δ = 0.05, R_max = 1:

    2|A|/δ = 40000, log 40000 = 10.59663, ε = 0.1·sqrt(2·10.59663) = 0.1·4.603615 = 0.4603615.
    λ = 1: bound = exp(2·0.4603615) − 1 = exp(0.920723) − 1 = 2.511105 − 1 = 1.511105.
    τ = 0.1: λ_min = 0.920723 / log(1.1) = 0.920723 / 0.0953102 = 9.66028.
    """
    assert epsilon(**ARGS) == pytest.approx(0.4603615, rel=1e-6)
    assert value_loss_bound(**ARGS, r_max=1.0, lam=1.0) == pytest.approx(1.511105, rel=1e-6)
    assert min_lambda(**ARGS, r_max=1.0, tau=0.1) == pytest.approx(9.66028, rel=1e-5)


def test_min_lambda_gives_bound_equal_to_tau():
    for r_max, tau in [(1.0, 0.1), (5.0, 0.01), (1.0, 3.0)]:
        lam = min_lambda(**ARGS, r_max=r_max, tau=tau)
        assert value_loss_bound(**ARGS, r_max=r_max, lam=lam) == pytest.approx(tau, rel=1e-9)


def test_monotonicity():
    bounds = [value_loss_bound(**ARGS, r_max=1.0, lam=lam) for lam in (0.1, 0.5, 1.0, 10.0)]
    assert all(a > b for a, b in zip(bounds, bounds[1:]))  # larger λ: smaller loss
    eps = [epsilon(s, 1000, 0.05) for s in (0.0, 0.1, 0.2)]
    assert eps[0] == 0.0 and eps[1] < eps[2]
    assert epsilon(0.1, 10, 0.05) < epsilon(0.1, 10_000, 0.05)  # catalog enters through log
    assert epsilon(0.1, 1000, 0.1) < epsilon(0.1, 1000, 0.01)  # more confidence: larger ε
    lams = [min_lambda(**ARGS, r_max=1.0, tau=t) for t in (0.01, 0.1, 1.0)]
    assert all(a > b for a, b in zip(lams, lams[1:]))  # tighter τ needs larger λ


def test_small_lambda_overflows_to_inf_and_no_noise_gives_zero():
    assert value_loss_bound(1.0, 1e6, 0.01, 1.0, 1e-3) == math.inf
    assert value_loss_bound(0.0, 1000, 0.05, 1.0, 1.0) == 0.0
    assert min_lambda(0.0, 1000, 0.05, 1.0, 0.1) == 0.0


def test_report_and_input_errors():
    rep = theory_report(**ARGS, r_max=1.0, lam=1.0, tau=0.1)
    assert rep["epsilon"] == pytest.approx(0.4603615, rel=1e-6)
    assert rep["value_loss_bound"] == pytest.approx(1.511105, rel=1e-6)
    assert rep["min_lambda"] == pytest.approx(9.66028, rel=1e-5)
    assert "value_loss_bound" not in theory_report(**ARGS, r_max=1.0)
    for bad in [dict(delta=0.0), dict(delta=1.0), dict(sigma=-1.0), dict(n_items=0)]:
        with pytest.raises(InputError):
            theory_report(**{**ARGS, **bad}, r_max=1.0)
    with pytest.raises(InputError):
        value_loss_bound(**ARGS, r_max=1.0, lam=0.0)
    with pytest.raises(InputError):
        min_lambda(**ARGS, r_max=1.0, tau=-0.1)
