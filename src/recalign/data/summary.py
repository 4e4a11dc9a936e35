"""What preparing a dataset dropped, kept and holds out: the data summary.

`prepare` (see `prepared.py`) computes it once, keeps it as `Prepared.summary` (the stages write
it into `state.json` as `data_summary`), and prints it on stderr in one or two lines when
something was dropped or deserves a word; `recalign data stats` shows it too.

Keys (plain JSON values):

- `split`: `loo` or `temporal`; `users`, `interactions`: the table (after the duplicates policy).
- `duplicates_policy` (`data.duplicates`), `exact_duplicate_rows` (rows that repeat an earlier
  row exactly: user, item, timestamp and reward, as counted in the file), and of those
  `duplicate_rows_dropped` (policy `drop`) or `duplicate_rows_kept` (policy `keep`).
- `min_user_interactions` (leave-one-out only; `None` under `temporal`, which does not apply
  it), `users_dropped`, `rows_dropped`: users with fewer interactions than that, and their
  rows. They stay in the table (and in the id maps) but are neither trained on nor evaluated.
- `training_rows`: rows the training windows are cut from.
- `users_not_evaluated`: users without a test target (leave-one-out: the dropped users;
  temporal: users with no interaction after the cut-off, or none before it).
- `valid_targets`, `test_targets`: held-out targets; `valid_repeat_targets`,
  `test_repeat_targets`: those whose item is already in the user's context (the user's earlier
  rows), i.e. a re-consumption.
- `mask_seen`, `repeat_targets_evaluation`: what the evaluation does with the repeat targets.
  With `eval.mask_seen` (default) every item of the context is removed from the candidates
  except the target itself: a repeat target stays rankable (see `eval/metrics.py:target_ranks`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from recalign.data.schema import Interactions
from recalign.data.split import Split, Targets, make_split
from recalign.errors import InputError

if TYPE_CHECKING:
    from recalign.config import RunConfig

REPEATS_MASKED = ("they stay rankable: eval.mask_seen removes the user's other seen items from the candidates, "
                  "never the target itself")
REPEATS_UNMASKED = "they are ranked like every target: eval.mask_seen is off, nothing is masked"

_shown: set[str] = set()  # lines already printed by this process (`report` prints each once)


def repeat_targets(inter: Interactions, targets: Targets) -> np.ndarray:
    """`[len(targets)] bool`: whether each target's item occurs in its context (the user's rows
    `offsets[u]:context_end`). One vectorised pass over the table: each row's (user, item) key
    is looked up among the (at most one per user) target keys."""
    n = len(targets)
    out = np.zeros(n, dtype=bool)
    if n == 0 or len(inter) == 0:
        return out
    width = np.int64(max(inter.n_items, 1))
    keys = inter.user[targets.target_row] * width + inter.item[targets.target_row]
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    pair = inter.user * width + inter.item
    pos = np.minimum(np.searchsorted(sorted_keys, pair), n - 1)
    rows = np.flatnonzero(sorted_keys[pos] == pair)
    j = order[pos[rows]]  # the target whose key the row has (one target per user and split)
    out[j[rows < targets.context_end[j]]] = True
    return out


def data_summary(inter: Interactions, split: Split | None, min_user_interactions: int = 3,
                 mask_seen: bool = True, split_kind: str = "loo") -> dict[str, Any]:
    """The summary described in the module docstring. `split` may be None when the split
    cannot be made (e.g. no user has enough interactions): the drop counts are still given."""
    kind = split.kind if split is not None else split_kind
    per_user = np.diff(inter.user_offsets())
    policy = inter.meta.get("duplicates_policy", "keep")
    dups = int(inter.meta.get("exact_duplicates", 0))
    out: dict[str, Any] = {"split": kind, "users": inter.n_users, "interactions": len(inter),
                           "duplicates_policy": policy, "exact_duplicate_rows": dups,
                           "duplicate_rows_dropped": dups if policy == "drop" else 0,
                           "duplicate_rows_kept": dups if policy == "keep" else 0}
    if kind == "loo":
        few = per_user < min_user_interactions
        out.update(min_user_interactions=int(min_user_interactions), users_dropped=int(few.sum()),
                   rows_dropped=int(per_user[few].sum()))
    else:
        out.update(min_user_interactions=None, users_dropped=0, rows_dropped=0)
    if split is None:
        out.update(training_rows=0, users_not_evaluated=inter.n_users, valid_targets=0,
                   valid_repeat_targets=0, test_targets=0, test_repeat_targets=0)
    else:
        out["training_rows"] = int(split.train_rows().sum())
        out["users_not_evaluated"] = inter.n_users - len(split.test)
        for which in ("valid", "test"):
            t = split.targets(which)
            out[f"{which}_targets"] = len(t)
            out[f"{which}_repeat_targets"] = int(repeat_targets(inter, t).sum())
    out["mask_seen"] = bool(mask_seen)
    out["repeat_targets_evaluation"] = REPEATS_MASKED if mask_seen else REPEATS_UNMASKED
    return out


def summarize(inter: Interactions, cfg: RunConfig) -> dict[str, Any]:
    """`data_summary` under the split settings of `cfg` (`data.*`, `eval.mask_seen`), for
    `recalign data stats`: when the split cannot be made, the reason is in `split_error`."""
    d = cfg.data
    try:
        split: Split | None = make_split(inter, d.split, d.min_user_interactions, d.temporal_cutoff)
        error = None
    except InputError as e:
        split, error = None, e.detail
    out = data_summary(inter, split, d.min_user_interactions, cfg.eval.mask_seen, d.split)
    if error:
        out["split_error"] = error
    return out


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "0%"


def _drops_line(s: dict[str, Any]) -> str:
    """What was dropped or kept on the way to the split ('' if nothing)."""
    parts = []
    if s["users_dropped"]:
        parts.append(f"dropped {s['users_dropped']:,} of {s['users']:,} users ({_pct(s['users_dropped'], s['users'])}) "
                     f"with fewer than {s['min_user_interactions']} interactions (data.min_user_interactions) and "
                     f"their {s['rows_dropped']:,} rows: neither trained on nor evaluated; "
                     f"{s['users'] - s['users_dropped']:,} users remain")
    elif s["split"] == "temporal" and s["users_not_evaluated"]:
        parts.append(f"{s['users_not_evaluated']:,} of {s['users']:,} users have no test target (temporal split: "
                     "nothing after the cut-off, or nothing before it) and are not evaluated")
    if s["duplicate_rows_dropped"]:
        parts.append(f"dropped {s['duplicate_rows_dropped']:,} exact duplicate rows (data.duplicates=drop)")
    if s["duplicate_rows_kept"]:
        parts.append(f"kept {s['duplicate_rows_kept']:,} exact duplicate rows (data.duplicates=keep; "
                     "=drop removes them)")
    return "; ".join(parts)


def _repeats_line(s: dict[str, Any]) -> str:
    """How many held-out targets repeat a seen item, and what the evaluation does ('' if none)."""
    if not (s["test_repeat_targets"] or s["valid_repeat_targets"]):
        return ""
    return (f"{s['test_repeat_targets']:,} of {s['test_targets']:,} test targets "
            f"({_pct(s['test_repeat_targets'], s['test_targets'])}) and {s['valid_repeat_targets']:,} of "
            f"{s['valid_targets']:,} validation targets repeat an item already in the user's history; "
            f"{s['repeat_targets_evaluation']}")


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The one or two stderr lines of a summary; none when nothing was dropped, no duplicate
    was kept and no target repeats a seen item."""
    return [line for line in (_drops_line(summary), _repeats_line(summary)) if line]


