"""Use a finished run: its metrics on the validation or test targets, and top-k lists for a
known user or an explicit history (original ids in, original ids out)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from recalign import configlib
from recalign.data.loaders.items import item_titles
from recalign.data.sequences import history_batch
from recalign.errors import InputError
from recalign.eval.evaluate import evaluate_targets
from recalign.eval.metrics import topk_items
from recalign.stages.common import load_run
from recalign.stages.keys import check_evaluate_keys


def evaluate_run(run_dir: str | Path, split: str = "test", device: str = "auto",
                 overrides: list[str] | None = None) -> dict[str, Any]:
    """Full-ranking metrics of a run on its `split` targets; `overrides` are `--set` pairs
    (e.g. `eval.mask_seen=false`)."""
    changes = configlib.parse_overrides(overrides or [])
    check_evaluate_keys(changes)
    cfg, data, model = load_run(run_dir, device, changes)
    return evaluate_targets(model, data.seq, data.split.targets(split), cfg.eval, cfg.data.high_reward,
                            data.simulator)


def _lookup(ids: np.ndarray, wanted: list[str], what: str) -> np.ndarray:
    """Codes of original ids given as strings (ids may be ints or strings in the table)."""
    as_str = np.array([str(x) for x in ids])
    order = np.argsort(as_str)
    pos = np.searchsorted(as_str[order], wanted)
    pos = np.clip(pos, 0, len(order) - 1)
    found = as_str[order][pos] == np.array(wanted)
    if not found.all():
        missing = [w for w, f in zip(wanted, found) if not f]
        raise InputError(f"unknown {what} id(s): {', '.join(missing[:10])}")
    return order[pos]


def _plain(x: Any) -> Any:
    """A numpy scalar as the Python value of the same type (int ids stay ints)."""
    return x.item() if hasattr(x, "item") else x


def recommend_run(run_dir: str | Path, user: str | None = None, history: list[str] | None = None, k: int = 10,
                  exclude_seen: bool = True, device: str = "cpu", items_file: str | Path | None = None) -> dict[str, Any]:
    """Top-`k` items (original ids, scores, and `title` when known) for a known user (their whole
    logged history is the context) or for an explicit history of original item ids. `user` in
    the result is the id as the data hold it (an int for MovieLens). Titles come from `items_file`
    (a CSV/TSV with an id and a title column) or, for MovieLens, the item file beside the
    ratings (`data/loaders/items.py`)."""
    if (user is None) == (history is None):
        raise InputError("give exactly one of --user or --history")
    cfg, data, model = load_run(run_dir, device)
    inter = data.inter
    if user is not None:
        code = int(_lookup(inter.user_ids, [str(user)], "user")[0])
        user = _plain(inter.user_ids[code])
        offsets = data.split.offsets
        tokens = inter.item[offsets[code]:offsets[code + 1]] + 1
        ts = inter.timestamp[offsets[code]:offsets[code + 1]]
    else:
        tokens = _lookup(inter.item_ids, [str(h) for h in history], "item") + 1
        ts = None
    items = history_batch([tokens], cfg.model.max_len)
    times = history_batch([ts], cfg.model.max_len) if ts is not None else None
    dev = next(model.parameters()).device
    items = items.to(dev)
    q = model.last_hidden(items, None if times is None else times.to(dev)).float()
    exclude = None
    if exclude_seen and len(tokens):
        seen = torch.from_numpy(np.unique(tokens))
        exclude = (torch.tensor([0, len(seen)]), seen)
    k = min(k, inter.n_items - (len(exclude[1]) if exclude else 0))
    scores, top = topk_items(q, model.item_weight.float(), k, exclude=exclude, offset=model.seen_offset(items),
                             item_chunk=cfg.eval.item_chunk, temperature=cfg.model.temperature)
    codes = top[0].cpu().numpy() - 1
    ids = [_plain(x) for x in inter.item_ids[codes]]
    titles = item_titles(cfg, items_file) or {}
    recs = [{"item": i, "score": float(s)} for i, s in zip(ids, scores[0].tolist())]
    for rec in recs:
        if str(rec["item"]) in titles:
            rec["title"] = titles[str(rec["item"])]
    return {"user": user, "history_length": int(len(tokens)), "k": k, "items": recs}
