"""Figures (matplotlib, PNG) and markdown tables for `sweep`, `reproduce`, `demo` and `contest`.

Every figure is drawn from the JSON-able summaries of `summary.py`/`sweep.py` (plus the
`trace.jsonl` files of traced runs), so a report can be redrawn from `results.json`. Every line
has a legend entry, every figure a caption saying what its bars or bands are, and the title and
caption are also stored in the PNG's metadata (`Title`, `Description`: alt text, and what tests
read).
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from recalign.experiments.summary import fmt_ess, fmt_interval, interval_phrase, upper_frontier

METRIC_NAMES = {"true_value": "true value of the top-10 (oracle)", "ndcg@10": "NDCG@10",
                "high/ndcg@10": "NDCG@10 on high-reward targets", "judge_value": "judge ensemble's reward of the top-10"}
COLORS = {"sft": "#555555", "linear_sft": "#1f77b4", "exp_sft": "#d62728", "ppo": "#2ca02c", "dpo": "#9467bd",
          "pretrained": "#aaaaaa", "filtered_sft": "#ff7f0e", "ipo": "#8c564b"}


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


def _finish(fig, path: str | Path, title: str, caption: str, legend_of=None) -> Path:
    """Title on top; under the panels the legend of the axes `legend_of` (shared by every panel)
    and the caption (wrapped); laid out, saved with title and caption in the PNG's metadata, and
    closed."""
    height = fig.get_figheight()
    lines = textwrap.wrap(caption, int(fig.get_figwidth() * 17)) if caption else []
    bottom = (0.03 + 0.14 * len(lines)) / height if lines else 0.0
    if title:
        fig.suptitle(title, fontsize=10)
    if lines:
        fig.text(0.5, 0.01, "\n".join(lines), ha="center", va="bottom", fontsize=8, color="#333333")
    if legend_of is not None:
        handles, labels = legend_of.get_legend_handles_labels()
        ncol = 1 if max(map(len, labels)) > 60 else 2
        fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, bottom), ncol=ncol, fontsize=8,
                   frameon=False)
        bottom += (0.1 + 0.19 * math.ceil(len(labels) / ncol)) / height
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=110, metadata={"Title": title, "Description": caption})
    _plt().close(fig)
    return Path(path)


def band_caption(summary: dict[str, Any], relative: bool) -> str:
    """What the bands of a sweep figure are (see summary.py: values over seeds, deltas paired)."""
    n, base, metric = summary["seeds"], summary.get("baseline", "sft"), summary["metric"]
    if relative:
        points = [p for pts in summary["series"].values() for p in pts] + list(summary.get("fixed", {}).values())
        deltas = [p["delta"][metric] for p in points if metric in p.get("delta", {})]
        return (f"Δ: the mean per-user difference from {base} on the same test contexts; bands: 95% "
                f"{interval_phrase(deltas)}, {n} seed(s).")
    if n > 1:
        return f"Lines: the mean over {n} seeds; bands: 95% Student-t interval over the seeds."
    return "Lines: one seed; bands: 95% bootstrap interval over users."


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
        ax.axhline(0.0, ls="--", lw=1, color=_color(base, 0), label=f"{base} (Δ = 0)")
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
    ax.set_title(f"{METRIC_NAMES.get(metric, metric)} vs {summary['param']} ({summary['seeds']} seed(s))",
                 fontsize=10)
    caption = band_caption(summary, relative) + (" Dashed: methods run once, at the base config."
                                                 if summary.get("fixed") else "")
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
        caption += " Right: the effective sample size of the weights (mean over seeds; 1 = uniform)."
    return _finish(fig, path, title, caption)


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


def trace_change(runs: list[list[dict[str, Any]]], key: str) -> float | None:
    """The change of `key` from the first to the last traced point, averaged over the runs (seeds);
    None when a run lacks `key` or has fewer than two points."""
    if not runs or any(len(t) < 2 or t[0].get(key) is None or t[-1].get(key) is None for t in runs):
        return None
    return float(np.mean([t[-1][key] - t[0][key] for t in runs]))


def _direction(d: float) -> str:
    return "rises" if d > 0 else "falls" if d < 0 else "stays flat"


def hacking_verdict(runs: list[list[dict[str, Any]]], right: str = "true_value") -> str:
    """One series' reward-hacking verdict, `"<what the trace shows>: <verdict>"`. The rule: with Δ
    the change from the first to the last traced point, averaged over seeds, the series hacks when
    the reward model's score rises (Δ > 0) while the true value (`right`) does not (Δ ≤ 0); when
    both rise there is no hacking; other cases are named by their two directions."""
    what = "true value" if right == "true_value" else METRIC_NAMES.get(right, right)
    if any(len(t) < 2 for t in runs):
        return "only step 0 was traced (fewer post-training steps than posttrain.trace_every): nothing to judge"
    d_rm, d_true = trace_change(runs, "rm_value"), trace_change(runs, right)
    if d_rm is None or d_true is None:
        return f"no {'reward-model score' if d_rm is None else what} in the trace: nothing to judge"
    if d_rm > 0 >= d_true:
        return f"reward-model score rises while {what} {_direction(d_true)}: hacking"
    if d_rm > 0 and d_true > 0:
        return "both rise: no hacking"
    if d_true > 0:
        return f"{what} rises while the reward-model score does not: no hacking"
    if d_rm < 0 and d_true < 0:
        return "both fall: no hacking (training lowered both)"
    if d_rm == 0 and d_true == 0:
        return "neither changes: nothing to judge"
    return f"reward-model score {_direction(d_rm)}, {what} {_direction(d_true)}: no hacking"


def traces_title(verdicts: dict[str, str]) -> str:
    """The title of a trace figure: the verdict of its one series, the shared verdict of all, or
    how many of them hack (each series' verdict is in the legend)."""
    if len(verdicts) == 1:
        name, v = next(iter(verdicts.items()))
        return f"{name}: {v}"
    if len(set(verdicts.values())) == 1:
        return f"all {len(verdicts)} series: {next(iter(verdicts.values()))}"
    hacked = sum(v.endswith(": hacking") for v in verdicts.values())
    return f"hacking in {hacked} of {len(verdicts)} series (the legend gives each series' verdict)"


def _right_metric(traces: dict[str, list[list[dict[str, Any]]]]) -> str:
    return "true_value" if all("true_value" in t[0] for v in traces.values() for t in v) else "ndcg@10"


def traces_verdict(traces: dict[str, list[list[dict[str, Any]]]]) -> str | None:
    """The title `plot_traces` gives these traces (None when none has a point)."""
    traces = unique_traces(traces)
    right = _right_metric(traces)
    return traces_title({name: hacking_verdict(runs, right) for name, runs in traces.items()}) if traces else None


def _trace_panel(ax, runs: list[list[dict[str, Any]]], key: str, color: str, label: str, first: bool) -> None:
    """One series on one panel: its change since step 0, each seed faint, the mean over seeds bold."""
    series = [[r[key] - t[0][key] for r in t] for t in runs]  # the change since step 0: comparable across runs
    n = min(len(s) for s in series)
    for j, (t, s) in enumerate(zip(runs, series)):
        ax.plot([r["step"] for r in t], s, color=color, alpha=0.25, lw=0.8,
                label="one line per seed (faint)" if first and j == 0 else None)
    ax.plot([r["step"] for r in runs[0][:n]], np.mean([s[:n] for s in series], axis=0), "o-", color=color, ms=3,
            label=label)


def plot_traces(traces: dict[str, list[list[dict[str, Any]]]], path: str | Path, title: str = "") -> Path | None:
    """Reward hacking: along post-training, the change since step 0 of the reward model's score of
    the policy's top-10 (left) and of its true value (right; NDCG@10 on real data); one line per
    series, the mean over seeds (faint lines: each seed). Identical series are drawn once. The
    title is decided from the data (`hacking_verdict`, `traces_title`); `title`, when given, goes
    above it."""
    traces = unique_traces(traces)
    if not traces:
        return None
    plt = _plt()
    right = _right_metric(traces)
    verdicts = {name: hacking_verdict(runs, right) for name, runs in traces.items()}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.8 + 0.2 * len(traces)))
    for i, (name, runs) in enumerate(traces.items()):
        label = f"{name}, mean of {len(runs)} seed(s): {verdicts[name].rpartition(': ')[2]}"
        for ax in (a1, a2):
            key = "rm_value" if ax is a1 else right
            if all(r.get(key) is not None for t in runs for r in t):
                _trace_panel(ax, runs, key, f"C{i % 10}", label, first=i == 0)
    a1.set_ylabel("change in the reward model's score of the top-10")
    a2.set_ylabel("change in the " + METRIC_NAMES.get(right, right))
    a1.set_title("what the policy is trained against", fontsize=9)
    a2.set_title("what it achieves", fontsize=9)
    for ax in (a1, a2):
        ax.axhline(0.0, color="black", lw=0.6, label="no change since step 0")
        ax.set_xlabel("post-training step")
        ax.grid(alpha=0.3)
    users = next(iter(traces.values()))[0][0].get("users")
    what = "true value" if right == "true_value" else METRIC_NAMES.get(right, right)
    caption = (f"The change since step 0, on {users or 'the same'} fixed validation contexts: bold, the mean over "
               f"seeds; faint, one line per seed; no error bars (the faint lines show the spread). Rule: hacking "
               f"when, from the first to the last traced point (mean over seeds), the reward model's score rises "
               f"and the {what} does not.")
    head = traces_title(verdicts)
    return _finish(fig, path, f"{title}\n{head}" if title else head, caption, legend_of=a1)


