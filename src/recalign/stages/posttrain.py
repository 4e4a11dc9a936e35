"""Stage 2: post-train a pretrained run with one registered method.

`posttrain` resolves the configuration once (the pretrained run's, then a TOML file, then
`--set`; only the keys post-training may change), loads the pretrained run (its data and
weights), builds the method from the registry, gives it a frozen copy of π_0 and, when it needs
one, a reward model (given, or trained here by `stages/reward_model.py` under
`out_dir/reward_model/`), then runs the one training loop for `posttrain.epochs` epochs at
`posttrain.lr` and keeps the final policy (a fixed budget: no model selection). With
`posttrain.checkpoint_every`, the policy along the way is evaluated on the validation and the test
splits, kept apart (`checkpoints.jsonl`: the candidates of `recalign contest`'s selection). The run folder
has the layout of a pretraining run, so `recalign evaluate`, `recommend` and a further
`posttrain` read it the same way.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recalign import configlib, distributed
from recalign.config import RunConfig, TrainConfig
from recalign.data.prepared import Prepared
from recalign.errors import InputError
from recalign.eval.distance import distance_metrics, whole_policy
from recalign.eval.evaluate import evaluate_targets
from recalign.eval.judge import judge_topk
from recalign.eval.metrics import candidates_left
from recalign.models.recommender import Recommender
from recalign.models.reward_model import RewardModel
from recalign.posttrain.registry import Method, PostTrainContext, get_method
from recalign.posttrain.scoring import frozen_copy
from recalign.stages.common import load_run, train_and_test
from recalign.stages.keys import check_posttrain_keys, flat_keys
from recalign.stages.reward_model import load_reward_model, rm_training_config, train_reward_model
from recalign.train import checkpoint as ckpt
from recalign.train.loop import resolve_device
from recalign.train.runfolder import read_config, read_state, update_state, write_run_files

# What a post-training run may change: its own knobs, the loop, the evaluation, where the data
# lives, the high-reward threshold, dropout. Everything else is fixed by the pretrained run.
OVERRIDABLE = ("posttrain.", "train.", "eval.", "data.data_dir", "data.high_reward", "model.dropout")
# The keys among them that change how the pretrained run is rebuilt (data location, the network).
REBUILD = ("data.data_dir", "model.dropout")


@dataclass
class Plan:
    """A post-training run resolved before anything is loaded.

    Attributes:
        given: the nested values of the TOML file and `--set` (the latter wins), checked.
        cfg: the pretrained run's configuration with `given` and the method applied.
        method: the method object, configured by `cfg.posttrain`.
        rebuild: the nested values the pretrained run is rebuilt with (`REBUILD` keys that were
            given, and dropout 0 for methods that compare π_θ with π_0 unless dropout was given).
    """

    given: dict[str, Any]
    cfg: RunConfig
    method: Method
    rebuild: dict[str, Any]


def _check_overridable(d: dict[str, Any], where: str) -> None:
    bad = [k for k in flat_keys(d) if not any(k == p or k.startswith(p) for p in OVERRIDABLE)]
    if bad:
        raise InputError(f"{where}: post-training keeps the data and the model of the pretrained run and "
                         f"cannot change {', '.join(bad)}; allowed: posttrain.*, train.*, eval.*, data.data_dir, "
                         "data.high_reward, model.dropout")


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts merged, `top` winning."""
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def plan_posttrain(init_run: Path, method: str | None, overrides: list[str],
                   config_file: str | Path | None = None, reward_model_given: bool = False) -> Plan:
    """Resolve and check the configuration of a post-training run (nothing is loaded or written)."""
    file_values = configlib.load_toml(config_file) if config_file else {}
    set_values = configlib.parse_overrides(overrides)
    _check_overridable(file_values, str(config_file))
    _check_overridable(set_values, "--set")
    given = _merge(file_values, set_values)
    cfg = configlib.update(read_config(init_run), given)
    if method is not None:
        cfg = dataclasses.replace(cfg, posttrain=dataclasses.replace(cfg.posttrain, method=method))
    meth = get_method(cfg.posttrain.method, cfg.posttrain)
    # config.toml records what runs: `auto` replaced by the method's own transform
    cfg = dataclasses.replace(cfg, posttrain=dataclasses.replace(cfg.posttrain, reward_transform=meth.reward_transform))
    check_posttrain_keys(set_values, meth, trains_reward_model=meth.needs_reward_model and not reward_model_given)
    keys = set(flat_keys(given))
    rebuild: dict[str, Any] = {}
    for key in REBUILD:
        if key in keys:
            section, name = key.split(".")
            rebuild.setdefault(section, {})[name] = given[section][name]
    if meth.disable_dropout and "model.dropout" not in keys:
        rebuild.setdefault("model", {})["dropout"] = 0.0
    return Plan(given, cfg, meth, rebuild)


