"""From per-seed comparison results to the numbers a table shows: means, intervals, deltas.

A per-seed result is what `compare.compare_methods` returns: per-user arrays for every policy
(label), all evaluated on the same test users. For a metric of a label:

- the value: the mean over seeds with a Student-t 95% interval when there are several seeds; with
  one seed, a bootstrap interval over users; `per_seed` holds each seed's mean;
- the delta against a baseline label (`delta_stats`, from `eval.stats.paired_delta`): the mean
  per-user difference on the same users, with the Student-t 95% interval over the per-seed mean
  differences (df = n − 1) when there are several seeds, so that both training seeds and users
  count; with one seed, the paired bootstrap over its users. `interval` names which; `per_seed`
  holds each seed's mean difference, `seeds_positive` how many are positive; with several seeds,
  `bootstrap_two_stage` holds the two-stage (seeds, then users) bootstrap interval for reference
  (too narrow with few seeds: see `eval/stats.py`).

`verdict(interval, direction)` reads a claim off an interval (never off a point estimate), and
`seed_interval` gives the interval of any per-seed quantity (e.g. the difference of two methods'
changes, paired by seed). `upper_frontier` is the reward–KL frontier of a set of (KL, value)
points, `frontier_height` its height at a KL budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from recalign.eval.stats import mean_ci, paired_bootstrap, paired_delta, two_stage_bootstrap

METRICS = ("true_value", "ndcg@10", "high/ndcg@10", "judge_value")


def per_user(res: dict[str, Any], label: str, metric: str) -> np.ndarray | None:
    """Per-user values of `metric` for `label` in one seed's result (None when not measured)."""
    if metric == "true_value":
        return res["true_value"].get(label)
    if metric == "ndcg@10":
        return res["ndcg@10"].get(label)
    if metric == "high/ndcg@10":
        v = res["ndcg@10"].get(label)
        return None if v is None else v[np.asarray(res["high"], dtype=bool)]
    if metric == "judge_value":
        v = res.get("judge", {}).get(label)
        return None if v is None else v.mean(axis=0)
    raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")


def _interval(mean: float, lo: float, hi: float) -> dict[str, float]:
    return {"mean": float(mean), "lo": float(lo), "hi": float(hi)}


def value_stats(seeds: list[dict[str, Any]], label: str, metric: str) -> dict[str, Any] | None:
    vals = [per_user(r, label, metric) for r in seeds]
    if any(v is None or v.size == 0 for v in vals):
        return None
    per_seed = [float(v.mean()) for v in vals]
    if len(vals) > 1:
        return {**_interval(*mean_ci(per_seed)), "per_seed": per_seed}
    b = paired_bootstrap(vals[0], np.zeros_like(vals[0]))
    return {**_interval(b["mean"], b["lo"], b["hi"]), "per_seed": per_seed}


