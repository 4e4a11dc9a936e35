"""Stage 2: post-train a pretrained run with one method, and train reward models.

`posttrain` loads the pretrained run (its config, data and weights), applies the overrides,
builds the method from the registry, gives it a frozen copy of π_0 and, when it needs one, a
reward model (given, or trained here on the training split and saved under
`out_dir/reward_model/`), then runs the one training loop for `posttrain.epochs` epochs at
`posttrain.lr` and keeps the final policy (a fixed budget: no model selection). The run folder
has the layout of a pretraining run, so `recalign evaluate`, `recommend` and a further
`posttrain` read it the same way.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recalign import configlib
from recalign.config import RunConfig, TrainConfig
from recalign.errors import InputError
from recalign.eval.evaluate import evaluate_targets
from recalign.eval.judge import judge_topk
from recalign.models.recommender import Recommender
from recalign.models.reward_model import (
    RewardModel,
    RewardObjective,
    is_binary,
    prediction_errors,
    reference_predictors,
)
from recalign.pipeline import (
    Prepared,
    fingerprint,
    load_run,
    read_config,
    train_and_test,
    update_state,
    write_run_files,
)
from recalign.posttrain.registry import PostTrainContext, get_method
from recalign.posttrain.scoring import frozen_copy
from recalign.train import checkpoint as ckpt
from recalign.train import distributed
from recalign.train.loop import fit, resolve_device

# What a post-training run may change: its own knobs, the loop, the evaluation, where the data
# lives, the high-reward threshold, dropout. Everything else is fixed by the pretrained run.
_OVERRIDABLE = ("posttrain.", "train.", "eval.", "data.data_dir", "data.high_reward", "model.dropout")


def _flat_keys(d: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        out.extend(_flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"])
    return out


def _check_overridable(d: dict[str, Any], where: str) -> None:
    bad = [k for k in _flat_keys(d) if not any(k == p or k.startswith(p) for p in _OVERRIDABLE)]
    if bad:
        raise InputError(f"{where}: post-training keeps the data and the model of the pretrained run and "
                         f"cannot change {', '.join(bad)}; allowed: posttrain.*, train.*, eval.*, data.data_dir, "
                         "data.high_reward, model.dropout")


def posttrain_train_config(cfg: RunConfig, n_windows: int) -> TrainConfig:
    """The loop's settings for post-training: `cfg.train` with `epochs = posttrain.epochs`,
    `lr = posttrain.lr`, `batch_size = posttrain.batch_size` (0 = train.batch_size) and a warmup
    of at most 10% of the planned steps (the policy starts trained; a long warmup would waste
    the budget). `max_steps`, clipping, device and seed come from `train.*`."""
    pt, tr = cfg.posttrain, cfg.train
    bs = pt.batch_size or tr.batch_size
    global_bs = bs * distributed.world_size()  # under torchrun each process takes bs windows per step
    steps = max(1, math.ceil(math.ceil(n_windows / global_bs) / tr.grad_accum) * pt.epochs)
    if tr.max_steps > 0:
        steps = min(steps, tr.max_steps)
    return dataclasses.replace(tr, epochs=pt.epochs, lr=pt.lr, batch_size=bs,
                               warmup_steps=min(tr.warmup_steps, steps // 10))


def _read_state(run_dir: Path) -> dict[str, Any]:
    p = Path(run_dir) / "state.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def posttrain(init_run: str | Path, method: str | None, out_dir: str | Path, overrides: list[str] | None = None,
              reward_model_run: str | Path | None = None, data: Prepared | None = None,
              config_file: str | Path | None = None, resume: bool = False) -> dict[str, Any]:
    """Post-train the run `init_run` with `method` (None = `posttrain.method` of the config).

    Args:
        init_run: a pretrained (or post-trained) run folder.
        method: registered method name.
        out_dir: the new run folder.
        overrides: `--set` pairs, e.g. `["posttrain.lam=0.5"]` (posttrain.*, train.*, eval.*, ...).
        reward_model_run: a reward-model run folder (`recalign reward-model`); when the method
            needs one and none is given, one is trained here under `out_dir/reward_model/`.
        data: the prepared dataset of `init_run`, to skip reloading it.
        config_file: a TOML file applied before `overrides`.
        resume: continue an interrupted post-training run in `out_dir`.

    Returns:
        the summary (also in `out_dir/state.json`): method, setup statistics (ESS, ...), mean
        training diagnostics, the final validation and the test metrics (`true_value` on the
        simulator), and the initial run's test metrics when it recorded them.
    """
    out_dir = Path(out_dir)
    init_run = Path(init_run)
    overrides = list(overrides or [])
    file_values = configlib.load_toml(config_file) if config_file else {}
    _check_overridable(file_values, str(config_file))
    _check_overridable(configlib.parse_overrides(overrides), "--set")
    if out_dir.exists() and (out_dir / "state.json").is_file() and not resume:
        raise InputError("run folder exists; pass --resume to continue it or choose another --out", path=out_dir)
    if init_run.resolve() == out_dir.resolve():
        raise InputError("--out must differ from --init", path=out_dir)
    init_state = _read_state(init_run)
    if init_state.get("stage") == "reward_model":
        raise InputError("--init is a reward-model run; give a pretrained run", path=init_run)

    # the method first (its name may come from the file or --set), then the run rebuilt with it
    pre = configlib.update(configlib.update(read_config(init_run), file_values), configlib.parse_overrides(overrides))
    if method is not None:
        pre = dataclasses.replace(pre, posttrain=dataclasses.replace(pre.posttrain, method=method))
    meth = get_method(pre.posttrain.method, pre.posttrain)
    # the keys that change how the run is rebuilt must reach load_run (file first, --set last)
    rebuild = ("data.data_dir", "model.dropout")
    given = set(_flat_keys(file_values)) | {o.split("=", 1)[0].strip() for o in overrides}
    load_overrides = [f"{k}={json.dumps(file_values[k.split('.')[0]][k.split('.')[1]])}"
                      for k in rebuild if k in _flat_keys(file_values)]
    load_overrides += [o for o in overrides if o.split("=", 1)[0].strip() in rebuild]
    if meth.disable_dropout and "model.dropout" not in given:
        load_overrides.append("model.dropout=0.0")
    cfg, data, model = load_run(init_run, "cpu", load_overrides or None, data=data)
    cfg = configlib.update(cfg, file_values)
    cfg = configlib.update(cfg, configlib.parse_overrides(overrides))
    cfg = dataclasses.replace(cfg, posttrain=pre.posttrain)
    tcfg = posttrain_train_config(cfg, data.seq.n_windows)
    run_cfg = dataclasses.replace(cfg, train=tcfg)
    device = resolve_device(tcfg.device)
    torch.manual_seed(tcfg.seed)

    out_dir.mkdir(parents=True, exist_ok=True)
    rm, rm_path, rm_diag = None, None, None
    if meth.needs_reward_model:
        if reward_model_run is not None:
            rm_path = Path(reward_model_run)
            rm = load_reward_model(rm_path, data)
        elif resume and (out_dir / "reward_model" / "state.json").is_file() and \
                _read_state(out_dir / "reward_model").get("trained"):
            rm_path = out_dir / "reward_model"
            rm = load_reward_model(rm_path, data)
        else:
            rm_path = out_dir / "reward_model"
            # the reward model keeps the run's own dropout (the policy's may have been turned off)
            rm_cfg = dataclasses.replace(cfg, model=pre.model)
            rm, rm_diag = train_reward_model(rm_cfg, data, rm_path, init_model=model)
        rm = frozen_copy(rm).to(device)

    ctx = PostTrainContext(cfg=run_cfg, data=data, reference=frozen_copy(model).to(device), reward_model=rm,
                           device=device)
    model.to(device)
    setup_stats = meth.setup(ctx)
    write_run_files(out_dir, run_cfg, data, {
        "stage": "posttrain", "init": str(init_run), "method": meth.name,
        "reward_model": None if rm_path is None else str(rm_path), "setup": setup_stats})
    if tcfg.progress and distributed.is_main():
        shown = {k: v for k, v in setup_stats.items() if isinstance(v, (int, float))}
        print(f"recalign: posttrain {meth.name}: " + " ".join(f"{k}={v:.4g}" for k, v in shown.items()),
              file=sys.stderr)

    model.train()
    on_step = make_trace(run_cfg, data, model, rm, out_dir) if cfg.posttrain.trace_every > 0 else None
    if on_step is not None and not resume:
        on_step(0)
    res, test = train_and_test(run_cfg, data, model, meth, out_dir, resume=resume, train_cfg=tcfg,
                               select_metric=None, on_step=on_step)
    summary: dict[str, Any] = {
        "stage": "posttrain", "method": meth.name, "init": str(init_run),
        "reward_model": None if rm_path is None else str(rm_path),
        "epochs_run": res.epochs_run, "steps": res.steps, "train_seconds": round(res.seconds, 2),
        "setup": setup_stats, "train_diagnostics": meth.train_diagnostics(),
        "valid": res.best, "test": test,
    }
    if rm_diag is not None:
        summary["reward_model_diagnostics"] = rm_diag
    if isinstance(init_state.get("test"), dict):
        summary["init_test"] = init_state["test"]
    update_state(out_dir, **summary)
    ckpt.append_jsonl(out_dir / "metrics.jsonl", {"final": True, **{f"test/{k}": v for k, v in test.items()}})
    return summary


def make_trace(cfg: RunConfig, data: Prepared, model: Recommender, rm: RewardModel | None,
               out_dir: Path) -> Callable[[int], None]:
    """The probe behind `posttrain.trace_every`: every N optimizer steps (and at step 0), the
    policy's top-10 on a fixed random subset of `posttrain.trace_users` validation contexts is
    scored by the reward model the method trains against (`rm_value`, when it has one) and, on
    the simulator, by the oracle (`true_value`); with NDCG@10 on the validation targets. One JSON
    line per probe in `out_dir/trace.jsonl`. A rising `rm_value` with a falling `true_value` is
    reward hacking."""
    valid = data.split.valid
    n = min(len(valid), cfg.posttrain.trace_users)
    keep = np.zeros(len(valid), dtype=bool)
    keep[np.random.default_rng(cfg.train.seed).choice(len(valid), n, replace=False)] = True
    targets = valid.subset(keep)
    every = cfg.posttrain.trace_every

    def probe(step: int) -> None:
        if step % every:
            return
        with torch.no_grad():
            m = evaluate_targets(model, data.seq, targets, cfg.eval, cfg.data.high_reward, data.simulator)
            rec: dict[str, Any] = {"step": step, "users": n, "ndcg@10": m["ndcg@10"]}
            if "true_value" in m:
                rec["true_value"] = m["true_value"]
            if rm is not None:
                rec["rm_value"] = float(judge_topk([rm], model, data.seq, targets, cfg.eval)[0].mean())
        ckpt.append_jsonl(out_dir / "trace.jsonl", rec)

    return probe


# ---------------------------------------------------------------------------- reward models
def _rm_predictions(rm: RewardModel, data: Prepared, which: str, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and observed rewards of the held-out `which` targets."""
    targets = data.split.targets(which)
    device = next(rm.parameters()).device
    preds, obs = [], []
    was_training = rm.training
    rm.eval()
    with torch.no_grad():
        for lo in range(0, len(targets), batch_size):
            idx = np.arange(lo, min(len(targets), lo + batch_size))
            items, ts = data.seq.context_batch(targets, idx)
            tgt, rew = data.seq.target_tokens(targets, idx)
            h = rm.last_hidden(items.to(device), ts.to(device))
            preds.append(rm.score(h, tgt.to(device).unsqueeze(1)).squeeze(1).float().cpu().numpy())
            obs.append(rew.numpy())
    if was_training:
        rm.train()
    if not preds:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(preds), np.concatenate(obs)


