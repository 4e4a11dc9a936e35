"""The held-out judge: an ensemble of reward models that scores a policy's recommendations.

On real data nobody knows the reward of an item the user was never shown, so METHOD.md's
reward-aware evaluation adds a proxy: the mean predicted reward of each policy's top-k list
under `K` reward models (`eval.judges`) that

- are trained on *every* logged interaction, validation and test targets included (so each
  judge has seen the held-out behaviour it is asked about), and
- are never used to train a policy (so no policy was optimised against them, unlike the reward
  model `ppo` and online `dpo` climb: a policy that hacks its own reward model is not rewarded
  by an independent judge for it).

The judges differ by seed (initialisation and batch order). Their spread (the standard deviation
of the K per-judge means) says how much the verdict depends on which judge you ask; a difference
between two policies smaller than that spread is not one to trust. A judge is still a learned
model: it shares the logging data's blind spots (items rarely logged in a context are scored by
extrapolation), which is why the simulator's oracle remains the final word where it exists.

Judges train for a fixed `eval.judge_epochs` (their data has no held-out part to stop on) and
keep their last weights. A judge folder that finished training is reused, not retrained.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recalign.config import EvalConfig, RunConfig
from recalign.data.sequences import SequenceData
from recalign.data.split import Split, Targets
from recalign.eval.evaluate import queries_and_exclusions
from recalign.eval.metrics import topk_items
from recalign.models.recommender import Recommender
from recalign.models.reward_model import RewardModel, RewardObjective, is_binary
from recalign.train import checkpoint as ckpt
from recalign.train.loop import fit

JUDGE_SEED_OFFSET = 7919  # judges' seeds are far from any policy seed a sweep would use


def judge_split(split: Split) -> Split:
    """The same split with every interaction in training (validation and test targets too)."""
    return dataclasses.replace(split, train_end=split.offsets[1:].copy())


def train_judges(cfg: RunConfig, data: Any, out_dir: str | Path, k: int | None = None,
                 verbose: bool = False) -> list[RewardModel]:
    """Train `k` (default `cfg.eval.judges`) judges on every interaction of `data` (a
    `pipeline.Prepared`); each is saved as a reward-model run folder `out_dir/judge<j>`."""
    from recalign.pipeline import Prepared, update_state, write_run_files

    out_dir = Path(out_dir)
    k = cfg.eval.judges if k is None else k
    split = judge_split(data.split)
    jdata = Prepared(cfg, data.inter, split, SequenceData(split, cfg.model.max_len, cfg.train.window_stride),
                     data.simulator)
    rewards = data.inter.reward
    binary = is_binary(rewards)
    judges = []
    for j in range(k):
        seed = cfg.train.seed + JUDGE_SEED_OFFSET + j
        tcfg = dataclasses.replace(cfg.train, seed=seed, epochs=cfg.eval.judge_epochs, max_steps=0,
                                   progress=cfg.train.progress and verbose)
        jcfg = dataclasses.replace(cfg, train=tcfg)
        torch.manual_seed(seed)
        rm = RewardModel(cfg.model, data.inter.n_items, binary=binary, init_mean=float(rewards.mean()))
        run = out_dir / f"judge{j}"
        state = run / "state.json"
        if not (state.is_file() and json.loads(state.read_text()).get("trained")):  # else: reuse it
            write_run_files(run, jcfg, jdata, {"stage": "reward_model", "role": "judge", "binary": binary,
                                               "trained": False})
            res = fit(rm, jdata.seq, RewardObjective(), tcfg, run, validate=None, resume=True)
            update_state(run, trained=True, epochs_run=res.epochs_run, train_seconds=round(res.seconds, 2))
            if verbose:
                print(f"recalign: judge {j + 1}/{k} trained in {res.seconds:.0f} s", file=sys.stderr)
        ckpt.load_model_weights(rm, run / "model.safetensors")
        judges.append(rm.eval())
    return judges


@torch.no_grad()
def judge_topk(judges: list[RewardModel], model: Recommender, seq: SequenceData, targets: Targets,
               cfg: EvalConfig, k: int = 10) -> np.ndarray:
    """`[n_judges, n_targets]`: each judge's mean predicted reward of `model`'s top-`k` list
    (seen items excluded when `cfg.mask_seen`) in the context of each target."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    weight = model.item_weight.float()
    out = [[] for _ in judges]
    n = len(targets)
    for lo in range(0, n, cfg.batch_size):
        idx = np.arange(lo, min(n, lo + cfg.batch_size))
        q, exclude = queries_and_exclusions(model, seq, targets, idx, device, cfg.mask_seen)
        _, tokens = topk_items(q, weight, k, exclude=exclude, item_chunk=cfg.item_chunk)
        items, ts = seq.context_batch(targets, idx)
        for j, judge in enumerate(judges):
            jdev = next(judge.parameters()).device
            h = judge.last_hidden(items.to(jdev), ts.to(jdev))
            out[j].append(judge.score(h, tokens.to(jdev)).float().mean(1).cpu().numpy())
    if was_training:
        model.train()
    return np.stack([np.concatenate(v) if v else np.zeros(0) for v in out])


def judge_summary(values: np.ndarray) -> dict[str, Any]:
    """`values [n_judges, n_users]` -> the ensemble's mean, the spread (std of the per-judge
    means, 0 for one judge) and each judge's mean."""
    per_judge = values.mean(axis=1)
    return {"judge_value": float(per_judge.mean()),
            "judge_spread": float(per_judge.std(ddof=1)) if per_judge.size > 1 else 0.0,
            "judge_values": [float(v) for v in per_judge]}
