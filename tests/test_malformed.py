"""Bad input through the CLI: exit code 2, one message naming the file, the data row and the
column, no traceback, nothing on stdout, and the input file unchanged. A hypothesis test
corrupts a valid CSV at random: the CLI must answer 0 or 2, never crash (1) or raise."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recalign.cli import main

HEADER = "user,item,rating,timestamp\n"
VALID = HEADER + "1,10,4,100\n1,11,5,101\n2,10,3,102\n2,12,1.5,103\n3,11,2,104\n"


def run(argv: list[str]) -> tuple[int, str, str]:
    """main(argv) -> (exit code, stdout, stderr). Exceptions swallowed inside C callbacks (which
    Python would print as "Exception ignored ... Traceback" on stderr) fail the test."""
    out, err = io.StringIO(), io.StringIO()
    unraisable: list = []
    hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    finally:
        sys.unraisablehook = hook
    assert not unraisable, [str(u.exc_value) for u in unraisable]
    return rc, out.getvalue(), err.getvalue()


# (file name, content, extra CLI args, expected row or None, expected column or None, words)
CASES = [
    ("missing_column.csv", "user,item,timestamp\n1,10,100\n", [], None, "reward",
     ["no reward column", "'user', 'item', 'timestamp'"]),
    ("missing_mapped.csv", VALID, ["--columns", "reward=score"], None, "score", ["'score'", "found 4 columns"]),
    ("nan.csv", HEADER + "1,10,4,100\n2,11,NaN,200\n3,1,nan,3\n", [], 2, "rating", ["NaN"]),
    ("inf.csv", HEADER + "1,10,4,100\n1,11,5,101\n2,11,-inf,200\n", [], 3, "rating", ["infinite"]),
    ("text_reward.csv", HEADER + "1,10,4,100\n2,11,good,200\n3,1,bad,3\n", [], 2, "rating", ["'good'", "not a number"]),
    ("empty_reward.csv", HEADER + "1,10,4,100\n2,11,,200\n", [], 2, "rating", ["empty"]),
    ("huge_reward.csv", HEADER + "1,10,1e300,100\n", [], 1, "rating", ["float32"]),
    ("bad_time.csv", HEADER + "1,10,4,100\n2,11,5,yesterday\n", [], 2, "timestamp", ["'yesterday'"]),
    ("bad_date.csv", HEADER + "1,10,4,2019-11-24\n2,11,5,2019-13-45\n", [], 2, "timestamp", ["'2019-13-45'", "ISO 8601"]),
    ("empty_user.csv", HEADER + "1,10,4,100\n,11,5,101\n", [], 2, "user", ["user id is empty"]),
    ("short_row.csv", HEADER + "1,10,4,100\n1,11,5,101\n2,11,5\n", [], 3, None, ["expected 4 fields", "found 3"]),
    ("long_row_bad_utf8.csv", HEADER + "1,10,4,100\n\n1\udcff10,4,100,7,8\n", [], 2, None, ["expected 4 fields", "found 5"]),
    ("empty.csv", "", [], None, None, ["empty"]),
    ("header_only.csv", HEADER, [], None, None, ["no data rows"]),
    ("header_only_crlf.csv", HEADER.replace("\n", "\r\n"), [], None, None, ["no data rows"]),
    ("semicolon.csv", VALID.replace(",", ";"), [], None, "user", ["found 1 column", "is the delimiter ';'"]),
    ("tab_as_csv.csv", VALID.replace(",", "\t"), [], None, "user", ["found 1 column", "is the delimiter '\\\\t'"]),
    ("zero_propensity.csv", "user,item,rating,timestamp,propensity\n1,1,1,1,0.5\n1,2,1,2,0\n", [], 2,
     "propensity", ["outside (0, 1]"]),
    ("negative_propensity.csv", "user,item,rating,timestamp,propensity\n1,1,1,1,-0.5\n", [], 1,
     "propensity", ["outside (0, 1]"]),
    ("no_header.csv", "1,10,4,100\n2,11,5,200\n", [], None, "user", ["looks like data", "--no-header"]),
    ("headerless_count.csv", "1,10,4,100\n", ["--no-header", "--columns", "user,item,reward,timestamp,_"], 1,
     None, ["4 fields", "5 columns were named"]),
    ("bad.jsonl", '{"user": 1, "item": 2, "rating": 3, "timestamp": 4}\n{"user": 1, "item": 2,\n', [], 2, None,
     ["not valid JSON"]),
    ("text_reward.jsonl", '{"user": 1, "item": 2, "rating": 3, "timestamp": 4}\n{"user": 1, "item": 2, '
     '"rating": "five", "timestamp": 4}\n', [], 2, "rating", ["'five'"]),
    ("ratings_swapped.csv", "0001713353,A1C6M8LCIX4M6M,5.0,1123804800\n", ["--format", "amazon"], None, None,
     ["ASIN"]),
]


@pytest.mark.parametrize(("name", "content", "args", "row", "column", "words"), CASES, ids=[c[0] for c in CASES])
def test_malformed_file(tmp_path, name, content, args, row, column, words):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8", errors="surrogateescape"))
    before = path.read_bytes()
    for extra in ([], ["--json"]):
        rc, out, err = run(["data", "stats", str(path), *args, *extra])
        assert rc == 2, err
        assert out == ""
        assert "Traceback" not in err and err.startswith("recalign: error: ")
        assert err.count("\n") == 1  # one paragraph
        assert str(path) in err
        if row is not None:
            assert f"row {row}" in err, err
        else:
            assert "row " not in err.split(":")[1]
        if column is not None:
            assert f"column {column!r}" in err, err
        for w in words:
            assert w in err, err
    assert path.read_bytes() == before


def test_bad_gzip_and_invalid_utf8(tmp_path):
    gz = tmp_path / "x.csv.gz"
    gz.write_bytes(gzip.compress(VALID.encode())[:-12])  # truncated
    rc, _, err = run(["data", "stats", str(gz)])
    assert rc == 2 and str(gz) in err and "Traceback" not in err
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(HEADER.encode() + b"1,10,4,100\n\xe9t\xe9,11,5,101\n")
    rc, _, err = run(["data", "stats", str(bad)])
    assert rc == 2 and "row 2" in err and "column 'user'" in err and "UTF-8" in err


def test_unknown_name_and_missing_path(tmp_path):
    rc, out, err = run(["data", "stats", "ml-200k", "--data-dir", str(tmp_path)])
    assert rc == 2 and out == "" and "unknown dataset 'ml-200k'" in err and "ml-latest-small" in err
    assert "Traceback" not in err
    missing = tmp_path / "nope" / "ratings.csv"
    rc, out, err = run(["data", "stats", str(missing)])
    assert rc == 2 and str(missing) in err and "no such file" in err
    rc, out, err = run(["data", "stats", "ml-1m", "--data-dir", str(tmp_path)])
    assert rc == 2 and "ml-1m" in err and "recalign data download ml-1m" in err
    rc, out, err = run(["data", "stats", str(tmp_path / "f.csv"), "--format", "xml"])
    assert rc == 2 and "unknown format 'xml'" in err


# ---------------------------------------------------------------------------- random corruption
_BYTES = st.sampled_from([b",", b"\n", b"\r", b'"', b";", b"\t", b" ", b"-", b".", b"e", b"x",
                          b"nan", b"inf", b"9" * 25, b"\xff", b"\xc3", b"\x00", b"2019-11-24", b"1"])


# (file name, valid content, CLI args): a CSV with a header, a header-less TSV, JSON Lines
BASES = [
    ("log.csv", VALID, []),
    ("log.tsv", VALID.split("\n", 1)[1].replace(",", "\t"), ["--no-header", "--columns", "user,item,reward,timestamp"]),
    ("log.jsonl", "".join(json.dumps(dict(zip(("user", "item", "rating", "timestamp"), ln.split(","))))
                          + "\n" for ln in VALID.strip().split("\n")[1:]), []),
]


@st.composite
def corrupted(draw, base: str) -> bytes:
    data = bytearray(base.encode())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "truncate_line", "drop_cell", "cut"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "replace" and data:
            data[pos:pos + 1] = draw(_BYTES)
        elif op == "insert":
            data[pos:pos] = draw(_BYTES)
        elif op == "delete" and data:
            del data[pos:pos + draw(st.integers(1, 5))]
        elif op == "truncate_line":
            end = data.find(b"\n", pos)
            if end > pos:
                del data[pos:end]
        elif op == "drop_cell":
            end = data.find(b",", pos)
            if end >= pos:
                del data[pos:end + 1]
        elif op == "cut":
            del data[pos:]
    return bytes(data)


@settings(max_examples=int(os.environ.get("RECALIGN_FUZZ_EXAMPLES", "100")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), as_json=st.booleans())
def test_random_corruption_never_crashes(data, as_json):
    name, base, args = data.draw(st.sampled_from(BASES))
    content = data.draw(corrupted(base))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(content)
        rc, out, err = run(["data", "stats", str(path), *args, *(["--json"] if as_json else [])])
        assert rc in (0, 2), err
        assert "Traceback" not in err
        if rc == 0 and as_json:
            json.loads(out)
        if rc == 2:
            assert out == "" and str(path) in err
        assert path.read_bytes() == content
