"""Uncertainty of reported numbers: t intervals over seeds, paired bootstraps over users.

- `mean_ci(values)`: the mean of a metric over seeds with a Student-t interval
  (`mean ± t_{(1+level)/2, n-1} · s / sqrt(n)`).
- `paired_bootstrap(a, b)`: the mean per-user difference between a method and a baseline
  evaluated on the same users, with a percentile bootstrap interval (users resampled with
  replacement, the pairing kept). One seed only: it does not see training-seed variance.
- `two_stage_bootstrap(a_seeds, b_seeds)`: the same difference over several seeds, resampling
  seeds, then users within each resampled seed (a hierarchical bootstrap).
- `paired_delta(a_seeds, b_seeds)`: the delta interval the tables report. With n ≥ 2 seeds,
  the Student-t interval over the n per-seed mean differences (`mean_ci`, df = n − 1); with one
  seed, the paired bootstrap over users, labelled as such.

Why the t over seed means and not the two-stage bootstrap, with the few seeds (3-5) that runs
have: a delta varies between training seeds (a new world, π0, reward model and post-training
each) far more than between user resamples, so the seeds dominate the interval, and with n
seeds a bootstrap sees only C(2n−1, n) distinct seed resamples (10 for n = 3), its plug-in
variance is too small by (n−1)/n, and its percentile interval uses normal-like quantiles where
the t with n − 1 degrees of freedom is 4.30 (n = 3): the two-stage bootstrap is too narrow. The
t over seed means is exact for normal seed means and conservative otherwise; it also carries the
user variance, since each seed mean is itself a noisy mean over users. Pooling the (seed, user)
pairs as if independent (`paired_bootstrap` on concatenated arrays) ignores the seed variance
altogether and gives intervals that are far too narrow when seeds disagree.

No scipy: `t_quantile` inverts the exact Student-t CDF for integer degrees of freedom
(Abramowitz & Stegun 26.7.3-4) and uses the Cornish-Fisher expansion (A&S 26.7.5) beyond 1000.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

_EXACT_DF_MAX = 1000
_BOOTSTRAP_BLOCK_ELEMENTS = 1 << 22  # resampled indices held at once (32 MiB of int64)


def _t_abs_cdf(theta: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer `df`, where `theta = atan(t / sqrt(df))`.

    A&S 26.7.3 (df odd) and 26.7.4 (df even):

        odd:  (2/pi) [theta + sin(theta) cos(theta) (1 + 2/3 c^2 + 2*4/(3*5) c^4 + ...
                                                     + 2*4*...*(df-3)/(3*5*...*(df-2)) c^(df-3))]
        even: sin(theta) [1 + 1/2 c^2 + 1*3/(2*4) c^4 + ... + 1*3*...*(df-3)/(2*4*...*(df-2)) c^(df-2)]

    with c = cos(theta); the odd bracket is empty for df = 1.
    """
    s, c = math.sin(theta), math.cos(theta)
    c2 = c * c
    if df % 2 == 1:
        total, term = 0.0, 1.0
        for j in range(1, (df - 1) // 2 + 1):  # (df - 1) / 2 terms: j-th is prod (2i)/(2i+1)
            total += term
            term *= c2 * (2 * j) / (2 * j + 1)
        return (2.0 / math.pi) * (theta + s * c * total)
    total, term = 0.0, 1.0
    for j in range(1, df // 2 + 1):  # df / 2 terms: j-th is prod (2i-1)/(2i)
        total += term
        term *= c2 * (2 * j - 1) / (2 * j)
    return s * total


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t distribution with `df` degrees of freedom.

    Exact to about 1e-12 for integer `df <= 1000` (the CDF in closed form, inverted by
    bisection on theta = atan(t / sqrt(df))); above, the Cornish-Fisher expansion in 1/df to
    fourth order, whose error there is below 1e-12 for the usual levels.
    Examples: t_quantile(0.975, 2) = 4.3027, t_quantile(0.975, 9) = 2.2622.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if int(df) != df or df < 1:
        raise ValueError(f"df must be a positive integer, got {df}")
    df = int(df)
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if df > _EXACT_DF_MAX:
        x = NormalDist().inv_cdf(p)
        g1 = (x**3 + x) / 4
        g2 = (5 * x**5 + 16 * x**3 + 3 * x) / 96
        g3 = (3 * x**7 + 19 * x**5 + 17 * x**3 - 15 * x) / 384
        g4 = (79 * x**9 + 776 * x**7 + 1482 * x**5 - 1920 * x**3 - 945 * x) / 92160
        return x + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4
    target = 2.0 * p - 1.0  # P(|T| <= t)
    lo, hi = 0.0, math.pi / 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if _t_abs_cdf(mid, df) < target:
            lo = mid
        else:
            hi = mid
    return math.sqrt(df) * math.tan(0.5 * (lo + hi))


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def mean_ci(
    values: Sequence[float] | np.ndarray, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean over seeds and its Student-t confidence interval.

        mean = (1/n) sum_i x_i,   s^2 = (1/(n-1)) sum_i (x_i - mean)^2
        lo, hi = mean -/+ t_{(1+level)/2, n-1} * s / sqrt(n)

    Returns `(mean, lo, hi)`. With a single value the interval is undefined and `lo`, `hi` are
    NaN (the table then shows the seed count is too small, rather than a zero-width interval).
    Raises on an empty input or non-finite values (a `None` metric, a diverged run).
    """
    _check_level(level)
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("values have NaN or infinite entries")
    mean = float(x.mean())
    if x.size == 1:
        return mean, math.nan, math.nan
    half = t_quantile(0.5 + level / 2, x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return mean, mean - half, mean + half


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """Paired percentile bootstrap of the mean per-user difference `a - b`.

    Args:
        a: `[U]` per-user metric of the method (e.g. `ndcg(ranks_method, 10)`).
        b: `[U]` the same metric of the baseline on the same users, in the same order.
        n_boot: bootstrap resamples.
        seed: seed of the resampling (numpy `default_rng`), so intervals are reproducible.
        level: coverage of the interval.

    Returns:
        `{"mean": mean(a - b), "lo": ..., "hi": ...}`: with `d = a - b` and, for each resample
        `m`, `U` user indices drawn with replacement, `D_m = mean(d[idx_m])`; `lo`/`hi` are the
        `(1 - level)/2` and `(1 + level)/2` quantiles of `{D_m}` (linear interpolation).
        Resampling users keeps each user's pair together, so the interval reflects the
        variance of the difference, not of each method alone. When `a == b` it is `[0, 0]`.

    Index matrices are drawn in blocks of about 4M entries, so memory stays bounded for any U.
    """
    _check_level(level)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"a and b must be 1-D of equal length, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("a and b are empty")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("a or b has NaN or infinite values")
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot}")
    d = a - b
    means = _resampled_means(d, int(n_boot), np.random.default_rng(seed))
    lo, hi = np.quantile(means, [(1.0 - level) / 2, (1.0 + level) / 2])
    return {"mean": float(d.mean()), "lo": float(lo), "hi": float(hi)}


def _check_n_boot(n_boot: int) -> int:
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot}")
    return int(n_boot)


def _resampled_means(d: np.ndarray, n_rows: int, rng: np.random.Generator) -> np.ndarray:
    """`n_rows` bootstrap means of `d`: each the mean of `d.size` entries drawn with replacement.
    Index matrices are drawn in blocks of about 4M entries, so memory stays bounded for any size."""
    n = d.size
    block = max(1, _BOOTSTRAP_BLOCK_ELEMENTS // n)
    means = np.empty(n_rows, dtype=np.float64)
    for start in range(0, n_rows, block):
        stop = min(start + block, n_rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = d[idx].mean(axis=1)
    return means


def _seed_differences(a_seeds: Sequence, b_seeds: Sequence) -> list[np.ndarray]:
    """Per seed, the per-user differences `a - b` (checked: 1-D, equal length, finite, non-empty)."""
    if len(a_seeds) != len(b_seeds) or len(a_seeds) == 0:
        raise ValueError(f"a_seeds and b_seeds must be non-empty and of equal length, got "
                         f"{len(a_seeds)} and {len(b_seeds)} seeds")
    out = []
    for i, (a, b) in enumerate(zip(a_seeds, b_seeds)):
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if a.ndim != 1 or a.shape != b.shape or a.size == 0:
            raise ValueError(f"seed {i}: a and b must be 1-D, non-empty, of equal length, got {a.shape} and {b.shape}")
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            raise ValueError(f"seed {i}: a or b has NaN or infinite values")
        out.append(a - b)
    return out


def two_stage_bootstrap(
    a_seeds: Sequence[Sequence[float] | np.ndarray],
    b_seeds: Sequence[Sequence[float] | np.ndarray],
    n_boot: int = 2000,
    rng: np.random.Generator | None = None,
    level: float = 0.95,
) -> dict[str, float]:
    """Two-stage (hierarchical) percentile bootstrap of a paired difference over seeds and users.

    Args:
        a_seeds: per seed, `[U_s]` per-user metric of the method.
        b_seeds: per seed, the same metric of the baseline on the same users, in the same order.
        n_boot: bootstrap resamples.
        rng: the numpy Generator that draws the resamples (None: `default_rng(0)`), so intervals
            are reproducible.
        level: coverage of the interval.

    Returns:
        `{"mean", "lo", "hi"}`. With `d_s = a_s - b_s` and `n` seeds, the point estimate is the
        mean over seeds of the per-seed means, `(1/n) sum_s mean(d_s)`: a seed (one world, π0 and
        training run) is the replicate, each weighs the same whatever its number of users (which
        differs for user subsets such as the high-reward targets), and it is the centre of the
        t interval over seed means (`paired_delta`); with equal user counts it equals the pooled
        mean. Each resample `m` draws `n` seeds with replacement and, for each drawn seed
        (independently for repeated draws), its `U_s` users with replacement;
        `D_m = (1/n) sum_k mean(d_{s_k}[users_k])`. `lo`/`hi` are the `(1 - level)/2` and
        `(1 + level)/2` quantiles of `{D_m}`.

    With few seeds this interval is too narrow (see the module docstring: 10 distinct seed
    resamples for 3 seeds, variance biased down by (n−1)/n, no t quantile); `paired_delta`
    reports the t over seed means instead.
    """
    _check_level(level)
    n_boot = _check_n_boot(n_boot)
    d = _seed_differences(a_seeds, b_seeds)
    rng = np.random.default_rng(0) if rng is None else rng
    n = len(d)
    drawn = rng.integers(0, n, size=(n_boot, n))  # stage 1: the seeds of each resample
    totals = np.zeros(n_boot, dtype=np.float64)
    for j, dj in enumerate(d):  # stage 2: one user resample per draw of seed j
        count = (drawn == j).sum(axis=1)
        means = _resampled_means(dj, int(count.sum()), rng)
        totals += np.bincount(np.repeat(np.arange(n_boot), count), weights=means, minlength=n_boot)
    lo, hi = np.quantile(totals / n, [(1.0 - level) / 2, (1.0 + level) / 2])
    return {"mean": float(np.mean([x.mean() for x in d])), "lo": float(lo), "hi": float(hi)}


def paired_delta(
    a_seeds: Sequence[Sequence[float] | np.ndarray],
    b_seeds: Sequence[Sequence[float] | np.ndarray],
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """The delta `a − b` the tables report, with the interval that counts seeds and users.

    Returns `{"mean", "lo", "hi", "interval", "per_seed"}`: `per_seed` the per-seed mean
    differences `mean(d_s)`; `mean` their mean.
    - n ≥ 2 seeds: `mean_ci(per_seed)`, the Student-t interval over the seed means with df = n − 1
      (`interval`: "t over seed means (n=3)"). Chosen over `two_stage_bootstrap` because with 3-5
      seeds the bootstrap's interval is too narrow (module docstring), and over the pooled
      bootstrap because that one ignores the seed variance.
    - one seed: `paired_bootstrap` over its users (`interval`: "bootstrap over users (1 seed)"):
      the only variance that one seed shows; it says nothing about another training seed.
    """
    d = _seed_differences(a_seeds, b_seeds)
    per_seed = [float(x.mean()) for x in d]
    if len(d) == 1:
        b = paired_bootstrap(d[0], np.zeros_like(d[0]), n_boot=n_boot, seed=seed, level=level)
        return {**b, "interval": "bootstrap over users (1 seed)", "per_seed": per_seed}
    mean, lo, hi = mean_ci(per_seed, level)
    return {"mean": mean, "lo": lo, "hi": hi, "interval": f"t over seed means (n={len(d)})", "per_seed": per_seed}
