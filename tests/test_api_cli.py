"""The pretrain / evaluate / recommend stages through `recalign.api` and the CLI, on a tiny file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recalign import api
from recalign.cli import main

TINY = ["model.dim=16", "model.layers=1", "model.heads=1", "model.max_len=8", "train.epochs=2",
        "train.batch_size=8", "train.progress=false", "train.num_threads=1", "eval.ks=5,10"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("api")
    csv = tmp / "logs.csv"
    rows = ["uid,iid,rating,ts"]
    for u in range(30):
        for t in range(12):
            rows.append(f"user{u},movie{(u + 3 * t) % 40},{1 + (u + t) % 5},{100 + t}")
    csv.write_text("\n".join(rows) + "\n")
    out = tmp / "run"
    summary = api.pretrain(str(csv), out, overrides=TINY + ['data.columns="user=uid,item=iid,reward=rating,timestamp=ts"'])
    assert summary["epochs_run"] == 2 and "ndcg@10" in summary["test"]
    return csv, out


def test_run_folder_layout(run):
    _, out = run
    for name in ("config.toml", "model.safetensors", "state.json", "metrics.jsonl", "user_ids.json", "item_ids.json"):
        assert (out / name).is_file(), name
    state = json.loads((out / "state.json").read_text())
    assert {"seed", "git_revision", "data_fingerprint", "test"} <= state.keys()


def test_evaluate_api_and_cli_agree(run, capsys):
    _, out = run
    m = api.evaluate(out, device="cpu")
    assert {"hr@5", "ndcg@10", "mrr", "high/ndcg@10", "n"} <= m.keys()
    assert main(["evaluate", str(out), "--device", "cpu", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli.pop("run")["finished"] is True  # the CLI adds the run's status
    assert cli == pytest.approx(m)
    assert main(["evaluate", str(out), "--split", "valid", "--device", "cpu", "--json"]) == 0


def test_recommend_speaks_original_ids_and_skips_seen(run, capsys):
    csv, out = run
    seen = {line.split(",")[1] for line in csv.read_text().splitlines()[1:] if line.startswith("user3,")}
    recs = api.recommend(out, user="user3", k=5)
    assert len(recs) == 5 and all(r["item"].startswith("movie") for r in recs)
    assert not seen & {r["item"] for r in recs}
    scores = [r["score"] for r in recs]
    assert scores == sorted(scores, reverse=True)
    with_seen = api.recommend(out, user="user3", k=40, exclude_seen=False)
    assert len(with_seen) == 40
    assert main(["recommend", str(out), "--history", "movie1,movie2", "--k", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["items"]) == 3 and not {"movie1", "movie2"} & {r["item"] for r in res["items"]}


def test_recommend_errors_are_clear(run, capsys):
    _, out = run
    assert main(["recommend", str(out), "--user", "nobody"]) == 2
    assert "unknown user id" in capsys.readouterr().err
    assert main(["recommend", str(out), "--history", "movie1,notamovie"]) == 2
    assert "notamovie" in capsys.readouterr().err
    assert main(["evaluate", str(out.parent / "missing")]) == 2
    assert "Traceback" not in capsys.readouterr().err
