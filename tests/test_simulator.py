"""The simulator: determinism, the logs' contract, the noise models as documented, an exact
oracle (checked against brute force on tiny catalogs), the sampler against its own π_β, and
memory that never scales with users × items. `pytest -s` prints the oracle and logging values."""

from __future__ import annotations

import dataclasses
import tracemalloc

import numpy as np
import pytest

import recalign.data.simulator as simmod
from recalign import configlib
from recalign.data.simulator import SimConfig, Simulator, simulate
from recalign.errors import InputError

TINY = SimConfig(seed=3, n_users=300, n_items=60, min_len=5, max_len=12)


@pytest.fixture(scope="module")
def tiny():
    return simulate(TINY)


def brute_rewards(sim: Simulator, users: np.ndarray, **ctx) -> np.ndarray:
    """r* of every item for every user: [U, N] (tiny catalogs only)."""
    n = sim.cfg.n_items
    return sim.true_reward(users, np.tile(np.arange(n), (users.size, 1)), **ctx)


# ---------------------------------------------------------------------- the logs
def test_same_seed_same_logs_different_seed_different_logs():
    a, sa = simulate(TINY)
    b, sb = simulate(TINY)
    assert a.equals(b)
    assert np.array_equal(sa.logged_true_reward, sb.logged_true_reward)
    assert np.array_equal(sa.logged_propensity, sb.logged_propensity)
    c, _ = simulate(dataclasses.replace(TINY, seed=4))
    assert not (len(a) == len(c) and np.array_equal(a.item, c.item))
    several_blocks = SimConfig(seed=2, n_users=simmod._USER_BLOCK + 50, n_items=40, min_len=2, max_len=3)
    assert simulate(several_blocks)[0].equals(simulate(several_blocks)[0])


def test_table_contract(tiny):
    inter, sim = tiny
    inter.validate()
    assert inter.n_items == TINY.n_items and inter.n_users == TINY.n_users  # every item coded
    assert np.array_equal(inter.item_ids, np.arange(TINY.n_items))
    lens = np.diff(sim.offsets)
    assert np.array_equal(lens, sim.seq_len) and lens.min() >= TINY.min_len and lens.max() <= TINY.max_len
    same_user = inter.user[1:] == inter.user[:-1]
    assert (np.diff(inter.timestamp)[same_user] > 0).all()  # strictly increasing per user
    assert inter.timestamp.dtype == np.int64
    assert sim.logged_true_reward.shape == (len(inter),)
    assert (sim.logged_true_reward > sim.r_min).all() and (sim.logged_true_reward < sim.r_max).all()
    for u in range(TINY.n_users):  # repeats = false: no item twice in a user's log
        row = inter.item[sim.offsets[u]: sim.offsets[u + 1]]
        assert np.unique(row).size == row.size


def test_repeats_allowed_when_asked():
    inter, sim = simulate(dataclasses.replace(TINY, repeats=True, n_items=20, min_len=15, max_len=15))
    rows = inter.item.reshape(TINY.n_users, 15)
    assert any(np.unique(r).size < 15 for r in rows)


def test_propensity_column_matches_simulator():
    inter, sim = simulate(dataclasses.replace(TINY, log_propensity=True))
    assert inter.propensity is not None
    np.testing.assert_allclose(inter.propensity, sim.logged_propensity, rtol=1e-6)
    assert simulate(TINY)[0].propensity is None


def test_every_field_has_a_help_line_and_bad_configs_raise():
    for key, _, _, help_line in configlib.describe(SimConfig()):
        assert help_line, key
    for bad in [dict(min_len=10, max_len=5), dict(noise="flip", noise_scale=1.5), dict(max_len=100),
                dict(noise="student_t", noise_df=2.0), dict(logging_uniform=-1.0), dict(seed=-1)]:
        with pytest.raises(InputError):
            Simulator(dataclasses.replace(TINY, **bad))


# ---------------------------------------------------------------------- noise models
BIG = SimConfig(seed=1, n_users=2000, n_items=400, min_len=20, max_len=30)


@pytest.fixture(scope="module")
def big_gaussian():
    return simulate(BIG)


def test_gaussian_noise_is_zero_mean_with_std_noise_scale(big_gaussian):
    inter, sim = big_gaussian
    eps = inter.reward.astype(np.float64) - sim.logged_true_reward
    n = eps.size
    assert abs(eps.mean()) < 4 * BIG.noise_scale / np.sqrt(n)
    assert eps.std() == pytest.approx(BIG.noise_scale, rel=0.03)


