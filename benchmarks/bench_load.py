"""Loading speed and memory: recalign's `load_dataset` against a plain `pandas.read_csv`.

    python benchmarks/bench_load.py                      # ml-latest-small + a generated 10M-row CSV
    python benchmarks/bench_load.py --rows 1000000 --repeat 1     # a quick look

Each measurement runs in a fresh subprocess (so peak RSS, `ru_maxrss`, belongs to that load
alone; the baseline after imports is reported too) and is repeated `--repeat` times: the table
shows the median time and the largest peak. The generated CSV (`userId,movieId,rating,timestamp`,
200k users, Zipf-distributed items over 50k, half-star ratings, random times) is written to a
temporary folder, never into the repository.

The peer is `pandas.read_csv(path)` with no options: it parses the four columns and stops.
recalign does more with the same file: it checks every value (ids present, rewards finite,
times parseable), encodes ids to codes with id maps, sorts the rows by (user, time, file row)
and counts exact duplicates. Two more references: `pandas+prep` does that same job in pandas
(read_csv, `factorize(sort=True)` of both ids, a stable sort by (user, time), `duplicated`), and
`pyarrow` is `pyarrow.csv.read_csv` alone (the reader recalign uses). Needs pandas (`pip install -e .[bench]`); pandas is not a recalign dependency.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOLS = ("recalign", "pandas", "pandas+prep", "pyarrow")


def peak_rss_mb() -> float:
    """Peak resident memory of this process. VmHWM from /proc (Linux) rather than ru_maxrss:
    Linux carries ru_maxrss over from the parent through fork + exec, VmHWM starts afresh."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(tool: str, path: str) -> dict:
    """One load in this process; returns seconds, rows and memory figures."""
    if tool == "recalign":
        from recalign.data.loaders import load_dataset

        def load():
            return len(load_dataset(path))
    elif tool == "pandas":
        import pandas as pd

        def load():
            return len(pd.read_csv(path))
    elif tool == "pandas+prep":
        import pandas as pd

        def load():  # the same job as recalign: codes in id order, sort by (user, time), duplicates
            df = pd.read_csv(path)
            user, item, reward, ts = df.columns[:4]
            df["u"] = pd.factorize(df[user], sort=True)[0]
            df["i"] = pd.factorize(df[item], sort=True)[0]
            df = df.sort_values(["u", ts], kind="stable")
            df.duplicated(["u", "i", ts, reward]).sum()
            return len(df)
    elif tool == "pyarrow":
        import pyarrow.csv as pacsv

        def load():
            return pacsv.read_csv(path).num_rows
    else:
        raise SystemExit(f"unknown tool {tool}")
    base = peak_rss_mb()
    c0 = cpu_seconds()
    t0 = time.perf_counter()
    rows = load()
    seconds = time.perf_counter() - t0
    return {"tool": tool, "seconds": seconds, "cpu_seconds": cpu_seconds() - c0, "rows": rows,
            "peak_rss_mb": peak_rss_mb(), "base_rss_mb": base}


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (robust to busy neighbours)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(tool: str, path: Path, repeat: int) -> dict:
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, __file__, "--worker", tool, str(path)],
                             capture_output=True, text=True, check=True, env={**os.environ})
        runs.append(json.loads(out.stdout))
    return {
        "tool": tool,
        "seconds": statistics.median(r["seconds"] for r in runs),
        "cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
        "all_seconds": [round(r["seconds"], 3) for r in runs],
        "rows": runs[0]["rows"],
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "base_rss_mb": max(r["base_rss_mb"] for r in runs),
    }


def generate(path: Path, rows: int, seed: int = 0) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    table = pa.table({
        "userId": rng.integers(1, 200_001, rows),
        "movieId": rng.zipf(1.3, rows) % 50_000 + 1,
        "rating": rng.integers(1, 11, rows) / 2,
        "timestamp": rng.integers(800_000_000, 1_600_000_000, rows),
    })
    pacsv.write_csv(table, path, write_options=pacsv.WriteOptions(quoting_style="none"))


def find_ml_latest_small() -> Path | None:
    env = os.environ.get("RECALIGN_DATA")
    for d in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        p = d / "ml-latest-small" / "ratings.csv"
        if p.is_file():
            return p
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000, help="rows of the generated CSV")
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool and file (median time)")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("--worker", nargs=2, metavar=("TOOL", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return 0
    tools = args.tools.split(",")
    results = []
    with tempfile.TemporaryDirectory(prefix="recalign-bench-") as tmp:
        files = []
        small = find_ml_latest_small()
        if small is not None:
            files.append(("ml-latest-small", small))
        else:
            print("ml-latest-small not found (set RECALIGN_DATA): skipped", file=sys.stderr)
        if args.rows > 0:
            big = Path(tmp) / f"generated_{args.rows}.csv"
            t0 = time.perf_counter()
            generate(big, args.rows)
            print(f"generated {big} ({big.stat().st_size / 2**20:,.0f} MiB) in "
                  f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
            files.append((f"generated {args.rows:,} rows", big))
        for label, path in files:
            for tool in tools:
                r = measure(tool, path, args.repeat)
                r.update(file=label, mib=round(path.stat().st_size / 2**20, 1))
                results.append(r)
                print(f"  {label:<28} {tool:<11} {r['seconds']:8.2f} s  {r['cpu_seconds']:8.2f} CPU s  "
                      f"{r['peak_rss_mb']:8,.0f} MB",
                      file=sys.stderr)
    if args.json:
        print(json.dumps({"results": results, "cpus": os.cpu_count()}, indent=2))
        return 0
    print(f"\nwall and CPU time (user + system, all threads; median of {args.repeat}) and peak RSS;"
          f" x pandas = tool / pandas.read_csv ({os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f})\n")
    head = (f"| {'file':<28} | {'tool':<11} | {'rows':>11} | {'wall s':>7} | {'x pandas':>8} | {'CPU s':>6} | "
            f"{'x pandas':>8} | {'peak RSS MB':>11} | {'over base MB':>12} | {'x pandas':>8} |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for r in results:
        peer = next((p for p in results if p["file"] == r["file"] and p["tool"] == "pandas"), None)
        over = r["peak_rss_mb"] - r["base_rss_mb"]
        t_ratio = f"{r['seconds'] / peer['seconds']:.2f}" if peer else "-"
        c_ratio = f"{r['cpu_seconds'] / peer['cpu_seconds']:.2f}" if peer and peer["cpu_seconds"] > 0 else "-"
        peer_over = peer["peak_rss_mb"] - peer["base_rss_mb"] if peer else 0
        m_ratio = f"{over / peer_over:.2f}" if peer_over > 1 else "-"
        print(f"| {r['file']:<28} | {r['tool']:<11} | {r['rows']:>11,} | {r['seconds']:>7.2f} | {t_ratio:>8} | "
              f"{r['cpu_seconds']:>6.2f} | {c_ratio:>8} | "
              f"{r['peak_rss_mb']:>11,.0f} | {over:>12,.0f} | {m_ratio:>8} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
