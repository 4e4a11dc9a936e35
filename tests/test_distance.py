"""`eval/distance.py`: KL(π ‖ π0) and E_π[r*] on held-out contexts, against brute-force loops on a
tiny catalog; and the post-training summary that carries them (with its budget counts)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from conftest import pretrained_with_reward_model

from recalign.config import load_config
from recalign.data.prepared import prepare
from recalign.eval.distance import (
    distance_metrics,
    expected_true_value,
    kl_to_reference,
    whole_policy,
)
from recalign.posttrain.scoring import frozen_copy
from recalign.stages.common import build_model, load_run
from recalign.stages.posttrain import posttrain

TINY = ['model.dim=8', 'model.layers=1', 'model.heads=1', 'model.max_len=6', 'model.temperature=0.7',
        'data.name="sim"', 'sim.n_users=12', 'sim.n_items=9', 'sim.min_len=5', 'sim.max_len=8']


@pytest.fixture(scope="module")
def tiny():
    """The data and two differently initialised policies over a catalog of 9 items."""
    cfg = load_config(None, TINY)
    data = prepare(cfg)
    pi = build_model(cfg, data).eval()
    ref = build_model(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=7)), data).eval()
    eval_cfg = dataclasses.replace(cfg.eval, batch_size=5)  # several user blocks
    return cfg, data, pi, ref, eval_cfg


def _brute_probs(model, data, j: int) -> list[float]:
    """π(a|s) for items a = 1..N of test target j, by a loop over the catalog."""
    t = data.split.test
    items, ts = data.seq.context_batch(t, np.array([j]))
    with torch.no_grad():
        q = model.last_hidden(items, ts)[0].double()
        w = model.item_weight.double()
    logits = [float(q @ w[a]) / model.cfg.temperature for a in range(1, model.n_items + 1)]
    m = max(logits)
    z = sum(math.exp(x - m) for x in logits)
    return [math.exp(x - m) / z for x in logits]


def test_the_kl_of_a_policy_to_itself_is_zero(tiny):
    _, data, pi, _, ecfg = tiny
    kl = kl_to_reference(pi, frozen_copy(pi), data.seq, data.split.test, ecfg)
    assert kl.shape == (len(data.split.test),) and np.all(kl == 0.0)


def test_the_kl_equals_a_loop_over_the_catalog(tiny):
    _, data, pi, ref, ecfg = tiny
    kl = kl_to_reference(pi, ref, data.seq, data.split.test, ecfg)
    for j in range(len(data.split.test)):
        p, p0 = _brute_probs(pi, data, j), _brute_probs(ref, data, j)
        brute = sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, p0))
        assert kl[j] == pytest.approx(brute, abs=1e-6)  # float32 log-probs, as the model computes them
    assert (kl > 0).all()


def test_the_expected_true_value_equals_a_sum_over_the_catalog(tiny):
    _, data, pi, _, ecfg = tiny
    t, sim = data.split.test, data.simulator
    ev = expected_true_value(pi, data.seq, t, ecfg, sim)
    for j in range(len(t)):
        u = int(t.users[j])
        step = int(t.context_end[j] - data.split.offsets[u])
        p = _brute_probs(pi, data, j)
        r = [float(sim.true_reward(np.array([u]), np.array([a]), step=np.array([step]))[0]) for a in range(len(p))]
        assert ev[j] == pytest.approx(sum(pa * ra for pa, ra in zip(p, r)), rel=1e-5)
    assert (ev > sim.r_min).all() and (ev < sim.r_max).all()


def test_one_pass_gives_both_and_the_means(tiny):
    _, data, pi, ref, ecfg = tiny
    pi.train()
    both = whole_policy(pi, data.seq, data.split.test, ecfg, reference=ref, simulator=data.simulator)
    assert pi.training  # the mode is restored
    pi.eval()
    assert np.array_equal(both["kl"], kl_to_reference(pi, ref, data.seq, data.split.test, ecfg))
    m = distance_metrics(pi, ref, data.seq, data.split.test, ecfg, data.simulator)
    assert m == {"kl": pytest.approx(both["kl"].mean()), "expected_value": pytest.approx(both["expected_value"].mean())}
    assert set(distance_metrics(pi, ref, data.seq, data.split.test, ecfg)) == {"kl"}


# ------------------------------------------------------------------------------ the stage's summary
RUN = ['model.dim=16', 'model.layers=1', 'model.heads=1', 'model.max_len=10', 'train.epochs=2',
       'train.batch_size=32', 'train.progress=false', 'train.device="cpu"', 'train.warmup_steps=1',
       'eval.ks=[5, 10]', 'data.name="sim"', 'sim.n_users=60', 'sim.n_items=40', 'sim.min_len=8', 'sim.max_len=15']
STEPS = ['train.max_steps=4', 'posttrain.epochs=1', 'posttrain.batch_size=16', 'posttrain.lr=0.01']


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    return pretrained_with_reward_model(tmp_path_factory.mktemp("dist") / "pre", RUN)


def test_the_posttrain_summary_has_the_distance_the_value_and_the_budget(sim_run, tmp_path):
    init, data, rm = sim_run
    runs = {name: posttrain(init, method, tmp_path / name, STEPS + sets, reward_model_run=rm, data=data)
            for name, method, sets in [("sft", "sft", []), ("ppo", "ppo", []),
                                       ("ppo4", "ppo", ["posttrain.ppo_epochs=4"]), ("dpo", "dpo", [])]}
    for name, s in runs.items():
        assert s["test"]["kl"] > 0 and math.isfinite(s["test"]["expected_value"]), name
        assert s["steps"] == 4 and s["wall_seconds"] >= s["train_seconds"] > 0
    assert runs["sft"]["reward_model_queries"] == 0
    k = runs["ppo"]["setup"]["k_samples"]
    assert runs["ppo"]["reward_model_queries"] > runs["ppo4"]["reward_model_queries"] > 0  # 4 rollouts vs 1
    assert runs["ppo4"]["reward_model_queries"] % k == 0 and runs["dpo"]["reward_model_queries"] > 0
    # the same numbers from the run folder's final policy and π0
    cfg, _, model = load_run(tmp_path / "ppo", data=data)
    _, _, pi0 = load_run(init, data=data)
    again = distance_metrics(model, pi0, data.seq, data.split.test, cfg.eval, data.simulator)
    assert again["kl"] == pytest.approx(runs["ppo"]["test"]["kl"], rel=1e-6)
    assert again["expected_value"] == pytest.approx(runs["ppo"]["test"]["expected_value"], rel=1e-9)
