"""Named worlds (configs/worlds/*.toml): each loads into a valid RunConfig, `--world` reaches the
simulator config of demo / sweep / reproduce and `data stats`, unknown names are refused (exit 2),
and `data stats sim` reports `world_diagnostics`."""

from __future__ import annotations

import json

import pytest

from recalign import configlib
from recalign.cli import main
from recalign.config import RunConfig
from recalign.errors import InputError
from recalign.experiments import presets
from recalign.experiments.presets import preset_config, read_world, world_names, world_overrides

TINY = ["--set", "sim.n_users=40", "--set", "sim.n_items=60", "--set", "sim.min_len=5", "--set", "sim.max_len=8"]


def test_every_world_file_is_a_valid_sim_table():
    assert {"clean", "ratings", "watch-time", "popular"} <= set(world_names())
    for name in world_names():
        values = read_world(name)
        cfg = configlib.update(RunConfig(), {"sim": values})
        assert preset_config("sim", world=name).sim == cfg.sim  # self-contained: no sim key left to sim.toml
        assert cfg.sim.n_users * cfg.sim.n_items <= 3000 * 3000
    clean = preset_config("sim", world="clean")
    assert clean.sim == preset_config("sim").sim  # `clean` is today's demo world


@pytest.mark.parametrize("quick", [False, True])
def test_world_overrides_equal_the_preset_layer(quick):
    for name in world_names():
        assert preset_config("sim", quick, world_overrides(name, quick)) == preset_config("sim", quick, world=name)
    assert preset_config("sim", True, world="ratings").sim.n_items == 80  # --quick still shrinks it
    assert preset_config("sim", False, ["sim.noise_scale=0.3"], world="ratings").sim.noise_scale == 0.3  # --set wins


def test_unknown_world_and_non_sim_refused():
    with pytest.raises(InputError, match="valid worlds: clean"):
        read_world("nope")
    with pytest.raises(InputError, match="not sim"):
        preset_config("ml-100k", world="ratings")
    assert world_overrides(None) == []


def test_world_flag_reaches_the_simulator_config(monkeypatch, tmp_path):
    seen = {}
    from recalign.experiments import demo, reproduce, sweep

    def fake_demo(out, quick=False, overrides=None, **kw):
        seen["demo"] = presets.preset_config("sim", quick, overrides).sim
        raise InputError("stop: the config has been seen")

    def fake_reproduce(datasets, out, quick=False, overrides=None, **kw):
        seen["reproduce"] = presets.preset_config("sim", quick, overrides).sim
        raise InputError("stop: the config has been seen")

    def fake_sweep(cfg, *a, **kw):
        seen["sweep"] = cfg.sim
        raise InputError("stop: the config has been seen")

    monkeypatch.setattr(demo, "run_demo", fake_demo)
    monkeypatch.setattr(reproduce, "run_reproduce", fake_reproduce)
    monkeypatch.setattr(sweep, "run_sweep", fake_sweep)
    for argv in (["demo", "--world", "popular", "--out", str(tmp_path / "d")],
                 ["reproduce", "--world", "popular", "--out", str(tmp_path / "r")],
                 ["sweep", "--world", "popular", "--param", "posttrain.lam", "--values", "1", "--out", str(tmp_path)]):
        assert main(argv) == 2  # the stand-ins stop there: nothing is trained
    want = preset_config("sim", world="popular").sim
    assert want.noise == "popularity_bias" and seen == {"demo": want, "reproduce": want, "sweep": want}
    # the demo's default world is `ratings` (session 6; docs/reproduce/worlds.md), `--world clean` the old one
    assert main(["demo", "--out", str(tmp_path / "d2")]) == 2
    assert seen["demo"] == preset_config("sim", world="ratings").sim and seen["demo"].observe == "stars"
    assert main(["demo", "--world", "clean", "--out", str(tmp_path / "d3")]) == 2
    assert seen["demo"] == preset_config("sim", world="clean").sim == preset_config("sim").sim


def test_unknown_world_exits_2(capsys, tmp_path):
    for argv in (["demo", "--world", "nope", "--out", str(tmp_path / "d")],
                 ["sweep", "--world", "nope", "--param", "posttrain.lam", "--values", "1", "--out", str(tmp_path)],
                 ["reproduce", "--world", "nope", "--out", str(tmp_path / "r")],
                 ["reproduce", "--world", "clean", "--datasets", "ml-100k", "--out", str(tmp_path / "r2")],
                 ["data", "stats", "sim", "--world", "nope"],
                 ["data", "stats", "ml-100k", "--world", "clean"]):
        assert main(argv) == 2, argv
    assert "valid worlds" in capsys.readouterr().err


def test_data_stats_sim_reports_world_diagnostics(capsys):
    assert main(["data", "stats", "sim", "--world", "ratings", *TINY, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)["world_diagnostics"]
    assert d["n_users"] == 40 and d["n_items"] == 60  # --set wins over the world
    assert d["share_rewards_whole"] == 1.0 and d["share_rewards_outside_range"] == 0.0  # ratings: whole stars
    assert d["share_rated"] < 1 and d["selection_gap_true"] > 0
    assert main(["data", "stats", "sim", *TINY, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["world_diagnostics"]["unrated_true_reward_mean"] is None  # not NaN
    assert main(["data", "stats", "sim", *TINY]) == 0
    text = capsys.readouterr().out
    assert "world diagnostics" in text and "consumptions rated 100.0%" in text and "items with < 10 rows" in text