def reward_model_diagnostics(rm: RewardModel, data: Prepared, batch_size: int = 512) -> dict[str, Any]:
    """Error of `rm` on the validation and test targets next to the global-, user- and item-mean
    predictors (fitted on training rows only): `{split: {metric: {predictor: value}}}` with
    metric `rmse` (and `log_loss` for binary rewards)."""
    inter, split = data.inter, data.split
    train = split.train_rows()
    out: dict[str, Any] = {"binary": rm.binary, "n_train_rows": int(train.sum())}
    for which in ("valid", "test"):
        targets = split.targets(which)
        pred, obs = _rm_predictions(rm, data, which, batch_size)
        rows = targets.target_row
        preds = {"reward_model": pred, **reference_predictors(
            inter.user[train], inter.item[train], inter.reward[train], inter.user[rows], inter.item[rows],
            inter.n_users, inter.n_items)}
        table: dict[str, dict[str, float]] = {}
        for name, p in preds.items():
            for metric, v in prediction_errors(p, obs, rm.binary).items():
                table.setdefault(metric, {})[name] = v
        out[which] = table
    return out


def _print_rm_diagnostics(diag: dict[str, Any]) -> None:
    for which in ("valid", "test"):
        for metric, row in diag[which].items():
            cells = "  ".join(f"{k}={v:.4f}" for k, v in row.items())
            print(f"recalign: reward model {which} {metric}: {cells}", file=sys.stderr)


