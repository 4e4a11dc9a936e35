"""`dataset_stats` on a hand-made table (every figure worked out by hand below) and
`recalign data stats` through `recalign.cli.main` on the real datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recalign.cli import main
from recalign.data.schema import Interactions
from recalign.data.stats import dataset_stats, format_stats


def small() -> Interactions:
    """Rows (user, item, time, reward) in file order:

        a: (x, 10, 5), (y, 10, 4), (x, 20, 3), (x, 20, 3)   -> 4 rows; ties at t=10 (2 rows)
           and t=20 (2 rows); (a, x) occurs 3 times; the last two rows are exact duplicates
        b: (z, 5, 5), (y, 7, 1), (x, 9, 4.5)                -> 3 rows, last reward 4.5
        c: (z, 1, 2), (x, 2, 5)                             -> 2 rows: not a leave-one-out target

    users 3, items 3, 9 interactions; sequence lengths [4, 3, 2]; tied rows 4; exact duplicates
    1; repeated pairs 1 ((a, x)), repeat rows 2; loo targets 2 (a, b); high-reward (>= 4.5)
    targets: a ends with reward 3 (sorted by time, file row), b with 4.5 -> 1.
    """
    u = ["a", "a", "a", "a", "b", "b", "b", "c", "c"]
    i = ["x", "y", "x", "x", "z", "y", "x", "z", "x"]
    t = [10, 10, 20, 20, 5, 7, 9, 1, 2]
    r = [5, 4, 3, 3, 5, 1, 4.5, 2, 5]
    return Interactions.from_raw(np.array(u), np.array(i), np.array(t), np.array(r), source="hand")


def test_dataset_stats_hand_computed():
    s = dataset_stats(small(), high_reward=4.5)
    assert (s["users"], s["items"], s["interactions"]) == (3, 3, 9)
    assert s["reward"]["min"] == 1.0 and s["reward"]["max"] == 5.0
    assert s["reward"]["mean"] == pytest.approx(32.5 / 9)
    assert s["reward_histogram"] == {"1": 1, "2": 1, "3": 2, "4": 1, "4.5": 1, "5": 3}
    # lengths [4, 3, 2]: p25 = 2.5, median 3, p75 = 3.5, p90 = 3.8 (linear interpolation)
    assert s["sequence_length"] == {"min": 2, "p25": 2.5, "median": 3.0, "p75": 3.5, "p90": pytest.approx(3.8),
                                    "max": 4, "mean": 3.0}
    assert s["time_span"]["first_seconds"] == 1 and s["time_span"]["last_seconds"] == 20
    assert s["time_span"]["first"] == "1970-01-01T00:00:01Z"
    assert s["exact_duplicates"] == 1
    assert s["repeated_user_item_pairs"] == 1 and s["repeat_rows"] == 2
    assert s["tied_timestamp_rows"] == 4
    assert s["loo_test_targets"] == 2 and s["loo_high_reward_targets"] == 1
    assert s["high_reward_threshold"] == 4.5 and s["source"] == "hand"
    json.dumps(s)  # plain Python values only
    text = format_stats(s)
    for needle in ("users", "tied timestamp rows", "reward histogram", "4.5"):
        assert needle in text


def test_histogram_bins_many_distinct_values_and_catalog_items():
    n = 100
    r = np.linspace(0, 1, n)
    inter = Interactions.from_raw(np.arange(n) % 7, np.arange(n) % 5, np.arange(n), r,
                                  item_ids=np.arange(8))
    s = dataset_stats(inter)
    h = s["reward_histogram"]
    assert len(h) == 10 and sum(h.values()) == n
    assert list(h)[0] == "[0, 0.1)" and list(h)[-1] == "[0.9, 1]"
    assert s["items"] == 5 and s["catalog_items"] == 8


def run_json(capsys, *argv: str) -> dict:
    rc = main(["data", "stats", *argv, "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out)  # stdout holds the JSON object and nothing else


def test_cli_ml100k_both_layouts(shared_data, capsys):
    a = run_json(capsys, "ml-100k", "--data-dir", str(shared_data))
    b = run_json(capsys, str(shared_data / "ml-100k" / "ml-100k.inter"))
    c = run_json(capsys, "ml-100k", "--data-dir", str(shared_data), "--format", "recbole")
    for s in (a, b, c):
        assert (s["users"], s["items"], s["interactions"]) == (943, 1682, 100_000)
        assert s["tied_timestamp_rows"] == 75_772
        assert s["reward_histogram"] == {"1": 6110, "2": 11370, "3": 27145, "4": 34174, "5": 21201}
        assert s["time_span"]["first_seconds"] == 874_724_710 and s["time_span"]["last_seconds"] == 893_286_638
        assert s["exact_duplicates"] == 0 and s["repeated_user_item_pairs"] == 0
        assert s["loo_test_targets"] == 943
    assert {k: v for k, v in a.items() if k != "source"} == {k: v for k, v in b.items() if k != "source"}


def test_cli_ml_latest_small(shared_data, capsys):
    s = run_json(capsys, "ml-latest-small", "--data-dir", str(shared_data))
    assert (s["users"], s["items"], s["interactions"]) == (610, 9724, 100_836)
    assert s["tied_timestamp_rows"] == 23_228
    assert s["reward_histogram"]["0.5"] == 1370 and s["reward_histogram"]["5"] == 13211
    assert s["sequence_length"]["min"] == 20 and s["sequence_length"]["max"] == 2698


@pytest.mark.parametrize(("policy", "campaign"), [("random", "all"), ("bts", "men")])
def test_cli_obd(shared_data, capsys, policy, campaign):
    s = run_json(capsys, "obd", "--data-dir", str(shared_data), "--set", f'data.obd_policy="{policy}"',
                 "--set", f'data.obd_campaign="{campaign}"')
    assert s["interactions"] == 10_000
    assert 0 < s["propensity"]["min"] <= s["propensity"]["max"] <= 1
    assert set(s["reward_histogram"]) <= {"0", "1"}
    if policy == "random":
        assert s["propensity"]["min"] == s["propensity"]["max"] == 0.0125


def test_cli_text_output(shared_data, capsys):
    rc = main(["data", "stats", "ml-100k", "--data-dir", str(shared_data)])
    out, _ = capsys.readouterr()
    assert rc == 0
    assert "943" in out and "1,682" in out and "100,000" in out and "75,772" in out
