"""Facts about a dataset (`recalign data stats`): sizes, rewards, sequence lengths, time span,
duplicates, timestamp ties and how many leave-one-out targets there are.

Definitions (rows are those of the `Interactions` table, sorted by user, time, file row):

- `users`, `items`: distinct users and items that occur in the interactions (a catalog may list
  more items; `catalog_items` is then reported too).
- `reward_histogram`: value -> count when there are at most 20 distinct rewards, else 10 equal
  bins `[lo, hi)` (the last one closed) -> count.
- `sequence_length`: quantiles of interactions per user (linear interpolation).
- `exact_duplicates`: rows that repeat an earlier row exactly (user, item, time, reward), as
  counted in the file (also when `duplicates="drop"` removed them).
- `repeated_user_item_pairs`: distinct (user, item) pairs that occur more than once;
  `repeat_rows` counts the rows beyond each pair's first.
- `tied_timestamp_rows`: rows that share their (user, timestamp) with another row of the same
  user (their order comes from the file row).
- `loo_test_targets`: users with at least `min_user_interactions` (3) interactions: leave-one-out
  holds out each one's last row for test, the one before for validation.
- `high_reward_test_targets`: those test targets whose reward is >= `high_reward_threshold`
  (`data.high_reward`, 4.5 by default, the paper's high-rating threshold): the targets of the
  `high/...` metrics, and what the paper counts (1,530 on ML-1M; docs/data.md says why a count may
  differ). "Last" is by (timestamp, file row), so a timestamp tie is decided by the file's order.
  `loo_high_reward_targets` is the same number under its earlier name.
- `data_summary` (added by `recalign data stats`, under the run's split settings): what
  preparing the data drops and keeps, and how many held-out targets repeat a seen item (see
  `summary.py`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

from recalign.data.schema import Interactions

_HIST_MAX_DISTINCT = 20
_HIST_BINS = 10


def dataset_stats(inter: Interactions, high_reward: float = 4.5, min_user_interactions: int = 3) -> dict[str, Any]:
    """The facts above as a JSON-ready dict (plain Python numbers and strings). `high_reward` and
    `min_user_interactions` are `data.high_reward` and `data.min_user_interactions`."""
    n = len(inter)
    user, item, ts, rw = inter.user, inter.item, inter.timestamp, inter.reward
    counts = np.bincount(user, minlength=inter.n_users)
    counts = counts[counts > 0]
    items_seen = int(np.count_nonzero(np.bincount(item, minlength=inter.n_items))) if n else 0
    out: dict[str, Any] = {
        "source": inter.source,
        "users": int(counts.size),
        "items": items_seen,
        "interactions": n,
    }
    if inter.n_items != items_seen:
        out["catalog_items"] = inter.n_items
    out["reward"] = _reward_summary(rw)
    out["reward_histogram"] = _histogram(rw)
    if inter.propensity is not None and n:
        p = inter.propensity.astype(np.float64)
        out["propensity"] = {"min": _f32(p.min()), "max": _f32(p.max()), "mean": float(p.mean())}
    out["sequence_length"] = _quantiles(counts)
    out["time_span"] = _time_span(ts)

    exact = inter.meta.get("exact_duplicates")
    out["exact_duplicates"] = int(exact) if exact is not None else _exact_duplicates(inter)
    out["duplicates_policy"] = inter.meta.get("duplicates_policy", "keep")
    pair = user * np.int64(max(inter.n_items, 1)) + item
    _, pair_counts = np.unique(pair, return_counts=True)
    out["repeated_user_item_pairs"] = int(np.count_nonzero(pair_counts > 1))
    out["repeat_rows"] = int(n - pair_counts.size)
    out["tied_timestamp_rows"] = _tied_rows(user, ts)

    out.update(_high_reward_targets(inter, high_reward, min_user_interactions))
    return out


def _high_reward_targets(inter: Interactions, high_reward: float, min_user_interactions: int) -> dict[str, Any]:
    """Leave-one-out test targets (each kept user's last row: rows are sorted by user, time, file
    row) and those with reward >= `high_reward`."""
    offsets = inter.user_offsets()
    eligible = np.diff(offsets) >= max(3, min_user_interactions)
    last = offsets[1:][eligible] - 1
    high = int(np.count_nonzero(inter.reward[last] >= high_reward))
    return {"loo_test_targets": int(eligible.sum()), "high_reward_test_targets": high,
            "high_reward_threshold": float(high_reward), "loo_high_reward_targets": high}


def _reward_summary(rw: np.ndarray) -> dict[str, float]:
    if rw.size == 0:
        return {"min": float("nan"), "max": float("nan"), "mean": float("nan")}
    x = rw.astype(np.float64)
    return {"min": _f32(x.min()), "max": _f32(x.max()), "mean": float(x.mean()), "std": float(x.std())}


def _f32(v: float) -> float:
    """A float32 value as the shortest decimal that rounds to it (0.0125, not 0.01250000018)."""
    return float(str(np.float32(v)))


def _fmt_value(v: float) -> str:
    return f"{v:g}"


def _histogram(rw: np.ndarray) -> dict[str, int]:
    if rw.size == 0:
        return {}
    values, counts = np.unique(rw, return_counts=True)
    if values.size <= _HIST_MAX_DISTINCT:
        return {_fmt_value(float(v)): int(c) for v, c in zip(values, counts)}
    lo, hi = float(values[0]), float(values[-1])
    edges = np.linspace(lo, hi, _HIST_BINS + 1)
    hist, _ = np.histogram(rw.astype(np.float64), bins=edges)
    out = {}
    for i, c in enumerate(hist):
        close = "]" if i == _HIST_BINS - 1 else ")"
        out[f"[{edges[i]:.4g}, {edges[i + 1]:.4g}{close}"] = int(c)
    return out


def _quantiles(counts: np.ndarray) -> dict[str, float]:
    if counts.size == 0:
        return {}
    q = np.quantile(counts.astype(np.float64), [0.25, 0.5, 0.75, 0.9])
    return {
        "min": int(counts.min()), "p25": float(q[0]), "median": float(q[1]), "p75": float(q[2]),
        "p90": float(q[3]), "max": int(counts.max()), "mean": float(counts.mean()),
    }


def _iso(seconds: int) -> str:
    try:
        t = dt.datetime.fromtimestamp(int(seconds), tz=dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return "out of range"
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _time_span(ts: np.ndarray) -> dict[str, Any]:
    if ts.size == 0:
        return {}
    first, last = int(ts.min()), int(ts.max())
    return {"first": _iso(first), "last": _iso(last), "first_seconds": first, "last_seconds": last,
            "days": round((last - first) / 86_400, 2)}


def _tied_rows(user: np.ndarray, ts: np.ndarray) -> int:
    """Rows sharing (user, timestamp) with another row; rows are sorted by (user, timestamp)."""
    if user.size < 2:
        return 0
    same = (user[1:] == user[:-1]) & (ts[1:] == ts[:-1])
    tied = np.zeros(user.size, dtype=bool)
    tied[1:] |= same
    tied[:-1] |= same
    return int(tied.sum())


def _exact_duplicates(inter: Interactions) -> int:
    from recalign.data.schema import _exact_duplicate_mask

    return int(_exact_duplicate_mask(inter.user, inter.item, inter.timestamp, inter.reward).sum())


def format_stats(stats: dict[str, Any]) -> str:
    """A human-readable table of `dataset_stats` output."""
    rows: list[tuple[str, str]] = []

    def add(k: str, v: Any) -> None:
        rows.append((k, v if isinstance(v, str) else _num(v)))

    add("source", stats.get("source", ""))
    for k in ("users", "items", "catalog_items", "interactions"):
        if k in stats:
            add(k, stats[k])
    r = stats.get("reward", {})
    add("reward min / mean / max", f"{_num(r.get('min'))} / {_num(r.get('mean'))} / {_num(r.get('max'))}")
    if "propensity" in stats:
        p = stats["propensity"]
        add("propensity min / mean / max", f"{_num(p['min'])} / {_num(p['mean'])} / {_num(p['max'])}")
    s = stats.get("sequence_length", {})
    if s:
        add("sequence length min/p25/median/p75/p90/max",
            " / ".join(_num(s[k]) for k in ("min", "p25", "median", "p75", "p90", "max")))
    t = stats.get("time_span", {})
    if t:
        add("time span", f"{t['first']} .. {t['last']} ({_num(t['days'])} days)")
    for k in ("exact_duplicates", "repeated_user_item_pairs", "repeat_rows", "tied_timestamp_rows",
              "loo_test_targets"):
        if k in stats:
            add(k.replace("_", " "), stats[k])
    high = stats.get("high_reward_test_targets", stats.get("loo_high_reward_targets"))
    if high is not None:
        n = stats.get("loo_test_targets", 0)
        add(f"high-reward test targets (reward >= {_num(stats['high_reward_threshold'])})",
            f"{_num(high)} ({100 * high / n if n else 0:.1f}% of the test targets)")
    if "data_summary" in stats:
        from recalign.data.summary import format_rows

        rows += [(k, v if isinstance(v, str) else _num(v)) for k, v in format_rows(stats["data_summary"])]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    hist = stats.get("reward_histogram", {})
    if hist:
        total = max(sum(hist.values()), 1)
        top = max(hist.values()) or 1
        lines.append("reward histogram:")
        kw = max(len(k) for k in hist)
        for k, c in hist.items():
            bar = "#" * max(1 if c else 0, round(30 * c / top))
            lines.append(f"  {k:>{kw}}  {c:>12,}  {100 * c / total:5.1f}%  {bar}")
    return "\n".join(lines)


def _num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e6 else f"{v:,.0f}"
    return str(v)
