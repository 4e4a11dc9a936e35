"""`recalign demo --quick` runs end to end and writes results.json in the documented shape."""

import json

from recalign.cli import main


def test_quick_demo_writes_results(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--set", "sim.seed=3"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["methods"]) == {"pretrained", "sft", "linear_sft", "exp_sft", "ppo", "dpo"}
    for m in res["methods"].values():
        tv = m["true_value"]
        assert tv["lo"] <= tv["mean"] <= tv["hi"]
        assert 1.0 <= tv["mean"] <= 5.0  # the simulator's reward scale
    assert set(res["deltas"]) == set(res["methods"]) - {"sft"}
    assert res["config"]["sim"]["seed"] == 3
    assert res["oracle_value"] > res["methods"]["pretrained"]["true_value"]["mean"]
    assert "true value of the top-10" in capsys.readouterr().out
    assert main(["demo", "--quick", "--out", str(out)]) == 2  # never overwrites a finished demo
