"""The tables of docs/reproduce/confirm.md from finished `recalign contest --grid confirm` folders.

    python docs/reproduce/confirm_table.py conf/ratings conf/clean ... conf/ml-latest-small

Per folder, exp_sft's Δ against sft on the test split (95% t interval over seeds, seeds where
exp_sft is ahead, verdict): under each selection rule of the contest (`contest.json`'s
`delta_vs_sft`, paired per context within a seed), and at the final step (the last checkpoint of
each run, what `recalign posttrain` returns with no knob: each seed's test value from
`contest.json`'s `points`, Δ per seed). Beside them exp_sft's KL(π‖π0) at the final step and,
on real data, plain NDCG@10 of both methods' practical selections.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from recalign.experiments.summary import seed_interval, verdict


def iv(d: dict, digits: int) -> str:
    f = f"{{:+.{digits}f}}"
    return f"{f.format(d['mean'])} [{f.format(d['lo'])}, {f.format(d['hi'])}]"


def final_points(m: dict) -> list[dict]:
    """Per seed, the point with the largest step (one grid point per method in `confirm`)."""
    return [max(seed, key=lambda p: p["step"]) for seed in m["points"]]


def row(folder: Path) -> str:
    c = json.loads((folder / "contest.json").read_text())
    digits = 3 if c["metric"] == "true_value" else 4
    e, s = c["methods"]["exp_sft"], c["methods"]["sft"]
    cells = []
    for rule in ("practical", "oracle"):
        d = e["delta_vs_sft"].get(rule)
        cells.append("—" if d is None else f"{iv(d, digits)} {d['seeds_positive']}/{d['seeds']} {verdict(d)}")
    fe, fs = final_points(e), final_points(s)
    fd = seed_interval([a["value"] - b["value"] for a, b in zip(fe, fs)])
    ahead = sum(a["value"] > b["value"] for a, b in zip(fe, fs))
    cells.append(f"{iv(fd, digits)} {ahead}/{len(fe)} {verdict(fd)}")
    kl = float(np.mean([p["kl"] for p in fe]))
    plain = "—"
    if c["metric"] != "true_value":
        pe = np.mean([x["test"]["ndcg@10"] for x in e["selected"]["practical"]])
        ps = np.mean([x["test"]["ndcg@10"] for x in s["selected"]["practical"]])
        plain = f"{pe:.4f} vs {ps:.4f}"
    pi0 = c["reference"]["pretrained"]["mean"]
    return f"| {folder.name} | {c['metric']} | {pi0:.{digits}f} | " + " | ".join(cells) + f" | {kl:.3f} | {plain} |"


def main(folders: list[str]) -> None:
    print("| contest | test value | π0 | Δ practical | Δ oracle | Δ final step | KL final | plain NDCG@10 "
          "(exp_sft vs sft, practical) |")
    print("|---|---|---|---|---|---|---|---|")
    for f in folders:
        print(row(Path(f)))


if __name__ == "__main__":
    main(sys.argv[1:])