def train_reward_model(cfg: RunConfig, data: Prepared, out_dir: str | Path,
                       init_model: Recommender | None = None) -> tuple[RewardModel, dict[str, Any]]:
    """Train `r̂(s, a)` on the training targets (MSE, or BCE when every training reward is 0/1),
    early stopping on validation RMSE (`train.*` settings, patience included); the backbone
    starts from `init_model`'s when given. Writes a run folder (`config.toml`,
    `model.safetensors`, `state.json` with `stage = reward_model`, `metrics.jsonl`,
    `rm_diagnostics.json`) and returns the best model and its diagnostics."""
    out_dir = Path(out_dir)
    train_rewards = data.inter.reward[data.split.train_rows()]
    binary = is_binary(train_rewards)
    torch.manual_seed(cfg.train.seed)
    rm = RewardModel(cfg.model, data.inter.n_items, binary=binary,
                     init_mean=float(train_rewards.mean()) if train_rewards.size else 0.0)
    if init_model is not None:
        rm.backbone.load_state_dict(init_model.backbone.state_dict())
    write_run_files(out_dir, cfg, data, {"stage": "reward_model", "binary": binary, "trained": False,
                                         "init_backbone": init_model is not None})

    def validate(m: RewardModel) -> dict[str, Any]:
        pred, obs = _rm_predictions(m, data, "valid", cfg.eval.batch_size)
        err = prediction_errors(pred, obs, binary)
        return {**err, "neg_rmse": -err["rmse"]}

    res = fit(rm, data.seq, RewardObjective(), cfg.train, out_dir, validate=validate, select_metric="neg_rmse")
    ckpt.load_model_weights(rm, out_dir / "model.safetensors")
    rm.eval()
    diag = reward_model_diagnostics(rm, data, cfg.eval.batch_size)
    diag.update({"best_epoch": res.best_epoch, "epochs_run": res.epochs_run, "train_seconds": round(res.seconds, 2)})
    ckpt.atomic_write_text(out_dir / "rm_diagnostics.json", json.dumps(diag, indent=2))
    update_state(out_dir, trained=True, best_epoch=res.best_epoch, epochs_run=res.epochs_run,
                 valid=res.best, diagnostics=diag)
    if cfg.train.progress and distributed.is_main():
        _print_rm_diagnostics(diag)
    return rm, diag


