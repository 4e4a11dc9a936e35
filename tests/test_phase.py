"""Where the reward model is wrong (`eval/rm_error.py`: error against r* by propensity decile and
on a policy's top-10) and `recalign phase` (a contest per cell of a 2-D grid) end to end on a
tiny simulated world (the machinery, not the science)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from recalign.cli import main
from recalign.data.prepared import prepare
from recalign.data.simulator import SimConfig, simulate
from recalign.errors import InputError
from recalign.eval.rm_error import (
    error_by_decile,
    error_by_propensity,
    error_summary,
    rm_topk_error,
)
from recalign.experiments.compare import folder_name
from recalign.experiments.contest import load_grid
from recalign.experiments.phase import parse_axis
from recalign.experiments.presets import preset_config
from recalign.models.reward_model import RewardModel

TINY = ["sim.n_users=120", "sim.n_items=40", "sim.min_len=8", "sim.max_len=12", "model.dim=8", "model.layers=1",
        "model.max_len=12", "train.epochs=1", "train.batch_size=32", "posttrain.k_samples=2", "posttrain.epochs=1"]
AXES = ["--x", "sim.noise_scale=0.5,2", "--y", "sim.selection=0,1"]


# ------------------------------------------------------------------ the reward model's error


def test_error_by_decile_by_hand():
    """Six rows, propensities 0.6 0.1 0.5 0.2 0.4 0.3, three groups of two by propensity:
    {0.1, 0.2} = rows 1, 3 with errors +1, +3 (rmse sqrt(5), mean +2); {0.3, 0.4} = rows 5, 4
    with errors 0, −2 (rmse sqrt(2), mean −1); {0.5, 0.6} = rows 2, 0 with errors −1, −1."""
    true = np.zeros(6)
    pred = np.array([-1.0, 1.0, -1.0, 3.0, -2.0, 0.0])
    prop = np.array([0.6, 0.1, 0.5, 0.2, 0.4, 0.3])
    groups = error_by_decile(pred, true, prop, bins=3)
    assert [(g["decile"], g["n"], g["propensity_lo"], g["propensity_hi"]) for g in groups] == [
        (1, 2, 0.1, 0.2), (2, 2, 0.3, 0.4), (3, 2, 0.5, 0.6)]
    assert [g["rmse"] for g in groups] == pytest.approx([np.sqrt(5), np.sqrt(2), 1.0])
    assert [g["mean_error"] for g in groups] == pytest.approx([2.0, -1.0, -1.0])
    assert error_summary(pred, true) == pytest.approx({"n": 6, "rmse": np.sqrt(16 / 6), "mean_error": 0.0})
    assert len(error_by_decile(pred[:4], true[:4], prop[:4])) == 4  # fewer rows than deciles: one group each
    with pytest.raises(InputError, match="same size"):
        error_by_decile(pred, true, prop[:5])


@pytest.fixture(scope="module")
def tiny_data():
    cfg = preset_config("sim", quick=True, overrides=TINY + ["sim.selection=1.0", "sim.observe=\"stars\""])
    return cfg, prepare(cfg)


def test_rm_error_against_r_star_with_a_constant_reward_model(tiny_data):
    """A fresh reward model predicts its initial mean (3.0) for every item: its error on any list
    is 3 − r*, whatever the context; the propensities are the logged rows' own."""
    cfg, data = tiny_data
    torch.manual_seed(0)
    rm = RewardModel(cfg.model, data.inter.n_items, init_mean=3.0)
    sim, test = data.simulator, data.split.test
    steps = test.context_end - data.split.offsets[test.users]
    top = np.random.default_rng(0).integers(0, data.inter.n_items, (len(test), 10))
    want = 3.0 - sim.true_reward(test.users, top, step=steps)
    got = rm_topk_error(rm, sim, data.seq, test, top)
    assert got["n"] == top.size
    assert got["mean_error"] == pytest.approx(want.mean(), abs=1e-5)
    assert got["rmse"] == pytest.approx(np.sqrt((want ** 2).mean()), abs=1e-5)
    res = error_by_propensity(rm, sim, data.seq, test)
    assert sum(g["n"] for g in res["by_propensity_decile"]) == res["overall"]["n"] == len(test)
    lo = [g["propensity_lo"] for g in res["by_propensity_decile"]]
    assert lo == sorted(lo) and len(lo) == 10
    logged = sim.logged_propensity[test.target_row]  # the simulator's table is the prepared one
    assert min(lo) == pytest.approx(logged.min()) and res["by_propensity_decile"][-1]["propensity_hi"] == pytest.approx(
        logged.max())


