"""Uncertainty of reported numbers: t intervals over seeds, paired bootstrap over users.

- `mean_ci(values)`: the mean of a metric over seeds with a Student-t interval
  (`mean ± t_{(1+level)/2, n-1} · s / sqrt(n)`).
- `paired_bootstrap(a, b)`: the mean per-user difference between a method and a baseline
  evaluated on the same users, with a percentile bootstrap interval (users resampled with
  replacement, the pairing kept).

No scipy: `t_quantile` inverts the exact Student-t CDF for integer degrees of freedom
(Abramowitz & Stegun 26.7.3-4) and uses the Cornish-Fisher expansion (A&S 26.7.5) beyond 1000.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

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
    n_boot = int(n_boot)
    d = a - b
    n = d.size
    rng = np.random.default_rng(seed)
    block = max(1, _BOOTSTRAP_BLOCK_ELEMENTS // n)
    means = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, block):
        stop = min(start + block, n_boot)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = d[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1.0 - level) / 2, (1.0 + level) / 2])
    return {"mean": float(d.mean()), "lo": float(lo), "hi": float(hi)}
