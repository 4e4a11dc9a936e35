"""Post-training methods: the registry, the method-level pieces (worked by hand), and a few steps
of every method from a tiny pretrained run, on the simulator and on a slice of ml-100k."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import pretrained_with_reward_model
from safetensors.torch import load_file

from recalign.config import load_config
from recalign.data.prepared import Prepared
from recalign.data.schema import Interactions
from recalign.data.sequences import SequenceData
from recalign.data.split import make_split
from recalign.errors import InputError
from recalign.models.heads import window_contexts
from recalign.posttrain.cql import next_state_max
from recalign.posttrain.dpo import above_user_mean, best_worst
from recalign.posttrain.registry import (
    METHODS,
    Method,
    PostTrainContext,
    get_method,
    method_names,
    register,
)
from recalign.posttrain.scoring import (
    expected_value,
    frozen_copy,
    reference_target_logp,
    sample_items,
    training_batches,
    training_target_rows,
)
from recalign.stages.common import load_run
from recalign.stages.inference import evaluate_run
from recalign.stages.posttrain import posttrain, posttrain_train_config

TEN = ["sft", "linear_sft", "exp_sft", "filtered_sft", "asft", "dpo", "ipo", "ppo", "cql", "ips"]

TINY = ['model.dim=16', 'model.layers=1', 'model.heads=1', 'model.max_len=10', 'train.epochs=2',
        'train.batch_size=32', 'train.progress=false', 'train.device="cpu"', 'train.warmup_steps=1',
        'eval.ks=[5, 10]']
STEPS = ['train.max_steps=2', 'posttrain.epochs=1', 'posttrain.batch_size=16', 'posttrain.lr=0.01']




def _pretrained(out: Path, sets: list[str]):
    return pretrained_with_reward_model(out, TINY + sets)


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("sim")
    return _pretrained(base / "pre", ['data.name="sim"', 'sim.n_users=60', 'sim.n_items=40', 'sim.min_len=8',
                                      'sim.max_len=15'])


@pytest.fixture(scope="module")
def ml_run(tmp_path_factory, shared_data):
    """The first 80 users of ml-100k (RecBole file), as a generic CSV."""
    base = tmp_path_factory.mktemp("ml")
    lines = (shared_data / "ml-100k" / "ml-100k.inter").read_text().splitlines()[1:]
    rows = [ln.split("\t") for ln in lines]
    keep = sorted({int(r[0]) for r in rows})[:80]
    keep_set = set(keep)
    csv = base / "ml80.csv"
    csv.write_text("user,item,rating,timestamp\n" + "".join(
        f"{r[0]},{r[1]},{r[2]},{int(float(r[3]))}\n" for r in rows if int(r[0]) in keep_set))
    return _pretrained(base / "pre", [f'data.name="{csv}"'])


def _changed(a: Path, b: Path) -> bool:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    return any(not torch.equal(wa[k], wb[k]) for k in wa)


def _check_run(run: Path, init: Path, summary: dict) -> None:
    losses = [json.loads(ln)["train_loss"] for ln in (run / "metrics.jsonl").read_text().splitlines()
              if "train_loss" in ln]
    assert losses and all(math.isfinite(x) for x in losses)
    assert _changed(init, run)
    state = json.loads((run / "state.json").read_text())
    assert state["stage"] == "posttrain" and state["method"] == summary["method"]
    assert state["init"] == str(init)
    metrics = evaluate_run(run, "test", device="cpu")
    assert 0 <= metrics["ndcg@10"] <= 1
    assert metrics["ndcg@10"] == pytest.approx(summary["test"]["ndcg@10"])


# ------------------------------------------------------------------------------ registry
def test_registry_lists_the_ten_methods():
    assert method_names()[:10] == TEN
    for name in TEN:
        m = get_method(name)
        assert m.name == name and isinstance(m, Method)
    assert get_method("asft").needs_reward_model and get_method("ppo").needs_reward_model
    assert get_method("dpo").needs_reward_model  # pairs = rm by default
    pt = load_config(None, ['posttrain.pairs="logged"']).posttrain
    assert not get_method("dpo", pt).needs_reward_model


def test_unknown_method_lists_valid_names():
    with pytest.raises(InputError) as e:
        get_method("exp-sft")
    for name in TEN:
        assert name in str(e.value)


def test_a_registered_dummy_method_runs_through_the_stage(sim_run, tmp_path):
    """The loop never branches on names: a new method is one class and one decorator."""
    init, data, _ = sim_run
    calls = []

    @register("dummy_test_method")
    class Dummy(Method):
        description = "test"

        def prepare(self, ctx):
            return {"seen": ctx.data is data}

        def loss(self, model, batch):
            calls.append(batch.items.shape)
            h = model.encode(batch.items, batch.timestamps)
            return model.next_item_loss(h, batch.targets, (batch.targets > 0).float(), batch.items)

    try:
        s = posttrain(init, "dummy_test_method", tmp_path / "d", STEPS, data=data)
    finally:
        METHODS.pop("dummy_test_method")
    assert s["setup"] == {"seen": True} and len(calls) == 2
    _check_run(tmp_path / "d", init, s)


# ------------------------------------------------------------------------------ pieces
def _table(users, rewards) -> Prepared:
    n = len(users)
    inter = Interactions.from_raw(np.array(users), np.arange(n) % 5, np.arange(n), np.array(rewards, dtype=np.float32))
    cfg = load_config(None, TINY)
    split = make_split(inter)
    return Prepared(cfg, inter, split, SequenceData(split, 10))


def test_training_target_rows():
    """User 0 has rows 0..4: training rows 0..2 (3 = valid, 4 = test), targets 1, 2.
    User 1 has rows 5..7: training row 5 only, no target. User 2 rows 8..13: targets 9..11."""
    data = _table([0] * 5 + [1] * 3 + [2] * 6, [1.0] * 14)
    mask = training_target_rows(data.split)
    assert np.flatnonzero(mask).tolist() == [1, 2, 9, 10, 11]
    assert mask.sum() == data.seq.n_train_targets


def _ctx(data, sets=(), model=None, rm=None):
    cfg = load_config(None, TINY + list(sets))
    return PostTrainContext(cfg=cfg, data=data, reference=None if model is None else frozen_copy(model),
                            reward_model=rm)


def test_exp_sft_weights_global_context_and_transform():
    """Targets (rows 1, 2, 9, 10, 11) with rewards 1, 2 | 1, 1, 3 and λ = 1: global weights are
    exp(r)/mean(exp(r)); context weights average 1 within each user; user_center makes user 2's
    rewards −2/3, −2/3, 4/3 before exponentiating. With no knob set (`reward_transform = auto` =
    user_rank for exp_sft) user 0's rewards 1, 2 become quantiles 0, 1 and user 2's 1, 1, 3 the
    mid-rank quantiles 1/4, 1/4, 1, mapped onto the training range [1, 3]: 1, 3 | 1.5, 1.5, 3."""
    r = [0, 1, 2, 0, 0, 0, 0, 0, 0, 1, 1, 3, 0, 0]
    data = _table([0] * 5 + [1] * 3 + [2] * 6, r)
    rows = [1, 2, 9, 10, 11]
    m = get_method("exp_sft", load_config(None, []).posttrain)
    assert m.reward_transform == "user_rank"
    m.setup(_ctx(data))
    u = np.exp([1.0, 3.0, 1.5, 1.5, 3.0])
    np.testing.assert_allclose(m._w[rows].numpy(), u / u.mean(), rtol=1e-6)

    e = np.exp([1.0, 2.0, 1.0, 1.0, 3.0])
    m = get_method("exp_sft", load_config(None, ["posttrain.lam=1.0", 'posttrain.reward_transform="none"']).posttrain)
    st = m.setup(_ctx(data))
    np.testing.assert_allclose(m._w[rows].numpy(), e / e.mean(), rtol=1e-6)
    assert st["weight_mean"] == pytest.approx(1.0)
    assert st["ess"] == pytest.approx(e.sum() ** 2 / (5 * (e ** 2).sum()))

    m = get_method("exp_sft", load_config(None, ['posttrain.weight_norm="context"', 'posttrain.reward_transform="none"']).posttrain)
    m.setup(_ctx(data))
    w = m._w[rows].numpy()
    assert w[:2].mean() == pytest.approx(1.0) and w[2:].mean() == pytest.approx(1.0)
    np.testing.assert_allclose(w[:2], np.exp([1, 2]) / np.exp([1, 2]).mean(), rtol=1e-6)

    m = get_method("exp_sft", load_config(None, ['posttrain.reward_transform="user_center"']).posttrain)
    m.setup(_ctx(data))
    c = np.exp([-0.5, 0.5, -2 / 3, -2 / 3, 4 / 3])
    np.testing.assert_allclose(m._w[rows].numpy(), c / c.mean(), rtol=1e-5)


def test_filtered_and_linear_sft_weights():
    """threshold 2: rows with r >= 2 (rewards 2 and 3 of five) get 5/2, the rest 0; linear: r/mean(r)."""
    data = _table([0] * 5 + [1] * 3 + [2] * 6, [0, 1, 2, 0, 0, 0, 0, 0, 0, 1, 1, 3, 0, 0])
    rows = [1, 2, 9, 10, 11]
    m = get_method("filtered_sft", load_config(None, ["posttrain.threshold=2.0"]).posttrain)
    st = m.setup(_ctx(data))
    np.testing.assert_allclose(m._w[rows].numpy(), [0, 2.5, 0, 0, 2.5])
    assert st["kept_frac"] == pytest.approx(0.4)
    m = get_method("linear_sft")
    m.setup(_ctx(data))
    np.testing.assert_allclose(m._w[rows].numpy(), np.array([1, 2, 1, 1, 3]) / 1.6, rtol=1e-6)
    with pytest.raises(InputError, match="weight 0"):
        get_method("filtered_sft", load_config(None, ["posttrain.threshold=9.0"]).posttrain).setup(_ctx(data))


def test_best_worst_pairs():
    """Row 0: scores (1, 3, 2) -> chosen item 11, rejected 10. Row 1: a tie everywhere -> invalid."""
    cand = torch.tensor([[10, 11, 12], [20, 21, 22]])
    scores = torch.tensor([[1.0, 3.0, 2.0], [0.5, 0.5, 0.5]])
    chosen, rejected, valid = best_worst(cand, scores)
    assert chosen.tolist()[0] == 11 and rejected.tolist()[0] == 10
    assert valid.tolist() == [True, False]


def test_above_user_mean():
    """User 0 trains on rewards (1, 3) (mean 2); user 1 on (4, 4) (mean 4): rows above are 3 and
    the held-out 5; user 1's rows equal the mean (not above), except its held-out 5."""
    rewards = np.array([1, 3, 5, 4, 4, 5], dtype=np.float32)
    users = np.array([0, 0, 0, 1, 1, 1])
    train = np.array([True, True, False, True, True, False])
    assert above_user_mean(rewards, users, train, 2).tolist() == [False, True, True, False, False, True]


