"""From per-seed comparison results to the numbers a table shows: means, intervals, deltas.

A per-seed result is what `compare.compare_methods` returns: per-user arrays for every policy
(label), all evaluated on the same test users. For a metric of a label:

- the value: the mean over seeds with a Student-t 95% interval when there are several seeds; with
  one seed, a bootstrap interval over users;
- the delta against a baseline label: the paired bootstrap over all (seed, user) pairs of the
  per-user difference (each user's pair kept together), plus how many seeds' mean differences
  are positive (the bootstrap over users does not see seed-to-seed training noise; the sign count
  does).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from recalign.eval.stats import mean_ci, paired_bootstrap

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


def value_stats(seeds: list[dict[str, Any]], label: str, metric: str) -> dict[str, float] | None:
    vals = [per_user(r, label, metric) for r in seeds]
    if any(v is None or v.size == 0 for v in vals):
        return None
    if len(vals) > 1:
        return _interval(*mean_ci([float(v.mean()) for v in vals]))
    b = paired_bootstrap(vals[0], np.zeros_like(vals[0]))
    return _interval(b["mean"], b["lo"], b["hi"])


def delta_stats(seeds: list[dict[str, Any]], label: str, base: str, metric: str,
                base_seeds: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """`label − base` on `metric`; `base_seeds` when the baseline lives in other results (same
    users, e.g. a shared π0 run)."""
    base_seeds = base_seeds or seeds
    a = [per_user(r, label, metric) for r in seeds]
    b = [per_user(r, base, metric) for r in base_seeds]
    if any(v is None or v.size == 0 for v in a + b):
        return None
    out: dict[str, Any] = dict(paired_bootstrap(np.concatenate(a), np.concatenate(b)))
    out["seeds_positive"] = int(sum(float(x.mean()) > float(y.mean()) for x, y in zip(a, b)))
    out["seeds"] = len(a)
    return out


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
