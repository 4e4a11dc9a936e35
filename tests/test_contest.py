"""`recalign contest` (METHOD.md, "The contest"): checkpoints that keep validation and test
apart, the equal tuning grids, a selection that cannot read test, the reward–KL frontier, and
the command end to end on a tiny simulated world (the machinery, not the science)."""

from __future__ import annotations

import json
import shutil

import pytest

from recalign.cli import main
from recalign.data.prepared import prepare
from recalign.errors import InputError
from recalign.experiments.contest import (
    BASELINE,
    frontier_bands,
    load_grid,
    method_result,
    point_label,
)
from recalign.experiments.presets import preset_config
from recalign.experiments.selection import choose, read_checkpoints, select
from recalign.experiments.summary import frontier_height, upper_frontier
from recalign.stages.posttrain import posttrain

TINY = ["sim.n_users=120", "sim.n_items=40", "sim.min_len=8", "sim.max_len=12", "model.dim=8", "model.layers=1",
        "model.max_len=12", "train.epochs=2", "train.batch_size=32", "posttrain.k_samples=2"]


# ------------------------------------------------------------------ pure parts


def test_upper_frontier_by_hand():
    """Points (kl, value): (0, 1) starts it; (0.1, 0.5) is beaten by (0, 1) at smaller KL; (0.2, 2)
    rises; (0.2, 1.5) is beaten at equal KL; (0.5, 2) does not rise; (1, 3) rises."""
    pts = [(0.5, 2.0), (0.1, 0.5), (0.2, 1.5), (0.0, 1.0), (1.0, 3.0), (0.2, 2.0)]
    assert upper_frontier(pts) == [(0.0, 1.0), (0.2, 2.0), (1.0, 3.0)]
    assert frontier_height(pts, 0.2) == 1.0  # KL < 0.2: (0, 1) and (0.1, 0.5)
    assert frontier_height(pts, 0.21) == 2.0
    assert frontier_height(pts, float("inf")) == 3.0
    assert frontier_height(pts[:1], 0.4) is None
    assert upper_frontier([]) == []


def test_select_argmax_ties_and_missing_values():
    valid = [[{"m": 0.1}, {"m": 0.3}, {"m": 0.3}],  # point 0: best 0.3 at steps 5 and 10
             [{"m": 0.3}, {"m": None}, {"m": float("nan")}]]  # point 1: 0.3 at step 5 too
    steps = [[0, 5, 10], [5, 10, 15]]
    assert select(valid, steps, "m") == (0, 1)  # ties: the earlier step, then the smaller index
    assert select(valid, [[0, 7, 10], [5, 10, 15]], "m") == (1, 0)  # point 1 reaches 0.3 earlier
    with pytest.raises(InputError, match="no checkpoint has a validation m"):
        select([[{"m": None}]], [[0]], "m")


def _records(test_value: float) -> list[list[dict]]:
    return [[{"step": s, "valid": {"high/ndcg@10": v, "true_value": 3 + v}, "test": {"true_value": test_value * s}}
             for s, v in zip((0, 4, 8), vals)] for vals in ((0.1, 0.2, 0.15), (0.1, 0.25, 0.05))]


def test_selection_is_blind_to_test_values():
    """The same validation numbers with absurd test numbers select the same checkpoint: `choose`
    hands `select` the validation sub-dicts and the steps only."""
    for metric in ("high/ndcg@10", "true_value"):
        assert choose(_records(1.0), metric) == choose(_records(-1e9), metric) == (1, 1)


def test_frontier_bands_name_the_best_two_with_a_seed_interval():
    """Two seeds; band edges 0.05, 0.2, 1, ∞. Heights at the edge 0.05: a = 1.0 and 1.2, b = 0.5
    and 0.9 (gap 0.5, 0.3); at 0.2 and beyond b's point at KL 0.1 (2.0, 1.9) leads: gap 1.0, 0.7."""
    def seed(a_pts, b_pts):
        return {"methods": {"a": {"points": [{"kl": k, "value": v} for k, v in a_pts]},
                            "b": {"points": [{"kl": k, "value": v} for k, v in b_pts]}}}

    per_seed = [seed([(0.0, 1.0), (0.5, 1.1)], [(0.0, 0.5), (0.1, 2.0)]),
                seed([(0.01, 1.2)], [(0.0, 0.9), (0.1, 1.9)])]
    bands = frontier_bands(per_seed, ["a", "b"])
    assert [b["band"] for b in bands] == ["[0, 0.05)", "[0.05, 0.2)", "[0.2, 1)", "[1, ∞)"]
    first, second = bands[0], bands[1]
    assert (first["best"], first["second"]) == ("a", "b") and first["heights"] == pytest.approx({"a": 1.1, "b": 0.7})
    assert first["gap"]["per_seed"] == pytest.approx([0.5, 0.3]) and first["gap"]["interval"] == "t over seed means (n=2)"
    assert (second["best"], second["second"]) == ("b", "a")
    assert second["gap"]["per_seed"] == pytest.approx([1.0, 0.7]) and second["gap"]["lo"] < 0.85 < second["gap"]["hi"]
    one = frontier_bands(per_seed[:1], ["a", "b"])[0]["gap"]
    assert one["interval"] == "one seed: no interval"


