"""Student-t quantiles, t intervals over seeds, the paired bootstrap over users, and the delta
intervals that count both training seeds and users (two-stage bootstrap, t over seed means)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recalign.eval.stats import (
    mean_ci,
    paired_bootstrap,
    paired_delta,
    t_quantile,
    two_stage_bootstrap,
)


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


# ------------------------------------------------------------------ deltas over seeds and users
def _seeds_with_means(means, n=400, sd=0.05, seed=0):
    """Per seed, baseline values `b` and method values `a` whose per-user differences have mean
    exactly `means[s]` (centred noise of sd `sd`): a tight user spread within each seed."""
    rng = np.random.default_rng(seed)
    a, b = [], []
    for m in means:
        base = rng.normal(3.0, 1.0, n)
        noise = rng.normal(0.0, sd, n)
        a.append(base + m + noise - noise.mean())
        b.append(base)
    return a, b


def test_seed_intervals_widen_and_cover_zero_when_seeds_disagree():
    """3 seeds whose mean deltas are +1, −0.5, +0.2 with a tight spread within each (sd 0.05, 400
    users): the pooled bootstrap over (seed, user) pairs sees only the user noise and excludes 0;
    the two-stage bootstrap and the t over seed means see the seeds disagree and cover 0."""
    a, b = _seeds_with_means([1.0, -0.5, 0.2])
    pooled = paired_bootstrap(np.concatenate(a), np.concatenate(b), seed=0)
    two = two_stage_bootstrap(a, b, rng=np.random.default_rng(0))
    t = paired_delta(a, b)
    assert pooled["lo"] > 0  # too narrow: "significant" although one seed in three is negative
    for res in (two, t):
        assert res["lo"] < 0 < res["hi"]
        assert res["hi"] - res["lo"] > 10 * (pooled["hi"] - pooled["lo"])
        assert res["mean"] == pytest.approx(0.7 / 3)
    assert t["hi"] - t["lo"] > two["hi"] - two["lo"]  # 3 seeds: the bootstrap is the narrower
    assert t["interval"] == "t over seed means (n=3)"


def test_seed_intervals_when_seeds_agree():
    """Seeds agree (no seed effect; per-user differences 0.2 + N(0, 0.3²), 500 users, 3 seeds).
    Averaged over 30 data sets, relative to the pooled bootstrap's width:
    - the two-stage bootstrap is similar: sqrt(1 + (n−1)/n) = 1.29 times (resampling seeds counts
      the user noise in the seed means a second time: its known upward bias when seeds agree);
    - the t over seed means is about 2 times: t_{0.975,2}/z_{0.975} · E[s]/σ = 4.303/1.960 · 0.886
      = 1.95, the price of reading seed variance off 3 seeds (and its width varies from data set
      to data set, since s has 2 degrees of freedom)."""
    rng = np.random.default_rng(5)
    two_ratio, t_ratio = [], []
    for rep in range(30):
        b = [rng.normal(3.0, 1.0, 500) for _ in range(3)]
        a = [x + 0.2 + rng.normal(0.0, 0.3, 500) for x in b]
        pooled = paired_bootstrap(np.concatenate(a), np.concatenate(b), seed=rep)
        width = pooled["hi"] - pooled["lo"]
        two = two_stage_bootstrap(a, b, rng=np.random.default_rng(rep))
        t = paired_delta(a, b)
        two_ratio.append((two["hi"] - two["lo"]) / width)
        t_ratio.append((t["hi"] - t["lo"]) / width)
        assert two["mean"] == pytest.approx(pooled["mean"]) == pytest.approx(t["mean"])  # equal user counts
    assert np.mean(two_ratio) == pytest.approx(math.sqrt(1 + 2 / 3), rel=0.15)
    assert 1.4 < np.mean(t_ratio) < 2.6


def test_paired_delta_t_over_seed_means_hand_worked():
    """Per-seed mean deltas +1, −0.5, +0.2 (n = 3, df = 2):
        mean = 0.7 / 3 = 0.233333
        deviations +0.766667, −0.733333, −0.033333; squares 0.587778, 0.537778, 0.001111
        s² = 1.126667 / 2 = 0.563333, s = 0.750555, s / sqrt(3) = 0.433333
        t_{0.975, 2} = 4.302653, half-width = 4.302653 · 0.433333 = 1.864483
        interval = [0.233333 − 1.864483, 0.233333 + 1.864483] = [−1.631150, +2.097816]."""
    a, b = _seeds_with_means([1.0, -0.5, 0.2])
    res = paired_delta(a, b)
    assert res["per_seed"] == pytest.approx([1.0, -0.5, 0.2])
    assert res["mean"] == pytest.approx(0.233333, abs=1e-6)
    assert res["lo"] == pytest.approx(-1.631150, abs=1e-6)
    assert res["hi"] == pytest.approx(2.097816, abs=1e-6)
    assert (res["mean"], res["lo"], res["hi"]) == pytest.approx(mean_ci([1.0, -0.5, 0.2]))


def test_paired_delta_with_one_seed_is_the_user_bootstrap():
    a, b = _seeds_with_means([0.1], sd=0.3)
    res = paired_delta(a, b)
    assert res["interval"] == "bootstrap over users (1 seed)"
    boot = paired_bootstrap(a[0], b[0])
    assert (res["mean"], res["lo"], res["hi"]) == pytest.approx((boot["mean"], boot["lo"], boot["hi"]))
    assert res["lo"] < 0.1 < res["hi"]


def test_seed_intervals_coverage_with_a_seed_effect():
    """Each seed adds its own offset N(0, 0.2²) to a true delta of 0.1 (3 seeds, 200 users, user
    noise sd 0.3). Over 100 data sets the 90% t over seed means covers 0.1 about 90% of the time;
    the pooled bootstrap, blind to the seed offsets, far less often (about 15%); the two-stage
    bootstrap in between (about 70%: too narrow with 3 seeds)."""
    rng = np.random.default_rng(2)
    covered = {"t": 0, "two": 0, "pooled": 0}
    for rep in range(100):
        b = [rng.random(200) for _ in range(3)]
        a = [x + 0.1 + rng.normal(0.0, 0.2) + rng.normal(0.0, 0.3, 200) for x in b]
        res = {"t": paired_delta(a, b, level=0.9),
               "two": two_stage_bootstrap(a, b, n_boot=400, rng=np.random.default_rng(rep), level=0.9),
               "pooled": paired_bootstrap(np.concatenate(a), np.concatenate(b), n_boot=400, seed=rep, level=0.9)}
        for k, r in res.items():
            covered[k] += r["lo"] <= 0.1 <= r["hi"]
    assert 80 <= covered["t"] <= 98
    assert covered["pooled"] < 40
    assert covered["pooled"] < covered["two"] < covered["t"]


def test_two_stage_bootstrap_point_estimate_determinism_and_blocks(monkeypatch):
    """The point estimate is the mean of the seeds' means (each seed weighs the same), not the
    pooled mean, when seeds have different numbers of users (e.g. the high-reward subset)."""
    import recalign.eval.stats as stats

    rng = np.random.default_rng(4)
    a = [rng.random(n) + m for n, m in ((50, 1.0), (300, 0.0))]
    b = [np.zeros(50), np.zeros(300)]
    res = two_stage_bootstrap(a, b, n_boot=200, rng=np.random.default_rng(7))
    assert res["mean"] == pytest.approx((a[0].mean() + a[1].mean()) / 2)
    assert res["mean"] != pytest.approx(np.concatenate(a).mean())
    assert paired_delta(a, b)["mean"] == pytest.approx(res["mean"])
    assert two_stage_bootstrap(a, b, n_boot=200, rng=np.random.default_rng(7)) == res  # reproducible
    monkeypatch.setattr(stats, "_BOOTSTRAP_BLOCK_ELEMENTS", 300 * 7)  # blocks of 7 resamples
    assert two_stage_bootstrap(a, b, n_boot=200, rng=np.random.default_rng(7)) == res
    same = [np.ones(20), np.ones(30)]
    assert two_stage_bootstrap(same, same) == {"mean": 0.0, "lo": 0.0, "hi": 0.0}


def test_seed_deltas_reject_bad_input():
    with pytest.raises(ValueError, match="equal length"):
        two_stage_bootstrap([np.zeros(3)], [np.zeros(3), np.zeros(3)])
    with pytest.raises(ValueError, match="non-empty"):
        paired_delta([], [])
    with pytest.raises(ValueError, match="seed 1"):
        paired_delta([np.zeros(3), np.zeros(2)], [np.zeros(3), np.zeros(3)])
    with pytest.raises(ValueError, match="seed 0: a or b has NaN"):
        two_stage_bootstrap([np.array([math.nan])], [np.zeros(1)])
    with pytest.raises(ValueError, match="n_boot"):
        two_stage_bootstrap([np.zeros(3)], [np.zeros(3)], n_boot=0)


# ------------------------------------------------------------------ verdicts and claims from intervals
def test_verdict_reads_the_interval_not_the_mean():
    from recalign.experiments.summary import verdict

    assert verdict({"mean": 0.3, "lo": 0.1, "hi": 0.5}) == "holds"
    assert verdict({"mean": 0.3, "lo": -0.1, "hi": 0.5}) == "inconclusive"  # positive mean, interval covers 0
    assert verdict({"mean": -0.3, "lo": -0.5, "hi": -0.1}) == "contradicted"
    assert verdict({"mean": -0.3, "lo": -0.5, "hi": -0.1}, "negative") == "holds"
    assert verdict({"mean": 0.3, "lo": 0.1, "hi": 0.5}, "negative") == "contradicted"
    assert verdict({"mean": 0.1, "lo": 0.0, "hi": 0.2}) == "inconclusive"  # touching 0 is not excluding it
    assert verdict({"mean": 0.1, "lo": math.nan, "hi": math.nan}) == "inconclusive"  # one seed, no interval
    assert verdict(None) == "not measured"
    with pytest.raises(ValueError, match="direction"):
        verdict({"mean": 0.0, "lo": 0.0, "hi": 0.0}, "up")


def test_delta_stats_counts_the_seeds_and_says_which_interval():
    """Seeds that disagree (+1, −0.5, +0.2): the table's Δ covers 0 (2/3 seeds positive), where
    the pooled (seed, user) bootstrap would have called it positive; one seed: the user bootstrap."""
    from recalign.experiments.summary import delta_stats, interval_phrase, verdict

    a, b = _seeds_with_means([1.0, -0.5, 0.2])
    seeds = [{"true_value": {"x": x, "sft": y}} for x, y in zip(a, b)]
    d = delta_stats(seeds, "x", "sft", "true_value")
    assert d["interval"] == "t over seed means (n=3)" and d["seeds_positive"] == 2 and d["seeds"] == 3
    assert verdict(d) == "inconclusive"
    assert verdict(paired_bootstrap(np.concatenate(a), np.concatenate(b))) == "holds"  # the old, too narrow reading
    one = delta_stats(seeds[:1], "x", "sft", "true_value")
    assert one["interval"] == "bootstrap over users (1 seed)" and "bootstrap_two_stage" not in one
    assert interval_phrase([d]) == "Student-t interval over the seeds' mean differences (df = seeds − 1)"
    assert interval_phrase([one]) == "paired bootstrap interval over users"
    assert interval_phrase([{"mean": 0.0}]) == "paired bootstrap interval over (seed, user) pairs"  # old results


def _point(per_seed):
    mean, lo, hi = mean_ci(per_seed)
    return {"mean": mean, "lo": lo, "hi": hi, "per_seed": list(per_seed)}


def test_claim_2_compares_the_changes_paired_by_seed():
    """Claim 2 from the per-seed change of each method between the lowest and highest noise scale.
    exp_sft loses 0.30, 0.50, 0.40 in the three seeds; ppo 0.60, 0.70, 0.65 (exp_sft loses less in
    every seed: change(exp_sft) − change(ppo) = +0.30, +0.20, +0.25 → holds); dpo 0.10, 0.90, 0.35
    (differences −0.20, +0.40, −0.05: mean +0.050, but the interval covers 0 → inconclusive); the
    claim against both → inconclusive."""
    from recalign.experiments.reproduce import claims

    start = [4.0, 4.1, 3.9]
    loss = {"exp_sft": [0.3, 0.5, 0.4], "ppo": [0.6, 0.7, 0.65], "dpo": [0.1, 0.9, 0.35]}
    series = {m: [{"value": v, "true_value": _point([s - (x if v == "2" else 0.0) for s, x in zip(start, loss[m])])}
                  for v in ("0", "2")] for m in loss}
    results = {"datasets": {}, "seeds": 3, "traces": {}, "noise": {"sim (gaussian noise)": {"values": ["0", "2"], "series": series}}}
    (head, line) = claims(results)
    assert "never from means" in head
    assert "change(exp_sft) − change(ppo) = +0.250 [+0.126, +0.374] → holds" in line
    assert "change(exp_sft) − change(dpo) = +0.050 [" in line and "] → inconclusive" in line
    assert "Claim 2 (against `ppo` and `dpo`): **inconclusive**." in line


def _delta(per_seed):
    return {**_point(per_seed), "interval": f"t over seed means (n={len(per_seed)})",
            "seeds_positive": sum(v > 0 for v in per_seed), "seeds": len(per_seed)}


def test_claims_1_and_4_and_the_traces_read_intervals():
    """Claim 1: a Δ with 3/3 seeds positive whose t interval still covers 0 is inconclusive, not a
    win. Claim 4: exp_sft − linear_sft paired by seed (per seed +0.010, +0.012, +0.011 → holds).
    Traces: the score rises and the true value falls in every seed, both intervals exclude 0 →
    hacking holds."""
    from recalign.experiments.reproduce import claims

    sim = {"metric": "true_value", "config": {"posttrain": {"lam": 0.5}}, "values": ["0.3", "3"],
           "fixed": {"exp_sft": {"delta": {"true_value": _delta([0.01, 0.02, 0.30])}}},
           "series": {"exp_sft": [{"value": "0.3", "delta": {"true_value": _delta([0.2, 0.25, 0.3])}},
                                  {"value": "3", "delta": {"true_value": _delta([0.01, 0.02, 0.30])}}]}}
    ml = {"metric": "ndcg@10", "series": {"exp_sft": [{"value": "1", "high/ndcg@10": {"mean": 0.1}}]},
          "fixed": {"exp_sft": {"delta": {"high/ndcg@10": _delta([0.020, 0.022, 0.021]),
                                          "ndcg@10": _delta([-0.01, 0.0, 0.01])}},
                    "linear_sft": {"delta": {"high/ndcg@10": _delta([0.010, 0.010, 0.010]),
                                             "ndcg@10": _delta([0.0, 0.0, 0.0])}}}}
    run = [{"step": 0, "rm_value": 0.0, "true_value": 4.0}]
    traces = {"ppo": [run + [{"step": 1, "rm_value": r, "true_value": 4.0 + t}]
                      for r, t in ((0.5, -0.2), (0.6, -0.3), (0.7, -0.25))]}
    lines = claims({"datasets": {"sim": sim, "ml": ml}, "noise": {}, "seeds": 3, "traces": traces})
    text = "\n".join(lines)
    assert "(t over seed means (n=3)), 3/3 seeds positive → **inconclusive**" in text
    assert "holds at λ ∈ {0.3}; inconclusive at λ ∈ {3}" in text
    assert "high/ndcg@10 exp_sft − linear_sft > 0: +0.0110 [+0.0085, +0.0135] → holds" in text
    assert "ndcg@10 vs sft falls (a collapse): +0.0000 [-0.0248, +0.0248] → inconclusive" in text
    assert "hacking from the intervals: holds" in text
    old = {**ml, "fixed": {m: {"delta": {k: {x: v for x, v in d.items() if x != "per_seed"}
                                         for k, d in s["delta"].items()}} for m, s in ml["fixed"].items()}}
    text = "\n".join(claims({"datasets": {"ml": old}, "noise": {}, "seeds": 3}))
    assert "exp_sft − linear_sft > 0: not measured (no per-seed values in these results)" in text
