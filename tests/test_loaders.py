"""Loaders: the real datasets (skipped where ../shared/data is absent) and small fixture files
written into tmp_path for every layout: MovieLens (u.data, ratings.dat, ratings.csv), RecBole
`.inter`, Open Bandit, Amazon (2014/2018 CSV, 2014/2018 JSON, 2023 JSONL, gzip), generic
CSV/TSV/Parquet/JSONL with column mappings and header-less files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recalign.data.loaders import DATASETS, load_dataset, load_from_config, tabular
from recalign.data.schema import Interactions
from recalign.errors import InputError


def write(path: Path, text: str, newline: str = "\n") -> Path:
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def rows(inter: Interactions) -> list[tuple]:
    """(user id, item id, timestamp, reward) per row, in table order, with the original ids."""
    return [
        (inter.user_ids[u].item() if hasattr(inter.user_ids[u], "item") else inter.user_ids[u],
         inter.item_ids[i].item() if hasattr(inter.item_ids[i], "item") else inter.item_ids[i],
         int(t), float(r))
        for u, i, t, r in zip(inter.user, inter.item, inter.timestamp, inter.reward)
    ]


# ---------------------------------------------------------------------------- real datasets
def test_ml100k_both_layouts_load_identically(shared_data):
    udata = load_dataset(shared_data / "ml-100k" / "u.data")
    inter = load_dataset(shared_data / "ml-100k" / "ml-100k.inter")
    assert (udata.n_users, udata.n_items, len(udata)) == (943, 1682, 100_000)
    assert udata.equals(inter)
    by_name = load_dataset("ml-100k", shared_data)  # prefers u.data
    assert by_name.source.endswith("u.data") and by_name.equals(udata)
    recbole = load_dataset("ml-100k", shared_data, fmt="recbole")
    assert recbole.source.endswith("ml-100k.inter") and recbole.equals(udata)
    assert load_dataset("ml-100k", shared_data, fmt="movielens").equals(udata)
    # the published facts: ratings 1..5 with these counts, no repeated pairs
    vals, counts = np.unique(udata.reward, return_counts=True)
    assert vals.tolist() == [1, 2, 3, 4, 5]
    assert counts.tolist() == [6110, 11370, 27145, 34174, 21201]
    assert udata.user_ids.tolist() == list(range(1, 944))


def test_ml_latest_small(shared_data):
    inter = load_dataset("ml-latest-small", shared_data)
    assert (inter.n_users, inter.n_items, len(inter)) == (610, 9724, 100_836)
    assert inter.timestamp.min() == 828_124_615 and inter.timestamp.max() == 1_537_799_250
    assert sorted(np.unique(inter.reward).tolist()) == [x / 2 for x in range(1, 11)]
    # the folder as a path gives the same table
    assert load_dataset(shared_data / "ml-latest-small").equals(inter)


@pytest.mark.parametrize(("policy", "campaign", "n_items"), [("random", "all", 80), ("bts", "men", 34),
                                                             ("bts", "women", 46)])
def test_obd(shared_data, policy, campaign, n_items):
    inter = load_dataset("obd", shared_data, obd_policy=policy, obd_campaign=campaign)
    assert len(inter) == 10_000 and inter.n_items == n_items
    p = inter.propensity
    assert p is not None and (p > 0).all() and (p <= 1).all()
    if policy == "random":
        np.testing.assert_allclose(p, 1 / n_items, rtol=1e-6)
    assert set(np.unique(inter.reward).tolist()) <= {0.0, 1.0}
    assert 200 <= inter.n_users <= 300  # pseudo-users: distinct user-feature tuples
    assert all(s.count("|") == 3 for s in inter.user_ids)
    assert inter.meta["item_features"]["item_feature_0"].shape == (n_items,)


def test_obd_row_meta_follows_the_rows(shared_data):
    """meta['file_row'][k] is the log row of table row k: its item, click and position match."""
    import pyarrow.csv as pacsv

    path = shared_data / "obd" / "bts" / "men" / "men.csv"
    raw = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        include_columns=["item_id", "click", "position", "user_feature_0"]))
    inter = load_dataset(path)
    fr = inter.meta["file_row"]
    assert sorted(fr.tolist()) == list(range(10_000))
    np.testing.assert_array_equal(inter.item_ids[inter.item], raw["item_id"].to_numpy()[fr])
    np.testing.assert_array_equal(inter.reward, raw["click"].to_numpy()[fr])
    np.testing.assert_array_equal(inter.meta["position"], raw["position"].to_numpy()[fr])
    f0 = np.array([u.split("|")[0] for u in inter.user_ids[inter.user]])
    np.testing.assert_array_equal(f0, np.asarray(raw["user_feature_0"].to_pylist())[fr])
    # rows are in time order in the file: within a user, file rows increase
    same = inter.user[1:] == inter.user[:-1]
    assert (fr[1:][same] > fr[:-1][same]).all()


def test_obd_drop_duplicates_keeps_row_meta_aligned(shared_data):
    keep = load_dataset("obd", shared_data, obd_policy="bts", obd_campaign="men")
    drop = load_dataset("obd", shared_data, obd_policy="bts", obd_campaign="men", duplicates="drop")
    n_dup = keep.meta["exact_duplicates"]
    assert len(drop) == len(keep) - n_dup and drop.meta["duplicates_policy"] == "drop"
    assert len(drop.meta["file_row"]) == len(drop) == len(drop.meta["position"])
    assert set(drop.meta["file_row"].tolist()) <= set(keep.meta["file_row"].tolist())


def test_named_dataset_missing_from_data_dir(tmp_path):
    with pytest.raises(InputError, match="dataset ml-1m not found"):
        load_dataset("ml-1m", tmp_path)
    with pytest.raises(InputError, match="obd"):
        load_dataset("obd", tmp_path)


def test_unknown_name_and_missing_path(tmp_path):
    with pytest.raises(InputError) as e:
        load_dataset("ml-200k", tmp_path)
    assert "ml-200k" in str(e.value) and all(n in str(e.value) for n in DATASETS)
    with pytest.raises(InputError, match="no such file") as e:
        load_dataset(str(tmp_path / "nope.csv"))
    assert "nope.csv" in str(e.value)


# ---------------------------------------------------------------------------- MovieLens fixtures
def test_movielens_layouts_from_fixtures(tmp_path):
    (tmp_path / "ml-1m").mkdir()
    write(tmp_path / "ml-1m" / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978300001\n")
    a = load_dataset("ml-1m", tmp_path)
    assert rows(a) == [(1, 1193, 978300760, 5.0), (1, 661, 978302109, 3.0), (2, 1193, 978300001, 4.0)]
    (tmp_path / "ml-10M100K").mkdir()  # ml-10m's zip extracts to this folder name
    write(tmp_path / "ml-10M100K" / "ratings.dat", "1::122::5::838985046\n1::185::4.5::838983525\n")
    b = load_dataset("ml-10m", tmp_path)
    assert rows(b) == [(1, 185, 838983525, 4.5), (1, 122, 838985046, 5.0)]
    (tmp_path / "ml-25m").mkdir()
    write(tmp_path / "ml-25m" / "ratings.csv",
          "userId,movieId,rating,timestamp\n1,296,5.0,1147880044\n1,306,3.5,1147868817\n", newline="\r\n")
    c = load_dataset("ml-25m", tmp_path)
    assert rows(c) == [(1, 306, 1147868817, 3.5), (1, 296, 1147880044, 5.0)]
    assert c.meta["dataset"] == "ml-25m"


def test_recbole_inter_with_label_and_string_tokens(tmp_path):
    p = write(tmp_path / "x.inter",
              "session_id:token\titem_id:token\tlabel:float\ttimestamp:float\tpos:token_seq\n"
              "u2\ti9\t1\t10.0\ta b\nu1\ti1\t0\t5.5\tc\n")
    with pytest.raises(InputError, match="no user column"):
        load_dataset(p)
    inter = load_dataset(p, columns="user=session_id")
    assert inter.user_ids.tolist() == ["u1", "u2"] and inter.item_ids.tolist() == ["i1", "i9"]
    assert rows(inter) == [("u1", "i1", 5, 0.0), ("u2", "i9", 10, 1.0)]


# ---------------------------------------------------------------------------- Amazon fixtures
AMAZON_2018 = "0001713353,A1C6M8LCIX4M6M,5.0,1123804800\n0001713353,A1REUF3A1YCPHM,4.0,1112140800\nB000FA64PK,A1C6M8LCIX4M6M,3.0,1123804801\n"


def test_amazon_ratings_csv_2018_and_2014_orders(tmp_path):
    a = load_dataset(write(tmp_path / "Books.csv", AMAZON_2018))  # auto-detected: item,user,...
    assert a.meta["format"] == "amazon"
    assert rows(a)[0] == ("A1C6M8LCIX4M6M", "0001713353", 1123804800, 5.0)
    lines = [ln.split(",") for ln in AMAZON_2018.strip().split("\n")]
    swapped = "".join(f"{u},{i},{r},{t}\n" for i, u, r, t in lines)
    b = load_dataset(write(tmp_path / "ratings_Books.csv", swapped))  # 2014: user,item,...
    assert b.equals(a)
    # gzip works, and an explicit --columns order overrides the name
    gz = tmp_path / "Books_2018.csv.gz"
    gz.write_bytes(gzip.compress(AMAZON_2018.encode()))
    assert load_dataset(gz, fmt="amazon").equals(a)
    c = load_dataset(write(tmp_path / "ratings_x.csv", AMAZON_2018), fmt="amazon",
                     columns="item,user,reward,timestamp")
    assert c.equals(a)
    # the file name says 2014 order but the ASINs are in the first column: refuse to guess
    with pytest.raises(InputError, match="ASIN"):
        load_dataset(write(tmp_path / "ratings_y.csv", AMAZON_2018), fmt="amazon")


def test_amazon_json_2014_2018_and_2023(tmp_path):
    old = [{"reviewerID": "A2", "asin": "B000000001", "overall": 4.0, "unixReviewTime": 1400000000,
            "reviewText": "ok", "style": {"Format:": " Paperback"}},
           {"reviewerID": "A1", "asin": "B000000002", "overall": 5.0, "unixReviewTime": 1300000000}]
    p = tmp_path / "reviews_Books_5.json.gz"
    p.write_bytes(gzip.compress("".join(json.dumps(o) + "\n" for o in old).encode()))
    a = load_dataset(p)
    assert a.meta["format"] == "amazon"
    assert rows(a) == [("A1", "B000000002", 1300000000, 5.0), ("A2", "B000000001", 1400000000, 4.0)]
    new = [{"rating": 5.0, "title": "x", "asin": "B01", "parent_asin": "P1", "user_id": "U1",
            "timestamp": 1588687728923, "images": []},
           {"rating": 2.0, "asin": "B02", "parent_asin": "P2", "user_id": "U1", "timestamp": 1588687728100},
           {"rating": 3.0, "asin": "B03", "parent_asin": "P1", "user_id": "U2", "timestamp": 1588687729000}]
    q = write(tmp_path / "Books.jsonl", "".join(json.dumps(o) + "\n" for o in new))
    b = load_dataset(q)
    # milliseconds -> seconds; the two U1 rows share a second and keep millisecond order
    assert rows(b) == [("U1", "P2", 1588687728, 2.0), ("U1", "P1", 1588687728, 5.0),
                       ("U2", "P1", 1588687729, 3.0)]
    c = load_dataset(q, columns="item=asin")
    assert c.item_ids.tolist() == ["B01", "B02", "B03"]


# ---------------------------------------------------------------------------- generic fixtures
def test_generic_csv_mapping_aliases_and_ambiguity(tmp_path):
    p = write(tmp_path / "log.csv", "uid,iid,stars,ts,extra\n7,3,1.5,20,x\n5,3,2,10,y\n7,4,3,10,z\n")
    with pytest.raises(InputError, match="no reward column"):
        load_dataset(p)
    inter = load_dataset(p, columns="reward=stars")  # uid, iid, ts found by their usual names
    assert rows(inter) == [(5, 3, 10, 2.0), (7, 4, 10, 3.0), (7, 3, 20, 1.5)]
    q = write(tmp_path / "two.csv", "user,item,rating,click,timestamp\n1,2,3,1,4\n")
    with pytest.raises(InputError, match="several columns could be the reward"):
        load_dataset(q)
    assert rows(load_dataset(q, columns="reward=click")) == [(1, 2, 4, 1.0)]
    with pytest.raises(InputError, match="unknown role"):
        load_dataset(q, columns="rating=click")


def test_header_less_file_with_skipped_column_tsv_and_other_delimiter(tmp_path):
    p = write(tmp_path / "data.tsv", "a\t1\tjunk\t4.5\t100\nb\t2\tjunk\t3\t90\n")
    inter = load_dataset(p, no_header=True, columns="user,item,_,reward,timestamp")
    assert rows(inter) == [("a", 1, 100, 4.5), ("b", 2, 90, 3.0)]
    with pytest.raises(InputError, match="the first line has 5 fields"):
        load_dataset(p, no_header=True, columns="user,item,reward,timestamp")
    semi = write(tmp_path / "semi.txt", "user;item;reward;timestamp\n1;2;3;4\n")
    assert rows(load_dataset(semi, fmt="csv:;")) == [(1, 2, 4, 3.0)]
    with pytest.raises(InputError, match="cannot tell the format"):
        load_dataset(semi)


def test_parquet_and_jsonl(tmp_path):
    table = pa.table({"u": ["x", "y", "x"], "i": [1, 2, 3], "r": [1.0, 0.0, 1.0],
                      "t": pa.array([3, 1, 2], pa.int64())})
    pq.write_table(table, tmp_path / "log.parquet")
    inter = load_dataset(tmp_path / "log.parquet", columns="user=u,item=i,reward=r,timestamp=t")
    assert rows(inter) == [("x", 3, 2, 1.0), ("x", 1, 3, 1.0), ("y", 2, 1, 0.0)]
    j = write(tmp_path / "log.jsonl", "".join(
        json.dumps({"u": u, "i": i, "r": r, "t": t}) + "\n"
        for u, i, r, t in zip(*(table.column(c).to_pylist() for c in "uirt"))))
    assert load_dataset(j, columns="user=u,item=i,reward=r,timestamp=t").equals(inter)
    # a key whose type changes after the sampled lines: the slow path reads it as text
    mixed = write(tmp_path / "mixed.jsonl", '{"u": 1, "i": 1, "r": 1, "t": 5}\n{"u": "z", "i": 2, "r": 0, "t": 6}\n')
    m = load_dataset(mixed, columns="user=u,item=i,reward=r,timestamp=t")
    assert sorted(m.user_ids.tolist()) == ["1", "z"]


def test_parquet_timestamp_and_bool_reward(tmp_path):
    ts = pa.array([1_500_000_000_250_000, 1_500_000_000_000_000], pa.timestamp("us", tz="UTC"))
    pq.write_table(pa.table({"user": [1, 1], "item": [1, 2], "click": [True, False], "time": ts}),
                   tmp_path / "b.parquet")
    inter = load_dataset(tmp_path / "b.parquet")
    assert rows(inter) == [(1, 2, 1_500_000_000, 0.0), (1, 1, 1_500_000_000, 1.0)]


def test_timestamps_iso_float_and_subsecond_order(tmp_path):
    p = write(tmp_path / "iso.csv", "user,item,rating,timestamp\n"
              "1,1,1,2019-11-24 00:00:34.9+00:00\n1,2,1,2019-11-24T00:00:34.1Z\n"
              "1,3,1,2019-11-24 01:00:00\n2,4,1,2019-11-25\n2,5,1,2019-11-24T23:00:00-02:00\n")
    inter = load_dataset(p)
    base = 1574553600  # 2019-11-24T00:00:00Z
    assert rows(inter) == [(1, 2, base + 34, 1.0), (1, 1, base + 34, 1.0), (1, 3, base + 3600, 1.0),
                           (2, 4, base + 86400, 1.0), (2, 5, base + 86400 + 3600, 1.0)]
    f = write(tmp_path / "f.csv", "user,item,rating,timestamp\n1,1,1,10.9\n1,2,1,10.2\n1,3,1,9.99\n")
    assert [r[1:3] for r in rows(load_dataset(f))] == [(3, 9), (2, 10), (1, 10)]


def test_string_ids_get_sorted_codes_and_the_original_ids(tmp_path):
    p = write(tmp_path / "s.csv", "user,item,rating,timestamp\nbob,é,1,1\nalice,b,2,2\nbob,a,3,3\n")
    inter = load_dataset(p)
    assert inter.user_ids.tolist() == ["alice", "bob"]
    assert inter.item_ids.tolist() == ["a", "b", "é"]
    assert rows(inter) == [("alice", "b", 2, 2.0), ("bob", "é", 1, 1.0), ("bob", "a", 3, 3.0)]


def test_type_change_after_the_first_block_falls_back_to_text(tmp_path, monkeypatch):
    """Arrow infers column types from the first block; a later block that breaks them (a text
    user id, a fractional timestamp) must still load, and a bad reward deep in the file is found
    at its row."""
    monkeypatch.setattr(tabular, "BLOCK_SIZE", 256)
    lines = [f"{u},{u % 7},{u % 5},{1000 + u}" for u in range(200)]
    lines[150] = "u150,3,4,1150.5"
    p = write(tmp_path / "t.csv", "user,item,rating,timestamp\n" + "\n".join(lines) + "\n")
    inter = load_dataset(p)
    assert len(inter) == 200 and "u150" in inter.user_ids.tolist()
    lines[180] = "180,1,oops,1180"
    q = write(tmp_path / "u.csv", "user,item,rating,timestamp\n" + "\n".join(lines) + "\n")
    with pytest.raises(InputError) as e:
        load_dataset(q)
    assert e.value.row == 181 and e.value.column == "rating"


def test_duplicates_policy(tmp_path):
    p = write(tmp_path / "d.csv", "user,item,rating,timestamp\n1,1,5,10\n1,1,5,10\n1,1,4,10\n")
    assert len(load_dataset(p)) == 3
    d = load_dataset(p, duplicates="drop")
    assert len(d) == 2 and d.meta["exact_duplicates"] == 1
    with pytest.raises(InputError, match="duplicates"):
        load_dataset(p, duplicates="maybe")


def test_load_from_config_dispatches(tmp_path, monkeypatch, shared_data):
    from recalign.config import load_config

    cfg = load_config(overrides=['data.name="ml-100k"', f'data.data_dir="{shared_data}"'])
    assert len(load_from_config(cfg)) == 100_000
    cfg = load_config(overrides=['data.name="obd"', f'data.data_dir="{shared_data}"',
                                 'data.obd_policy="bts"', 'data.obd_campaign="women"'])
    assert load_from_config(cfg).n_items == 46
    import recalign.data.simulator as simulator

    seen = {}
    sentinel = object()

    def fake_simulate(sim_cfg):
        seen["cfg"] = sim_cfg
        return sentinel, None

    monkeypatch.setattr(simulator, "simulate", fake_simulate, raising=False)
    cfg = load_config(overrides=['data.name="sim"', "sim.seed=7"])
    assert load_from_config(cfg) is sentinel and seen["cfg"].seed == 7


def test_input_files_are_never_modified(tmp_path):
    p = write(tmp_path / "ok.csv", "user,item,rating,timestamp\n2,1,5,10\n1,1,4,9\n")
    before = p.read_bytes()
    load_dataset(p, duplicates="drop")
    assert p.read_bytes() == before


def test_ids_keep_leading_zeros_and_plain_integers_become_int_ids(tmp_path):
    p = write(tmp_path / "z.csv", "user,item,rating,timestamp\n0042,10,1,1\n42,9,1,2\n-3,11,1,3\n")
    inter = load_dataset(p)
    assert inter.user_ids.tolist() == ["-3", "0042", "42"]  # text: "0042" is not a plain integer
    assert inter.item_ids.tolist() == [9, 10, 11] and inter.item_ids.dtype == np.int64
    big = write(tmp_path / "b.csv", "user,item,rating,timestamp\n99999999999999999999,1,1,1\n")
    assert load_dataset(big).user_ids.tolist() == ["99999999999999999999"]


OBD_HEADER = (",timestamp,item_id,position,click,propensity_score,user_feature_0,user_feature_1,"
              "user_feature_2,user_feature_3,user-item_affinity_0,user-item_affinity_1\n")


def obd_fixture(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rows = [
        "0,2019-11-24 00:00:34.762830+00:00,1,1,0,0.5,a,b,c,d,0.0,0.0",
        "1,2019-11-24 00:00:34.900000+00:00,0,2,1,0.25,a,b,c,d,0.0,1.0",
        "2,2019-11-24 00:00:35.000000+00:00,1,3,0,0.5,x,b,c,d,0.0,0.0",
    ]
    write(folder / "item_context.csv", ",item_id,item_feature_0,item_feature_1\n0,0,0.5,h1\n1,1,-0.5,h2\n2,2,0.1,h3\n")
    return write(folder / "men.csv", OBD_HEADER + "\n".join(rows) + "\n")


def test_obd_fixture(tmp_path):
    path = obd_fixture(tmp_path / "obd" / "bts" / "men")
    inter = load_dataset("obd", tmp_path, obd_policy="bts", obd_campaign="men")
    assert inter.equals(load_dataset(path))  # by name or by path (auto-detected from the header)
    assert inter.user_ids.tolist() == ["a|b|c|d", "x|b|c|d"]
    assert inter.n_items == 3 and inter.item_ids.tolist() == [0, 1, 2]  # catalog from item_context
    # sub-second order kept: the two 00:00:34 rows stay in file (time) order
    assert inter.meta["file_row"].tolist() == [0, 1, 2] and inter.timestamp.tolist() == [1574553634] * 2 + [1574553635]
    assert inter.meta["position"].tolist() == [1, 2, 3]
    assert inter.propensity.tolist() == [0.5, 0.25, 0.5]
    assert inter.meta["item_features"]["item_feature_1"].tolist() == ["h1", "h2", "h3"]


def test_obd_item_outside_the_catalog_names_file_row_and_column(tmp_path):
    """`from_raw` finds the item outside item_context.csv; the loader names the file's column."""
    path = obd_fixture(tmp_path / "obd" / "bts" / "men")
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace("+00:00,0,2,", "+00:00,7,2,")  # data row 2: item 7
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="item 7 is not in the item catalog") as e:
        load_dataset(path)
    assert e.value.row == 2 and e.value.column == "item_id" and e.value.path == str(path)


def test_loaders_work_without_pandas(tmp_path):
    """pandas is not a dependency: block it and load every kind of fixture in a subprocess."""
    import subprocess
    import sys

    obd_fixture(tmp_path / "obd" / "random" / "all").rename(tmp_path / "obd" / "random" / "all" / "all.csv")
    write(tmp_path / "g.csv", "user,item,rating,timestamp\na,1,1,2019-11-24T00:00:01Z\nb,2,0.5,2019-11-24\n")
    write(tmp_path / "ratings_B.csv", "A1C6M8LCIX4M6M,0001713353,5.0,1123804800\n")
    write(tmp_path / "r.jsonl", '{"reviewerID": "A1", "asin": "B000000001", "overall": 4.0, "unixReviewTime": 1}\n')
    pq.write_table(pa.table({"user": [1], "item": [2], "reward": [True], "timestamp": [3]}), tmp_path / "p.parquet")
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "pandas":
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Block())
from recalign.data.loaders import load_dataset
from recalign.data.stats import dataset_stats
d = {str(tmp_path)!r}
for x in ("g.csv", "ratings_B.csv", "r.jsonl", "p.parquet"):
    dataset_stats(load_dataset(d + "/" + x))
dataset_stats(load_dataset("obd", d))
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