def report(summary: dict[str, Any], source: str = "") -> None:
    """Print `summary_lines` on stderr, each line once per process (a sweep prepares the same
    data many times), on the main process only under torchrun."""
    from recalign import distributed

    if not distributed.is_main():
        return
    name = f"{source}: " if source else ""
    for line in summary_lines(summary):
        text = f"recalign: data: {name}{line}"
        if text not in _shown:
            _shown.add(text)
            print(text, file=sys.stderr)


def format_rows(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    """(label, value) rows for the text of `recalign data stats`."""
    s = summary
    split = s["split"] + (f" ({s['split_error']})" if "split_error" in s else "")
    rows: list[tuple[str, Any]] = [("prepared for training: split", split)]
    if s["split"] == "loo":
        rows.append((f"users dropped (< {s['min_user_interactions']} interactions)",
                     f"{s['users_dropped']:,} ({_pct(s['users_dropped'], s['users'])}), {s['rows_dropped']:,} rows"))
    rows.append(("users not evaluated", s["users_not_evaluated"]))
    rows.append((f"exact duplicate rows {'dropped' if s['duplicates_policy'] == 'drop' else 'kept'} "
                 f"(data.duplicates={s['duplicates_policy']})", s["exact_duplicate_rows"]))
    rows.append(("training rows", s["training_rows"]))
    for which in ("valid", "test"):
        n, rep = s[f"{which}_targets"], s[f"{which}_repeat_targets"]
        rows.append((f"{which} targets / repeating a seen item", f"{n:,} / {rep:,} ({_pct(rep, n)})"))
    rows.append(("repeat targets in evaluation", "rankable (eval.mask_seen masks the other seen items, never the "
                 "target)" if s["mask_seen"] else "ranked (eval.mask_seen=false: nothing is masked)"))
    return rows
