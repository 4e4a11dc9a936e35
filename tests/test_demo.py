"""`recalign demo --quick` runs end to end and writes results.json in the documented shape: per
method its policy selected on validation under each rule, with the test true value, E_π[r*], the
KL from π0, the selected knobs and step, the budget, and the paired Δ vs sft."""

import json
import shutil

import numpy as np

from recalign.cli import main
from recalign.experiments.compare import folder_name
from recalign.experiments.contest import load_grid, method_result, point_label


def test_quick_demo_writes_results(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--set", "sim.seed=3"]) == 0
    res = json.loads((out / "results.json").read_text())
    grid = load_grid("quick")
    assert list(res["methods"]) == ["sft", "linear_sft", "exp_sft", "ppo", "dpo"]
    assert res["grid"] == "quick" and res["rules"] == {"practical": "high/ndcg@10", "oracle": "true_value"}
    for name, m in res["methods"].items():
        assert {"true_value", "expected_value", "kl", "selected", "steps", "seconds", "delta_vs_sft"} <= set(m)
        for rule in ("practical", "oracle"):
            tv = m["true_value"][rule]
            assert tv["lo"] <= tv["mean"] <= tv["hi"] and 1.0 <= tv["mean"] <= 5.0  # the simulator's reward scale
            assert m["kl"][rule]["mean"] >= 0 and 1.0 <= m["expected_value"][rule]["mean"] <= 5.0
            for sel in m["selected"][rule]:  # one per seed: a grid point's knobs and a checkpoint's step
                assert sel["knobs"] in grid.points[name] and sel["step"] >= 0
                assert list(sel["valid"]) == [res["rules"][rule]]  # what the rule read: validation only
            d = m["delta_vs_sft"].get(rule)
            assert (d is None) == (name == "sft")
            if d:
                assert d["lo"] <= d["mean"] <= d["hi"] and d["interval"] == "t over seed means (n=3)"
        assert m["steps"] > 0 and m["seconds"] > 0
    assert res["config"]["sim"]["seed"] == 3
    ref = res["reference"]
    assert ref["oracle"]["mean"] > ref["pretrained"]["mean"]
    for name in ("results.json", "table.txt", "methods.png", "frontier.png", "hacking.png", "seed0/", "seed2/"):
        assert name in res["files"] and (out / name).exists()
    printed = capsys.readouterr().out
    assert "true value of the top-10" in printed and "KL(π‖π0)" in printed and "E_π[r*]" in printed
    assert main(["demo", "--quick", "--out", str(out)]) == 2  # never overwrites a finished demo
    _selection_reads_validation_only(out, res, grid, tmp_path / "poisoned")


def _selection_reads_validation_only(out, res, grid, poisoned):
    """Every test number of every checkpoint of seed 0 replaced by an absurd one: the demo's
    selection (the same `method_result`) picks the same grid point and step under each rule."""
    for name, m in res["methods"].items():
        runs = {}
        for knobs in grid.points[name]:
            label = point_label(name, knobs)
            run = poisoned / folder_name(label)
            shutil.copytree(out / "seed0" / folder_name(label), run)
            lines = [json.loads(x) for x in (run / "checkpoints.jsonl").read_text().splitlines()]
            for i, r in enumerate(lines):
                r["test"] = {k: -1000.0 - i for k in r["test"]}
            (run / "checkpoints.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
            runs[label] = str(run)
        after = method_result(name, grid, runs, "true_value", ["practical", "oracle"], np.ones(1, bool))  # unused mask
        for rule in ("practical", "oracle"):
            before = m["selected"][rule][0]
            assert (after["selected"][rule]["label"], after["selected"][rule]["step"]) == (before["label"], before["step"])
            assert after["selected"][rule]["test"]["true_value"] <= -1000 < before["test"]["true_value"]
