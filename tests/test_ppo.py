"""`ppo` with several updates per rollout (`posttrain.ppo_epochs`): the default is the one-update
loss of before, bit for bit; a replay reuses the kept rollout and ignores its batch, so the
ratio moves and the clip binds; the cycle restarts every epoch, so resume stays exact."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import pretrained_with_reward_model
from safetensors.torch import load_file

from recalign.config import load_config
from recalign.errors import InputError
from recalign.posttrain.losses import group_advantages, kl_penalized_reward, ppo_loss
from recalign.posttrain.registry import PostTrainContext, get_method
from recalign.posttrain.scoring import frozen_copy, sample_items
from recalign.stages.common import load_run
from recalign.stages.posttrain import posttrain
from recalign.stages.reward_model import load_reward_model
from recalign.train.runfolder import migrate_old_keys

TINY = ['model.dim=16', 'model.layers=1', 'model.heads=1', 'model.max_len=10', 'train.epochs=2',
        'train.batch_size=32', 'train.progress=false', 'train.device="cpu"', 'train.warmup_steps=1',
        'eval.ks=[5, 10]', 'data.name="sim"', 'sim.n_users=60', 'sim.n_items=40', 'sim.min_len=8',
        'sim.max_len=15']


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    return pretrained_with_reward_model(tmp_path_factory.mktemp("ppo") / "pre", TINY)


def _method(sim_run, sets: list[str]):
    """A set-up `ppo` (dropout off, as the stage builds it), the policy and the context."""
    init, data, rm_dir = sim_run
    cfg, _, model = load_run(init, changes={"model": {"dropout": 0.0}}, data=data)
    cfg = dataclasses.replace(cfg, posttrain=load_config(None, sets).posttrain)
    m = get_method("ppo", cfg.posttrain)
    ctx = PostTrainContext(cfg=cfg, data=data, reference=frozen_copy(model),
                           reward_model=load_reward_model(rm_dir, data))
    m.setup(ctx)
    model.train()
    return m, model, ctx


def _old_ppo_loss(model, batch, ctx):
    """The loss of `ppo` before `ppo_epochs` existed (one update per rollout, no clip)."""
    sel = batch.targets > 0
    logp = model.position_log_probs(batch.items, batch.timestamps, sel)
    with torch.no_grad():
        samples = sample_items(logp, ctx.pt.k_samples, replacement=True)
        logp_old = logp.detach().gather(1, samples)
        ref = ctx.reference
        logp_ref = ref.position_log_probs(batch.items, batch.timestamps, sel).gather(1, samples)
        rm = ctx.reward_model
        rm_reward = rm.score(rm.encode(batch.items, batch.timestamps)[sel], samples).float()
        adv = group_advantages(kl_penalized_reward(rm_reward, logp_old, logp_ref, ctx.pt.kl_coef))
    return ppo_loss(logp.gather(1, samples), logp_old, adv, clip_eps=float("inf"))[0]


def _grads(model) -> list[torch.Tensor]:
    out = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    return out


def test_ppo_epochs_1_is_the_one_update_loss_bit_for_bit(sim_run):
    m, model, ctx = _method(sim_run, [])
    assert m.pt.ppo_epochs == 1 and m.pt.clip_eps == 0.2
    data = ctx.data
    for b in range(3):  # every call is a fresh rollout, the same draws and the same gradient
        batch = data.seq.train_batch(np.arange(8 * b, 8 * b + 8))
        torch.manual_seed(b)
        new, diag = m(model, batch)
        new.backward()
        g_new = _grads(model)
        torch.manual_seed(b)
        old = _old_ppo_loss(model, batch, ctx)
        old.backward()
        g_old = _grads(model)
        assert torch.equal(new, old)
        assert len(g_new) == len(g_old) and all(torch.equal(a, b) for a, b in zip(g_new, g_old))
        assert diag["clip_frac"] == 0.0 and diag["ratio_mean"] == 1.0


def test_a_replay_reuses_the_rollout_ignores_its_batch_and_the_clip_binds(sim_run):
    m, model, ctx = _method(sim_run, ["posttrain.ppo_epochs=3", "posttrain.clip_eps=0.1"])
    seq = ctx.data.seq
    b0, b1, b2 = (seq.train_batch(np.arange(8 * i, 8 * i + 8)) for i in range(3))
    opt = torch.optim.SGD(model.parameters(), lr=50.0)
    loss, diag = m(model, b0)  # fresh: ratio 1
    assert diag["ratio_mean"] == 1.0 and diag["clip_frac"] == 0.0
    loss.backward()
    opt.step()
    opt.zero_grad()
    rng = torch.get_rng_state()
    loss1, diag1 = m(model, b1)  # a replay of b0's rollout at the moved parameters
    assert torch.equal(torch.get_rng_state(), rng)  # nothing is sampled
    assert diag1["ratio_mean"] != 1.0 and diag1["clip_frac"] > 0
    assert diag1["rm_reward"] == diag["rm_reward"] and diag1["kl_sample"] == diag["kl_sample"]
    m._n = 1  # the same replay again, handed another batch: the same loss
    loss2, _ = m(model, b2)
    assert torch.equal(loss1, loss2)
    m(model, b2)  # the third pass
    _, diag3 = m(model, b2)  # the next cycle: a fresh rollout of b2
    assert diag3["ratio_mean"] == 1.0 and diag3["rm_reward"] != diag["rm_reward"]


@pytest.mark.parametrize("ppo_epochs,grad_accum,expected", [
    (2, 1, "FRFRF" "FRFRF"),  # 5 micro-batches per epoch: the cycle restarts at the epoch
    (2, 2, "FFRRF" "FFRRF"),  # two fresh rollouts per step, then the step replays both
    (4, 1, "FRRRF" "FRRRF"),
])
def test_the_cycle_of_fresh_and_replayed_calls_restarts_every_epoch(sim_run, ppo_epochs, grad_accum, expected):
    m, model, ctx = _method(sim_run, [f"posttrain.ppo_epochs={ppo_epochs}"])
    n_win = ctx.data.seq.n_windows
    tr = dataclasses.replace(ctx.cfg.train, batch_size=-(-n_win // 5), grad_accum=grad_accum)
    m.setup(dataclasses.replace(ctx, cfg=dataclasses.replace(ctx.cfg, train=tr)))
    assert m._batches_per_epoch == 5
    seen = []

    def fresh(model, batch, slot):
        seen.append("F")
        m._slots[slot] = slot
        return torch.zeros(()), {}

    def replay(model, ro):
        seen.append("R")
        return torch.zeros(()), {}

    m._fresh, m._replay = fresh, replay
    batch = ctx.data.seq.train_batch(np.arange(4))
    for _ in range(10):
        m.loss(model, batch)
    assert "".join(seen) == expected


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def test_the_clip_binds_in_a_tiny_run_and_the_reward_model_is_queried_less(sim_run, tmp_path):
    init, data, rm = sim_run
    sets = ["posttrain.epochs=1", "posttrain.batch_size=16", "posttrain.lr=0.05", "train.max_steps=4"]
    one = posttrain(init, "ppo", tmp_path / "one", sets, reward_model_run=rm, data=data)
    four = posttrain(init, "ppo", tmp_path / "four", sets + ["posttrain.ppo_epochs=4"], reward_model_run=rm,
                     data=data)
    assert one["steps"] == four["steps"] == 4
    assert one["train_diagnostics"]["clip_frac"] == 0.0
    assert four["train_diagnostics"]["clip_frac"] > 0.0
    assert four["setup"]["ppo_epochs"] == 4 and four["setup"]["clip_eps"] == 0.2
    assert "ppo_epochs = 4" in (tmp_path / "four" / "config.toml").read_text()


def test_resume_equals_uninterrupted_with_several_updates_per_rollout(sim_run, tmp_path):
    """The loop checkpoints between epochs and the cycle restarts every epoch: a run stopped
    after epoch 1 and resumed ends with the weights of one that ran 2 epochs, also when an
    epoch's batches are not a multiple of `ppo_epochs` (the cycle then ends mid-way)."""
    init, data, rm = sim_run
    common = ["posttrain.batch_size=16", "posttrain.ppo_epochs=3", "posttrain.lr=0.01"]
    assert -(-data.seq.n_windows // 16) % 3 != 0
    a = posttrain(init, "ppo", tmp_path / "a", common + ["posttrain.epochs=2"], reward_model_run=rm, data=data)
    posttrain(init, "ppo", tmp_path / "b", common + ["posttrain.epochs=1"], reward_model_run=rm, data=data)
    b = posttrain(init, "ppo", tmp_path / "b", common + ["posttrain.epochs=2"], reward_model_run=rm, data=data,
                  resume=True)
    assert a["steps"] == b["steps"]
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_the_keys_are_checked_and_an_old_clip_eps_is_read_again():
    with pytest.raises(InputError, match="ppo_epochs"):
        load_config(None, ["posttrain.ppo_epochs=0"])
    with pytest.raises(InputError, match="clip_eps"):
        load_config(None, ["posttrain.clip_eps=0"])
    assert migrate_old_keys({"posttrain": {"clip_eps": 0.3}}) == {"posttrain": {"clip_eps": 0.3}}
    assert set(get_method("ppo").knobs) >= {"ppo_epochs", "clip_eps", "kl_coef", "k_samples"}
