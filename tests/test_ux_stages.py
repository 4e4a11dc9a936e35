"""Issue [7] at the command line: keys a stage would ignore are refused, bad values are refused
before anything is written, unfinished runs say so, every key and option is discoverable."""

from __future__ import annotations

import json

import pytest

import recalign.stages.common as common
from recalign.cli import build_parser, main

TINY = ["--set", "sim.n_users=120", "--set", "sim.n_items=40", "--set", "sim.min_len=8", "--set", "sim.max_len=12",
        "--set", "model.dim=8", "--set", "model.layers=1", "--set", "model.heads=1", "--set", "model.max_len=12",
        "--set", "train.progress=false", "--set", "train.num_threads=1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ux") / "pre"
    assert main(["pretrain", "--data", "sim", *TINY, "--set", "train.epochs=2", "--out", str(out)]) == 0
    return out


def _err(capsys) -> str:
    return capsys.readouterr().err


# ------------------------------------------------------------------ keys a stage would ignore
def test_posttrain_refuses_train_epochs_naming_posttrain_epochs(run, tmp_path, capsys):
    out = tmp_path / "e"
    assert main(["posttrain", "--init", str(run), "--method", "exp_sft", "--set", "train.epochs=3",
                 "--out", str(out)]) == 2
    assert "post-training reads posttrain.epochs" in _err(capsys)
    assert not out.exists()


def test_train_keys_are_accepted_when_posttrain_trains_the_reward_model(run, tmp_path, capsys):
    """asft trains its reward model here with train.* (epochs, lr, patience): not ignored, so allowed."""
    assert main(["posttrain", "--init", str(run), "--method", "asft", "--set", "train.epochs=1",
                 "--set", "posttrain.epochs=1", "--out", str(tmp_path / "a")]) == 0
    state = json.loads((tmp_path / "a" / "reward_model" / "state.json").read_text())
    assert state["epochs_run"] == 1


def test_posttrain_refuses_a_knob_the_method_does_not_read(run, tmp_path, capsys):
    assert main(["posttrain", "--init", str(run), "--method", "ppo", "--set", "posttrain.lam=0.5",
                 "--out", str(tmp_path / "p")]) == 2
    err = _err(capsys)
    assert "posttrain.lam is not read by ppo" in err and "posttrain.kl_coef" in err


def test_pretrain_refuses_posttrain_and_judge_keys(tmp_path, capsys):
    assert main(["pretrain", "--data", "sim", "--set", "posttrain.lam=0.5", "--out", str(tmp_path / "a")]) == 2
    assert "read by post-training only" in _err(capsys)
    assert main(["pretrain", "--data", "sim", "--set", "eval.judges=2", "--out", str(tmp_path / "b")]) == 2
    assert "judges" in _err(capsys)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_pretrain_refuses_sim_keys_on_real_data(tmp_path, capsys):
    f = tmp_path / "logs.csv"
    f.write_text("user,item,rating,timestamp\n" + "".join(f"{u},{i},{(u + i) % 5 + 1},{i}\n"
                                                          for u in range(5) for i in range(6)))
    assert main(["pretrain", "--data", str(f), "--set", "sim.n_users=10", "--out", str(tmp_path / "r")]) == 2
    assert "configures the simulator" in _err(capsys)


def test_evaluate_refuses_keys_that_would_rebuild_the_model(run, capsys):
    assert main(["evaluate", str(run), "--set", "model.dim=16"]) == 2
    assert "reads only eval.*" in _err(capsys)
    assert main(["evaluate", str(run), "--set", "eval.mask_seen=false", "--json"]) == 0


def test_pretrain_without_data_says_it_uses_the_simulator(tmp_path, capsys):
    assert main(["pretrain", *TINY, "--set", "train.epochs=1", "--out", str(tmp_path / "s")]) == 0
    assert "no --data given: pretraining on the embedded simulator" in _err(capsys)


# ------------------------------------------------------------------ validation before disk
@pytest.mark.parametrize("key,value,rule", [
    ("posttrain.lam", "-0.5", "> 0"), ("posttrain.epochs", "0", ">= 1"), ("posttrain.gamma", "1.5", "in [0, 1]"),
])
def test_invalid_value_refused_before_the_out_folder_exists(run, tmp_path, capsys, key, value, rule):
    out = tmp_path / "bad"
    method = "cql" if key == "posttrain.gamma" else "exp_sft"
    assert main(["posttrain", "--init", str(run), "--method", method, "--set", f"{key}={value}",
                 "--out", str(out)]) == 2
    assert f"config key '{key}' must be {rule}" in _err(capsys)
    assert not out.exists()


def test_invalid_training_value_refused_before_the_out_folder_exists(tmp_path, capsys):
    out = tmp_path / "bad"
    assert main(["pretrain", "--data", "sim", "--set", "train.lr=-1", "--out", str(out)]) == 2
    assert "'train.lr' must be > 0" in _err(capsys) and not out.exists()


# ------------------------------------------------------------------ unfinished runs
def test_state_records_epochs_planned_done_and_finished(run):
    state = json.loads((run / "state.json").read_text())
    assert state["finished"] is True and state["epochs_planned"] == 2 and state["epochs_done"] == 2