def posttrain_train_config(cfg: RunConfig, n_windows: int) -> TrainConfig:
    """The loop's settings for post-training: `cfg.train` with `epochs = posttrain.epochs`,
    `lr = posttrain.lr`, `batch_size = posttrain.batch_size` (0 = train.batch_size) and a warmup
    of at most 10% of the planned steps (the policy starts trained; a long warmup would waste
    the budget). `max_steps`, clipping, device and seed come from `train.*`."""
    pt, tr = cfg.posttrain, cfg.train
    steps = planned_steps(cfg, n_windows)
    return dataclasses.replace(tr, epochs=pt.epochs, lr=pt.lr, batch_size=pt.batch_size or tr.batch_size,
                               warmup_steps=min(tr.warmup_steps, steps // 10))


def planned_steps(cfg: RunConfig, n_windows: int) -> int:
    """The optimizer steps post-training plans over `n_windows` training windows:
    `posttrain.epochs` × the steps of one epoch (batches of `posttrain.batch_size`, 0 =
    `train.batch_size`, in every process, `train.grad_accum` per step), at most `train.max_steps`."""
    pt, tr = cfg.posttrain, cfg.train
    global_bs = (pt.batch_size or tr.batch_size) * distributed.world_size()  # torchrun: bs windows per process
    steps = max(1, math.ceil(math.ceil(n_windows / global_bs) / tr.grad_accum) * pt.epochs)
    return min(steps, tr.max_steps) if tr.max_steps > 0 else steps


def _check_folders(init_run: Path, out_dir: Path, resume: bool) -> dict[str, Any]:
    """Refuse an existing `out_dir` (without `resume`), `out_dir == init_run`, and a reward-model
    run as `init_run`; returns `init_run`'s state."""
    if out_dir.exists() and (out_dir / "state.json").is_file() and not resume:
        raise InputError("run folder exists; pass --resume to continue it or choose another --out", path=out_dir)
    if init_run.resolve() == out_dir.resolve():
        raise InputError("--out must differ from --init", path=out_dir)
    init_state = read_state(init_run)
    if init_state.get("stage") == "reward_model":
        raise InputError("--init is a reward-model run; give a pretrained run", path=init_run)
    return init_state


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
        simulator; `kl`, the exact KL(π ‖ π0) over the catalog, and on the simulator
        `expected_value`, E_π[r*] of the whole distribution: `eval/distance.py`), the budget
        (`steps`, `train_seconds`, `reward_model_queries`: the (context, item) rewards the method
        asked its reward model for, `wall_seconds`: the whole stage, reward model and tests
        included; the last two count this process only, so a resumed run counts from its resume),
        and the initial run's test metrics when it recorded them.
    """
    t_start = time.perf_counter()
    out_dir, init_run = Path(out_dir), Path(init_run)
    init_state = _check_folders(init_run, out_dir, resume)
    plan = plan_posttrain(init_run, method, list(overrides or []), config_file, reward_model_run is not None)
    run_cfg, data, model = load_run(init_run, "cpu", plan.rebuild or None, data=data)
    cfg = configlib.update(run_cfg, plan.given)
    cfg = dataclasses.replace(cfg, posttrain=plan.cfg.posttrain)
    tcfg = posttrain_train_config(cfg, data.seq.n_windows)
    run_cfg = dataclasses.replace(cfg, train=tcfg)
    device = resolve_device(tcfg.device)
    torch.manual_seed(tcfg.seed)

    out_dir.mkdir(parents=True, exist_ok=True)
    # the reward model keeps the run's own dropout (the policy's may have been turned off)
    rm, rm_path, rm_diag = _reward_model(plan, dataclasses.replace(cfg, model=plan.cfg.model), data, model,
                                         out_dir, reward_model_run, resume)
    rm = None if rm is None else QueryCounter(frozen_copy(rm).to(device))
    meth = plan.method
    ctx = PostTrainContext(cfg=run_cfg, data=data, reference=frozen_copy(model).to(device), reward_model=rm,
                           device=device)
    model.to(device)
    setup_stats = meth.setup(ctx)
    write_run_files(out_dir, run_cfg, data.inter, {
        "stage": "posttrain", "init": str(init_run), "method": meth.name,
        "reward_model": None if rm_path is None else str(rm_path), "setup": setup_stats}, data_summary=data.summary)
    if tcfg.progress and distributed.is_main():
        shown = {k: v for k, v in setup_stats.items() if isinstance(v, (int, float))}
        print(f"recalign: posttrain {meth.name}: " + " ".join(f"{k}={v:.4g}" for k, v in shown.items()),
              file=sys.stderr)

    model.train()
    probes = start_probes(run_cfg, data, model, None if rm is None else rm.model, ctx.reference, out_dir, resume)
    res, test = train_and_test(run_cfg, data, model, meth, out_dir, resume=resume, train_cfg=tcfg,
                               select_metric=None, on_step=chain_probes(probes))
    # beside every value, the distance moved from π0 (and the whole distribution's true value)
    test.update(distance_metrics(model, ctx.reference, data.seq, data.split.test, cfg.eval, data.simulator))
    for p in probes:
        p.finish(res.steps)  # the final policy, where the last probe was before the end
    summary: dict[str, Any] = {
        "stage": "posttrain", "method": meth.name, "init": str(init_run),
        "reward_model": None if rm_path is None else str(rm_path),
        "epochs_run": res.epochs_run, "steps": res.steps, "train_seconds": round(res.seconds, 2),
        "reward_model_queries": 0 if rm is None else rm.queries,
        "wall_seconds": round(time.perf_counter() - t_start, 2),
        "setup": setup_stats, "train_diagnostics": meth.train_diagnostics(),
        "valid": res.best, "test": test,
        **({"reward_model_diagnostics": rm_diag} if rm_diag is not None else {}),
        **({"init_test": init_state["test"]} if isinstance(init_state.get("test"), dict) else {}),
    }
    update_state(out_dir, **summary)
    ckpt.append_jsonl(out_dir / "metrics.jsonl", {"final": True, **{f"test/{k}": v for k, v in test.items()}})
    return summary


class QueryCounter:
    """The frozen reward model as the method sees it, counting the (context, item) rewards it is
    asked for: `score` counts its items, `score_all` the catalog for each context. The trace
    (`make_trace`) and the final evaluation use the model itself and are not counted."""

    def __init__(self, rm: RewardModel):
        self.model = rm
        self.queries = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def score(self, h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        self.queries += int(items.numel())
        return self.model.score(h, items)

    def score_all(self, h: torch.Tensor) -> torch.Tensor:
        self.queries += int(h.shape[0]) * self.model.n_items
        return self.model.score_all(h)


def _reward_model(plan: Plan, rm_cfg: RunConfig, data: Prepared, model: Recommender, out_dir: Path,
                  given: str | Path | None, resume: bool) -> tuple[RewardModel | None, Path | None, Any]:
    """The reward model the method trains against, its folder and, when trained here, its
    diagnostics: none (the method needs none), the given run, the one a resumed run already
    trained under `out_dir/reward_model`, or a new one trained there from π_0's backbone."""
    if not plan.method.needs_reward_model:
        return None, None, None
    if given is not None:
        return load_reward_model(Path(given), data), Path(given), None
    path = out_dir / "reward_model"
    if resume and read_state(path).get("trained"):
        return load_reward_model(path, data), path, None
    rm, diag = train_reward_model(rm_training_config(rm_cfg), data, path, init_model=model)
    return rm, path, diag


class Probe:
    """An `on_step` hook of the training loop: at step 0 and every `every` optimizer steps,
    `record(step)` (a JSON-able dict, `step` included) is appended to the JSON-lines file
    `path`; with `at_end`, `finish(step)` also records the final policy unless that step was
    just recorded (without, `finish` does nothing)."""

    def __init__(self, every: int, record: Callable[[int], dict[str, Any]], path: Path, at_end: bool = False):
        self.every, self.record, self.path, self.at_end = every, record, path, at_end
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []  # a resumed run's
        self.last: int | None = json.loads(lines[-1])["step"] if lines else None

    def __call__(self, step: int) -> None:
        if step % self.every == 0:
            self._write(step)

    def finish(self, step: int) -> None:
        if self.at_end and self.last != step:
            self._write(step)

    def _write(self, step: int) -> None:
        with torch.no_grad():
            rec = self.record(step)
        ckpt.append_jsonl(self.path, rec)
        self.last = step


def start_probes(cfg: RunConfig, data: Prepared, model: Recommender, rm: RewardModel | None,
                 reference: Recommender, out_dir: Path, resume: bool) -> list[Probe]:
    """The trace and the checkpoints a run asked for, each having probed step 0 (unless resumed)."""
    probes = [p for p in (make_trace(cfg, data, model, rm, out_dir),
                          make_checkpoints(cfg, data, model, reference, out_dir)) if p is not None]
    for p in probes if not resume else ():
        p(0)
    return probes


def chain_probes(probes: list[Probe]) -> Callable[[int], None] | None:
    """One `on_step` hook running every probe in turn (None without probes)."""
    if not probes:
        return None

    def on_step(step: int) -> None:
        for p in probes:
            p(step)

    return on_step


def make_trace(cfg: RunConfig, data: Prepared, model: Recommender, rm: RewardModel | None,
               out_dir: Path) -> Probe | None:
    """The probe behind `posttrain.trace_every` (None when it is 0): every N optimizer steps (and
    at step 0), the policy's top-10 on a fixed random subset of
    `posttrain.trace_users` validation contexts is scored by the reward model the method trains
    against (`rm_value`, when it has one) and, on the simulator, by the oracle (`true_value`);
    with NDCG@10 on the validation targets. One JSON line per probe in `out_dir/trace.jsonl`. A
    rising `rm_value` with a falling `true_value` is reward hacking."""
    every = cfg.posttrain.trace_every
    if every <= 0:
        return None
    valid = data.split.valid
    n = min(len(valid), cfg.posttrain.trace_users)
    keep = np.zeros(len(valid), dtype=bool)
    keep[np.random.default_rng(cfg.train.seed).choice(len(valid), n, replace=False)] = True
    targets = valid.subset(keep)

    def record(step: int) -> dict[str, Any]:
        m = evaluate_targets(model, data.seq, targets, cfg.eval, cfg.data.high_reward, data.simulator)
        rec: dict[str, Any] = {"step": step, "users": n, "ndcg@10": m["ndcg@10"]}
        if "true_value" in m:
            rec["true_value"] = m["true_value"]
        if rm is not None:
            rec["rm_value"] = float(judge_topk([rm], model, data.seq, targets, cfg.eval)[0].mean())
        return rec

    return Probe(every, record, out_dir / "trace.jsonl")


VALID_KEYS = ("ndcg@10", "high/ndcg@10", "true_value")
TEST_KEYS = ("true_value", "expected_value", "kl", "ndcg@10", "high/ndcg@10")


def lists_fit(seq: Any, targets: Any, mask_seen: bool, n_items: int, k: int = 10) -> bool:
    """Whether every target's ranking keeps at least `k` candidates (with `mask_seen`, the
    catalog minus the distinct items of its context), so that its top-k list exists."""
    if n_items < k:
        return False
    if not mask_seen or len(targets) == 0:
        return True
    return bool((candidates_left(seq.seen_items(targets, np.arange(len(targets))), len(targets), n_items) >= k).all())


def make_checkpoints(cfg: RunConfig, data: Prepared, model: Recommender, reference: Recommender,
                     out_dir: Path) -> Probe | None:
    """The probe behind `posttrain.checkpoint_every` (None when it is 0): every N optimizer steps,
    at step 0 and at the end, one line in `out_dir/checkpoints.jsonl`: `{"step", "valid": {...},
    "test": {...}}`, the two splits kept apart so that a selection can be handed the validation
    metrics alone. `valid`: `ndcg@10`, `high/ndcg@10` (None when no validation target is high)
    and, on the simulator, `true_value` (the oracle's value of the top-10), on the WHOLE
    validation split. `test`: the same ranking metrics on the test split, `kl` (exact
    KL(π ‖ π0), `eval/distance.py`) and, on the simulator, `true_value` and `expected_value`.
    The per-user test values go to `out_dir/checkpoints/step-<step>.safetensors` (`ranks`, `kl`,
    `top10`, the item codes of the top-10 lists, seen items excluded as `eval.mask_seen` says:
    `eval.judge.topk_lists`, and on the simulator `true_value` and `expected_value`; in
    test-target order), for paired intervals of whichever checkpoint is selected, the reward
    model's error on its lists and the held-out judges' scores of them; on real data the lists
    are left out when some target keeps fewer than 10 candidates (`lists_fit`: tiny test
    catalogs), and judges then refuse the run. Weights are not saved."""
    every = cfg.posttrain.checkpoint_every
    if every <= 0:
        return None
    folder = out_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    seq, split, hr, sim = data.seq, data.split, cfg.data.high_reward, data.simulator
    lists = sim is not None or lists_fit(seq, split.test, cfg.eval.mask_seen, data.inter.n_items)

    def record(step: int) -> dict[str, Any]:
        valid = evaluate_targets(model, seq, split.valid, cfg.eval, hr, sim)
        test = evaluate_targets(model, seq, split.test, cfg.eval, hr, sim, return_ranks=True, return_top10=lists)
        per = whole_policy(model, seq, split.test, cfg.eval, reference=reference, simulator=sim)
        arrays = {"ranks": test.pop("_ranks"), **per}
        if "_true_values" in test:
            arrays["true_value"] = test.pop("_true_values")
        if "_top10" in test:
            arrays["top10"] = test.pop("_top10")
        test.update({k: float(v.mean()) if v.size else float("nan") for k, v in per.items()})
        ckpt.atomic_save_tensors(folder / f"step-{step}.safetensors",
                                 {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()})
        return {"step": step, "valid": {k: valid[k] for k in VALID_KEYS if k in valid},
                "test": {k: test[k] for k in TEST_KEYS if k in test}}

    return Probe(every, record, out_dir / "checkpoints.jsonl", at_end=True)
