"""The demo's first hour: where it writes (`runs/demo-<date>-<time>`, every file named at the
end), progress lines labelled by seed, and figures that explain themselves (a legend entry for
every line, a caption saying what the bars/bands are, a hacking title decided from the data);
`sweep` and `reproduce` share the plotting and get the same."""

from __future__ import annotations

import io
import json
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recalign.cli import main
from recalign.experiments import report
from recalign.experiments.demo import LabelledStream, default_out_dir

TINY = ["sim.n_users=120", "sim.n_items=40", "sim.min_len=8", "sim.max_len=12", "model.dim=8", "model.layers=1",
        "model.max_len=12", "train.epochs=2", "train.batch_size=32", "posttrain.epochs=1", "posttrain.k_samples=2"]


def _png_text(path: Path) -> dict[str, str]:
    with Image.open(path) as im:
        return dict(im.text)


def _trace(d_rm: float, d_true: float, n: int = 5) -> list[dict]:
    return [{"step": 10 * i, "users": 50, "ndcg@10": 0.2, "rm_value": 3.0 + d_rm * i / (n - 1),
             "true_value": 3.5 + d_true * i / (n - 1)} for i in range(n)]


# ------------------------------------------------------------------ the hacking rule
@pytest.mark.parametrize("d_rm, d_true, verdict", [
    (0.3, -0.1, "reward-model score rises while true value falls: hacking"),
    (0.3, 0.0, "reward-model score rises while true value stays flat: hacking"),
    (0.3, 0.1, "both rise: no hacking"),
    (-0.1, 0.1, "true value rises while the reward-model score does not: no hacking"),
    (0.0, 0.1, "true value rises while the reward-model score does not: no hacking"),
    (-0.1, -0.2, "both fall: no hacking (training lowered both)"),
    (0.0, 0.0, "neither changes: nothing to judge"),
    (-0.1, 0.0, "reward-model score falls, true value stays flat: no hacking"),
])
def test_hacking_verdict_from_first_and_last_points(d_rm, d_true, verdict):
    assert report.hacking_verdict([_trace(d_rm, d_true)]) == verdict


def test_hacking_verdict_averages_seeds_and_ignores_the_middle():
    wiggly = _trace(0.3, -0.1)
    wiggly[2]["true_value"] += 5.0  # a high point in the middle does not change the verdict
    assert report.hacking_verdict([wiggly]).endswith(": hacking")
    # one seed hacks, the other gains more than the first loses: the mean over seeds rises
    assert report.hacking_verdict([_trace(0.3, -0.1), _trace(0.3, 0.3)]) == "both rise: no hacking"
    assert report.hacking_verdict([_trace(0.3, 0.1)[:1]]).startswith("only step 0 was traced")
    no_rm = [{k: v for k, v in r.items() if k != "rm_value"} for r in _trace(0.3, 0.1)]
    assert report.hacking_verdict([no_rm]) == "no reward-model score in the trace: nothing to judge"
    ndcg = [{**r, "ndcg@10": 0.2 - 0.01 * i} for i, r in enumerate(_trace(0.3, 0.1))]
    assert report.hacking_verdict([ndcg], "ndcg@10") == "reward-model score rises while NDCG@10 falls: hacking"


def test_traces_title_one_all_or_how_many():
    assert report.traces_title({"ppo": "both rise: no hacking"}) == "ppo: both rise: no hacking"
    assert report.traces_title({"a": "both rise: no hacking", "b": "both rise: no hacking"}) == \
        "all 2 series: both rise: no hacking"
    mixed = {"a": "reward-model score rises while true value falls: hacking", "b": "both rise: no hacking",
             "c": "both fall: no hacking (training lowered both)"}
    assert report.traces_title(mixed) == "hacking in 1 of 3 series (the legend gives each series' verdict)"


