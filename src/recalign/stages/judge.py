"""Train the held-out judge ensemble (`eval/judge.py` says what the judges are for and scores
policies with them): `eval.judges` reward models, each trained by the one reward-model trainer
(`stages/reward_model.py`) on every interaction — validation and test targets included — for a
fixed `eval.judge_epochs`, and never used to train a policy. A judge folder that finished
training is reused, not retrained."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from recalign.config import RunConfig
from recalign.data.prepared import Prepared
from recalign.data.sequences import SequenceData
from recalign.data.split import Split
from recalign.models.reward_model import RewardModel, is_binary
from recalign.stages.reward_model import train_reward_model
from recalign.train import checkpoint as ckpt
from recalign.train.runfolder import read_state

JUDGE_SEED_OFFSET = 7919  # judges' seeds are far from any policy seed a sweep would use


def judge_split(split: Split) -> Split:
    """The same split with every interaction in training (validation and test targets too)."""
    return dataclasses.replace(split, train_end=split.offsets[1:].copy())


def train_judges(cfg: RunConfig, data: Prepared, out_dir: str | Path, k: int | None = None,
                 verbose: bool = False) -> list[RewardModel]:
    """Train `k` (default `cfg.eval.judges`) judges on every interaction of `data`; judge `j` is
    the reward-model run folder `out_dir/judge<j>` with seed `train.seed + 7919 + j`."""
    out_dir = Path(out_dir)
    k = cfg.eval.judges if k is None else k
    split = judge_split(data.split)
    jdata = Prepared(cfg, data.inter, split, SequenceData(split, cfg.model.max_len, cfg.train.window_stride),
                     data.simulator)
    judges = []
    for j in range(k):
        seed = cfg.train.seed + JUDGE_SEED_OFFSET + j
        tcfg = dataclasses.replace(cfg.train, seed=seed, epochs=cfg.eval.judge_epochs, max_steps=0,
                                   progress=cfg.train.progress and verbose)
        run = out_dir / f"judge{j}"
        if read_state(run).get("trained"):
            judges.append(_load_judge(cfg, jdata, run))
            continue
        rm, _ = train_reward_model(dataclasses.replace(cfg, train=tcfg), jdata, run, validate=False,
                                   extra_state={"role": "judge"})
        if verbose:
            print(f"recalign: judge {j + 1}/{k} trained in {read_state(run)['train_seconds']:.0f} s", file=sys.stderr)
        judges.append(rm)
    return judges


def _load_judge(cfg: RunConfig, jdata: Prepared, run: Path) -> RewardModel:
    rewards = jdata.inter.reward[jdata.split.train_rows()]
    rm = RewardModel(cfg.model, jdata.inter.n_items, binary=is_binary(rewards))
    ckpt.load_model_weights(rm, run / "model.safetensors")
    return rm.eval()