def test_next_state_max_bootstraps_within_the_window():
    """Window 0 has targets at positions 1..3: positions 1, 2 bootstrap from 2, 3; 3 is terminal."""
    q_max = torch.tensor([[9.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]])
    targets = torch.tensor([[0, 5, 6, 7], [1, 2, 3, 4]])
    q_next, done = next_state_max(q_max, targets)
    assert q_next.tolist() == [[1.0, 2.0, 3.0, 0.0], [5.0, 6.0, 7.0, 0.0]]
    assert done.tolist() == [[False, False, False, True], [False, False, False, True]]


def test_expected_value_ignores_padding():
    """π = (pad, 0.25, 0.75), values (-inf, 2, 4): 0.25·2 + 0.75·4 = 3.5."""
    logp = torch.log(torch.tensor([[0.0, 0.25, 0.75]]))
    values = torch.tensor([[-math.inf, 2.0, 4.0]])
    assert expected_value(logp, values).tolist() == [3.5]


def test_sample_items_never_padding():
    logp = torch.log_softmax(torch.tensor([[-math.inf, 0.0, 1.0, 2.0]]).repeat(50, 1), -1)
    s = sample_items(logp, 3, replacement=False)
    assert s.shape == (50, 3) and (s > 0).all()
    assert all(len(set(row)) == 3 for row in s.tolist())