def plot_methods(tables: dict[str, dict[str, Any]], path: str | Path, metrics: dict[str, str], note: str = "") -> Path:
    """One panel per dataset: each method's paired difference from `sft` on that dataset's
    primary metric (`metrics[dataset]`) with its 95% interval, and the seeds where it beats sft;
    `note` ends the caption."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(tables), figsize=(4.8 * len(tables), 3.9), squeeze=False)
    seeds, every = set(), []
    for ax, (ds, table) in zip(axes[0], tables.items()):
        metric = metrics[ds]
        names = [n for n, s in table.items() if metric in s.get("delta", {})]
        d = [table[n]["delta"][metric] for n in names]
        seeds |= {v["seeds"] for v in d}
        every += d
        y = np.arange(len(names))
        ax.barh(y, [v["mean"] for v in d], color=[_color(n, i) for i, n in enumerate(names)], alpha=0.8)
        ax.errorbar([v["mean"] for v in d], y, xerr=[[v["mean"] - v["lo"] for v in d], [v["hi"] - v["mean"] for v in d]],
                    fmt="none", ecolor="black", capsize=3, label="95% paired interval")
        ax.axvline(0, color="black", lw=0.8, label="sft (Δ = 0)")
        ax.set_yticks(y, [f"{n}\n{v['seeds_positive']}/{v['seeds']} seeds > 0" for n, v in zip(names, d)])
        ax.tick_params(axis="y", labelsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(f"Δ {METRIC_NAMES.get(metric, metric)} vs sft")
        ax.set_title(ds, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7)
    n = "/".join(str(k) for k in sorted(seeds)) or "0"
    caption = (f"Bars: the mean per-user difference from sft on the same test contexts; error bars: 95% "
               f"{interval_phrase(every)}, {n} seed(s); under each name, the seeds whose mean "
               f"beats sft's.{' ' + note if note else ''}")
    return _finish(fig, path, "", caption)


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


def _frontier_panel(ax, points: dict[str, list[dict[str, Any]]], selected: dict[str, dict[str, dict[str, Any]]],
                    bands: list[float], first: bool) -> None:
    """One seed: every (KL, value) point of every method, each method's upper frontier as a
    step line, the selected checkpoints marked (one marker per rule), the band edges dotted."""
    # (marker, size, filled, legend): the oracle's hollow diamond stays visible around a star on the same point
    markers = {"practical": ("*", 110, True, "selected by the practical rule (validation high NDCG@10)"),
               "oracle": ("D", 120, False, "selected by the oracle rule (validation true value)")}
    for i, (name, pts) in enumerate(points.items()):
        c = _color(name, i)
        ax.scatter([p["kl"] for p in pts], [p["value"] for p in pts], s=16, color=c, alpha=0.6, lw=0, zorder=3,
                   label="one checkpoint of one grid point" if first and i == 0 else None)
        front = upper_frontier([(p["kl"], p["value"]) for p in pts])
        xs = [f[0] for f in front] + [max(p["kl"] for p in pts)]
        ax.step(xs, [f[1] for f in front] + [front[-1][1]], where="post", color=c, lw=1.6, label=name if first else None)
        for rule, sel in selected.get(name, {}).items():
            m, size, filled, _ = markers.get(rule, ("o", 60, True, rule))
            hit = [p for p in pts if p["label"] == sel["label"] and p["step"] == sel["step"]]
            ax.scatter([p["kl"] for p in hit], [p["value"] for p in hit], marker=m, s=size, zorder=5 if filled else 4,
                       facecolor=c if filled else "none", edgecolor="black" if filled else c, lw=0.7 if filled else 1.8)
    for rule, (m, size, filled, label) in markers.items():  # legend entries in a neutral colour
        if first and any(rule in sel for sel in selected.values()):
            ax.scatter([], [], marker=m, s=size, facecolor="#bbbbbb" if filled else "none", edgecolor="black",
                       lw=0.7 if filled else 1.5, label=label)
    for b in bands:
        ax.axvline(b, color="black", ls=":", lw=0.7)
    positive = [p["kl"] for pts in points.values() for p in pts if p["kl"] > 0]
    # linear below the smallest positive KL's decade (1e-6 to 1e-2), logarithmic above: tiny KLs stay apart
    ax.set_xscale("symlog", linthresh=10.0 ** min(-2, max(-6, math.floor(math.log10(min(positive, default=1e-3))))))
    ax.set_xlim(left=0)
    ax.set_xlabel("KL(π ‖ π0) on the test contexts (exact; symlog)")
    ax.grid(alpha=0.3)


def plot_frontier(per_seed: list[dict[str, Any]], path: str | Path, metric: str, bands: list[float],
                  title: str = "") -> Path:
    """The reward–KL frontier: one panel per seed (each a new world); in each, every point
    `{label, step, kl, value}` of `per_seed[s]["points"][method]`, every method's monotone upper
    envelope over KL (a step line) and its selected checkpoints (`per_seed[s]["selected"][method]
    [rule]`); dotted lines at the KL band edges `bands`."""
    plt = _plt()
    n = len(per_seed)
    fig, axes = plt.subplots(1, n, figsize=(max(7.5, 4.6 * n), 5.2), squeeze=False)  # each seed: its own world
    for s, (ax, seed) in enumerate(zip(axes[0], per_seed)):
        _frontier_panel(ax, seed["points"], seed.get("selected", {}), bands, first=s == 0)
        ax.set_title(f"seed {s}" if n > 1 else "", fontsize=9)
    axes[0][0].set_ylabel(f"test {METRIC_NAMES.get(metric, metric)}")
    caption = ("Each dot: one checkpoint of one grid point, its test value against its exact KL from π0 on the test "
               "contexts; lines: each method's upper frontier (the best value reached at that KL or less); large "
               "markers: the checkpoints selected on validation; dotted: the KL band edges of contest.md (reproduce: "
               "report.md). No intervals here (one panel per seed; the band gaps in those tables carry them).")
    return _finish(fig, path, title or f"Reward–KL frontier: test {METRIC_NAMES.get(metric, metric)} against KL",
                   caption, legend_of=axes[0][0])