def load_reward_model(run_dir: str | Path, data: Prepared | None = None, device: str = "cpu") -> RewardModel:
    """A reward model saved by `train_reward_model`; `data` (if given) must have its catalog."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    state = _read_state(run_dir)
    if state.get("stage") != "reward_model":
        raise InputError("not a reward-model run folder (state.json stage is not reward_model)", path=run_dir)
    n_items = int(state["n_items"])
    if data is not None:
        if data.inter.n_items != n_items:
            raise InputError(f"the reward model scores {n_items} items but the data has {data.inter.n_items}",
                             path=run_dir)
        if state.get("data_fingerprint") not in (None, fingerprint(data.inter)):
            print(f"recalign: warning: the reward model {run_dir} was trained on different data", file=sys.stderr)
    rm = RewardModel(cfg.model, n_items, binary=bool(state.get("binary", False)))
    ckpt.load_model_weights(rm, run_dir / "model.safetensors")
    return rm.to(resolve_device(device)).eval()


def reward_model_stage(out_dir: str | Path, init_run: str | Path | None = None, cfg: RunConfig | None = None,
                       overrides: list[str] | None = None) -> dict[str, Any]:
    """`recalign reward-model`: from a pretrained run (its data, config and backbone) or from a
    configuration (data from `cfg.data`, backbone from scratch). Returns the diagnostics."""
    from recalign.pipeline import prepare

    out_dir = Path(out_dir)
    if (out_dir / "state.json").is_file():
        raise InputError("run folder exists; choose another --out", path=out_dir)
    if init_run is not None:
        cfg, data, model = load_run(init_run, "cpu", overrides or None)
    else:
        if cfg is None:
            raise InputError("give --init RUN or --data DATASET")
        data, model = prepare(cfg), None
    _, diag = train_reward_model(cfg, data, out_dir, init_model=model)
    return diag