def test_reference_cache_matches_a_direct_forward(sim_run):
    _, data, _ = sim_run
    cfg, _, model = load_run(sim_run[0], data=data)
    ctx = PostTrainContext(cfg=cfg, data=data, reference=frozen_copy(model))
    cache = reference_target_logp(ctx)
    batch = next(training_batches(ctx))
    sel = batch.targets > 0
    with torch.no_grad():
        lp = model.position_log_probs(batch.items, batch.timestamps, sel)
    direct = lp.gather(1, batch.targets[sel].unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(cache[batch.target_rows[sel]], direct)
    assert torch.isfinite(cache[torch.from_numpy(training_target_rows(data.split))]).all()


def test_asft_baseline_is_the_reference_value_under_the_reward_model(sim_run):
    from recalign.posttrain.asft import reference_value
    from recalign.stages.reward_model import load_reward_model

    init, data, rm_dir = sim_run
    cfg, _, model = load_run(init, data=data)
    rm = load_reward_model(rm_dir, data)
    ctx = PostTrainContext(cfg=cfg, data=data, reference=frozen_copy(model), reward_model=rm)
    b = reference_value(ctx)
    batch = next(training_batches(ctx))
    sel = batch.targets > 0
    with torch.no_grad():
        p = torch.softmax(model.logits(model.encode(batch.items, batch.timestamps)[sel], window_contexts(batch.items)[sel]).float(), -1)
        v = rm.score_all(rm.encode(batch.items, batch.timestamps)[sel])
    manual = (p[:, 1:] * v[:, 1:]).sum(-1).double()
    torch.testing.assert_close(b[batch.target_rows[sel]], manual, rtol=1e-5, atol=1e-5)


def test_logged_pairs_reject_an_item_other_than_the_logged_one(sim_run):
    init, data, _ = sim_run
    cfg, _, model = load_run(init, data=data)
    cfg = load_config(None, ['posttrain.pairs="logged"'], base=cfg)
    m = get_method("dpo", cfg.posttrain)
    st = m.setup(PostTrainContext(cfg=cfg, data=data, reference=frozen_copy(model)))
    assert 0 < st["pair_frac"] < 1
    rows = torch.from_numpy(np.flatnonzero(training_target_rows(data.split)))
    logged = torch.from_numpy(data.inter.item[rows.numpy()] + 1)
    assert (m._rejected[rows] != logged).all() and (m._rejected[rows] > 0).all()


@pytest.mark.parametrize("name", ["dpo", "ppo", "ips"])
def test_ratio_methods_start_at_ratio_one(sim_run, name):
    """dropout is off for methods with a log-ratio to π_0, so at the first step π_θ = π_0:
    DPO margins 0, PPO's KL 0 (reward = reward model), IPS ratios 1."""
    init, data, rm_dir = sim_run
    cfg, _, model = load_run(init, changes={"model": {"dropout": 0.0}}, data=data)
    from recalign.stages.reward_model import load_reward_model

    m = get_method(name, cfg.posttrain)
    assert m.disable_dropout
    m.setup(PostTrainContext(cfg=cfg, data=data, reference=frozen_copy(model),
                             reward_model=load_reward_model(rm_dir, data)))
    model.train()
    batch = data.seq.train_batch(np.arange(8))
    _, diag = m(model, batch)
    if name == "dpo":
        assert diag["reward_margin"] == pytest.approx(0.0, abs=1e-5)
    elif name == "ppo":
        assert float(diag["kl"]) == pytest.approx(0.0, abs=1e-5)
        assert float(diag["reward"]) == pytest.approx(float(diag["rm_reward"]), abs=1e-5)
        assert diag["clip_frac"] == 0.0
    else:
        assert diag["ratio_mean"] == pytest.approx(1.0, abs=1e-5)


def test_posttrain_train_config():
    """100 windows, batch 16 -> 7 steps/epoch, 3 epochs = 21 steps: warmup min(train.warmup_steps, 21 // 10) = 2."""
    cfg = load_config(None, ["posttrain.epochs=3", "posttrain.lr=0.5", "posttrain.batch_size=16"])
    t = posttrain_train_config(cfg, 100)
    assert (t.epochs, t.lr, t.batch_size, t.warmup_steps) == (3, 0.5, 16, 2)
    assert posttrain_train_config(load_config(None, []), 100).batch_size == 128


def test_posttrain_refuses_to_change_the_data_or_the_model(sim_run, tmp_path):
    init, data, _ = sim_run
    with pytest.raises(InputError, match="model.dim"):
        posttrain(init, "sft", tmp_path / "x", ["model.dim=32"], data=data)
    with pytest.raises(InputError, match="valid: sft"):
        posttrain(init, "nope", tmp_path / "x", [], data=data)


# ------------------------------------------------------------------------------ every method
@pytest.mark.parametrize("name", TEN)
def test_every_method_on_the_simulator(sim_run, tmp_path, name):
    init, data, rm = sim_run
    s = posttrain(init, name, tmp_path / name, STEPS, reward_model_run=rm, data=data)
    assert s["method"] == name and s["steps"] == 2
    assert "true_value" in s["test"] and math.isfinite(s["test"]["true_value"])
    assert all(math.isfinite(v) for v in s["train_diagnostics"].values())
    if name in ("linear_sft", "exp_sft", "filtered_sft", "asft"):
        assert 0 < s["setup"]["ess"] <= 1
    _check_run(tmp_path / name, init, s)


@pytest.mark.data
@pytest.mark.parametrize("name", TEN)
def test_every_method_on_movielens(ml_run, tmp_path, name):
    init, data, rm = ml_run
    s = posttrain(init, name, tmp_path / name, STEPS, reward_model_run=rm, data=data)
    assert s["steps"] == 2 and "true_value" not in s["test"]
    _check_run(tmp_path / name, init, s)


def test_asft_trains_its_reward_model_when_none_is_given(sim_run, tmp_path):
    init, data, _ = sim_run
    s = posttrain(init, "asft", tmp_path / "a", STEPS + ["train.epochs=1"], data=data)
    rm_dir = tmp_path / "a" / "reward_model"
    assert s["reward_model"] == str(rm_dir) and (rm_dir / "rm_diagnostics.json").is_file()
    assert "reward_model_diagnostics" in s
    _check_run(tmp_path / "a", init, s)


# ------------------------------------------------------------------------------ CLI
def _parser():
    from recalign.cli import build_parser

    return build_parser()


def test_cli_list(capsys):
    args = _parser().parse_args(["posttrain", "--list"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in TEN)


def test_cli_posttrain_json_and_bad_usage(sim_run, tmp_path, capsys):
    init, _, _ = sim_run
    p = _parser()
    args = p.parse_args(["posttrain", "--init", str(init), "--method", "exp_sft", "--out", str(tmp_path / "e"),
                         "--set", "posttrain.lam=0.5", "--json"] + sum((["--set", s] for s in STEPS), []))
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "exp_sft" and "ess" in out["setup"]
    assert "lam = 0.5" in (tmp_path / "e" / "config.toml").read_text()
    args = p.parse_args(["posttrain", "--method", "sft"])
    with pytest.raises(InputError, match="--init"):
        args.func(args)
    args = p.parse_args(["reward-model", "--out", str(tmp_path / "r")])
    with pytest.raises(InputError, match="exactly one"):
        args.func(args)


def test_cli_reward_model_from_a_run(sim_run, tmp_path, capsys):
    init, _, _ = sim_run
    args = _parser().parse_args(["reward-model", "--init", str(init), "--out", str(tmp_path / "rm"), "--json",
                                 "--set", "train.max_steps=2", "--set", "train.epochs=1",
                                 "--set", "posttrain.rm_weight_decay=0.3"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["valid"]["rmse"]) == {"reward_model", "global_mean", "user_mean", "item_mean"}
    # the reward model's own weight decay replaces train.weight_decay (0 in the policy's run)
    assert "weight_decay = 0.3" in (tmp_path / "rm" / "config.toml").read_text()
    assert "weight_decay = 0.0" in (init / "config.toml").read_text()


@pytest.mark.parametrize("name,sets", [
    ("exp_sft", ['posttrain.weight_norm="batch"', "posttrain.max_weight=2.0"]),
    ("exp_sft", ['posttrain.weight_norm="none"', 'posttrain.reward_transform="standardize"']),
    ("asft", ['posttrain.asft_weight="pos"', 'posttrain.weight_norm="context"']),
    ("dpo", ['posttrain.pairs="logged"']),
    ("ipo", ["posttrain.k_samples=2"]),
    ("cql", ["posttrain.gamma=0.9"]),
    ("ips", ["posttrain.topk=5", 'posttrain.reward_transform="user_center"']),
])
def test_method_options(sim_run, tmp_path, name, sets):
    init, data, rm = sim_run
    s = posttrain(init, name, tmp_path / "o", STEPS + sets, reward_model_run=rm, data=data)
    assert all(math.isfinite(v) for v in s["train_diagnostics"].values())
    assert _changed(init, tmp_path / "o")
    if name == "dpo":
        assert s["setup"]["pairs"] == "logged" and s["reward_model"] is None


def test_resume_equals_uninterrupted_for_an_online_method(sim_run, tmp_path):
    """ppo samples with torch's RNG, which the loop's checkpoint restores: a run stopped after
    epoch 1 and resumed ends with the same weights as one that ran 2 epochs."""
    init, data, rm = sim_run
    sets = ["posttrain.epochs=2", "posttrain.batch_size=16"]
    a = posttrain(init, "ppo", tmp_path / "a", sets, reward_model_run=rm, data=data)
    posttrain(init, "ppo", tmp_path / "b", ["posttrain.epochs=1", "posttrain.batch_size=16"], reward_model_run=rm,
              data=data)
    b = posttrain(init, "ppo", tmp_path / "b", sets, reward_model_run=rm, data=data, resume=True)
    assert a["steps"] == b["steps"]
    assert not _changed(tmp_path / "a", tmp_path / "b")
    with pytest.raises(InputError, match="exists"):
        posttrain(init, "ppo", tmp_path / "b", sets, reward_model_run=rm, data=data)


class _Recording:
    """A PostTrainConfig stand-in that records which fields are read."""

    def __init__(self, pt):
        object.__setattr__(self, "_pt", pt)
        object.__setattr__(self, "read", set())

    def __getattr__(self, name):
        self.read.add(name)
        return getattr(self._pt, name)


@pytest.mark.parametrize("name", TEN)
def test_a_method_reads_only_its_declared_knobs(sim_run, name):
    """`Method.knobs` (what post-training lets `--set` change for the method) covers every
    `posttrain.*` field the method reads in setup and in a training step."""
    from recalign.posttrain.registry import COMMON_KNOBS
    from recalign.stages.reward_model import load_reward_model

    init, data, rm_dir = sim_run
    cfg, _, model = load_run(init, data=data)
    rec = _Recording(cfg.posttrain)
    meth = get_method(name, rec)
    ctx = PostTrainContext(cfg=dataclasses.replace(cfg, posttrain=rec), data=data, reference=frozen_copy(model),
                           reward_model=load_reward_model(rm_dir, data))
    meth.setup(ctx)
    meth(model, next(training_batches(ctx)))
    assert rec.read - set(COMMON_KNOBS) <= set(meth.knobs), rec.read
    assert not meth.knobs or rec.read & set(meth.knobs)  # the recording sees the reads
