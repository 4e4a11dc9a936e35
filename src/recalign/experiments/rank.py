"""`recalign rank`: one method's settings ranked across finished contests, on validation only.

    recalign contest --grid defaults --methods sft,exp_sft --world ratings --out C1   (one per dataset)
    recalign rank --method exp_sft C1 C2 ...

How recalign's defaults are chosen (issue [11]): every candidate is one grid point of the method
read at one checkpoint index k (k = 0 is π0; with the grid's `checkpoints` equal to its `epochs`,
k is the number of epochs). In each contest folder (one dataset or world, several seeds), each
candidate's score is its validation metric averaged over the seeds: the validation contexts'
true value on the simulator (the `oracle` rule's metric: the developers choosing defaults have
the simulator's truth, a user tuning on their own logs does not) and validation high-rated
NDCG@10 on real data (the `practical` rule's). Candidates are ranked within each contest
(1 = best) and the default is **the candidate with the lowest mean rank over the contests**, so
no dataset's scale dominates. Only `checkpoints.jsonl`'s `valid` entries are read: the test
split plays no part in the ranking (the table shows nothing of it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recalign.errors import InputError
from recalign.experiments.compare import folder_name
from recalign.experiments.selection import RULES, read_checkpoints


def contest_scores(folder: str | Path, method: str) -> dict[str, Any]:
    """One finished contest: `{"name", "metric", "seeds", "scores": {(label, k): mean validation
    metric over seeds}, "knobs": {label: knobs}}`; `k` indexes the checkpoints of each run."""
    folder = Path(folder)
    path = folder / "contest.json"
    if not path.is_file():
        raise InputError("not a finished contest folder (no contest.json)", path=folder)
    c = json.loads(path.read_text(encoding="utf-8"))
    if method not in c["methods"]:
        raise InputError(f"the contest has no {method!r}; it ran {', '.join(c['methods'])}", path=path)
    metric = RULES["oracle"] if "oracle" in c["rules"] else RULES["practical"]
    knobs = {p["label"]: p["knobs"] for seed in c["methods"][method]["points"] for p in seed}
    per_seed: dict[tuple[str, int], list[float]] = {}
    for s in range(c["seeds"]):
        for label in knobs:
            recs = read_checkpoints(folder / f"seed{s}" / folder_name(label))
            for k, r in enumerate(recs):
                per_seed.setdefault((label, k), []).append(float(r["valid"][metric]))
    n = c["seeds"]
    scores = {key: float(np.mean(v)) for key, v in per_seed.items() if len(v) == n}  # every seed has it
    config = c.get("config", {})
    name = config.get("data", {}).get("name", folder.name)
    return {"name": f"{name} ({folder.name})", "metric": metric, "seeds": n, "scores": scores, "knobs": knobs}


def rank_candidates(contests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Candidates present in every contest, by mean rank over the contests (ties: the smaller k,
    then the label). Within a contest, rank 1 = the highest mean validation metric; tied scores
    share the lowest rank. Each row: `label`, `knobs`, `k`, `mean_rank`, `ranks` and `gain` (the
    score minus π0's, k = 0) per contest."""
    if not contests:
        raise InputError("no contest folders given")
    common = set.intersection(*(set(c["scores"]) for c in contests))
    if not common:
        raise InputError("the contests share no candidate (grid point and checkpoint index)")
    rows = []
    ranks_by_contest = []
    for c in contests:
        vals = {key: c["scores"][key] for key in common}
        ranks_by_contest.append({key: 1 + sum(v > x for v in vals.values()) for key, x in vals.items()})
    for label, k in common:
        ranks = [r[(label, k)] for r in ranks_by_contest]
        gains = [c["scores"][(label, k)] - c["scores"].get((label, 0), float("nan")) for c in contests]
        rows.append({"label": label, "knobs": contests[0]["knobs"][label], "k": k, "mean_rank": float(np.mean(ranks)),
                     "ranks": ranks, "gain": gains})
    return sorted(rows, key=lambda r: (r["mean_rank"], r["k"], r["label"]))


def rank_markdown(contests: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]], top: int = 10) -> str:
    head = ["candidate", "k", "mean rank"] + [f"rank / Δ vs π0: {c['name']}" for c in contests]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows[:top]:
        cells = [f"{rk} / {g:+.4f}" for rk, g in zip(r["ranks"], r["gain"])]
        lines.append(f"| {r['label']} | {r['k']} | {r['mean_rank']:.1f} | " + " | ".join(cells) + " |")
    metrics = "; ".join(f"{c['name']}: validation {c['metric']}, {c['seeds']} seed(s)" for c in contests)
    return (f"{len(rows)} candidates (grid point × checkpoint index k) in every contest, ranked within each "
            f"contest by the mean over seeds of ({metrics}); sorted by the mean rank. Δ vs π0 = the score minus "
            "the same run's k = 0 (π0).\n\n" + "\n".join(lines) + "\n")
