"""The stages as functions over a run configuration: load and split the data, build the model,
pretrain, load a run back, evaluate it and recommend from it. The CLI and `recalign.api` are thin
layers over these."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recalign import configlib
from recalign.config import RunConfig, config_from_dict
from recalign.data.schema import Interactions
from recalign.data.sequences import SequenceData
from recalign.data.split import Split, make_split
from recalign.errors import InputError
from recalign.eval.evaluate import evaluate_targets
from recalign.models.recommender import Recommender
from recalign.train import checkpoint as ckpt
from recalign.train import distributed
from recalign.train.loop import FitResult, NextItemObjective, Objective, fit, resolve_device


@dataclass
class Prepared:
    """A dataset ready for training and evaluation."""

    cfg: RunConfig
    inter: Interactions
    split: Split
    seq: SequenceData
    simulator: Any = None  # the ground-truth simulator when data.name == "sim"

    def item_counts(self) -> np.ndarray:
        """Training-row counts per token (index 0 = padding), for popularity negatives."""
        items = self.inter.item[self.split.train_rows()]
        return np.concatenate([[0], np.bincount(items, minlength=self.inter.n_items)]).astype(np.float64)


def load_interactions(cfg: RunConfig) -> tuple[Interactions, Any]:
    if cfg.data.name == "sim":
        from recalign.data.simulator import simulate

        return simulate(cfg.sim)
    from recalign.data.loaders import load_from_config

    return load_from_config(cfg), None


def prepare(cfg: RunConfig) -> Prepared:
    inter, sim = load_interactions(cfg)
    split = make_split(inter, cfg.data.split, cfg.data.min_user_interactions, cfg.data.temporal_cutoff)
    return Prepared(cfg, inter, split, SequenceData(split, cfg.model.max_len, cfg.train.window_stride), sim)


def fingerprint(inter: Interactions) -> str:
    h = hashlib.sha256()
    for a in (inter.user, inter.item, inter.timestamp, inter.reward):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def build_model(cfg: RunConfig, data: Prepared) -> Recommender:
    torch.manual_seed(cfg.train.seed)
    return Recommender(cfg.model, data.inter.n_items, data.item_counts())


def write_run_files(run_dir: Path, cfg: RunConfig, data: Prepared, extra_state: dict[str, Any] | None = None) -> None:
    """Start a run folder: resolved config, id maps, `state.json`. Under torchrun every rank calls
    it and rank 0 writes; the barriers let every rank finish its checks of the folder (does it
    exist already?) before anything is written, and find the files complete afterwards."""
    distributed.barrier()
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt.atomic_write_text(run_dir / "config.toml", configlib.to_toml(cfg))
    for name, ids in (("user_ids.json", data.inter.user_ids), ("item_ids.json", data.inter.item_ids)):
        ckpt.atomic_write_text(run_dir / name, json.dumps([x.item() if hasattr(x, "item") else x for x in ids]))
    state = {"seed": cfg.train.seed, "git_revision": ckpt.git_revision(), "data_fingerprint": fingerprint(data.inter),
             "n_users": data.inter.n_users, "n_items": data.inter.n_items, "interactions": len(data.inter)}
    state.update(extra_state or {})
    ckpt.atomic_write_text(run_dir / "state.json", json.dumps(state, indent=2))
    distributed.barrier()


def update_state(run_dir: Path, **fields: Any) -> dict[str, Any]:
    path = Path(run_dir) / "state.json"
    state = json.loads(path.read_text()) if path.is_file() else {}
    state.update(fields)
    ckpt.atomic_write_text(path, json.dumps(state, indent=2, default=float))
    return state


def train_and_test(cfg: RunConfig, data: Prepared, model: Recommender, objective: Objective, run_dir: Path,
                   resume: bool = False, train_cfg=None, select_metric: str | None = "ndcg@10",
                   on_step: Callable[[int], None] | None = None) -> tuple[FitResult, dict[str, Any]]:
    """Fit with validation-based model selection, then reload the best weights and test them."""
    tcfg = train_cfg or cfg.train
    run_dir = Path(run_dir)

    def validate(m: Recommender) -> dict[str, Any]:
        return evaluate_targets(m, data.seq, data.split.valid, cfg.eval, cfg.data.high_reward, data.simulator)

    res = fit(model, data.seq, objective, tcfg, run_dir, validate=validate, resume=resume,
              select_metric=select_metric, on_step=on_step)
    ckpt.load_model_weights(model, run_dir / "model.safetensors")
    model.eval()
    test = evaluate_targets(model, data.seq, data.split.test, cfg.eval, cfg.data.high_reward, data.simulator)
    return res, test


def pretrain(cfg: RunConfig, run_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Stage 1: next-item pretraining. Writes the run folder; returns its summary."""
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        if (run_dir / "state.json").is_file():
            raise InputError("run folder exists; pass --resume to continue it or choose another --out", path=run_dir)
    data = prepare(cfg)
    model = build_model(cfg, data)
    write_run_files(run_dir, cfg, data, {"stage": "pretrain"})
    res, test = train_and_test(cfg, data, model, NextItemObjective(), run_dir, resume=resume)
    summary = {"stage": "pretrain", "best_epoch": res.best_epoch, "epochs_run": res.epochs_run, "steps": res.steps,
               "train_seconds": round(res.seconds, 2), "seconds_to_best": round(res.seconds_to_best, 2),
               "valid": res.best, "test": test}
    update_state(run_dir, **summary)
    ckpt.append_jsonl(run_dir / "metrics.jsonl", {"final": True, **{f"test/{k}": v for k, v in test.items()}})
    return summary