def test_grids_file_equal_budgets():
    for name, k in (("full", 4), ("quick", 2)):
        g = load_grid(name)
        assert g.points[BASELINE] == [{}]
        assert {len(p) for m, p in g.points.items() if m != BASELINE} == {k}
        assert g.epochs >= 1 and g.checkpoints >= 1
    assert point_label("exp_sft", {"lam": 0.5, "weight_norm": "global"}) == "exp_sft[lam=0.5,weight_norm=global]"


@pytest.mark.parametrize("body, match", [
    ("[quick.exp_sft]\nlamm = [0.5, 2.0]\n", r"\[quick.exp_sft\]: 'lamm' is not a knob of exp_sft"),
    ("[quick.exp_sft]\nepochs = [1, 2]\n", "'epochs' is not a knob of exp_sft"),
    ("[quick.exp_sft]\nlam = [0.5, -1.0]\n", "lam = -1.0"),
    ("[quick.exp_sft]\nlam = [0.5, 2.0]\n[quick.ppo]\nkl_coef = [0.1]\n", "the same number of grid points"),
    ("[quick.nope]\nx = [1]\n", "unknown post-training method 'nope'"),
])
def test_grids_file_errors_name_the_file_and_the_key(tmp_path, body, match):
    path = tmp_path / "grids.toml"
    path.write_text("[quick]\nepochs = 1\ncheckpoints = 2\n[quick.sft]\n" + body)
    with pytest.raises(InputError, match=match) as e:
        load_grid("quick", path)
    assert "unknown post-training" in str(e.value) or str(path) in str(e.value)


def test_grids_file_needs_sft_and_a_budget(tmp_path):
    path = tmp_path / "grids.toml"
    path.write_text("[quick]\nepochs = 1\ncheckpoints = 2\n[quick.sft]\nthreshold = [1.0]\n")
    with pytest.raises(InputError, match="not a knob of sft"):
        load_grid("quick", path)
    path.write_text("[quick]\nepochs = 0\ncheckpoints = 2\n[quick.sft]\n")
    with pytest.raises(InputError, match="epochs = a whole number >= 1"):
        load_grid("quick", path)
    with pytest.raises(InputError, match="no grid 'full'"):
        load_grid("full", path)


# ------------------------------------------------------------------ checkpoints during post-training


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from recalign.stages.pretrain import pretrain

    cfg = preset_config("sim", quick=True, overrides=TINY)
    run = tmp_path_factory.mktemp("tiny") / "pre"
    pretrain(cfg, run)
    return prepare(cfg), run


def test_checkpoints_at_step_zero_every_n_and_the_end(tiny, tmp_path):
    data, run = tiny
    sets = ["posttrain.epochs=2"]
    plain = posttrain(run, "exp_sft", tmp_path / "plain", overrides=sets, data=data)
    steps = plain["steps"]
    every = next(n for n in (3, 5, 7) if steps % n)  # the final step is not a multiple: recorded at the end anyway
    assert steps % every and not (tmp_path / "plain" / "checkpoints.jsonl").exists()  # off by default
    s = posttrain(run, "exp_sft", tmp_path / "ck", overrides=sets + [f"posttrain.checkpoint_every={every}"], data=data)
    recs = read_checkpoints(tmp_path / "ck")
    assert [r["step"] for r in recs] == list(range(0, steps, every)) + [steps]
    assert all(set(r["valid"]) == {"ndcg@10", "high/ndcg@10", "true_value"} for r in recs)
    assert all(set(r["test"]) == {"true_value", "expected_value", "kl", "ndcg@10", "high/ndcg@10"} for r in recs)
    assert recs[0]["test"]["kl"] == 0.0  # step 0 is π0
    for key in ("true_value", "expected_value", "kl", "ndcg@10"):  # the last line is the final policy
        assert recs[-1]["test"][key] == pytest.approx(s["test"][key], abs=1e-9)
        assert s["test"][key] == plain["test"][key]  # probing changes nothing of the training
    assert sorted(p.name for p in (tmp_path / "ck" / "checkpoints").iterdir()) == sorted(
        f"step-{r['step']}.safetensors" for r in recs)


