"""Figures (matplotlib, PNG) and markdown tables for `sweep`, `reproduce` and `demo`.

Every figure is drawn from the JSON-able summaries of `summary.py`/`sweep.py` (plus the
`trace.jsonl` files of traced runs), so a report can be redrawn from `results.json`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from recalign.experiments.summary import fmt_ess, fmt_interval

METRIC_NAMES = {"true_value": "true value of the top-10 (oracle)", "ndcg@10": "NDCG@10",
                "high/ndcg@10": "NDCG@10 on high-reward targets", "judge_value": "judge ensemble's reward of the top-10"}
COLORS = {"sft": "#555555", "linear_sft": "#1f77b4", "exp_sft": "#d62728", "ppo": "#2ca02c", "dpo": "#9467bd",
          "pretrained": "#aaaaaa"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _color(name: str, i: int) -> str:
    return COLORS.get(name.split("[")[0], f"C{i % 10}")


def _as_float(values: list[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def plot_sweep(summary: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """The metric against the swept value, one line per method with its 95% band; fixed methods
    as horizontal lines; an ESS panel beside it when a series has weights (exp_sft). Where every
    point has a paired delta against the baseline, the delta is drawn (its interval is what a
    comparison needs: seeds that are different worlds widen the raw values' intervals)."""
    plt = _plt()
    metric, values, base = summary["metric"], summary["values"], summary.get("baseline", "sft")
    xs = _as_float(values)
    x = xs if xs is not None else list(range(len(values)))
    with_ess = any("ess" in p for s in summary["series"].values() for p in s)
    shown = {n: pts for n, pts in summary["series"].items() if n != base}
    relative = bool(shown) and all(metric in p.get("delta", {}) for pts in shown.values() for p in pts)

    def stat(point: dict[str, Any]) -> dict[str, float] | None:
        return point.get("delta", {}).get(metric) if relative else point.get(metric)

    fig, axes = plt.subplots(1, 2 if with_ess else 1, figsize=(11 if with_ess else 6.5, 4.2), squeeze=False)
    ax = axes[0][0]
    for i, (name, pts) in enumerate((shown if relative else summary["series"]).items()):
        ok = [j for j, p in enumerate(pts) if stat(p) is not None]
        if not ok:
            continue
        ax.plot([x[j] for j in ok], [stat(pts[j])["mean"] for j in ok], "o-", color=_color(name, i), label=name)
        lo = [stat(pts[j])["lo"] for j in ok]
        hi = [stat(pts[j])["hi"] for j in ok]
        if not any(math.isnan(v) for v in lo + hi):
            ax.fill_between([x[j] for j in ok], lo, hi, color=_color(name, i), alpha=0.15)
    for i, (name, s) in enumerate(summary.get("fixed", {}).items()):
        v = stat(s) if name != base or not relative else {"mean": 0.0}
        if v is not None:
            ax.axhline(v["mean"], ls="--", lw=1, color=_color(name, i + 5), label=f"{name} (fixed)")
    if relative and not summary.get("fixed"):
        ax.axhline(0.0, ls="--", lw=1, color=_color(base, 0), label=base)
    log_x = xs is not None and min(xs) > 0 and max(xs) / min(xs) >= 10
    for a in axes[0]:
        if log_x:
            a.set_xscale("log")
            a.minorticks_off()
        a.set_xticks(x, values)
        a.set_xlabel(summary["param"])
        a.grid(alpha=0.3)
    ax.set_ylabel(("Δ vs " + base + ": " if relative else "") + METRIC_NAMES.get(metric, metric))
    ax.legend(fontsize=8)
    ax.set_title(title or f"{METRIC_NAMES.get(metric, metric)} vs {summary['param']} "
                 f"({summary['seeds']} seed(s), 95% bands)", fontsize=10)
    if with_ess:
        ea = axes[0][1]
        for i, (name, pts) in enumerate(summary["series"].items()):
            ok = [j for j, p in enumerate(pts) if "ess" in p]
            if ok:
                ea.plot([x[j] for j in ok], [pts[j]["ess"] for j in ok], "s-", color=_color(name, i), label=name)
        ea.set_ylabel("ESS of the training weights, (Σw)²/(n·Σw²)")
        ea.set_yscale("log")  # λ spans orders of magnitude of ESS (1e-4 with heavy-tailed rewards)
        ea.set_ylim(top=1.5)
        ea.legend(fontsize=8)
        ea.set_title("effective sample size", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def read_trace(run_dir: str | Path) -> list[dict[str, Any]]:
    p = Path(run_dir) / "trace.jsonl"
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def unique_traces(traces: dict[str, list[list[dict[str, Any]]]]) -> dict[str, list[list[dict[str, Any]]]]:
    """The series with at least one non-empty trace, each set of runs once (the same runs may be
    recorded under two names, e.g. a main run and the noise sweep's point at the same scale)."""
    kept: dict[str, list[list[dict[str, Any]]]] = {}
    for k, v in traces.items():
        v = [t for t in v if t]
        if v and v not in kept.values():
            kept[k] = v
    return kept


def plot_traces(traces: dict[str, list[list[dict[str, Any]]]], path: str | Path, title: str = "") -> Path | None:
    """Reward hacking: along post-training, the change since step 0 of the reward model's score of
    the policy's top-10 (left) and of its true value (right; NDCG@10 on real data); one line per
    series, the mean over seeds (thin lines: each seed). Identical series are drawn once."""
    traces = unique_traces(traces)
    if not traces:
        return None
    plt = _plt()
    right = "true_value" if all("true_value" in t[0] for v in traces.values() for t in v) else "ndcg@10"
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (name, runs) in enumerate(traces.items()):
        c = f"C{i % 10}"
        for key, ax in (("rm_value", a1), (right, a2)):
            series = [[r.get(key) for r in t] for t in runs]
            if any(v is None for s in series for v in s):
                continue
            series = [[v - s[0] for v in s] for s in series]  # the change since step 0: comparable across runs
            n = min(len(s) for s in series)
            steps = [r["step"] for r in runs[0][:n]]
            for t, s in zip(runs, series):
                ax.plot([r["step"] for r in t], s, color=c, alpha=0.25, lw=0.8)
            ax.plot(steps, np.mean([s[:n] for s in series], axis=0), "o-", color=c, ms=3, label=name)
    a1.set_ylabel("change in the reward model's score of the top-10")
    a2.set_ylabel("change in the " + METRIC_NAMES.get(right, right))
    for ax in (a1, a2):
        ax.axhline(0.0, color="black", lw=0.6)
        ax.set_xlabel("post-training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or "what the policy is trained against (left) vs what it achieves (right)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_methods(tables: dict[str, dict[str, Any]], path: str | Path, metrics: dict[str, str]) -> Path:
    """One panel per dataset: each method's paired difference from `sft` on that dataset's
    primary metric (`metrics[dataset]`) with its 95% interval."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(tables), figsize=(4.6 * len(tables), 3.6), squeeze=False)
    for ax, (ds, table) in zip(axes[0], tables.items()):
        metric = metrics[ds]
        names = [n for n, s in table.items() if metric in s.get("delta", {})]
        d = [table[n]["delta"][metric] for n in names]
        y = np.arange(len(names))
        ax.barh(y, [v["mean"] for v in d], color=[_color(n, i) for i, n in enumerate(names)], alpha=0.8)
        ax.errorbar([v["mean"] for v in d], y, xerr=[[v["mean"] - v["lo"] for v in d], [v["hi"] - v["mean"] for v in d]],
                    fmt="none", ecolor="black", capsize=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_xlabel(f"Δ {METRIC_NAMES.get(metric, metric)} vs sft")
        ax.set_title(ds, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def methods_markdown(table: dict[str, Any], metrics: list[str], digits: int = 4) -> str:
    """A markdown table: per method, each metric's mean [95% interval] and its Δ vs sft
    [paired interval] (with the number of seeds where the delta is positive)."""
    with_delta = {m: any(m in s.get("delta", {}) for s in table.values()) for m in metrics}
    head = ["method"] + [c for m in metrics for c in ([m] + ([f"Δ {m} vs sft"] if with_delta[m] else []))]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in table.items():
        cells = [name]
        for m in metrics:
            cells.append(fmt_interval(s.get(m), digits))
            if with_delta[m]:
                d = s.get("delta", {}).get(m)
                cells.append("—" if d is None else
                             f"{fmt_interval(d, digits, sign=True)} ({d['seeds_positive']}/{d['seeds']})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep_markdown(summary: dict[str, Any], digits: int = 4) -> str:
    """A markdown table of a sweep: rows = values, columns = each series' primary metric and ESS."""
    metric = summary["metric"]
    names = list(summary["series"])
    has_ess = {n: any("ess" in p for p in summary["series"][n]) for n in names}
    head = [summary["param"]] + [c for n in names for c in ([n] + (["ESS"] if has_ess[n] else []))]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for j, v in enumerate(summary["values"]):
        cells = [str(v)]
        for n in names:
            p = summary["series"][n][j]
            cells.append(fmt_interval(p.get(metric), digits))
            if has_ess[n]:
                cells.append(fmt_ess(p.get("ess")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