# ------------------------------------------------------------------ loading a run back
def read_config(run_dir: str | Path) -> RunConfig:
    run_dir = Path(run_dir)
    path = run_dir / "config.toml"
    if not path.is_file():
        raise InputError("not a recalign run folder (config.toml missing)", path=run_dir)
    return config_from_dict(configlib.load_toml(path))


def load_run(run_dir: str | Path, device: str = "cpu", overrides: list[str] | None = None,
             data: Prepared | None = None) -> tuple[RunConfig, Prepared, Recommender]:
    """Rebuild the data, the split and the model of a run, with its best weights."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    if overrides:
        cfg = configlib.update(cfg, configlib.parse_overrides(overrides))
    data = data or prepare(cfg)
    state = json.loads((run_dir / "state.json").read_text()) if (run_dir / "state.json").is_file() else {}
    fp = state.get("data_fingerprint")
    if fp and fp != fingerprint(data.inter):
        print(f"recalign: warning: the data of {run_dir} changed since the run was trained", file=sys.stderr)
    model = build_model(cfg, data)
    ckpt.load_model_weights(model, run_dir / "model.safetensors")
    model.to(resolve_device(device)).eval()
    return cfg, data, model


def evaluate_run(run_dir: str | Path, split: str = "test", device: str = "auto",
                 overrides: list[str] | None = None) -> dict[str, Any]:
    cfg, data, model = load_run(run_dir, device, overrides)
    return evaluate_targets(model, data.seq, data.split.targets(split), cfg.eval, cfg.data.high_reward,
                            data.simulator)


def with_train(cfg: RunConfig, **fields: Any) -> RunConfig:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **fields))


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


def recommend_run(run_dir: str | Path, user: str | None = None, history: list[str] | None = None, k: int = 10,
                  exclude_seen: bool = True, device: str = "cpu") -> dict[str, Any]:
    """Top-`k` items (original ids, scores) for a known user (their whole logged history is the
    context) or for an explicit history of original item ids."""
    from recalign.data.sequences import history_batch
    from recalign.eval.metrics import topk_items

    if (user is None) == (history is None):
        raise InputError("give exactly one of --user or --history")
    cfg, data, model = load_run(run_dir, device)
    inter = data.inter
    if user is not None:
        code = int(_lookup(inter.user_ids, [str(user)], "user")[0])
        offsets = data.split.offsets
        tokens = inter.item[offsets[code]:offsets[code + 1]] + 1
        ts = inter.timestamp[offsets[code]:offsets[code + 1]]
    else:
        tokens = _lookup(inter.item_ids, [str(h) for h in history], "item") + 1
        ts = None
    items = history_batch([tokens], cfg.model.max_len)
    times = history_batch([ts], cfg.model.max_len) if ts is not None else None
    dev = next(model.parameters()).device
    q = model.last_hidden(items.to(dev), None if times is None else times.to(dev)).float()
    exclude = None
    if exclude_seen and len(tokens):
        seen = torch.from_numpy(np.unique(tokens))
        exclude = (torch.tensor([0, len(seen)]), seen)
    k = min(k, inter.n_items - (len(exclude[1]) if exclude else 0))
    scores, top = topk_items(q, model.item_weight.float(), k, exclude=exclude, item_chunk=cfg.eval.item_chunk)
    codes = top[0].cpu().numpy() - 1
    ids = [x.item() if hasattr(x, "item") else x for x in inter.item_ids[codes]]
    return {"user": user, "history_length": int(len(tokens)), "k": k,
            "items": [{"item": i, "score": float(s)} for i, s in zip(ids, scores[0].tolist())]}