def test_propensities_still_sum_to_one_with_every_mechanism():
    """The ratings world's mechanisms (outcome selection, ratings missing not at random, whole
    stars, threshold users): the logging policy is still a distribution in every context, shown
    (π_β) or chosen (π_sel), and the logged propensities are its probabilities of the logged items."""
    cfg = SimConfig(n_users=40, n_items=60, min_len=4, max_len=8, selection=1.0, rate_prob_slope=1.0,
                    observe="stars", threshold_users=0.3, log_propensity=True)
    inter, sim = simulate(cfg)
    users = np.arange(cfg.n_users)
    for step in (0, 2, -1):
        for shown in (False, True):
            p = sim.logging_probs(users, step=step, shown=shown)
            np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-9)
            assert (p >= 0).all()
    rows = sim.offsets[:-1] + 2
    np.testing.assert_allclose(sim.logging_probs(users, inter.item[rows][:, None], step=2)[:, 0],
                               sim.logged_propensity[rows], rtol=1e-6)
    np.testing.assert_allclose(inter.propensity, sim.logged_propensity, rtol=1e-6)


# ------------------------------------------------------------------ recalign phase


@pytest.fixture(scope="module")
def phase_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("phase") / "out"
    sets = [a for s in TINY for a in ("--set", s)]
    code = main(["phase", "--quick", "--seeds", "1", "--jobs", "1", *AXES, "--out", str(out), "--json", *sets])
    assert code == 0
    return out, sets


def test_phase_writes_the_documented_files(phase_run, capsys):
    out, _ = phase_run
    res = json.loads((out / "phase.json").read_text())
    assert (out / "phase.png").stat().st_size > 10_000 and "Δ(exp_sft − dpo)" in (out / "phase.md").read_text()
    assert res["x"] == {"field": "sim.noise_scale", "values": ["0.5", "2"]}
    assert res["y"] == {"field": "sim.selection", "values": ["0", "1"]}
    assert res["rivals"] == ["sft", "ppo", "dpo"] and res["methods"] == ["sft", "exp_sft", "ppo", "dpo"]
    assert res["rule"] == "practical" and res["metric"] == "true_value" and res["seeds"] == 1
    assert [(c["x"], c["y"]) for c in res["cells"]] == [("0.5", "0"), ("2", "0"), ("0.5", "1"), ("2", "1")]
    for c in res["cells"]:
        contest = json.loads((out / c["folder"] / "contest.json").read_text())
        assert contest["config"]["sim"]["noise_scale"] == float(c["x"])
        assert contest["config"]["sim"]["selection"] == float(c["y"])
        for rival in ("sft", "ppo", "dpo"):
            d = c["deltas"][rival]
            assert {"mean", "lo", "hi", "interval", "per_seed", "verdict", "seeds_positive"} <= set(d)
            assert d["interval"] == "bootstrap over users (1 seed)" and d["lo"] <= d["mean"] <= d["hi"]
            assert d["verdict"] in ("holds", "contradicted", "inconclusive")
            want = contest["methods"]["exp_sft"]["true_value"]["practical"]["mean"] - \
                contest["methods"][rival]["true_value"]["practical"]["mean"]
            assert d["mean"] == pytest.approx(want, abs=1e-9)  # the selected checkpoints' own values
        assert set(c["values"]) == set(c["rm_error_top10"]) == {"sft", "exp_sft", "ppo", "dpo"}