# ------------------------------------------------------------------ the command, end to end


@pytest.fixture(scope="module")
def contest_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("contest") / "out"
    sets = [a for s in TINY for a in ("--set", s)]
    code = main(["contest", "--quick", "--seeds", "1", "--jobs", "1", "--methods", "exp_sft,ppo", "--out", str(out),
                 "--json", *sets])
    assert code == 0
    return out


def test_contest_writes_the_documented_files(contest_run, capsys):
    res = json.loads((contest_run / "contest.json").read_text())
    assert (contest_run / "frontier.png").stat().st_size > 10_000 and (contest_run / "contest.md").is_file()
    assert res["metric"] == "true_value" and set(res["rules"]) == {"practical", "oracle"} and res["seeds"] == 1
    assert list(res["methods"]) == ["sft", "exp_sft", "ppo"] and res["grid_points"] == {"sft": 1, "exp_sft": 2, "ppo": 2}
    for name, m in res["methods"].items():
        assert {"true_value", "expected_value", "kl", "selected", "steps", "seconds", "points",
                "reward_model_queries"} <= set(m)
        for rule in ("practical", "oracle"):
            (sel,) = m["selected"][rule]
            assert {"knobs", "label", "step", "valid", "test"} <= set(sel) and list(sel["valid"]) == [
                {"practical": "high/ndcg@10", "oracle": "true_value"}[rule]]
            assert m["true_value"][rule]["mean"] == sel["test"]["true_value"]
            assert (rule in m["delta_vs_sft"]) == (name != "sft")
        (points,) = m["points"]  # every checkpoint of every grid point: step 0, 2 more (the quick grid), the end
        by_label = {p["label"]: [q["step"] for q in points if q["label"] == p["label"]] for p in points}
        assert len(by_label) == m["grid_points"] and all(s[0] == 0 and len(s) >= 3 for s in by_label.values())
    assert res["methods"]["ppo"]["reward_model_queries"] > 0 == res["methods"]["exp_sft"]["reward_model_queries"]
    assert [b["band"] for b in res["frontier"]] == ["[0, 0.05)", "[0.05, 0.2)", "[0.2, 1)", "[1, ∞)"]
    assert all(b["gap"]["interval"] == "one seed: no interval" for b in res["frontier"] if b["second"])
    assert "one seed: no interval" in (contest_run / "contest.md").read_text()


def test_poisoned_test_metrics_change_the_report_not_the_selection(contest_run, tmp_path):
    """Every test number in every checkpoint record of exp_sft replaced by an absurd one: the
    selected (grid point, step) stays, the reported test metrics are the poisoned ones."""
    res = json.loads((contest_run / "contest.json").read_text())
    grid = load_grid("quick")
    runs = {point_label("exp_sft", k): contest_run / "seed0" / f"exp_sft_lam_{k['lam']}_" for k in grid.points["exp_sft"]}
    poisoned = {}
    for label, run in runs.items():
        shutil.copytree(run, tmp_path / run.name)
        lines = [json.loads(x) for x in (run / "checkpoints.jsonl").read_text().splitlines()]
        for i, r in enumerate(lines):
            r["test"] = {k: -1000.0 - i for k in r["test"]}
        (tmp_path / run.name / "checkpoints.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        poisoned[label] = str(tmp_path / run.name)
    high = prepare(preset_config("sim", quick=True, overrides=TINY)).split.high_reward("test", 4.5)
    after = method_result("exp_sft", grid, poisoned, "true_value", ["practical", "oracle"], high)
    for rule in ("practical", "oracle"):
        (before,) = res["methods"]["exp_sft"]["selected"][rule]
        assert (after["selected"][rule]["label"], after["selected"][rule]["step"]) == (before["label"], before["step"])
        assert after["selected"][rule]["valid"] == before["valid"]
        assert after["selected"][rule]["test"]["true_value"] <= -1000 < before["test"]["true_value"]


def test_contest_refuses_an_unknown_method_and_a_used_folder(contest_run, tmp_path, capsys):
    assert main(["contest", "--quick", "--methods", "exp_sft,cql", "--out", str(tmp_path)]) == 2
    assert "no `quick` grid for cql" in capsys.readouterr().err
    assert main(["contest", "--quick", "--out", str(contest_run)]) == 2
    assert "already holds contest.json" in capsys.readouterr().err
