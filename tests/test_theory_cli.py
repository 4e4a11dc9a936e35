"""`recalign theory` from the command line: the verdict (vacuous or informative), integer
`n_items`, and a `--help` whose worked example is what the command prints."""

from __future__ import annotations

import json
import shlex

import pytest

from recalign.cli import build_parser, main
from recalign.theory import min_lambda, value_loss_bound

ML100K = ["theory", "--sigma", "1", "--n-items", "1682", "--r-max", "5"]


def _run(capsys, args: list[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_vacuous_bound_says_so_and_names_the_lambda_it_needs(capsys):
    code, out, _ = _run(capsys, ML100K + ["--lam", "0.5"])
    assert code == 0
    lines = out.splitlines()
    assert "= 7.76488e+08" in lines[1]
    need = min_lambda(1.0, 1682, 0.05, 5.0, 0.5)  # τ = 10% of the range 0..5
    assert lines[2] == (f"vacuous: the bound 7.76e+08 exceeds the reward range 5 (0 to 5) — λ must be ≥ {need:.3g} "
                        "for a loss below τ = 0.5 (10% of the reward range)")
    code, out, _ = _run(capsys, ML100K + ["--lam", "0.5", "--json"])
    rep = json.loads(out)
    assert rep["vacuous"] is True and rep["verdict"].startswith("vacuous: the bound 7.76e+08")
    assert rep["n_items"] == 1682 and isinstance(rep["n_items"], int)
    assert rep["reward_range"] == 5.0 and rep["verdict_tau"] == 0.5
    assert rep["verdict_min_lambda"] == pytest.approx(need)


def test_r_min_sets_the_range_and_tau_the_target(capsys):
    _, out, _ = _run(capsys, ML100K + ["--r-min", "1", "--lam", "0.5", "--tau", "0.2", "--json"])
    rep = json.loads(out)
    assert rep["reward_range"] == 4.0 and rep["verdict_tau"] == 0.2
    assert "the reward range 4 (1 to 5)" in rep["verdict"] and "τ = 0.2" in rep["verdict"]
    assert "10%" not in rep["verdict"]  # τ was given: not the default fraction
    assert rep["verdict_min_lambda"] == pytest.approx(rep["min_lambda"])


def test_informative_bound_and_tau_only_verdicts(capsys):
    lam = min_lambda(1.0, 1682, 0.05, 5.0, 0.5) * 1.01  # just above the λ for a loss of 10% of the range
    code, out, _ = _run(capsys, ML100K + ["--lam", f"{lam:.6g}", "--json"])
    rep = json.loads(out)
    assert code == 0 and rep["vacuous"] is False
    assert rep["value_loss_bound"] == pytest.approx(value_loss_bound(1.0, 1682, 0.05, 5.0, float(f"{lam:.6g}")))
    assert rep["verdict"].startswith(f"informative: the bound {rep['value_loss_bound']:.3g} is 10% of")
    _, out, _ = _run(capsys, ML100K + ["--tau", "0.5"])
    assert out.splitlines()[2].startswith("informative: λ ≥ 98.9 keeps the value loss below τ = 0.5")
    _, out, _ = _run(capsys, ML100K + ["--tau", "6", "--json"])  # asks for a loss the range already guarantees
    assert json.loads(out)["vacuous"] is True


def test_n_items_is_a_whole_number_and_bad_input_is_usage_error(capsys):
    _, out, _ = _run(capsys, ["theory", "--sigma", "1", "--n-items", "1e6", "--r-max", "1", "--lam", "1", "--json"])
    assert json.loads(out)["n_items"] == 1_000_000
    code, _, err = _run(capsys, ["theory", "--sigma", "1", "--n-items", "1682.5", "--r-max", "5", "--lam", "1"])
    assert code == 2 and "whole number" in err
    code, _, err = _run(capsys, ML100K)
    assert code == 2 and "--lam" in err and "--tau" in err and "--help" in err
    code, _, err = _run(capsys, ML100K + ["--r-min", "5", "--lam", "1"])
    assert code == 2 and "r_min" in err


def test_help_names_lam_or_tau_and_its_example_is_what_the_command_prints(capsys):
    assert main(["theory", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--lam" in text and "--tau" in text and "and/or --tau" in text and "example" in text
    epilog = build_parser()._subparsers._group_actions[0].choices["theory"].epilog
    blocks = [b.strip().splitlines() for b in epilog.split("$ ")[1:]]
    assert len(blocks) == 2
    for block in blocks:
        args = shlex.split(block[0])[1:]  # without `recalign`
        assert main(args) == 0
        printed = capsys.readouterr().out.splitlines()
        assert [line.strip() for line in block[1:]] == printed[:len(block) - 1]
