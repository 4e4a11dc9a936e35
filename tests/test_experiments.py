"""The evidence layer: summaries with intervals, the held-out judge, the training trace, `sweep`,
`reproduce` and their reports (on tiny simulated worlds; the science is in benchmarks/ and the
README, these check the machinery)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from recalign.cli import main
from recalign.data.prepared import prepare
from recalign.errors import InputError
from recalign.eval.judge import judge_lists, judge_summary, judge_topk, topk_lists
from recalign.eval.stats import mean_ci
from recalign.experiments import report
from recalign.experiments.compare import folder_name
from recalign.experiments.presets import preset_config
from recalign.experiments.reproduce import METHODS, folder, run_reproduce
from recalign.experiments.selection import apply_selection, checkpoint_arrays, read_checkpoints
from recalign.experiments.summary import delta_stats, label_summary, value_stats
from recalign.experiments.sweep import JudgeCache, run_sweep
from recalign.stages.common import build_model, load_run
from recalign.stages.judge import judge_split, train_judges
from recalign.stages.posttrain import posttrain

TINY = ["sim.n_users=120", "sim.n_items=40", "sim.min_len=8", "sim.max_len=12", "model.dim=8", "model.layers=1",
        "model.max_len=12", "train.epochs=2", "train.batch_size=32", "posttrain.epochs=1", "posttrain.k_samples=2"]


def _seed_result(a: np.ndarray, b: np.ndarray) -> dict:
    return {"true_value": {"x": a, "sft": b}, "ndcg@10": {"x": a / 10, "sft": b / 10}, "high": a > a.mean(),
            "judge": {}, "metrics": {"x": {}, "sft": {}}, "setup": {"x": {"ess": 0.5}, "sft": {"ess": 1.0}}}


def test_summary_intervals_and_paired_deltas():
    rng = np.random.default_rng(0)
    seeds = [_seed_result(rng.normal(3.2, 0.3, 200), rng.normal(3.0, 0.3, 200)) for _ in range(3)]
    v = value_stats(seeds, "x", "true_value")
    means = [s["true_value"]["x"].mean() for s in seeds]
    assert v["mean"] == pytest.approx(np.mean(means))
    assert v["lo"] < v["mean"] < v["hi"]
    d = delta_stats(seeds, "x", "sft", "true_value")  # a t interval over the seeds' mean differences
    per_seed = [(s["true_value"]["x"] - s["true_value"]["sft"]).mean() for s in seeds]
    assert d["per_seed"] == pytest.approx(per_seed) and d["interval"] == "t over seed means (n=3)"
    assert (d["mean"], d["lo"], d["hi"]) == pytest.approx(mean_ci(per_seed))
    assert d["bootstrap_two_stage"]["lo"] > 0 and v["per_seed"] == pytest.approx(means)
    assert d["lo"] > 0 and d["seeds_positive"] == 3 and d["seeds"] == 3
    s = label_summary(seeds, "x", "sft")
    assert s["ess"] == 0.5 and "judge_value" not in s and "delta" in s
    assert s["high/ndcg@10"]["mean"] > s["ndcg@10"]["mean"]  # the high subset is the upper half here
    one = value_stats(seeds[:1], "x", "true_value")  # one seed: a bootstrap over users
    assert one["lo"] < one["mean"] < one["hi"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = preset_config("sim", quick=True, overrides=TINY)
    data = prepare(cfg)
    from recalign.stages.pretrain import pretrain

    run = tmp_path_factory.mktemp("tiny") / "pre"
    pretrain(cfg, run)
    return cfg, data, run


def test_judges_see_every_interaction_and_score_top10(tiny, tmp_path):
    cfg, data, _ = tiny
    js = judge_split(data.split)
    assert (js.train_end == data.split.offsets[1:]).all()
    assert len(js.train_rows()) == len(data.inter)  # validation and test targets included
    judges = train_judges(cfg, data, tmp_path, k=2)
    assert [j.family for j in judges] == ["seq", "seq", "mf", "mf"] and (tmp_path / "judge1" / "model.safetensors").is_file()
    model = build_model(cfg, data)
    vals = judge_topk(judges, model, data.seq, data.split.test, cfg.eval)
    assert vals.shape == (4, len(data.split.test)) and np.isfinite(vals).all()
    s = judge_summary(vals)
    assert s["judge_value"] == pytest.approx(vals.mean())
    assert s["judge_spread"] == pytest.approx(np.std(vals.mean(1), ddof=1))
    assert s["judge_spread"] > 0  # different seeds, different judges


def test_trace_records_reward_model_and_true_value(tiny, tmp_path):
    cfg, data, run = tiny
    posttrain(run, "ppo", tmp_path / "ppo", overrides=["posttrain.trace_every=1", "posttrain.trace_users=50"],
              data=data)
    trace = report.read_trace(tmp_path / "ppo")
    assert trace[0]["step"] == 0 and len(trace) >= 2
    assert [t["step"] for t in trace] == list(range(len(trace)))
    assert all({"rm_value", "true_value", "ndcg@10"} <= t.keys() and t["users"] == 50 for t in trace)
    assert report.plot_traces({"ppo": [trace]}, tmp_path / "t.png").is_file()


def test_sweep_shares_pretraining_for_posttrain_fields(tmp_path):
    cfg = preset_config("sim", quick=True, overrides=TINY)
    res = run_sweep(cfg, "posttrain.lam", ["0.2", "5"], ["exp_sft"], tmp_path, seeds=2, log=lambda m: None)
    s = res["summary"]
    assert s["shared_pretraining"] and s["seeds"] == 2 and s["metric"] == "true_value"
    assert len(list(tmp_path.glob("seed*/pretrain/model.safetensors"))) == 2
    lo_lam, hi_lam = s["series"]["exp_sft"]
    assert lo_lam["ess"] < hi_lam["ess"] <= 1.0  # smaller λ, more concentrated weights
    assert "delta" in lo_lam and set(s["fixed"]) == {"pretrained", "sft"}
    assert report.plot_sweep(s, tmp_path / "s.png").is_file()
    assert "posttrain.lam" in report.sweep_markdown(s)


def test_sweep_select_reads_each_run_at_its_validation_selected_checkpoint(tmp_path):
    """`--select practical`: every run checkpointed, each read at the checkpoint of the largest
    validation high NDCG@10 (the selection's own record); the default reads the end."""
    cfg = preset_config("sim", quick=True, overrides=TINY + ["posttrain.epochs=2"])
    res = run_sweep(cfg, "posttrain.lam", ["0.2", "5"], ["exp_sft"], tmp_path, seeds=2, log=lambda m: None,
                    select="practical", checkpoints=2)
    s = res["summary"]
    assert s["select"]["rule"] == "practical" and s["select"]["metric"] == "high/ndcg@10"
    assert set(s["select"]["steps"]) == {"sft", "exp_sft[lam=0.2]", "exp_sft[lam=5]"}
    for i, seed in enumerate(res["per_seed"]):
        for label, sel in seed["base"]["selected"].items():
            recs = read_checkpoints(tmp_path / f"seed{i}" / folder_name(label))
            assert len(recs) >= 3 and sel["step"] == s["select"]["steps"][label][i]
            best = max(r["valid"]["high/ndcg@10"] for r in recs)
            assert sel["valid"]["high/ndcg@10"] == best  # the validation argmax ...
            rec = next(r for r in recs if r["step"] == sel["step"])
            assert seed["base"]["true_value"][label].mean() == pytest.approx(rec["test"]["true_value"])  # ... read on test
    point = s["series"]["exp_sft"][0]["true_value"]["per_seed"]
    assert point == pytest.approx([p["base"]["selected"]["exp_sft[lam=0.2]"]["test"]["true_value"] for p in res["per_seed"]])
    with pytest.raises(InputError, match="oracle needs the simulator"):
        run_sweep(preset_config("ml-100k", quick=True), "posttrain.lam", ["1"], ["exp_sft"], tmp_path / "x",
                  select="oracle")


REAL = ["model.dim=8", "model.layers=1", "model.max_len=12", "train.epochs=2", "train.batch_size=32",
        "posttrain.epochs=2", "posttrain.k_samples=2", "eval.judge_epochs=1"]


def _ratings_csv(path: Path, n_users: int = 80, n_items: int = 50, seed: int = 0) -> Path:
    """A real-data-shaped log (a CSV, no simulator behind it): ratings 1-5 from user and item
    biases, 10-15 distinct items per user."""
    rng = np.random.default_rng(seed)
    ub, ib = rng.normal(0, 0.8, n_users), rng.normal(0, 0.8, n_items)
    rows = []
    for u in range(n_users):
        for t, i in enumerate(rng.choice(n_items, rng.integers(10, 16), replace=False)):
            r = int(np.clip(np.rint(3.5 + ub[u] + ib[i] + rng.normal(0, 0.5)), 1, 5))
            rows.append(f"{u + 1},{i + 1},{r},{1000 * u + t}\n")
    path.write_text("user,item,rating,timestamp\n" + "".join(rows))
    return path


def test_sweep_select_judges_score_each_selected_checkpoints_lists(tmp_path):
    """Real data, `--select practical --judges`: the judges score each run's selected checkpoint
    (the top-10 lists its checkpoint file saved, by `judge_lists`, the path `judge_topk` scores
    by); a checkpoint's lists are the model's own (bit-equal: the final one against the saved
    final weights, step 0 against π0), so scoring them equals `judge_topk` of that model."""
    cfg = preset_config(str(_ratings_csv(tmp_path / "log.csv")), quick=True, overrides=REAL)
    assert cfg.data.name != "sim"
    res = run_sweep(cfg, "posttrain.lam", ["0.3", "3"], ["exp_sft"], tmp_path / "sw", judges=2, select="practical",
                    checkpoints=2, log=lambda m: None)
    base, data = res["per_seed"][0]["base"], prepare(cfg)
    judges = JudgeCache(tmp_path / "sw", 2, lambda m: None).get(cfg, data)  # the sweep's, loaded from its folder
    fam = np.array([j.family for j in judges])
    test = data.split.test
    _, _, pi0 = load_run(base["runs"]["pretrained"], data=data)
    for label, sel in base["selected"].items():
        run = base["runs"][label]
        vals = judge_lists(judges, data.seq, test, checkpoint_arrays(run, sel["step"])["top10"], cfg.eval.batch_size)
        for f in ("seq", "mf"):  # the selected checkpoint's lists, scored
            assert np.array_equal(base["judge_family"][label][f], vals[fam == f])
        assert base["metrics"][label]["judge/mf"] == pytest.approx(vals[fam == "mf"].mean())
        steps = [r["step"] for r in read_checkpoints(run)]
        _, _, final = load_run(run, data=data)
        for step, model in ((steps[-1], final), (0, pi0)):
            top = checkpoint_arrays(run, step)["top10"]
            assert top.shape == (len(test), 10) and np.array_equal(top, topk_lists(model, data.seq, test, cfg.eval))
            assert np.array_equal(judge_lists(judges, data.seq, test, top, cfg.eval.batch_size),
                                  judge_topk(judges, model, data.seq, test, cfg.eval))
    assert set(base["judge_agreement"]) == {"pretrained", "exp_sft[lam=0.3]", "exp_sft[lam=3]"}
    s = res["summary"]
    assert "judge_value" in s["fixed"]["sft"] and all("judge_value" in p for p in s["series"]["exp_sft"])
    with pytest.raises(InputError, match="pass the judges"):  # judge values of final policies are never kept
        apply_selection({"judge_family": {"sft": {}}, "runs": {}}, "practical")


def test_sweep_over_a_data_field_runs_each_value(tmp_path):
    cfg = preset_config("sim", quick=True, overrides=TINY)
    res = run_sweep(cfg, "sim.noise_scale", ["0", "2"], ["exp_sft"], tmp_path, log=lambda m: None)
    s = res["summary"]
    assert not s["shared_pretraining"]
    assert {p.parent.name for p in tmp_path.glob("seed0/*/pretrain")} == {"sim.noise_scale=0", "sim.noise_scale=2"}
    assert set(s["series"]) == {"pretrained", "sft", "exp_sft"}
    # noise enters only the logged rewards: the same items are logged, so π0 and sft are the same
    assert s["series"]["sft"][0]["true_value"]["mean"] == pytest.approx(s["series"]["sft"][1]["true_value"]["mean"])


def test_sweep_cli_rejects_an_unknown_field(tmp_path, capsys):
    assert main(["sweep", "--param", "posttrain.lamda", "--values", "1", "--out", str(tmp_path)]) == 2
    assert "lamda" in capsys.readouterr().err


def test_reproduce_quick_writes_report_and_figures(tmp_path, capsys):
    out = tmp_path / "r"
    args = ["reproduce", "--quick", "--datasets", "sim", "--seeds", "2", "--lams", "0.3,3", "--noise-scales", "0,2",
            "--noise-models", "gaussian", "--jobs", "2", "--out", str(out)] + sum([["--set", t] for t in TINY], [])
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    sim = res["datasets"]["sim"]
    contest = sim["contest"]  # the methods' table: the contest, each method selected on validation
    assert res["grid"] == contest["grid"] == "quick" and list(contest["methods"]) == list(METHODS)
    for name, m in contest["methods"].items():
        assert {"true_value", "expected_value", "kl", "selected", "steps", "seconds"} <= set(m)
        assert set(m["selected"]) == {"practical", "oracle"} and len(m["selected"]["practical"]) == 2
        assert set(m["delta_vs_sft"]) == (set() if name == "sft" else {"practical", "oracle"})
    assert set(sim["fixed"]) == {"pretrained", "sft"}  # the λ curve's baseline, from the contest's π0
    assert not list(out.glob("sim/lambda/seed*/pretrain"))
    assert [p["value"] for p in sim["series"]["exp_sft"]] == ["0.3", "3"]
    assert res["noise"]["sim (gaussian noise)"]["values"] == ["0", "2"]
    # the λ curve and the noise sweep read every run at its checkpoint selected on validation (practical rule)
    lam_sel, noise_sel = sim["select"], res["noise"]["sim (gaussian noise)"]["select"]
    assert lam_sel["rule"] == noise_sel["rule"] == "practical" and lam_sel["metric"] == "high/ndcg@10"
    assert set(lam_sel["steps"]) == {"sft", "exp_sft[lam=0.3]", "exp_sft[lam=3]"}
    assert set(noise_sel["steps"]) == {f"{v}/{m}" for v in ("0", "2") for m in METHODS}
    assert all(len(s) == 2 for s in [*lam_sel["steps"].values(), *noise_sel["steps"].values()])
    run = out / "sim" / "lambda" / "seed0" / folder_name("exp_sft[lam=3]")
    assert lam_sel["steps"]["exp_sft[lam=3]"][0] in [r["step"] for r in read_checkpoints(run)]
    for name in ("lambda_sim.png", "noise_gaussian.png", "hacking.png", "methods.png", "frontier_sim.png", "report.md"):
        assert (out / name).is_file(), name
    md = (out / "report.md").read_text()
    assert "**Claim 1**" in md and "**Claim 2**" in md and "**Claim 3**" in md
    claim1 = next(line for line in md.splitlines() if "**Claim 1**" in line)
    assert "practical rule (selected lam=" in claim1 and "oracle rule" in claim1
    assert re.search(r"→ \*\*(holds|contradicted|inconclusive)\*\*", claim1)
    assert "| KL(π‖π0) | E_π[r*] |" in md and "![reward–KL frontier, sim](frontier_sim.png)" in md
    assert "final policies" not in md and md.count("selected on validation by the practical rule (argmax") == 2
    assert "report.md" in capsys.readouterr().out
    assert main(args) == 2  # never overwrites a finished report
    (out / "results.json").unlink()
    assert main(args) == 2  # a non-empty folder needs --resume
    assert "--resume" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0  # every run had finished: all reused, nothing retrained
    err = capsys.readouterr().err
    assert "pretrained sasrec in" not in err and "post-trained" not in err
    again = json.loads((out / "results.json").read_text())
    assert again["datasets"]["sim"]["fixed"] == res["datasets"]["sim"]["fixed"]
    assert again["datasets"]["sim"]["contest"]["methods"] == contest["methods"]


def test_reproduce_quick_on_real_data_has_the_judges_on_selected_checkpoints(tmp_path, monkeypatch):
    """Real data (a CSV): the judges are trained once, score the λ curve's runs at their
    checkpoints selected on validation, and claim 4 states their agreement at the peak λ."""
    monkeypatch.chdir(tmp_path)  # a relative file name: reproduce's folders are `out / dataset`
    ds = _ratings_csv(Path("log.csv")).name
    out = tmp_path / "r"
    args = ["reproduce", "--quick", "--datasets", ds, "--seeds", "2", "--methods", "sft,exp_sft", "--lams", "0.3,3",
            "--jobs", "1", "--out", str(out)] + sum([["--set", t] for t in REAL], [])
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    r = res["datasets"][ds]
    assert f"{ds} judges" in res["seconds"] and r["select"]["rule"] == "practical"
    assert set(r["judge_families"]) == {"pretrained", "exp_sft[lam=0.3]", "exp_sft[lam=3]"}
    assert all(set(j["deltas"]) == {"seq", "mf"} and j["agree"] for j in r["judge_families"].values())
    assert "judge_value" in r["fixed"]["sft"] and all("judge_value" in p for p in r["series"]["exp_sft"])
    # the contest's selections are judged too: each method's practically selected checkpoint
    cj = r["contest"]["judge_families"]
    assert set(cj) == {"exp_sft"} and set(cj["exp_sft"]["deltas"]) == {"seq", "mf"} and cj["exp_sft"]["agree"]
    assert all(len(d["per_seed"]) == 2 for d in cj["exp_sft"]["deltas"].values())
    md = (out / "report.md").read_text()
    claim4 = next(line for line in md.splitlines() if "**Claim 4**" in line)
    assert "At that λ, judge families vs sft: judge/seq" in claim4 and "the validated families agree: **" in claim4
    assert "The held-out judges on each method's selected policy (practical rule): `exp_sft`: judge families" in claim4
    assert "Judge ensemble: 2 reward models" in md


def test_checkpoint_lists_fit_only_when_every_target_keeps_ten_candidates():
    """Top-10 lists at checkpoints need 10 candidates per target: with seen items masked, the
    catalog minus the distinct items of the context (a repeat counts once)."""
    import torch

    from recalign.stages.posttrain import lists_fit

    class Seq:  # two targets: contexts {1, 2, 2} and {1..5}
        def seen_items(self, targets, idx):
            return torch.tensor([0, 3, 8]), torch.tensor([1, 2, 2, 1, 2, 3, 4, 5])

    targets = [0, 1]
    assert lists_fit(Seq(), targets, True, 15) and not lists_fit(Seq(), targets, True, 14)
    assert lists_fit(Seq(), targets, False, 10) and not lists_fit(Seq(), targets, False, 9)


def test_reproduce_writes_a_dataset_given_as_a_path_under_out(tmp_path):
    assert folder("ml-100k") == "ml-100k" and folder("/data/my logs.csv") == "my_logs.csv"
    assert folder(str(tmp_path / "logs.csv")) == "logs.csv"  # not the file's own absolute path
    with pytest.raises(InputError, match="same file name"):
        run_reproduce(["/a/logs.csv", "/b/logs.csv"], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything was written