def test_noise_has_its_own_stream_items_and_true_rewards_do_not_change(big_gaussian):
    inter, sim = big_gaussian
    inter2, sim2 = simulate(dataclasses.replace(BIG, noise="flip", noise_scale=0.2))
    assert np.array_equal(inter.item, inter2.item)
    assert np.array_equal(sim.logged_true_reward, sim2.logged_true_reward)
    assert not np.array_equal(inter.reward, inter2.reward)


def test_student_t_noise_is_zero_mean_heavy_tailed_with_std_noise_scale():
    inter, sim = simulate(dataclasses.replace(BIG, noise="student_t", noise_df=10.0))
    eps = inter.reward.astype(np.float64) - sim.logged_true_reward
    assert abs(np.median(eps)) < 0.02
    assert eps.std() == pytest.approx(BIG.noise_scale, rel=0.05)
    inter3, sim3 = simulate(dataclasses.replace(BIG, noise="student_t", noise_df=3.0))
    z = (inter3.reward.astype(np.float64) - sim3.logged_true_reward) / BIG.noise_scale
    assert np.mean(np.abs(z) > 4) > 10 * 6.3e-5  # far more 4-sigma events than a gaussian's


def test_flip_noise_mirrors_a_fraction_noise_scale_of_rewards():
    p = 0.2
    inter, sim = simulate(dataclasses.replace(BIG, noise="flip", noise_scale=p))
    r, rs = inter.reward.astype(np.float64), sim.logged_true_reward
    flipped = ~np.isclose(r, rs, atol=1e-5)
    assert flipped.mean() == pytest.approx(p, abs=0.01)
    np.testing.assert_allclose(r[flipped], sim.r_min + sim.r_max - rs[flipped], atol=1e-5)
    assert r.min() > sim.r_min and r.max() < sim.r_max
    # documented expectation: E[r | a] = mid + (1 - 2p)(r* - mid), i.e. shrunk toward the midpoint
    mid = (sim.r_min + sim.r_max) / 2
    assert (r - mid - (1 - 2 * p) * (rs - mid)).mean() == pytest.approx(0.0, abs=0.02)


def test_popularity_bias_favours_popular_items_by_noise_scale_per_sd():
    cfg = dataclasses.replace(BIG, noise="popularity_bias", noise_scale=0.3)
    inter, sim = simulate(cfg)
    eps = inter.reward.astype(np.float64) - sim.logged_true_reward
    z = sim.pop_z[inter.item]
    slope, intercept = np.polyfit(z, eps, 1)
    assert slope == pytest.approx(0.3, abs=0.01) and abs(intercept) < 0.01
    assert (eps - 0.3 * z).std() == pytest.approx(cfg.popularity_bias_jitter, rel=0.05)
    assert eps.mean() > 0.05  # logged items are popular ones: the bias is not zero-mean on the logs
    assert abs(sim.pop_z.mean()) < 1e-9 and sim.pop_z.std() == pytest.approx(1.0)


# ---------------------------------------------------------------------- the oracle API
def test_oracle_topk_equals_brute_force(tiny):
    _, sim = tiny
    users = np.arange(40)
    for ctx in ({}, {"step": 0}, {"step": -2}):
        full = brute_rewards(sim, users, **ctx)
        for exclude in (False, True):
            if exclude:
                steps = sim._steps(users, ctx.get("step"))
                for i, u in enumerate(users):
                    full[i, sim.interactions.item[sim.offsets[u]: sim.offsets[u] + steps[i]]] = -np.inf
            top = sim.oracle_topk(users, 5, exclude_seen=exclude, **ctx)
            want = np.sort(full, axis=1)[:, ::-1][:, :5]
            np.testing.assert_allclose(np.take_along_axis(full, top, 1), want, rtol=1e-6)
            assert np.array_equal(top, np.argsort(-full, axis=1, kind="stable")[:, :5])
    v = sim.oracle_value(users, 5, exclude_seen=False)
    np.testing.assert_allclose(v, np.sort(brute_rewards(sim, users), axis=1)[:, -5:].mean(axis=1), rtol=1e-6)