# ------------------------------------------------------------------ figures
@pytest.fixture
def legends(monkeypatch):
    """The legend texts of every figure drawn (figure legends and panel legends), by file name."""
    seen: dict[str, list[str]] = {}
    finish = report._finish

    def spy(fig, path, title, caption, legend_of=None):
        texts = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
        texts += [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
        if legend_of is not None:
            texts += legend_of.get_legend_handles_labels()[1]
        seen[Path(path).name] = texts
        return finish(fig, path, title, caption, legend_of)

    monkeypatch.setattr(report, "_finish", spy)
    return seen


def test_trace_figure_title_caption_and_legend(tmp_path, legends):
    traces = {"ppo, noise 0": [_trace(0.3, 0.1), _trace(0.2, 0.05)], "ppo, noise 2": [_trace(0.3, -0.1)] * 1}
    path = report.plot_traces(traces, tmp_path / "t.png", "ppo along training")
    meta = _png_text(path)
    assert meta["Title"] == "ppo along training\nhacking in 1 of 2 series (the legend gives each series' verdict)"
    assert "one line per seed" in meta["Description"] and "no error bars" in meta["Description"]
    assert "the reward model's score rises and the true value does not" in meta["Description"]
    assert set(legends["t.png"]) == {"one line per seed (faint)", "no change since step 0",
                                     "ppo, noise 0, mean of 2 seed(s): no hacking",
                                     "ppo, noise 2, mean of 1 seed(s): hacking"}
    assert report.traces_verdict(traces) == meta["Title"].split("\n")[1]
    assert report.plot_traces({"ppo": [[]]}, tmp_path / "none.png") is None  # nothing traced: no figure


def _delta(mean: float, seeds: int = 3) -> dict:
    return {"mean": mean, "lo": mean - 0.1, "hi": mean + 0.1, "seeds_positive": 2, "seeds": seeds}


def test_methods_and_sweep_figures_say_what_the_bars_are(tmp_path, legends):
    table = {"sft": {"true_value": _delta(3.0)}, "exp_sft": {"delta": {"true_value": _delta(0.2)}},
             "ppo": {"delta": {"true_value": _delta(-0.1)}}}
    meta = _png_text(report.plot_methods({"sim": table}, tmp_path / "m.png", {"sim": "true_value"}, note="N."))
    assert "error bars: 95% paired bootstrap interval over (seed, user) pairs, 3 seed(s)" in meta["Description"]
    assert meta["Description"].endswith(" N.")
    assert set(legends["m.png"]) == {"sft (Δ = 0)", "95% paired interval"}
    point = {"true_value": _delta(3.1), "delta": {"true_value": _delta(0.1)}, "ess": 0.5}
    summary = {"param": "posttrain.lam", "values": ["0.3", "3"], "metric": "true_value", "baseline": "sft",
               "seeds": 3, "series": {"exp_sft": [point, point]},
               "fixed": {"sft": {"true_value": _delta(3.0)}, "ppo": {"true_value": _delta(3.2),
                                                                     "delta": {"true_value": _delta(0.2)}}}}
    meta = _png_text(report.plot_sweep(summary, tmp_path / "s.png"))
    assert "bands: 95% paired bootstrap interval over (seed, user) pairs, 3 seed(s)" in meta["Description"]
    assert "Dashed: methods run once" in meta["Description"] and "effective sample size" in meta["Description"]
    assert set(legends["s.png"]) == {"exp_sft", "sft (fixed)", "ppo (fixed)"}
    raw = {**summary, "series": {"exp_sft": [{"true_value": _delta(3.1)}] * 2}, "fixed": {}}
    assert "95% Student-t interval over the seeds" in _png_text(report.plot_sweep(raw, tmp_path / "r.png"))["Description"]


# ------------------------------------------------------------------ labelled lines
def test_labelled_stream_prefixes_whole_lines():
    sink = io.StringIO()
    s = LabelledStream(sink, "[seed 3] ")
    s.write("recalign: epoch=1")  # print() writes the text, then the newline
    assert sink.getvalue() == ""  # nothing until the line is complete: parallel lines do not mix
    s.write("\n")
    s.write("two\nthree\n\n")
    s.write("\rbar 10%")
    s.write("\rbar 20%\r")
    s.write("tail")
    s.flush()
    assert sink.getvalue() == ("[seed 3] recalign: epoch=1\n[seed 3] two\n[seed 3] three\n\n"
                               "\r[seed 3] bar 10%\r[seed 3] bar 20%\r[seed 3] tail")
    assert s.isatty() is False  # the rest is the wrapped stream's


def test_default_out_dir_is_dated_under_runs_and_never_reused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    now = datetime(2025, 3, 4, 5, 6, 7)
    assert default_out_dir(now) == Path("runs/demo-20250304-050607")
    Path("runs/demo-20250304-050607").mkdir(parents=True)
    assert default_out_dir(now) == Path("runs/demo-20250304-050607-2")


# ------------------------------------------------------------------ through the CLI
def test_demo_cli_default_folder_seed_labels_files_and_figures(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--quick", "--seeds", "2", "--jobs", "2", "--set", "train.progress=true"]) == 0
    out, err = capfd.readouterr()
    (folder,) = Path("runs").iterdir()
    assert re.fullmatch(r"demo-\d{8}-\d{6}", folder.name)
    err_lines = err.splitlines()
    assert err_lines[0].startswith(f"recalign demo: writing into {folder} (2 seed(s), 2 at a time; grid quick: 5 methods, "
                                   "9 runs per seed")
    assert all(re.match(r"\[seed [01]\] ", line) for line in err_lines[1:]), err
    for seed in (0, 1):  # the demo's own lines and the training loop's (train.progress)
        assert any(line.startswith(f"[seed {seed}] recalign demo: pretrained sasrec in") for line in err_lines)
        assert any(line.startswith(f"[seed {seed}] recalign: epoch=") for line in err_lines)
    tail = out.splitlines()[-9:]
    assert re.fullmatch(rf"\d+ s; written into {re.escape(str(folder))}:", tail[0])
    named = [line.split()[0] for line in tail[1:]]
    assert named == ["results.json", "table.txt", "contest.md", "methods.png", "frontier.png", "hacking.png", "seed0/",
                     "seed1/"]
    assert all((folder / n).exists() for n in named)
    assert "pretrain, reward_model, sft, linear_sft_weight_norm_global_, linear_sft_weight_norm_context_, " \
           "exp_sft_lam_1.0_, exp_sft_lam_2.0_, ppo_kl_coef_0.03_, ppo_kl_coef_0.3_, dpo_beta_0.1_, dpo_beta_1.0_" in tail[7]
    res = json.loads((folder / "results.json").read_text())
    assert list(res["files"]) == named
    picked = [sel["run"] for sel in res["methods"]["ppo"]["selected"]["practical"]]  # the hacking figure's runs
    traces = {"ppo": [report.read_trace(folder / f"seed{s}" / run) for s, run in enumerate(picked)]}
    title = _png_text(folder / "hacking.png")["Title"]
    assert title == report.traces_verdict(traces) and title.startswith("ppo: ")
    assert not title.endswith("nothing to judge")  # --quick traces ppo every step: a verdict
    assert len(traces["ppo"][0]) > 2 and not (folder / "seed0" / "sft" / "trace.jsonl").exists()  # ppo only
    assert title in tail[6]
    meta = _png_text(folder / "methods.png")["Description"]
    assert "95% Student-t interval over the seeds' mean differences" in meta
    assert "reward–kl frontier" in _png_text(folder / "frontier.png")["Title"].lower()
    assert "KL(π‖π0)" in out and "E_π[r*]" in out and re.search(r"^\s+oracle\s", out, re.M)  # the oracle rule's row


def test_sweep_and_reproduce_share_the_captions_and_verdict(tmp_path, capsys):
    sets = sum([["--set", t] for t in TINY + ["posttrain.trace_every=1"]], [])
    out = tmp_path / "sw"
    assert main(["sweep", "--quick", "--param", "posttrain.lam", "--values", "0.3,3", "--methods", "exp_sft,ppo",
                 "--out", str(out)] + sets) == 2  # ppo does not read lam: refused before any training
    assert "ppo does not read posttrain.lam" in capsys.readouterr().err and not (out / "results.json").exists()
    assert main(["sweep", "--quick", "--param", "posttrain.kl_coef", "--values", "0.1,1", "--methods", "ppo",
                 "--trace", "--out", str(out)] + sets) == 0
    assert "trace.png" in capsys.readouterr().out
    title = _png_text(out / "trace.png")["Title"]
    assert f"Trace: {title}." in (out / "report.md").read_text()
    assert "bands: 95% paired bootstrap" in _png_text(out / "sweep.png")["Description"]
    out = tmp_path / "rep"
    assert main(["reproduce", "--quick", "--datasets", "sim", "--seeds", "1", "--methods", "sft,ppo", "--lams", "1",
                 "--noise-scales", "", "--no-judges", "--out", str(out)] + sets) == 0
    hack = _png_text(out / "hacking.png")["Title"].split("\n")
    assert hack[0].startswith("ppo: the reward model's score") and hack[1].startswith("ppo, ")
    assert "1 seed(s)" in _png_text(out / "methods.png")["Description"]
    assert "bands:" in _png_text(out / "lambda_sim.png")["Description"]
    assert np.isfinite(json.loads((out / "results.json").read_text())["seconds"]["total (wall)"])
