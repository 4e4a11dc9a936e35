"""Which configuration keys each stage reads: a `--set` of a key the stage would ignore is an
error that names the key that does what the user meant (`train.epochs` in post-training ->
"post-training reads posttrain.epochs"). A configuration *file* may hold keys for several
stages (a full resolved config.toml, say), so files are not checked this way.
"""

from __future__ import annotations

from typing import Any

from recalign.config import RunConfig
from recalign.errors import InputError
from recalign.posttrain.registry import COMMON_KNOBS, Method

JUDGE_KEYS = ("eval.judges", "eval.judge_epochs", "eval.judge_families")
JUDGE_NOTE = "the held-out judges are trained by `recalign reproduce` and `recalign sweep --judges` only"

# post-training: keys it accepts but takes from elsewhere, with what to use instead
RM_NOTE = " and the reward model's, when post-training trains one"
POSTTRAIN_ELSEWHERE = {
    "train.epochs": "post-training reads posttrain.epochs (train.epochs is pretraining's" + RM_NOTE + ")",
    "train.lr": "post-training reads posttrain.lr (train.lr is pretraining's" + RM_NOTE + ")",
    "train.batch_size": "post-training reads posttrain.batch_size (0 = train.batch_size of the pretrained run)",
    "train.patience": "post-training runs a fixed budget and keeps its final policy: no early stopping (train.patience "
                      "is pretraining's" + RM_NOTE + ")",
    "train.window_stride": "the training windows are those of the pretrained run (its train.window_stride)",
    **{k: JUDGE_NOTE for k in JUDGE_KEYS},
}
# ... except these, when post-training trains the method's reward model (they set its training)
RM_TRAIN_KEYS = ("train.epochs", "train.lr", "train.patience", "posttrain.rm_weight_decay")


def flat_keys(d: dict[str, Any], prefix: str = "") -> list[str]:
    """`{"a": {"b": 1}}` -> `["a.b"]`."""
    out = []
    for k, v in d.items():
        out.extend(flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"])
    return out


def _refuse(where: str, problems: list[str]) -> None:
    if problems:
        raise InputError(f"{where}: " + "; ".join(problems))


def check_training_keys(stage: str, given: dict[str, Any], cfg: RunConfig) -> None:
    """Pretraining and the reward-model stage: `posttrain.*` is post-training's, the judges'
    keys are the experiments', `sim.*` needs `data.name = sim`."""
    problems = []
    for key in flat_keys(given):
        if key == "posttrain.rm_weight_decay" and stage == "reward-model":
            continue
        if key.startswith("posttrain."):
            problems.append(f"{key} is read by post-training only (recalign posttrain --set {key}=...)")
        elif key in JUDGE_KEYS:
            problems.append(f"{key}: {JUDGE_NOTE}")
        elif key.startswith("sim.") and cfg.data.name != "sim":
            problems.append(f"{key} configures the simulator, but the data are {cfg.data.name!r} (--data sim uses it)")
    _refuse(f"{stage} --set", problems)


def check_posttrain_keys(given: dict[str, Any], method: Method, trains_reward_model: bool) -> None:
    """Post-training: keys taken from elsewhere (unless they set the training of the reward model
    post-training trains), and `posttrain.*` knobs the method does not read."""
    problems = []
    for key in flat_keys(given):
        if key in RM_TRAIN_KEYS and trains_reward_model:
            continue
        if key in POSTTRAIN_ELSEWHERE:
            problems.append(f"{key}: {POSTTRAIN_ELSEWHERE[key]}")
        elif key.startswith("posttrain."):
            name = key.split(".", 1)[1]
            if name not in COMMON_KNOBS + method.knobs:
                reads = ", ".join(f"posttrain.{k}" for k in method.knobs) or "no knob of its own"
                problems.append(f"{key} is not read by {method.name} (it reads {reads}; every method reads "
                                f"posttrain.{', posttrain.'.join(COMMON_KNOBS)})")
    _refuse("posttrain --set", problems)


EVALUATE_KEYS = ("eval.", "data.data_dir", "data.high_reward")


def check_evaluate_keys(given: dict[str, Any]) -> None:
    """`recalign evaluate`: the evaluation protocol and where the data live; the model and the
    data are the run's."""
    bad = [k for k in flat_keys(given) if not any(k == p or k.startswith(p) for p in EVALUATE_KEYS)]
    if bad:
        _refuse("evaluate --set", [f"{', '.join(bad)}: evaluation keeps the run's model and data and reads only "
                                   "eval.*, data.data_dir and data.high_reward"])
    bad = [k for k in flat_keys(given) if k in JUDGE_KEYS]
    _refuse("evaluate --set", [f"{k}: {JUDGE_NOTE}" for k in bad])