def test_chunked_paths_equal_one_chunk(monkeypatch):
    """Many user blocks × item chunks give the same answers as one block × one chunk."""
    sim = Simulator(dataclasses.replace(TINY, n_items=1000, n_users=40))
    users = np.arange(40)
    dist = np.random.default_rng(0).random((40, 1000))
    dist /= dist.sum(axis=1, keepdims=True)

    def answers():
        lv = sim.logging_value(users, 7)
        return sim.oracle_topk(users, 7), lv.expected, lv.topk, sim.expected_value_dist(users, dist)

    whole = answers()
    monkeypatch.setattr(simmod, "_CHUNK_ELEMS", 1)  # 256-item chunks
    monkeypatch.setattr(simmod, "_EVAL_USER_BLOCK", 7)
    pieces = answers()
    assert np.array_equal(whole[0], pieces[0])
    # Equal up to float32 rounding, not float64 rounding. These are float64 sums, but of float32
    # inputs: the rewards r* = r_min + span·sigmoid(<affinity·τ, v_a> + q_a) and π_β's cluster
    # softmax exp(β<τ̃, c_k> − β), whose dot products (16–17 float32 terms) come from BLAS matmuls
    # of other shapes here ([40, 16] @ [16, 1000] against [7, 16] @ [16, 256]). BLAS keeps no
    # summation order across shapes: with OpenBLAS's Haswell (AVX2) sgemm 29% of the logits differ
    # (by up to 9.5e-7 = 1.7·eps32·Σ|terms|); its SkylakeX (AVX-512) sgemm is bit-equal here.
    # Another order moves each input by a few eps32 relative (Haswell kernel: r* by ≤ 2.3·eps32 =
    # 2.7e-7, π's cluster probabilities by ≤ 8.6·eps32 = 1.0e-6); a ratio Σ p·r / Σ p of inputs
    # within δ_r and δ_p then moves by ≤ δ_r + 2·δ_p (≈ 20·eps32 = 2.4e-6; seen: 1.6e-8, as the
    # errors average out), and the float64 sums in another order add ≤ 2·1000·eps64 ≈ 4e-13.
    # rtol = 1e-5 leaves 4x room for other kernels and stays far below what a chunking bug does
    # (an item masked or rewarded wrongly in one chunk: 1e-3 and more). lv.topk (numpy's
    # reward_logit on one array, no BLAS) and oracle_topk only differ if two items tie within
    # that rounding.
    for w, p in zip(whole[1:], pieces[1:]):
        np.testing.assert_allclose(w, p, rtol=1e-5)


def test_expected_value_dist_of_one_hot_and_uniform(tiny):
    _, sim = tiny
    users = np.arange(30)
    items = np.random.default_rng(0).integers(0, TINY.n_items, users.size)
    onehot = np.zeros((users.size, TINY.n_items))
    onehot[np.arange(users.size), items] = 1.0
    want = sim.true_reward(users, items)
    np.testing.assert_allclose(sim.expected_value_dist(users, onehot), want, rtol=1e-6)
    logits = np.where(onehot > 0, 0.0, -np.inf)
    np.testing.assert_allclose(sim.expected_value_dist(users, logits, kind="logits"), want, rtol=1e-6)
    uniform = np.full((users.size, TINY.n_items), 1.0 / TINY.n_items)
    np.testing.assert_allclose(sim.expected_value_dist(users, uniform), brute_rewards(sim, users).mean(axis=1), rtol=1e-6)
    with pytest.raises(InputError):
        sim.expected_value_dist(users, 2 * uniform)


def test_logging_policy_is_a_distribution_and_its_value_is_exact(tiny):
    _, sim = tiny
    users = np.arange(50)
    for exclude in (False, True):
        p = sim.logging_probs(users, exclude_seen=exclude)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-9)
        lv = sim.logging_value(users, 4, exclude_seen=exclude)
        full = brute_rewards(sim, users)
        np.testing.assert_allclose(lv.expected, (p * full).sum(axis=1), rtol=1e-6)
        top = np.argsort(-p, axis=1, kind="stable")[:, :4]
        np.testing.assert_allclose(lv.topk, np.take_along_axis(full, top, 1).mean(axis=1), rtol=1e-6)
        items = np.random.default_rng(1).integers(0, TINY.n_items, (users.size, 3))
        np.testing.assert_allclose(sim.logging_probs(users, items, exclude_seen=exclude),
                                   np.take_along_axis(p, items, 1), rtol=1e-12)
    seen = sim.interactions.item[sim.offsets[0]: sim.offsets[1] - 1]
    assert (sim.logging_probs([0])[0, seen] == 0).all()  # default context excludes seen items


def test_logged_rows_match_the_oracle_in_their_context(tiny):
    inter, sim = tiny
    users = np.arange(TINY.n_users)
    last = sim.offsets[1:] - 1
    np.testing.assert_allclose(sim.true_reward(users, inter.item[last]), sim.logged_true_reward[last], rtol=1e-6)
    for t in (0, 3):
        rows = sim.offsets[:-1] + t
        items = inter.item[rows][:, None]
        np.testing.assert_allclose(sim.true_reward(users, items, step=t)[:, 0], sim.logged_true_reward[rows], rtol=1e-6)
        np.testing.assert_allclose(sim.logging_probs(users, items, step=t)[:, 0], sim.logged_propensity[rows], rtol=1e-6)


