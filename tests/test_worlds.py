"""The simulator's failure-mode mechanisms (METHOD.md, "Worlds"): outcome selection, ratings
missing not at random, whole-star ratings, threshold users (a reward the bilinear reward model
cannot represent), the world diagnostics, and that every mechanism is off by default."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import recalign.data.simulator as simmod
from recalign.data.simulator import SimConfig, Simulator, simulate
from recalign.data.worlds import world_diagnostics
from recalign.errors import InputError

SMALL = SimConfig(seed=7, n_users=800, n_items=80, min_len=8, max_len=16, noise_scale=1.0)


def catalog_rewards(sim: Simulator, users: np.ndarray, **ctx) -> np.ndarray:
    return sim.true_reward(users, np.tile(np.arange(sim.cfg.n_items), (users.size, 1)), **ctx)


def z_scores(count: np.ndarray, p: np.ndarray) -> np.ndarray:
    """z-scores of item counts against Σ_u p(a|s_u) (a Poisson-binomial count per item)."""
    return (count - p.sum(axis=0)) / np.sqrt((p * (1 - p)).sum(axis=0))


# ---------------------------------------------------------------------- defaults
def test_every_mechanism_is_off_by_default_and_the_off_settings_change_nothing():
    cfg = SimConfig()
    assert (cfg.selection, cfg.rate_prob_slope, cfg.rate_prob_base, cfg.observe, cfg.threshold_users) == (
        0.0, 0.0, 1.0, "continuous", 0.0)
    inter, sim = simulate(SMALL)
    assert sim.consumed_rated is None and np.array_equal(sim.consumed_item, inter.item)
    assert np.array_equal(sim.consumed_offsets, sim.offsets)
    assert not sim.threshold_user.any()
    inter2, sim2 = simulate(dataclasses.replace(SMALL, threshold_level=0.9, selection=0.0, rate_prob_slope=0.0))
    assert inter.equals(inter2)
    np.testing.assert_array_equal(sim.logged_propensity, sim2.logged_propensity)


def test_bad_mechanism_settings_raise():
    for bad in [dict(selection=-1.0), dict(rate_prob_base=0.0), dict(rate_prob_base=1.5),
                dict(rate_prob_slope=-1.0), dict(observe="half_stars"), dict(observe="stars", r_min=1.2, r_max=1.8),
                dict(threshold_users=1.5), dict(threshold_level=-0.1)]:
        with pytest.raises(InputError):
            Simulator(dataclasses.replace(SMALL, **bad))
    with pytest.raises(InputError, match="whole catalog"):  # nearly nothing rated: the catalog runs out
        simulate(SimConfig(seed=0, n_users=50, n_items=12, min_len=10, max_len=10, rate_prob_base=0.01))


# ---------------------------------------------------------------------- outcome selection
def test_selection_logs_items_better_than_those_shown_and_leaves_the_truth_alone():
    inter0, sim0 = simulate(SMALL)
    inter, sim = simulate(dataclasses.replace(SMALL, selection=1.0))
    users = inter.user
    steps = np.arange(len(inter)) - sim.offsets[users]
    shown = sim.logging_expected(users, step=steps, shown=True)  # E_{a∼π_β}[r*] in each logged context
    sd = np.sqrt(sim.logged_true_reward.var() / len(inter))
    assert sim.logged_true_reward.mean() - shown.mean() > 0.4 > 20 * sd
    assert inter.reward.mean() - shown.mean() > 0.4
    # π_sel's own expectation is what the logged rows average to
    logged = sim.logging_expected(users, step=steps)
    assert abs(sim.logged_true_reward.mean() - logged.mean()) < 4 * sd
    # without selection the logged rows average to what was shown
    shown0 = sim0.logging_expected(inter0.user, step=np.arange(len(inter0)) - sim0.offsets[inter0.user], shown=True)
    assert abs(sim0.logged_true_reward.mean() - shown0.mean()) < 4 * np.sqrt(sim0.logged_true_reward.var() / len(inter0))
    # the world and the oracle are unchanged (they are about r*, not about what was logged)
    np.testing.assert_array_equal(sim.item_vec, sim0.item_vec)
    np.testing.assert_array_equal(sim.initial_taste, sim0.initial_taste)
    u = np.arange(100)
    state = sim.test_taste[u]
    np.testing.assert_array_equal(catalog_rewards(sim, u, state=state), catalog_rewards(sim0, u, state=state))
    np.testing.assert_array_equal(sim.oracle_topk(u, 5, state=state), sim0.oracle_topk(u, 5, state=state))
    np.testing.assert_array_equal(sim.oracle_topk(u, 5, step=0), sim0.oracle_topk(u, 5, step=0))


@pytest.mark.parametrize("rounds, repeats", [(simmod._MAX_REJECTION_ROUNDS, False), (0, False),
                                             (simmod._MAX_REJECTION_ROUNDS, True)])
def test_selection_propensities_are_a_distribution_equal_to_the_sampler(monkeypatch, rounds, repeats):
    """π_sel sums to one over the catalog in every context, the logged propensities are π_sel of
    the logged rows, and the sampler's item counts at step t match Σ_u π_sel(a|s_u) (z-scores of a
    Poisson-binomial count; rounds = 0 sends every draw to the exact chunked fallback)."""
    monkeypatch.setattr(simmod, "_MAX_REJECTION_ROUNDS", rounds)
    cfg = SimConfig(seed=5, n_users=6000, n_items=30, min_len=8, max_len=8, n_clusters=6, logging_beta=8.0,
                    selection=1.5, repeats=repeats)
    inter, sim = simulate(cfg)
    _, sim0 = simulate(dataclasses.replace(cfg, selection=0.0))
    users = np.arange(cfg.n_users)
    for t in (0, 6):
        p = sim.logging_probs(users, step=t)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-9)
        np.testing.assert_allclose(sim.logging_probs(users, step=t, shown=True).sum(axis=1), 1.0, rtol=1e-9)
        rows = sim.offsets[:-1] + t
        np.testing.assert_allclose(sim.logged_propensity[rows], p[users, inter.item[rows]], rtol=1e-5)
        z = z_scores(np.bincount(inter.item[rows], minlength=cfg.n_items), p)
        assert np.abs(z).max() < 4.5, (t, z)
    # at step 0 the contexts of both worlds agree: shown = π_β, and π_sel ∝ π_β·exp(κ·r*)
    pb = sim0.logging_probs(users, step=0)
    np.testing.assert_allclose(sim.logging_probs(users, step=0, shown=True), pb, rtol=1e-12)
    want = pb * np.exp(cfg.selection * catalog_rewards(sim, users, step=0))
    np.testing.assert_allclose(sim.logging_probs(users, step=0), want / want.sum(axis=1, keepdims=True), rtol=1e-5)
    items = np.random.default_rng(0).integers(0, cfg.n_items, (users.size, 3))
    np.testing.assert_allclose(sim.logging_probs(users, items, step=6),
                               np.take_along_axis(sim.logging_probs(users, step=6), items, 1), rtol=1e-5)
    lv = sim.logging_value(users[:50], 3, step=6)
    np.testing.assert_allclose(lv.expected, (sim.logging_probs(users[:50], step=6)
                                             * catalog_rewards(sim, users[:50], step=6)).sum(axis=1), rtol=1e-5)


# ---------------------------------------------------------------------- missing not at random
MNAR = dataclasses.replace(SMALL, rate_prob_slope=2.0, rate_prob_base=0.9)


def test_rated_share_increases_with_true_reward_as_documented():
    inter, sim = simulate(MNAR)
    rs, rated = sim.consumed_true_reward, sim.consumed_rated
    assert rated is not None and 0.2 < rated.mean() < 0.9
    p = sim.rate_probability(rs)
    assert np.all(np.diff(sim.rate_probability(np.linspace(sim.r_min, sim.r_max, 50))) > 0)
    assert sim.rate_probability(np.array([sim.r_max]))[0] == pytest.approx(MNAR.rate_prob_base)
    edges = np.quantile(rs, np.linspace(0, 1, 6))
    shares = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        b = (rs >= lo) & (rs < hi)
        z = (rated[b].sum() - p[b].sum()) / np.sqrt((p[b] * (1 - p[b])).sum())
        assert abs(z) < 4.5
        shares.append(rated[b].mean())
    assert np.all(np.diff(shares) > 0) and shares[-1] - shares[0] > 0.5, shares
    print(f"\n[worlds] rated share by quintile of r*: {np.round(shares, 3)}")


def test_unrated_consumptions_are_lived_but_not_logged():
    inter, sim = simulate(MNAR)
    rated = sim.consumed_rated
    np.testing.assert_array_equal(inter.item, sim.consumed_item[rated])
    np.testing.assert_array_equal(sim.logged_true_reward, sim.consumed_true_reward[rated])
    lens = np.diff(sim.offsets)
    assert np.array_equal(lens, sim.seq_len) and lens.min() >= MNAR.min_len and lens.max() <= MNAR.max_len
    assert (sim.consumed_len > sim.seq_len).any() and (sim.consumed_len >= sim.seq_len).all()
    assert rated[sim.consumed_offsets[1:] - 1].all()  # a user stops at their last rated consumption
    users = np.arange(MNAR.n_users)
    assert np.array_equal(sim.taste_at(users, sim.seq_len - 1), sim.test_taste)
    assert np.array_equal(sim.taste_at(users, sim.seq_len), sim.final_taste)
    for t in (0, 5):  # the context of logged step t: every consumption before that row, rated or not
        rows = sim.offsets[:-1] + t
        items = inter.item[rows][:, None]
        np.testing.assert_allclose(sim.true_reward(users, items, step=t)[:, 0], sim.logged_true_reward[rows], rtol=1e-6)
        np.testing.assert_allclose(sim.logging_probs(users, items, step=t)[:, 0], sim.logged_propensity[rows], rtol=1e-6)
    u = int(np.flatnonzero(sim.consumed_len > sim.seq_len)[0])
    lived = sim.consumed_item[sim.consumed_offsets[u]: sim.consumed_offsets[u + 1] - 1]  # before the test row
    assert not np.isin(lived, inter.item[sim.offsets[u]: sim.offsets[u + 1]]).all()  # some of them unrated
    assert (sim.logging_probs([u])[0, lived] == 0).all()  # no repeats of unrated consumptions either
    same = simulate(MNAR)[0]
    assert inter.equals(same)


# ---------------------------------------------------------------------- whole stars
def test_stars_are_whole_numbers_in_range():
    for noise in ("gaussian", "flip", "student_t"):
        cont, sim = simulate(dataclasses.replace(SMALL, noise=noise, noise_scale=0.2 if noise == "flip" else 1.0))
        stars, sim_s = simulate(dataclasses.replace(SMALL, noise=noise, observe="stars",
                                                    noise_scale=0.2 if noise == "flip" else 1.0))
        r = stars.reward
        assert np.array_equal(r, np.round(r)) and r.min() >= sim.r_min and r.max() <= sim.r_max
        assert set(np.unique(r)) == {1.0, 2.0, 3.0, 4.0, 5.0}
        assert np.array_equal(cont.item, stars.item)
        want = np.clip(np.rint(cont.reward.astype(np.float64)), 1, 5)
        assert np.mean(want == r) > 0.999  # the same r* + noise, rounded (float32 ties aside)
    cont_range = dataclasses.replace(SMALL, observe="stars", r_min=0.5, r_max=5.5)
    r = simulate(cont_range)[0].reward
    assert r.min() >= 1 and r.max() <= 5  # clipped to the whole numbers inside [r_min, r_max]


# ---------------------------------------------------------------------- threshold users
def test_threshold_users_change_the_true_reward_only_for_them():
    share = 0.3
    _, sim0 = simulate(SMALL)
    _, sim = simulate(dataclasses.replace(SMALL, threshold_users=share))
    th = sim.threshold_user
    assert abs(th.mean() - share) < 4 * np.sqrt(share * (1 - share) / th.size)
    assert np.isnan(sim.user_threshold[~th]).all() and (sim.user_threshold[th] <= 2 * SMALL.threshold_level).all()
    users = np.arange(SMALL.n_users)
    state = sim0.initial_taste  # the same context in both worlds
    r0, r = catalog_rewards(sim0, users, state=state), catalog_rewards(sim, users, state=state)
    np.testing.assert_array_equal(r[~th], r0[~th])
    assert (np.abs(r[th] - r0[th]).max(axis=1) > 0.1).all()
    # a step: ±affinity/2 as <taste, item> is above or below the user's threshold
    x = state[th].astype(np.float64) @ sim.item_vec.T.astype(np.float64)
    half = SMALL.affinity / 2
    logit = np.where(x >= sim.user_threshold[th, None], half, -half) + sim.quality.astype(np.float64)
    np.testing.assert_allclose(r[th], sim.r_min + (sim.r_max - sim.r_min) / (1 + np.exp(-logit)), rtol=1e-6)
    # the chunked paths agree with the per-item one for threshold users
    top = sim.oracle_topk(users, 5, state=state)
    np.testing.assert_allclose(np.take_along_axis(r, top, 1), -np.sort(-r, axis=1)[:, :5], rtol=1e-6)
    onehot = np.eye(SMALL.n_items)[top[:, 0]]
    np.testing.assert_allclose(sim.expected_value_dist(users, onehot, state=state), r[users, top[:, 0]], rtol=1e-6)


def test_threshold_users_rewards_are_far_from_low_rank():
    """A bilinear reward head h·W·e_a + b_a + c·h + g scores a set of contexts with a matrix of
    rank ≤ D + 2. For ordinary users the true rewards are close to such a matrix (rank dim + 2 =
    18 leaves ~0.1 RMSE on the 1–5 scale); for threshold users they are far from it."""
    _, sim = simulate(dataclasses.replace(SMALL, n_items=200, threshold_users=0.5))
    users = np.arange(SMALL.n_users)
    r = catalog_rewards(sim, users)
    rank = SMALL.dim + 2

    def rmse(m):
        s = np.linalg.svd(m, compute_uv=False)
        return float(np.sqrt((s[rank:] ** 2).sum() / m.size))

    ordinary, threshold = rmse(r[~sim.threshold_user][:300]), rmse(r[sim.threshold_user][:300])
    print(f"\n[worlds] rank-{rank} residual RMSE: ordinary users {ordinary:.3f}, threshold users {threshold:.3f}")
    assert ordinary < 0.2 and threshold > 2 * ordinary


# ---------------------------------------------------------------------- diagnostics
def test_world_diagnostics_see_the_mechanisms():
    inter0, sim0 = simulate(SMALL)
    d0 = world_diagnostics(inter0, sim0)
    inter, sim = simulate(dataclasses.replace(SMALL, selection=1.0, rate_prob_slope=1.0, observe="stars"))
    d = world_diagnostics(inter, sim, max_contexts=2000)
    for key in ("exposures_min", "exposures_median", "exposures_max", "share_items_under_10", "share_rated",
                "observed_reward_mean", "shown_true_reward_mean", "selection_gap_true", "share_rewards_outside_range"):
        assert key in d0 and key in d
    counts = np.bincount(inter0.item, minlength=SMALL.n_items)
    assert d0["exposures_max"] == counts.max() and d0["share_items_under_10"] == np.mean(counts < 10)
    assert d0["share_rated"] == 1.0 and np.isnan(d0["unrated_true_reward_mean"]) and d0["n_consumed"] == len(inter0)
    assert abs(d0["selection_gap_true"]) < 0.05 and d["selection_gap_true"] > 0.4 and d["contexts"] == 2000
    assert d0["share_rewards_outside_range"] > 0.1 and d0["share_rewards_whole"] == 0.0
    assert d["share_rewards_outside_range"] == 0.0 and d["share_rewards_whole"] == 1.0
    assert d["share_rated"] < 1 and d["unrated_true_reward_mean"] < d["logged_true_reward_mean"]
    with pytest.raises(InputError):
        world_diagnostics(inter0, sim)