def delta_stats(seeds: list[dict[str, Any]], label: str, base: str, metric: str,
                base_seeds: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """`label − base` on `metric` (`eval.stats.paired_delta`: a t interval over the seeds' mean
    differences, a bootstrap over users with one seed), with `seeds_positive` of `seeds`;
    `base_seeds` when the baseline lives in other results (same users, e.g. a shared π0 run)."""
    base_seeds = base_seeds or seeds
    a = [per_user(r, label, metric) for r in seeds]
    b = [per_user(r, base, metric) for r in base_seeds]
    if any(v is None or v.size == 0 for v in a + b):
        return None
    out: dict[str, Any] = paired_delta(a, b)
    out["seeds_positive"] = int(sum(float(x.mean()) > float(y.mean()) for x, y in zip(a, b)))
    out["seeds"] = len(a)
    if len(a) > 1:
        two = two_stage_bootstrap(a, b, rng=np.random.default_rng(0))
        out["bootstrap_two_stage"] = {"lo": two["lo"], "hi": two["hi"]}
    return out


def seed_interval(per_seed: list[float]) -> dict[str, Any]:
    """The mean of a per-seed quantity with its Student-t 95% interval over the seeds (df = n − 1),
    e.g. per seed the difference between two methods' changes; one seed: no interval (NaN)."""
    mean, lo, hi = mean_ci(per_seed)
    n = len(per_seed)
    return {"mean": mean, "lo": lo, "hi": hi, "per_seed": list(per_seed),
            "interval": f"t over seed means (n={n})" if n > 1 else "one seed: no interval"}


def interval_phrase(deltas: list[dict[str, Any]]) -> str:
    """What the 95% intervals of these deltas are, for captions and footers ("95% <phrase>"). A
    delta without `interval` was written before the intervals counted seeds: the pooled bootstrap."""
    phrases = []
    for d in deltas:
        kind = d.get("interval", "")
        phrase = ("Student-t interval over the seeds' mean differences (df = seeds − 1)"
                  if kind.startswith("t over seed means") else
                  "paired bootstrap interval over users" if kind.startswith("bootstrap over users") else
                  kind or "paired bootstrap interval over (seed, user) pairs")
        if phrase not in phrases:
            phrases.append(phrase)
    return " or ".join(phrases) or "interval"


def verdict(interval: dict[str, float] | None, direction: str = "positive") -> str:
    """A claim read off a 95% interval of a difference, never off its point estimate: "holds" when
    the interval lies entirely on the claimed side of 0 (`direction` "positive": lo > 0;
    "negative": hi < 0), "contradicted" when entirely on the other side, "inconclusive" when it
    covers 0 (or touches it, or is undefined: NaN with one seed); "not measured" for None."""
    if direction not in ("positive", "negative"):
        raise ValueError(f"direction must be 'positive' or 'negative', got {direction!r}")
    if interval is None:
        return "not measured"
    lo, hi = interval["lo"], interval["hi"]
    if math.isnan(lo) or math.isnan(hi):
        return "inconclusive"
    sign = 1.0 if direction == "positive" else -1.0
    lo, hi = sorted((sign * lo, sign * hi))
    if lo > 0:
        return "holds"
    if hi < 0:
        return "contradicted"
    return "inconclusive"



def upper_frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The monotone upper envelope over KL of `(kl, value)` points: the points no other point
    beats with a KL as small or smaller, sorted by KL (values strictly rising). Its height at
    KL x is the best value of the points with KL ≤ x."""
    out: list[tuple[float, float]] = []
    for kl, v in sorted(points, key=lambda p: (p[0], -p[1])):
        if not out or v > out[-1][1]:
            out.append((float(kl), float(v)))
    return out


def frontier_height(points: Sequence[tuple[float, float]], below: float) -> float | None:
    """The best value among the points with KL < `below` (None when there is none)."""
    vals = [v for kl, v in points if kl < below]
    return max(vals) if vals else None


def normalised_values(seeds: list[dict[str, Any]], label: str) -> list[float] | None:
    """Per seed, `(V(π) − V(π0)) / (V(oracle) − V(π0))` (simulator only; π0 = `pretrained`)."""
    out = []
    for r in seeds:
        v, v0, vo = r["true_value"].get(label), r["true_value"].get("pretrained"), r.get("oracle_value")
        if v is None or v0 is None or vo is None or vo.mean() <= v0.mean():
            return None
        out.append(float((v.mean() - v0.mean()) / (vo.mean() - v0.mean())))
    return out or None


def label_summary(seeds: list[dict[str, Any]], label: str, base: str | None = "sft",
                  metrics: tuple[str, ...] = METRICS) -> dict[str, Any]:
    """Every available metric of `label` with its interval, and its delta against `base`."""
    out: dict[str, Any] = {}
    for metric in metrics:
        v = value_stats(seeds, label, metric)
        if v is None:
            continue
        out[metric] = v
        if base is not None and label != base:
            d = delta_stats(seeds, label, base, metric)
            if d is not None:
                out.setdefault("delta", {})[metric] = d
    norm = normalised_values(seeds, label)
    if norm is not None:
        out["normalised_value"] = _interval(*mean_ci(norm)) if len(norm) > 1 else _interval(norm[0], math.nan, math.nan)
    spreads = [r["metrics"][label].get("judge_spread") for r in seeds if label in r["metrics"]]
    if spreads and all(s is not None for s in spreads):
        out["judge_spread"] = float(np.mean(spreads))
    ess = [r.get("setup", {}).get(label, {}).get("ess") for r in seeds]
    if ess and all(isinstance(e, (int, float)) for e in ess):
        out["ess"] = float(np.mean(ess))
    return out


def fmt(x: float | None, digits: int = 3, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def fmt_ess(x: float | None) -> str:
    """An effective sample size, which spans orders of magnitude: two significant digits."""
    return "—" if x is None or math.isnan(x) else f"{x:.2g}"


def fmt_interval(d: dict[str, float] | None, digits: int = 3, sign: bool = False) -> str:
    if d is None:
        return "—"
    if math.isnan(d["lo"]):
        return fmt(d["mean"], digits, sign)
    return f"{fmt(d['mean'], digits, sign)} [{fmt(d['lo'], digits, sign)}, {fmt(d['hi'], digits, sign)}]"