def test_contest_seed_records_the_reward_model_error_on_each_selected_top10(phase_run):
    """Per seed, per method and rule: the reward model's error against r* on the selected
    checkpoint's own test top-10 (saved in its checkpoint file, the lists its true_value scores)."""
    out, _ = phase_run
    res = json.loads((out / "phase.json").read_text())
    cell = out / res["cells"][-1]["folder"]
    contest = json.loads((cell / "contest.json").read_text())
    data = prepare(preset_config("sim", quick=True, overrides=TINY + ["sim.noise_scale=2", "sim.selection=1"]))
    n_test = len(data.split.test)
    for m in contest["methods"].values():
        (sel,) = m["selected"]["practical"]
        e = sel["rm_error_top10"]
        assert e["n"] == 10 * n_test and e["rmse"] >= abs(e["mean_error"])
        assert m["rm_error_top10"]["practical"]["mean_error"]["mean"] == pytest.approx(e["mean_error"])
        arrays = load_file(str(cell / "seed0" / folder_name(sel["label"]) / "checkpoints" / f"step-{sel['step']}.safetensors"))
        users, ctx = data.split.test.users, data.split.test.context_end - data.split.offsets[data.split.test.users]
        np.testing.assert_allclose(data.simulator.policy_value(users, arrays["top10"], step=ctx), arrays["true_value"],
                                   rtol=1e-6)
    assert "reward model's error on each selected policy's top-10" in (cell / "contest.md").read_text()
    diag = json.loads((cell / "seed0" / "reward_model" / "rm_diagnostics.json").read_text())
    assert set(diag["true_reward_error"]) == {"valid", "test"}
    assert len(diag["true_reward_error"]["test"]["by_propensity_decile"]) == 10


def test_phase_reuses_finished_cells_and_refuses_other_settings(phase_run, capsys):
    out, sets = phase_run
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/contest.json")}
    assert len(stamps) == 4
    assert main(["phase", "--quick", "--seeds", "1", "--jobs", "1", *AXES, "--out", str(out), *sets]) == 0
    assert "finished before: reused" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.glob("cells/*/contest.json")} == stamps
    assert main(["phase", "--quick", "--seeds", "1", *AXES, "--out", str(out), *sets, "--set", "sim.drift=0.2"]) == 2
    assert "finished with other settings (config differ)" in capsys.readouterr().err


@pytest.mark.parametrize("flag, text, match", [
    ("--x", "sim.nope=1,2", r"--x sim.nope=1: unknown config key 'sim.nope'"),
    ("--y", "sim.noise_scale=0.5,abc", r"--y sim.noise_scale=abc: .*expects a number"),
    ("--x", "sim.noise_scale", r"--x 'sim.noise_scale': expected FIELD=v1,v2"),
    ("--x", "sim.noise_scale=1,,2", "an empty value"),
    ("--x", "sim.noise_scale=1,1", "a value appears twice"),
    ("--y", "posttrain.lam=0.5,1", r"--y: posttrain.lam is set by the contest itself"),
    ("--y", "posttrain.epochs=1,2", r"--y: posttrain.epochs is set by the contest itself"),
])
def test_bad_axes_name_the_flag_and_the_value(flag, text, match):
    cfg = preset_config("sim", quick=True)
    with pytest.raises(InputError, match=match):
        parse_axis(flag, text, cfg, load_grid("quick"), ["sft", "exp_sft", "ppo", "dpo"])
    assert parse_axis("--x", "posttrain.lam=0.5,1", cfg, load_grid("quick"), ["sft", "ppo"]).values == ("0.5", "1")


def test_phase_refuses_bad_methods_and_data(tmp_path, capsys):
    assert main(["phase", "--quick", "--methods", "sft,ppo", *AXES, "--out", str(tmp_path)]) == 2
    assert "--methods must include exp_sft" in capsys.readouterr().err
    assert main(["phase", "--quick", "--x", "sim.selection=0,1", "--y", "sim.selection=2", "--out", str(tmp_path)]) == 2
    assert "both vary sim.selection" in capsys.readouterr().err
