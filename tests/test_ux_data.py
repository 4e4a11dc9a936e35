"""The first hour of a new user, on the data side: nothing silent, everything discoverable.

- A: the data summary (users and rows dropped, duplicates, held-out targets that repeat a seen
  item and what the evaluation does with them) on stderr, in `recalign data stats` and in
  `Prepared.summary` / `state.json`.
- B: `recalign data download` without network (exit 2, the URL and where to put the file), and
  its `--help` listing the datasets.
- C: `--columns ROLE=NAME` on a header-less file says what happened.
- D: `recommend` shows titles (MovieLens item files, or `--items FILE`) and keeps the ids' type.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recalign.cli import main
from recalign.config import load_config
from recalign.data.prepared import prepare
from recalign.data.schema import Interactions
from recalign.data.split import leave_one_out, temporal
from recalign.data.summary import data_summary, repeat_targets
from recalign.eval.metrics import target_ranks
from recalign.train.runfolder import write_run_files

TINY = ["model.dim=8", "model.layers=1", "model.heads=1", "model.max_len=8", "train.epochs=1",
        "train.batch_size=8", "train.progress=false", "train.num_threads=1", "eval.ks=5,10"]


def sparse_file(path: Path) -> Path:
    """1,000 users: 960 rated one item, 40 rated eight items (item 1 three times, 2 twice: their
    test target is item 1 and their validation target item 2, both seen before); the last row is
    an exact duplicate of the one before (a one-item user, who then has two rows)."""
    rows = ["uid,iid,rating,ts"]
    t = 0
    for u in range(1000):
        items = [1, 2, 3, 1, 4, 5, 2, 1] if u % 25 == 0 else [u % 30 + 10]
        for k, item in enumerate(items):
            t += 1
            rows.append(f"u{u},i{item},{1 + k % 5},{t}")
    rows.append(rows[-1])
    path.write_text("\n".join(rows) + "\n")
    return path


# --------------------------------------------------------------------------------------------
# A. the data summary
# --------------------------------------------------------------------------------------------


def test_data_stats_reports_drops_duplicates_and_repeat_targets(tmp_path, capsys):
    f = sparse_file(tmp_path / "sparse.csv")
    assert main(["data", "stats", str(f), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)["data_summary"]
    assert (s["users"], s["interactions"], s["split"]) == (1000, 1281, "loo")
    assert (s["users_dropped"], s["rows_dropped"], s["users_not_evaluated"]) == (960, 961, 960)
    assert (s["exact_duplicate_rows"], s["duplicate_rows_kept"], s["duplicate_rows_dropped"]) == (1, 1, 0)
    assert (s["test_targets"], s["test_repeat_targets"], s["valid_targets"], s["valid_repeat_targets"]) == (40, 40, 40, 40)
    assert s["training_rows"] == 40 * 6 and s["mask_seen"] is True
    assert "rankable" in s["repeat_targets_evaluation"]

    assert main(["data", "stats", str(f), "--set", 'data.duplicates="drop"', "--set", "data.min_user_interactions=9"]) == 0
    out = capsys.readouterr().out
    assert "users dropped (< 9 interactions)" in out and "1,000 (100.0%), 1,280 rows" in out
    assert "no user has at least 9 interactions" in out
    assert "exact duplicate rows dropped (data.duplicates=drop)  1" in out.replace("   ", "  ").replace("   ", "  ")


def test_pretrain_says_on_stderr_what_was_dropped(tmp_path, capsys):
    f = sparse_file(tmp_path / "sparse.csv")
    argv = ["pretrain", "--data", str(f), "--out", str(tmp_path / "run"), "--json"]
    assert main(argv + sum((["--set", t] for t in TINY), [])) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)  # stdout keeps exactly one JSON object
    lines = [ln for ln in captured.err.splitlines() if ln.startswith("recalign: data:")]
    assert len(lines) == 2, captured.err
    assert "dropped 960 of 1,000 users (96.0%) with fewer than 3 interactions" in lines[0]
    assert "kept 1 exact duplicate rows" in lines[0]
    assert "40 of 40 test targets (100.0%) and 40 of 40 validation targets repeat an item" in lines[1]
    assert "stay rankable" in lines[1]


def test_prepared_summary_and_state_json(tmp_path, capsys):
    f = sparse_file(tmp_path / "s.csv")
    cfg = load_config(None, [f'data.name="{f}"', 'data.duplicates="drop"', "eval.mask_seen=false"])
    data = prepare(cfg)
    err = capsys.readouterr().err
    assert "dropped 1 exact duplicate rows (data.duplicates=drop)" in err
    assert "eval.mask_seen is off" in err
    assert data.summary["duplicate_rows_dropped"] == 1 and data.summary["rows_dropped"] == 960
    prepare(cfg)  # the same data again (a sweep): said once per process
    assert capsys.readouterr().err == ""
    write_run_files(tmp_path / "run", cfg, data.inter, {"stage": "x"}, data_summary=data.summary)
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["data_summary"] == json.loads(json.dumps(data.summary)) and state["stage"] == "x"
    write_run_files(tmp_path / "run2", cfg, data.inter)
    assert "data_summary" not in json.loads((tmp_path / "run2" / "state.json").read_text())


def test_clean_data_prepares_silently(capsys):
    cfg = load_config(None, ['data.name="sim"', "sim.n_users=50", "sim.n_items=60"])
    data = prepare(cfg)
    assert capsys.readouterr().err == ""
    assert data.summary["users_dropped"] == 0 and data.summary["test_repeat_targets"] == 0


@pytest.mark.data
def test_movielens_summaries(shared_data, capsys):
    for name, users in (("ml-100k", 943), ("ml-latest-small", 610)):
        data = prepare(load_config(None, [f'data.name="{name}"', f'data.data_dir="{shared_data}"']))
        s = data.summary
        assert (s["users"], s["users_dropped"], s["test_targets"], s["test_repeat_targets"]) == (users, 0, users, 0)
    assert capsys.readouterr().err == ""  # nothing dropped, nothing repeats: nothing to say


def test_temporal_summary_counts_users_without_test_target():
    u = np.array(["a"] * 4 + ["b"] * 2)
    inter = Interactions.from_raw(u, np.array([1, 2, 1, 3, 1, 2]), np.array([1, 2, 8, 9, 1, 1]),
                                  np.ones(6))
    s = data_summary(inter, temporal(inter, 0.6, 0.2), mask_seen=True)
    assert s["min_user_interactions"] is None and s["users_not_evaluated"] == 1  # b: nothing after the cut-off
    assert s["test_targets"] == 1


def test_repeat_targets_match_a_loop():
    rng = np.random.default_rng(0)
    n = 3000
    inter = Interactions.from_raw(rng.integers(0, 80, n), rng.integers(0, 25, n), rng.integers(0, 50, n),
                                  np.ones(n))
    split = leave_one_out(inter)
    for t in (split.valid, split.test):
        want = [inter.item[r] in set(inter.item[split.offsets[u]:e]) for u, e, r in zip(t.users, t.context_end, t.target_row)]
        assert repeat_targets(inter, t).tolist() == want
        assert 0 < sum(want) < len(want)


def test_mask_seen_keeps_a_repeated_target_rankable():
    """What the summary states: with seen items masked, a target that is itself a seen item is
    still a candidate (ranked among the unseen items), not removed."""
    w = torch.tensor([[0.0], [5.0], [4.0], [3.0], [2.0], [1.0]])  # scores of tokens 1..5: 5 > 4 > ... > 1
    q = torch.ones(1, 1)
    seen = (torch.tensor([0, 2]), torch.tensor([1, 3]))  # history: tokens 1 and 3
    assert target_ranks(q, w, torch.tensor([3]), exclude=seen).tolist() == [2]  # 1 masked; 2 above 3
    assert target_ranks(q, w, torch.tensor([3])).tolist() == [3]  # mask_seen=false: 1 and 2 above


# --------------------------------------------------------------------------------------------
# B. downloads without network
# --------------------------------------------------------------------------------------------


def test_download_without_network_exits_2_with_url_and_place(tmp_path, monkeypatch, capsys):
    from recalign.data import download as dl

    src = dataclasses.replace(dl.SOURCES["ml-100k"], url="http://127.0.0.1:9/x/ml-100k.zip")  # loopback only
    monkeypatch.setitem(dl.SOURCES, "ml-100k", src)
    assert main(["data", "download", "ml-100k", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "http://127.0.0.1:9/x/ml-100k.zip" in err and "Traceback" not in err
    assert f"put the file at {tmp_path / 'ml-100k.zip'}" in err
    assert str(tmp_path / "ml-100k" / "u.data") in err
    assert f"recalign data download ml-100k --data-dir {tmp_path}" in err
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_download_without_network_unpinned_names_the_flag(tmp_path, monkeypatch, capsys):
    from recalign.data import download as dl

    src = dataclasses.replace(dl.SOURCES["ml-10m"], url="http://127.0.0.1:9/ml-10m.zip")
    monkeypatch.setitem(dl.SOURCES, "ml-10m", src)
    assert main(["data", "download", "ml-10m", "--data-dir", str(tmp_path), "--insecure-skip-checksum"]) == 2
    err = capsys.readouterr().err
    assert "--insecure-skip-checksum` again" in err and "ml-10M100K renamed to ml-10m" in err


def test_download_help_lists_sizes_and_pinning(capsys):
    assert main(["data", "download", "--help"]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ml-") or ln.startswith("  obd")}
    assert "4.9 MB" in lines["ml-100k"] and "sha256 pinned" in lines["ml-100k"]
    assert "size unknown" in lines["ml-10m"] and "not pinned" in lines["ml-10m"]
    assert {"ml-1m", "ml-20m", "ml-25m", "ml-32m", "ml-latest-small", "obd"} <= lines.keys()


# --------------------------------------------------------------------------------------------
# C. a column mapping on a header-less file
# --------------------------------------------------------------------------------------------


def _stats_error(capsys, *argv: str) -> str:
    assert main(["data", "stats", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1  # one paragraph
    return err


def test_mapping_on_a_headerless_csv_says_there_is_no_header(tmp_path, capsys):
    f = tmp_path / "logs.csv"
    f.write_text("1,10,4,100\n1,11,5,101\n2,10,3,102\n")
    err = _stats_error(capsys, str(f), "--columns", "item=iid,user=uid,reward=r,timestamp=ts")
    assert str(f) in err and "seems to have no header" in err and "'1,10,4,100'" in err
    assert "('iid', 'uid', 'r', 'ts') are not there" in err
    assert "--no-header --columns item,user,reward,timestamp" in err  # the roles in the order named
    assert "--no-header was given" not in err and "with --no-header" not in err
    err = _stats_error(capsys, str(f), "--columns", "user=uid")  # the other roles are completed
    assert "--no-header --columns user,item,reward,timestamp" in err
    err = _stats_error(capsys, str(f), "--no-header", "--columns", "user=uid,item=iid")  # it was given
    assert str(f) in err and "--no-header was given" in err and "'user=uid' is a ROLE=NAME mapping" in err
    assert main(["data", "stats", str(f), "--no-header", "--columns", "user,item,reward,timestamp", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["interactions"] == 3


def test_mapping_on_an_amazon_ratings_csv_says_there_is_no_header(tmp_path, capsys):
    f = tmp_path / "Books.csv"
    f.write_text("B000000001,A1,4,100\nB000000002,A2,5,101\n")
    err = _stats_error(capsys, str(f), "--columns", "user=uid,item=iid,reward=r,timestamp=ts")
    assert str(f) in err and "has no header" in err and "Amazon ratings CSV" in err
    assert "'uid', 'iid', 'r', 'ts'" in err and "--columns item,user,reward,timestamp" in err
    assert "--no-header was given" not in err and "with --no-header" not in err


# --------------------------------------------------------------------------------------------
# D. titles in `recommend`, ids in their own type
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def int_run(tmp_path_factory) -> Path:
    """A tiny run on a generic CSV whose user and item ids are integers."""
    tmp = tmp_path_factory.mktemp("titles")
    rows = ["uid,iid,rating,ts"]
    for u in range(1, 31):
        for t in range(10):
            rows.append(f"{u},{100 + (u + 3 * t) % 40},{1 + (u + t) % 5},{100 + t}")
    (tmp / "logs.csv").write_text("\n".join(rows) + "\n")
    out = tmp / "run"
    argv = ["pretrain", "--data", str(tmp / "logs.csv"), "--out", str(out), "--json"]
    assert main(argv + sum((["--set", t] for t in TINY), [])) == 0
    return out


def test_recommend_keeps_id_types_and_shows_titles_from_items_file(int_run, tmp_path, capsys):
    capsys.readouterr()
    assert main(["recommend", str(int_run), "--user", "7", "--k", "4", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["user"] == 7 and all(isinstance(r["item"], int) for r in res["items"])  # ints, as in the data
    assert not any("title" in r for r in res["items"])  # no titles known: no key
    items = tmp_path / "items.tsv"
    items.write_text("item_id\tgenre\ttitle\n" + "".join(f"{i}\tx\tMovie number {i}\n" for i in range(100, 139)))
    assert main(["recommend", str(int_run), "--user", "7", "--k", "40", "--include-seen", "--items", str(items),
                 "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)["items"]
    assert all(r.get("title") == f"Movie number {r['item']}" for r in recs if r["item"] != 139)
    assert "title" not in next(r for r in recs if r["item"] == 139)  # not in the items file
    assert main(["recommend", str(int_run), "--user", "7", "--k", "3", "--items", str(items)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("top 3 for user 7:") and out.count("Movie number") == 3


@pytest.mark.parametrize(("content", "needles"), [
    (None, ["no such items file"]),
    ("item_id,genre\n1,x\n", ["needs a title column", "'item_id', 'genre'"]),
    ("sku,title\n1,x\n", ["needs an id column"]),
    ("movieId,title\n100,A\n101\n", ["row 2", "column 'title'", "1 field"]),
    ("movieId,title\n100,A\n100,B\n", ["row 2", "item '100' has two titles"]),
    ("movieId,title\n100,A\n,B\n", ["row 2", "column 'movieId'", "empty item id"]),
    (b"movieId,title\n100,A\n101,\xe9t\xe9\n", ["row 2", "not valid UTF-8 text"]),
])
def test_items_file_errors_name_file_row_and_column(int_run, tmp_path, capsys, content, needles):
    f = tmp_path / "items.csv"
    if isinstance(content, bytes):
        f.write_bytes(content)
    elif content is not None:
        f.write_text(content)
    before = f.read_bytes() if f.exists() else None
    assert main(["recommend", str(int_run), "--user", "7", "--items", str(f)]) == 2
    err = capsys.readouterr().err
    assert str(f) in err and "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    assert (f.read_bytes() if f.exists() else None) == before  # the user's file is only read


@pytest.mark.data
def test_movielens_titles_all_layouts(shared_data):
    from recalign.data.loaders.items import item_titles

    def titles(*sets: str) -> dict[str, str]:
        return item_titles(load_config(None, [f'data.data_dir="{shared_data}"', *sets]))

    grouplens = titles('data.name="ml-100k"')
    assert len(grouplens) == 1682 and grouplens["1"] == "Toy Story (1995)"
    assert grouplens["543"] == "Misérables, Les (1995)"  # u.item is latin-1
    recbole = titles('data.name="ml-100k"', 'data.format="recbole"')  # ml-100k.item: title + (year)
    assert recbole["1"] == "Toy Story (1995)" and len(recbole) == 1682
    small = titles('data.name="ml-latest-small"')
    assert len(small) == 9742 and small["1"] == "Toy Story (1995)"
    by_path = titles(f'data.name="{shared_data / "ml-latest-small" / "ratings.csv"}"')
    assert by_path == small
    assert titles('data.name="obd"') is None and titles('data.name="sim"') is None


def test_movies_dat_titles(tmp_path):
    from recalign.data.loaders.items import item_titles

    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text("1::10::5::978300760\n")
    (folder / "movies.dat").write_bytes("10::Misérables, Les (1995)::Drama\n11::B (1990)::X\n".encode("latin-1"))
    got = item_titles(load_config(None, ['data.name="ml-1m"', f'data.data_dir="{tmp_path}"']))
    assert got == {"10": "Misérables, Les (1995)", "11": "B (1990)"}


@pytest.mark.data
def test_recommend_ml100k_shows_titles_and_int_ids(shared_data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["pretrain", "--data", "ml-100k", "--data-dir", str(shared_data), "--out", str(out), "--json",
            "--set", "train.max_steps=2"]
    assert main(argv + sum((["--set", t] for t in TINY), [])) == 0
    capsys.readouterr()
    assert main(["recommend", str(out), "--user", "42", "--k", "5", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["user"] == 42 and len(res["items"]) == 5
    assert all(isinstance(r["item"], int) and r["title"].endswith(")") for r in res["items"])
    assert main(["recommend", str(out), "--history", "1,50", "--k", "2"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("top 2 for a history of 2 items:") and text.count("(19") >= 2  # titles with years