def test_taste_replay_equals_the_sampled_states(tiny):
    _, sim = tiny
    users = np.arange(TINY.n_users)
    assert np.array_equal(sim.taste_at(users, sim.seq_len - 1), sim.test_taste)
    assert np.array_equal(sim.taste_at(users, sim.seq_len), sim.final_taste)
    assert np.array_equal(sim.taste_at(users, 0), sim.initial_taste)
    assert np.array_equal(sim.taste_at(users, -2), sim.taste_at(users, sim.seq_len - 2))
    with pytest.raises(InputError):
        sim.taste_at(users, sim.seq_len + 1)


def test_taste_drift_makes_order_and_history_matter(tiny):
    _, sim = tiny
    tau = sim.initial_taste[:1]
    a, b = np.array([0]), np.array([TINY.n_items - 1])
    ab = sim.step_taste(sim.step_taste(tau, a), b)
    ba = sim.step_taste(sim.step_taste(tau, b), a)
    assert np.abs(ab - ba).max() > 1e-3
    probe = np.arange(10)[None]
    assert np.abs(sim.true_reward([0], probe, state=ab) - sim.true_reward([0], probe, state=ba)).max() > 1e-3
    users = np.arange(50)
    assert np.abs(sim.true_reward(users, probe.repeat(50, 0), step=0) - sim.true_reward(users, probe.repeat(50, 0))).mean() > 0.05
    _, still = simulate(dataclasses.replace(TINY, drift=0.0))  # no drift: history does not matter
    np.testing.assert_allclose(still.true_reward(users, probe.repeat(50, 0), step=0),
                               still.true_reward(users, probe.repeat(50, 0)), rtol=1e-6)


def test_oracle_beats_logging_policy_by_a_margin(big_gaussian):
    _, sim = big_gaussian
    users = np.arange(500)
    k = 10
    oracle = sim.oracle_value(users, k).mean()
    lv = sim.logging_value(users, k)
    rand = sim.policy_value(users, np.random.default_rng(0).integers(0, BIG.n_items, (users.size, k))).mean()
    print(f"\n[simulator] k={k}: oracle {oracle:.3f}  logging top-k {lv.topk.mean():.3f}  "
          f"logging draw {lv.expected.mean():.3f}  random {rand:.3f}  (scale [{sim.r_min}, {sim.r_max}])")
    assert oracle - lv.topk.mean() > 0.3
    assert oracle - lv.expected.mean() > 0.8
    assert lv.expected.mean() - rand > 0.2  # the logging policy is informative, not random


# ---------------------------------------------------------------------- the sampler is π_β
@pytest.mark.parametrize("rounds", [simmod._MAX_REJECTION_ROUNDS, 0])
def test_sampler_frequencies_match_logging_probs(monkeypatch, rounds):
    """Count how often each item is drawn at step t over many users and compare with Σ_u π_β(a|s_u)
    (z-scores of a Poisson-binomial count); rounds=0 sends every repeat to the exact fallback."""
    monkeypatch.setattr(simmod, "_MAX_REJECTION_ROUNDS", rounds)
    cfg = SimConfig(seed=5, n_users=6000, n_items=30, min_len=8, max_len=8, n_clusters=6, logging_beta=8.0)
    inter, sim = simulate(cfg)
    users = np.arange(cfg.n_users)
    for t in (0, 6):
        p = sim.logging_probs(users, step=t)
        count = np.bincount(inter.item[sim.offsets[:-1] + t], minlength=cfg.n_items)
        z = (count - p.sum(axis=0)) / np.sqrt((p * (1 - p)).sum(axis=0))
        assert np.abs(z).max() < 4.5, (t, z)


# ---------------------------------------------------------------------- scale
def test_no_users_by_items_allocation():
    cfg = SimConfig(seed=0, n_users=2000, n_items=200_000, min_len=3, max_len=5)
    dense = cfg.n_users * cfg.n_items * 4
    tracemalloc.start()
    inter, sim = simulate(cfg)
    users = np.arange(0, cfg.n_users, 8)
    sim.oracle_value(users, 10)
    sim.logging_value(users, 10)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < dense / 10, f"peak {peak / 2**20:.0f} MB vs dense {dense / 2**20:.0f} MB"
