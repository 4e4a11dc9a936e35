"""The run configuration: one typed section per concern (`data.*`, `sim.*`, `model.*`, `train.*`,
`eval.*`, `posttrain.*`). Defaults live only here and in the section dataclasses they import;
TOML files and `--set` overrides may only override (see `recalign.configlib`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from recalign import configlib
from recalign.configlib import AT_LEAST_ONE, FRACTION, NON_NEGATIVE, OPEN_FRACTION, POSITIVE, field
from recalign.data.simulator import SimConfig
from recalign.models.config import ModelConfig


@dataclass
class DataConfig:
    name: str = field("sim", "dataset name (ml-100k, ml-latest-small, obd, sim, ...) or a file path")
    data_dir: str = field("", "folder holding datasets; empty = $RECALIGN_DATA, then ~/.cache/recalign")
    columns: str = field("", "column mapping for generic files: user=uid,item=iid,reward=rating,timestamp=ts")
    format: str = field("auto", "file format for paths: auto (by name/extension), movielens, recbole, obd, amazon, csv, tsv, parquet, jsonl")
    obd_policy: Literal["random", "bts"] = field("random", "Open Bandit Dataset: logging policy")
    obd_campaign: Literal["all", "men", "women"] = field("all", "Open Bandit Dataset: campaign")
    no_header: bool = field(False, "generic files: the file has no header; `columns` lists names in file order")
    duplicates: Literal["keep", "drop"] = field("keep", "exact duplicate rows (same user, item, time, reward): keep or drop")
    min_user_interactions: int = field(3, "loo split: users with fewer interactions are dropped, neither trained on nor "
                                          "evaluated (leave-one-out needs 3); the count is said on stderr and in state.json",
                                       check=AT_LEAST_ONE)
    split: Literal["loo", "temporal"] = field("loo", "loo: per-user leave-one-out; temporal: global time cut-off")
    temporal_cutoff: float = field(0.8, "temporal split: quantile of timestamps where test begins (validation takes the 10% before)", check=OPEN_FRACTION)
    high_reward: float = field(4.5, "held-out targets with reward >= this form the high-reward subset (paper: 4.5)")


@dataclass
class TrainConfig:
    epochs: int = field(200, "maximum epochs (early stopping usually ends sooner)", check=AT_LEAST_ONE)
    max_steps: int = field(0, "stop after this many optimizer steps (0 = no limit)", check=NON_NEGATIVE)
    batch_size: int = field(128, "sequences per optimizer step (before accumulation) in each process; under torchrun "
                            "the global batch is WORLD_SIZE × batch_size", check=AT_LEAST_ONE)
    window_stride: int = field(0, "rows between the ends of a user's training windows (0 = model.max_len: no overlap); "
                               "smaller = each target sees at least max_len - stride items of history, at max_len/stride "
                               "times the compute", check=NON_NEGATIVE)
    grad_accum: int = field(1, "micro-batches accumulated per optimizer step", check=AT_LEAST_ONE)
    lr: float = field(1e-3, "peak AdamW learning rate", check=POSITIVE)
    optimizer: Literal["adamw", "sparse_adam"] = field(
        "adamw", "adamw: AdamW on every parameter; sparse_adam: sparse gradients for the item table, updated by "
        "torch.optim.SparseAdam (lazy Adam: only the rows a batch touches), AdamW on the rest. For large catalogs "
        "(the step no longer costs O(items)); needs model.head = sampled, weight_decay = 0, one process")
    weight_decay: float = field(0.0, "AdamW weight decay", check=NON_NEGATIVE)
    warmup_steps: int = field(20, "linear warmup steps (then constant, or cosine decay with train.cosine)", check=NON_NEGATIVE)
    cosine: bool = field(False, "decay the learning rate by a cosine over the planned steps after warmup")
    clip_grad: float = field(1.0, "gradient norm clip (0 = off)", check=NON_NEGATIVE)
    seed: int = field(0, "seed of the model initialisation, the batch order and dropout")
    eval_every: int = field(1, "validate every N epochs", check=AT_LEAST_ONE)
    patience: int = field(10, "stop after this many validations without a better validation NDCG@10", check=AT_LEAST_ONE)
    device: str = field("auto", "auto (cuda if available), cpu or cuda[:N]")
    bf16: bool = field(True, "bf16 autocast on GPU (ignored on CPU)")
    num_threads: int = field(0, "torch CPU threads (0 = torch default)", check=NON_NEGATIVE)
    progress: bool = field(True, "tqdm progress bar on stderr")


@dataclass
class EvalConfig:
    ks: list[int] = field([10, 50, 200], "cut-offs k for HR@k and NDCG@k", check=AT_LEAST_ONE)
    mask_seen: bool = field(True, "exclude items the user has already interacted with from the ranking; the target "
                                  "itself is never excluded, so a target that repeats a seen item stays rankable")
    batch_size: int = field(512, "users scored per evaluation batch", check=AT_LEAST_ONE)
    item_chunk: int = field(262144, "items scored per chunk (running top-k keeps memory bounded)", check=AT_LEAST_ONE)
    judges: int = field(3, "reward models in the held-out judge ensemble (trained on every interaction, "
                           "validation and test included; never used to train a policy)", check=NON_NEGATIVE)
    judge_epochs: int = field(10, "training epochs of each judge (fixed budget: its data has no held-out part)", check=AT_LEAST_ONE)
    judge_families: list[str] = field(["seq", "mf"], "judge families, eval.judges of each: seq (sequence reward models) "
                                      "and mf (biased matrix factorisation, a user-level model); each is validated out "
                                      "of fold against the mean predictors",
                                      check=(lambda v: v in ("seq", "mf"), "seq or mf"))


@dataclass
class PostTrainConfig:
    method: str = field("exp_sft", "post-training method (see `recalign posttrain --list`)")
    lam: float = field(1.0, "temperature λ of exponential weights exp(r/λ) (paper's knob)", check=POSITIVE)
    weight_norm: Literal["global", "batch", "context", "none"] = field("global", "normaliser Z of the weights")
    max_weight: float = field(0.0, "clip normalised weights at this value (0 = no clip)", check=NON_NEGATIVE)
    reward_transform: Literal["auto", "none", "standardize", "user_center", "rank", "user_rank"] = field(
        "auto", "reward transform before weighting; rank / user_rank: the reward's mid-rank quantile (global / within "
        "its user) mapped onto the training rewards' range [r_min, r_max]; auto: the method's own default "
        "(exp_sft: user_rank, chosen on validation, docs/reproduce/defaults.md; every other method: none)")
    log_clip_quantile: float = field(0.0, "cap log weights at their q-quantile over the training set + log(log_clip_ratio), "
                                          "before normalisation, so one outlier cannot dominate Z (0 = off)", check=FRACTION)
    log_clip_ratio: float = field(10.0, "with log_clip_quantile: the largest weight as a multiple of the q-quantile weight",
                                  check=POSITIVE)
    lam_rule: Literal["fixed", "ess"] = field("fixed", "fixed: use lam; ess: the smallest λ in [0.05, 100] whose training-set "
                                              "weights have ESS >= lam_target_ess (bisection in log λ)")
    lam_target_ess: float = field(0.5, "lam_rule = ess: the target ESS fraction in (0, 1]",
                                  check=(lambda v: 0 < v <= 1, "in (0, 1]"))
    beta: float = field(0.1, "dpo/ipo: temperature β of the preference loss (Rafailov et al. 2023)", check=POSITIVE)
    rm_weight_decay: float = field(-1.0, "AdamW weight decay of the reward model the RLHF methods train "
                                         "(`recalign reward-model`, the contest's and compare's reward model; not "
                                         "the judges): a regularisation axis of its own; -1 = train.weight_decay",
                                   check=(lambda v: v == -1 or v >= 0, ">= 0, or -1 (= train.weight_decay)"))
    kl_coef: float = field(0.1, "ppo: coefficient β of the KL penalty to π_0 in the reward (Ouyang et al. 2022)", check=NON_NEGATIVE)
    pairs: Literal["rm", "logged"] = field("rm", "dpo/ipo pairs: rm (online, reward model) or logged")
    threshold: float = field(4.0, "filtered_sft: keep interactions with reward >= threshold")
    k_samples: int = field(8, "ppo / online dpo: items sampled per context from the current policy", check=AT_LEAST_ONE)
    ppo_epochs: int = field(1, "ppo: optimizer steps per rollout (1 = one update per rollout, ratio 1: the group-baseline "
                               "policy gradient; > 1 reuses each rollout so the clipped ratio binds)", check=AT_LEAST_ONE)
    clip_eps: float = field(0.2, "ppo: ε of the clipped ratio clip(π_θ/π_old, 1 − ε, 1 + ε) (Schulman et al. 2017); "
                                 "binds only with ppo_epochs > 1", check=POSITIVE)
    gamma: float = field(0.0, "cql: discount γ of the TD target along the sequence (0 = bandit)", check=FRACTION)
    cql_alpha: float = field(1.0, "cql: weight α of logsumexp_a Q(s,a) − Q(s,a_logged) (Kumar et al. 2020)", check=NON_NEGATIVE)
    ips_clip: float = field(10.0, "ips: cap of the importance ratio π_θ/π_β (0 = no cap)", check=NON_NEGATIVE)
    topk: int = field(0, "ips: slate size K of the top-K correction K(1−π)^(K−1) (0 = off; Chen et al. 2019)", check=NON_NEGATIVE)
    asft_weight: Literal["exp", "pos"] = field("exp", "asft: w = exp(A/λ) or max(A, 0), A = r − b(s)")
    epochs: int = field(6, "post-training epochs (6: chosen with exp_sft's defaults, docs/reproduce/defaults.md)",
                        check=AT_LEAST_ONE)
    lr: float = field(1e-4, "post-training learning rate", check=POSITIVE)
    batch_size: int = field(0, "post-training sequences per step (0 = train.batch_size)", check=NON_NEGATIVE)
    trace_every: int = field(0, "every N steps, trace the policy on validation contexts (true value on the "
                                "simulator, the reward model's score of its top-10) into trace.jsonl; 0 = off", check=NON_NEGATIVE)
    trace_users: int = field(500, "validation users the trace evaluates (a fixed random subset)", check=AT_LEAST_ONE)
    checkpoint_every: int = field(0, "every N optimizer steps (and at step 0 and at the end), evaluate the policy on the "
                                     "whole validation split and on the test split (metrics kept apart) into "
                                     "checkpoints.jsonl, with per-user test values in checkpoints/step-N.npz; "
                                     "candidates for `recalign contest`'s selection; 0 = off", check=NON_NEGATIVE)


@dataclass
class RunConfig:
    data: DataConfig = field(DataConfig(), "dataset and split")
    sim: SimConfig = field(SimConfig(), "simulator (used when data.name = sim)")
    model: ModelConfig = field(ModelConfig(), "backbone")
    train: TrainConfig = field(TrainConfig(), "training loop")
    eval: EvalConfig = field(EvalConfig(), "evaluation protocol")
    posttrain: PostTrainConfig = field(PostTrainConfig(), "post-training")


def load_config(config_file: str | Path | None = None, overrides: list[str] | None = None,
                base: RunConfig | None = None) -> RunConfig:
    """Defaults, then the TOML file, then `--set` overrides; unknown keys and wrong types raise."""
    cfg = base if base is not None else RunConfig()
    if config_file:
        cfg = configlib.update(cfg, configlib.load_toml(config_file))
    if overrides:
        cfg = configlib.update(cfg, configlib.parse_overrides(overrides))
    return cfg


def config_from_dict(d: dict[str, Any]) -> RunConfig:
    return configlib.update(RunConfig(), d)
