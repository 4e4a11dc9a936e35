"""Student-t quantiles, t intervals over seeds, and the paired bootstrap over users."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recalign.eval.stats import mean_ci, paired_bootstrap, t_quantile


@pytest.mark.parametrize(
    ("p", "df", "expected"),
    [  # standard t-table values (to the digits printed in tables)
        (0.975, 1, 12.7062047),
        (0.975, 2, 4.3026527),
        (0.975, 3, 3.1824463),
        (0.975, 4, 2.7764451),
        (0.975, 9, 2.2621572),
        (0.975, 30, 2.0422725),
        (0.975, 120, 1.9799304),
        (0.95, 5, 2.0150484),
        (0.995, 3, 5.8409093),
        (0.9995, 4, 8.6103016),
        (0.9, 10, 1.3721836),
        (0.975, 1000, 1.9623391),
        (0.975, 10**6, 1.9599663),
    ],
)
def test_t_quantile_matches_tables(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=1e-6)
    assert t_quantile(1 - p, df) == pytest.approx(-expected, abs=1e-6)


def test_t_quantile_is_continuous_where_the_method_changes_and_tends_to_normal():
    assert t_quantile(0.975, 1000) - t_quantile(0.975, 1001) == pytest.approx(2.4e-6, abs=2e-7)
    assert t_quantile(0.5, 7) == 0.0
    assert t_quantile(0.975, 10**9) == pytest.approx(1.959963985, abs=1e-8)
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError):
        t_quantile(0.9, 0)


def test_mean_ci_hand_computed():
    """values 1, 2, 3: mean 2, s = 1, half-width = t_{0.975,2} * 1/sqrt(3) = 4.302653/1.732051
    = 2.484138."""
    mean, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert hi - mean == pytest.approx(2.484138, abs=1e-6)
    assert mean - lo == pytest.approx(hi - mean)
    m90 = mean_ci([1.0, 2.0, 3.0], level=0.9)
    assert m90[2] - 2.0 == pytest.approx(2.919986 / math.sqrt(3), abs=1e-6)  # t_{0.95,2}


def test_mean_ci_edge_cases():
    assert mean_ci([0.3, 0.3, 0.3]) == (0.3, 0.3, 0.3)
    mean, lo, hi = mean_ci([0.25])
    assert mean == 0.25 and math.isnan(lo) and math.isnan(hi)
    with pytest.raises(ValueError, match="non-empty"):
        mean_ci([])
    with pytest.raises(ValueError, match="NaN"):
        mean_ci([0.1, math.nan])
    with pytest.raises(ValueError, match="level"):
        mean_ci([0.1, 0.2], level=1.0)


def test_paired_bootstrap_degenerate_when_equal():
    a = np.random.default_rng(0).random(500)
    assert paired_bootstrap(a, a.copy()) == {"mean": 0.0, "lo": 0.0, "hi": 0.0}


def test_paired_bootstrap_covers_true_difference_and_has_the_right_width():
    """d = a - b has mean 0.05 and sd 0.2 (b is large noise shared with a: pairing removes it).
    The 95% interval should cover 0.05 and have width ~ 2 * 1.96 * 0.2 / sqrt(n)."""
    rng = np.random.default_rng(1)
    n = 4000
    b = rng.normal(0.0, 5.0, n)
    a = b + 0.05 + rng.normal(0.0, 0.2, n)
    res = paired_bootstrap(a, b, n_boot=2000, seed=3)
    assert res["lo"] < 0.05 < res["hi"]
    assert res["lo"] < res["mean"] < res["hi"]
    assert res["hi"] - res["lo"] == pytest.approx(2 * 1.96 * 0.2 / math.sqrt(n), rel=0.1)
    assert paired_bootstrap(a, b, n_boot=2000, seed=3) == res  # reproducible


def test_paired_bootstrap_coverage_rate():
    """Over 100 synthetic data sets the 90% interval covers the true mean about 90% of the
    time (binomial sd 3%)."""
    rng = np.random.default_rng(2)
    covered = 0
    for rep in range(100):
        b = rng.random(200)
        a = b + 0.1 + rng.normal(0.0, 0.3, 200)
        res = paired_bootstrap(a, b, n_boot=400, seed=rep, level=0.9)
        covered += res["lo"] <= 0.1 <= res["hi"]
    assert 80 <= covered <= 98


def test_paired_bootstrap_blocks_do_not_change_the_result(monkeypatch):
    import recalign.eval.stats as stats

    rng = np.random.default_rng(4)
    a, b = rng.random(300), rng.random(300)
    whole = paired_bootstrap(a, b, n_boot=100, seed=5)
    monkeypatch.setattr(stats, "_BOOTSTRAP_BLOCK_ELEMENTS", 300 * 7)  # blocks of 7 resamples
    assert paired_bootstrap(a, b, n_boot=100, seed=5) == whole


def test_paired_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="equal length"):
        paired_bootstrap(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="empty"):
        paired_bootstrap([], [])
    with pytest.raises(ValueError, match="NaN"):
        paired_bootstrap([1.0, math.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="n_boot"):
        paired_bootstrap([1.0], [1.0], n_boot=0)
