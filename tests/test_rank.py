"""`recalign rank`: a method's grid points × checkpoints ranked across contests on validation only."""

from __future__ import annotations

import json

import pytest

from recalign.cli import main
from recalign.errors import InputError
from recalign.experiments.compare import folder_name
from recalign.experiments.rank import contest_scores, rank_candidates

A = "exp_sft[lam_rule=fixed]"
B = "exp_sft[lam_rule=ess]"


def write_contest(folder, valid, metric="true_value", test=None, name="sim"):
    """`valid[seed][label]` = the validation metric at checkpoints k = 0, 1, ...; `test` the same for
    the test split (default: minus the validation)."""
    rules = {"practical": "high/ndcg@10", "oracle": "true_value"} if metric == "true_value" else {
        "practical": "high/ndcg@10"}
    labels = list(valid[0])
    knobs = {A: {"lam_rule": "fixed"}, B: {"lam_rule": "ess"}}
    points = [[{"label": lab, "knobs": knobs[lab], "step": 10 * k} for lab in labels for k in range(len(valid[0][lab]))]
              for _ in valid]
    c = {"rules": rules, "seeds": len(valid), "methods": {"exp_sft": {"points": points}}, "config": {"data": {"name": name}}}
    folder.mkdir(parents=True)
    (folder / "contest.json").write_text(json.dumps(c))
    for s, per in enumerate(valid):
        for lab, vs in per.items():
            run = folder / f"seed{s}" / folder_name(lab)
            run.mkdir(parents=True)
            tv = (test or valid)[s][lab]
            recs = [{"step": 10 * k, "valid": {metric: v}, "test": {metric: -t if test is None else t}}
                    for k, (v, t) in enumerate(zip(vs, tv))]
            (run / "checkpoints.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return folder


def test_ranks_by_hand(tmp_path):
    # contest 1 (2 seeds, true value): A = mean(1, 1)=1.0, 2.0 ; B = 1.0, 3.0  -> k1: B 1st, A 2nd; k0 tie 3rd
    c1 = write_contest(tmp_path / "w1", [{A: [1.0, 1.5], B: [1.0, 3.5]}, {A: [1.0, 2.5], B: [1.0, 2.5]}])
    # contest 2 (real data, high/ndcg@10): A better at k1
    c2 = write_contest(tmp_path / "ml", [{A: [0.10, 0.30], B: [0.10, 0.20]}], metric="high/ndcg@10", name="ml-100k")
    s1, s2 = contest_scores(c1, "exp_sft"), contest_scores(c2, "exp_sft")
    assert s1["metric"] == "true_value" and s2["metric"] == "high/ndcg@10" and s1["seeds"] == 2
    assert s1["scores"][(B, 1)] == pytest.approx(3.0) and s1["scores"][(A, 1)] == pytest.approx(2.0)
    rows = rank_candidates([s1, s2])
    by = {(r["label"], r["k"]): r for r in rows}
    assert by[(B, 1)]["ranks"] == [1, 2] and by[(A, 1)]["ranks"] == [2, 1]
    assert by[(A, 0)]["ranks"] == [3, 3] and by[(B, 0)]["ranks"] == [3, 3]  # ties share the lowest rank
    assert by[(B, 1)]["gain"] == pytest.approx([2.0, 0.10])
    # equal mean ranks (1.5): ties go to the smaller k, then the label
    assert [(r["label"], r["k"]) for r in rows] == [(B, 1), (A, 1), (B, 0), (A, 0)]  # "ess" < "fixed"


def test_the_test_split_plays_no_part(tmp_path):
    valid = [{A: [1.0, 2.0, 1.5], B: [1.0, 1.2, 3.0]}]
    one = contest_scores(write_contest(tmp_path / "a", valid), "exp_sft")
    poisoned = contest_scores(write_contest(tmp_path / "b", valid, test=[{A: [0.0, 99.0, 0.0], B: [9.0, -9.0, -99.0]}]),
                              "exp_sft")
    assert one["scores"] == poisoned["scores"]
    assert rank_candidates([one]) == rank_candidates([poisoned])


def test_errors_name_the_folder(tmp_path):
    with pytest.raises(InputError, match="no contest.json"):
        contest_scores(tmp_path, "exp_sft")
    c = write_contest(tmp_path / "c", [{A: [1.0], B: [2.0]}])
    with pytest.raises(InputError, match="has no 'ppo'"):
        contest_scores(c, "ppo")
    with pytest.raises(InputError, match="no contest folders"):
        rank_candidates([])


def test_cli_prints_the_table(tmp_path, capsys):
    c = write_contest(tmp_path / "c", [{A: [1.0, 2.0], B: [1.0, 3.0]}])
    assert main(["rank", str(c)]) == 0
    first = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| exp_sft")][0]
    assert first.startswith(f"| {B} | 1 | 1.0 |")
    assert main(["rank", str(c), "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["ranking"][0]["label"] == B and js["contests"][0]["metric"] == "true_value"