def test_a_run_stopped_after_one_epoch_warns_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    out = tmp_path / "cut"
    real = common.update_state

    def stop_at_second_epoch(run_dir, **fields):
        if fields.get("epochs_done") == 2:
            raise KeyboardInterrupt  # as a Ctrl-C after the second epoch's validation
        return real(run_dir, **fields)

    monkeypatch.setattr(common, "update_state", stop_at_second_epoch)
    assert main(["pretrain", "--data", "sim", *TINY, "--set", "train.epochs=5", "--out", str(out)]) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    io = capsys.readouterr()
    assert "unfinished run (stopped after 1 of 5 epochs)" in io.err and "--resume" in io.err
    assert json.loads(io.out)["run"] == {"stage": "pretrain", "finished": False, "epochs_done": 1,
                                         "epochs_planned": 5, "has_weights": True}
    assert main(["recommend", str(out), "--user", "0", "--json"]) == 0
    io = capsys.readouterr()
    assert "unfinished run" in io.err and json.loads(io.out)["run"]["finished"] is False
    assert main(["pretrain", "--config", str(out / "config.toml"), "--out", str(out), "--resume"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    assert "unfinished" not in capsys.readouterr().err


def test_a_run_without_weights_is_an_unfinished_run(tmp_path, monkeypatch, capsys):
    out = tmp_path / "early"

    def die(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(common, "fit", die)
    assert main(["pretrain", "--data", "sim", *TINY, "--out", str(out)]) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unfinished run: no weights saved yet" in err and f"--out {out} --resume" in err


# ------------------------------------------------------------------ discoverability
def test_config_lists_every_key_with_type_default_and_help(capsys):
    assert main(["config", "posttrain", "--json"]) == 0
    keys = {k["key"]: k for k in json.loads(capsys.readouterr().out)["keys"]}
    assert keys["posttrain.lam"]["default"] == 1.0 and "must be > 0" in keys["posttrain.lam"]["help"]
    assert all(k.startswith("posttrain.") and v["help"] for k, v in keys.items())
    assert main(["config", "train.epochs"]) == 0
    assert capsys.readouterr().out.startswith("train.epochs = 200    # int: ")
    assert main(["config", "--list"]) == 0
    assert "sim.noise_scale" in capsys.readouterr().out.split()
    assert main(["config", "nonsense"]) == 2


def _actions(parser):
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):  # subcommands
            for name, sub in action.choices.items():
                for path, a in _actions(sub):
                    yield f"{name} {path}", a
        else:
            yield "", action


def test_every_option_has_a_help_line():
    missing = [f"{path}{'/'.join(a.option_strings) or a.dest}" for path, a in _actions(build_parser())
               if not a.help and a.dest != "help" and not isinstance(a.choices, dict)]
    assert not missing, missing


def test_demo_reads_its_config_file_and_checks_it_before_writing(tmp_path, capsys):
    """`demo --config` is applied (it was accepted and ignored), and a bad file is refused before
    the output folder exists."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[posttrain]\nlam = -1.0\n")
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--seeds", "1", "--config", str(bad), "--out", str(out)]) == 2
    assert "'posttrain.lam' must be > 0" in capsys.readouterr().err and not out.exists()
    from recalign.experiments.demo import demo_config

    good = tmp_path / "good.toml"
    good.write_text("[posttrain]\nlam = 2.0\n")
    assert demo_config(True, [], good).posttrain.lam == 2.0
    assert demo_config(True, ["posttrain.lam=3.0"], good).posttrain.lam == 3.0  # --set wins


def test_lam_rule_ess_is_recorded_in_the_run(run, tmp_path, capsys):
    """`posttrain.lam_rule = ess` end to end: the chosen λ, its ESS and the reason are in
    state.json's setup and on stderr, and the weights meet the target."""
    out = tmp_path / "auto"
    assert main(["posttrain", "--init", str(run), "--method", "exp_sft", "--set", 'posttrain.lam_rule="ess"',
                 "--set", "posttrain.lam_target_ess=0.8", "--set", "posttrain.epochs=1", "--out", str(out)]) == 0
    setup = json.loads((out / "state.json").read_text())["setup"]
    assert setup["lam_rule"] == "ess" and 0.05 <= setup["lam"] <= 100 and setup["lam_reason"]
    assert setup["lam_ess"] >= 0.8 and setup["ess"] >= 0.8 - 1e-9
    assert "lam" in capsys.readouterr().err


def test_posttrain_with_no_knob_runs_each_methods_defaults(run, tmp_path):
    """No post-training knob set: exp_sft runs its defaults (docs/reproduce/defaults.md: user_rank
    rewards, λ = 1, global weights, 6 epochs) and linear_sft its own (no transform); each run's
    config.toml records the resolved transform, not `auto`."""
    from recalign.train.runfolder import read_config

    for method, transform in (("exp_sft", "user_rank"), ("linear_sft", "none")):
        out = tmp_path / method
        assert main(["posttrain", "--init", str(run), "--method", method, "--out", str(out)]) == 0
        pt = read_config(out).posttrain
        assert (pt.reward_transform, pt.weight_norm, pt.epochs) == (transform, "global", 6)
        assert json.loads((out / "state.json").read_text())["setup"]["ess"] > 0
    assert read_config(tmp_path / "exp_sft").posttrain.lam == 1.0
