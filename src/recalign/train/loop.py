"""One training loop for every stage (pretraining and every post-training method).

The loop knows nothing about methods: it draws batches of training windows, asks an *objective*
for `(loss, diagnostics)`, and does the optimisation around it: AdamW (`train.optimizer =
sparse_adam`: SparseAdam on the item table, see `recalign.train.optim`), linear warmup then
constant or cosine decay, gradient accumulation and clipping, bf16 autocast on GPU, validation
every `eval_every` epochs with early stopping on validation NDCG@10, an atomic resume checkpoint
after every epoch, and a guard that stops the run, naming the step and batch, when the loss is not
finite.

`fit` reads top to bottom: `_setup` (run folder, processes, device, batches per epoch), the
optimizers (`OptimizerBundle`), `_restore` (the loop's state, from the resume checkpoint when
resuming), then per epoch `_train_epoch` (the batch loop: forward/backward, NaN guard, steps) and
`_end_epoch` (validation, model selection, early stopping, logs, resume checkpoint).

Determinism: the batch order of epoch `e` comes from a numpy generator whose state is saved with
each checkpoint, and torch's RNG state (dropout, sampled negatives) is saved too, so on CPU a run
killed at any point and resumed with `resume=True` ends with the same weights as an uninterrupted
run.

Data parallel (under `torchrun`, see `recalign.distributed` and docs/training.md): every
rank draws the same permutation of the windows and takes its own share of each global batch of
`world_size × batch_size` windows; the objective runs inside the forward of a
`DistributedDataParallel` module (`ObjectiveModule`), so gradients are averaged over ranks before
the step; validation gathers every rank's users; only rank 0 writes checkpoints and logs. With
one process none of this exists: the loop is the single-process loop, unchanged.
"""

from __future__ import annotations

import inspect
import math
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from recalign import distributed
from recalign.config import TrainConfig
from recalign.data.sequences import SeqBatch, SequenceData
from recalign.errors import RecalignError
from recalign.models.recommender import Recommender
from recalign.train import checkpoint as ckpt
from recalign.train.optim import OptimizerBundle, clip_grad_norm, lr_lambda, make_optimizers

__all__ = ["FitResult", "NextItemObjective", "NonFiniteLoss", "Objective", "ObjectiveModule", "OptimizerBundle",
           "clip_grad_norm", "fit", "lr_lambda", "make_optimizers", "rank_windows", "resolve_device"]


class Objective(Protocol):
    """What a stage optimises: a loss over one batch (the model runs inside)."""

    def __call__(self, model: Recommender, batch: SeqBatch) -> tuple[torch.Tensor, dict[str, Any]]: ...


class NextItemObjective:
    """Stage 1 (behaviour cloning): `L = -Σ log π(a_t | s_t)` over every position with a target."""

    def __call__(self, model: Recommender, batch: SeqBatch) -> tuple[torch.Tensor, dict[str, Any]]:
        hidden = model.encode(batch.items, batch.timestamps)
        weights = (batch.targets > 0).to(hidden.dtype)
        return model.next_item_loss(hidden, batch.targets, weights, batch.items)


class NonFiniteLoss(RecalignError):
    """The loss became NaN or infinite; the message names the step and the batch."""


def resolve_device(name: str) -> torch.device:
    """`auto` = cuda if available, else cpu; under torchrun, `cuda` means this rank's GPU."""
    if name == "auto":
        return distributed.device_for(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    return distributed.device_for(torch.device(name))


class ObjectiveModule(torch.nn.Module):
    """`forward(batch) = objective(model, batch)`: the whole loss computation as one module's
    forward, for `DistributedDataParallel` (objectives call `model.encode`, `model.logits`, ...
    directly, never `model(...)`, so wrapping the model alone would bypass DDP's forward).

    Only `model`'s parameters belong to the module; frozen reference and reward models live in
    the objective's context (plain attributes, not submodules), so DDP neither syncs nor expects
    gradients for them.
    """

    def __init__(self, model: torch.nn.Module, objective: Objective):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: SeqBatch) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.objective(self.model, batch)


# DDP's per-forward buffer broadcast, off (`forward_sync_buffers` replaces `broadcast_buffers` in
# recent torch, which warns about the old name)
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
                   else {"broadcast_buffers": False})


def rank_windows(order: np.ndarray, b: int, micro: int, world: int, rank: int) -> np.ndarray:
    """The windows this rank trains on in micro-batch `b` of an epoch whose window order is `order`.

    Global micro-batch `b` is `order[b·G : (b+1)·G]` with `G = world · micro` (the batch a single
    process with `batch_size = G` would draw); each rank takes its contiguous share. The last,
    partial one is split evenly (shares differ by at most one window); when fewer windows than
    ranks remain it is padded with the first windows of the order, so every rank makes the same
    number of steps.
    """
    if world == 1:
        return order[b * micro:(b + 1) * micro]
    chunk = order[b * micro * world:(b + 1) * micro * world]
    if chunk.size < world:
        chunk = np.concatenate([chunk, order[: world - chunk.size]])
    return np.array_split(chunk, world)[rank]


def _rank_seed(seed: int, epoch: int, rank: int) -> int:
    """Torch seed of one rank's epoch in a distributed run: dropout masks and sampled negatives
    differ across ranks, and an epoch's draws do not depend on how the run was resumed."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


@dataclass
class FitResult:
    best: dict[str, Any] = field(default_factory=dict)
    best_epoch: int = -1
    epochs_run: int = 0
    steps: int = 0
    seconds: float = 0.0
    seconds_to_best: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)



@dataclass
class _Run:
    """The fixed facts of one `fit` call: where it runs and how an epoch divides into batches."""

    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    world: int  # processes (torchrun), 1 without
    rank: int
    n_win: int  # training windows
    batches_per_epoch: int  # micro-batches of `cfg.batch_size` windows per process
    steps_per_epoch: int

    @property
    def main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> Any:
        """bf16 autocast on GPU with `train.bf16`, else nothing."""
        if self.device.type == "cuda" and self.cfg.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def planned_steps(self, step: int, first_epoch: int) -> int:
        """The run's total optimizer steps when epoch `first_epoch` starts at step `step`."""
        total = step + self.steps_per_epoch * max(0, self.cfg.epochs - first_epoch)
        return min(total, self.cfg.max_steps) if self.cfg.max_steps > 0 else total


@dataclass
class _State:
    """The loop's state, carried from epoch to epoch (the resume checkpoint saves it)."""

    res: FitResult = field(default_factory=FitResult)
    epoch: int = 0  # the next epoch to run
    step: int = 0  # optimizer steps made
    bad_evals: int = 0  # validations since the best one (early stopping)
    best_val: float = -math.inf
    seconds_before: float = 0.0  # training time before this process resumed the run
    t0: float = 0.0  # perf_counter of the run's start (seconds_before earlier when resumed)
    stop: bool = False  # early stopping or max_steps: no further epoch


def fit(
    model: Recommender,
    seq: SequenceData,
    objective: Objective,
    cfg: TrainConfig,
    run_dir: Path,
    validate: Callable[[Recommender], dict[str, Any]] | None = None,
    resume: bool = False,
    select_metric: str | None = "ndcg@10",
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> FitResult:
    """Train `model` on the training windows of `seq` with `objective`.

    `validate(model) -> metrics` is called every `cfg.eval_every` epochs; the model with the best
    `select_metric` is saved to `run_dir/model.safetensors` (with `select_metric=None`, or without
    validation, the last model: post-training runs a fixed budget and keeps its final policy).
    `on_step(step)` runs after every optimizer step (e.g. a probe that traces a metric along
    training; it must leave the model in training mode). Returns the best validation metrics
    and timings.

    Under torchrun every rank calls `fit` with the same arguments; `validate` and the callbacks
    run on every rank (a collective evaluation such as `evaluate_targets` needs that), and the
    model selection and early stopping follow rank 0's validation metrics, so every rank makes
    the same decisions.
    """
    run = _setup(model, seq, cfg, Path(run_dir))
    opt = OptimizerBundle(model, cfg, run.device, run.planned_steps(0, 0), world=run.world)
    ddp = None
    try:
        np_rng = np.random.default_rng(cfg.seed)  # the batch order of every epoch
        state = _restore(run, model, opt, np_rng, resume)
        if run.world > 1:
            ddp = _wrap_ddp(model, objective, run.device)
        state.t0 = time.perf_counter() - state.seconds_before
        model.train()
        for epoch in range(state.epoch, cfg.epochs):
            if state.stop:
                break
            train_loss = _train_epoch(run, state, epoch, model, seq, objective, ddp, opt, np_rng, on_step)
            _end_epoch(run, state, epoch, train_loss, model, opt, np_rng, validate, select_metric, on_epoch_end)
    finally:
        if ddp is not None and hasattr(ddp, "_remove_autograd_hooks"):
            ddp._remove_autograd_hooks()  # the model may be trained again (another stage, another wrapper)
        opt.close()
    if run.world > 1:
        distributed.barrier()  # rank 0's files are complete before anyone reads them
    res = state.res
    res.epochs_run, res.steps, res.seconds = len(res.history), state.step, time.perf_counter() - state.t0
    return res


def _setup(model: Recommender, seq: SequenceData, cfg: TrainConfig, run_dir: Path) -> _Run:
    """Create the run folder, join the process group (torchrun), move the model to its device,
    count the batches of an epoch."""
    run_dir.mkdir(parents=True, exist_ok=True)
    world, rank = distributed.world_size(), distributed.rank()
    if world > 1:
        distributed.init()
    device = resolve_device(cfg.device)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    model.to(device)
    n_win = seq.n_windows
    if n_win == 0:
        raise RecalignError("no training windows: every user has fewer than two training interactions")
    batches_per_epoch = math.ceil(n_win / (cfg.batch_size * world))
    return _Run(cfg, run_dir, device, world, rank, n_win, batches_per_epoch,
                steps_per_epoch=math.ceil(batches_per_epoch / cfg.grad_accum))


def _restore(run: _Run, model: Recommender, opt: OptimizerBundle, np_rng: np.random.Generator,
             resume: bool) -> _State:
    """The loop's state at the start: a fresh one, or with `resume` the one of the run's resume
    checkpoint, if any (weights, optimizer moments, schedule and RNG states are loaded too)."""
    cfg, state = run.cfg, _State()
    resume_dir = ckpt.find_resume(run.run_dir) if resume else None
    if resume_dir is not None:
        st = ckpt.load_resume(resume_dir, model, opt.optimizers, np_rng)
        opt.scheduler.load_state_dict(st["scheduler"])
        state.epoch, state.step, state.bad_evals = st["epoch"] + 1, st["step"], st["bad_evals"]
        state.best_val = st["best_val"] if st["best_val"] is not None else -math.inf
        res = state.res
        res.best, res.best_epoch, res.history = st["best"], st["best_epoch"], st["history"]
        state.seconds_before, res.seconds_to_best = st["seconds"], st["seconds_to_best"]
        if st.get("stopped"):
            state.epoch = cfg.epochs  # the run had already finished (early stopping or max_steps)
        # the schedule's length from here on: the same as planned when resuming with the same
        # number of processes; with another, the remaining epochs have another number of steps
        opt.reschedule(run.planned_steps(state.step, state.epoch))
        if run.main:
            print(f"recalign: resuming {run.run_dir} at epoch {state.epoch} (step {state.step})", file=sys.stderr)
    state.stop = state.step >= opt.total_steps if cfg.max_steps > 0 else False
    return state


def _wrap_ddp(model: Recommender, objective: Objective, device: torch.device) -> torch.nn.Module:
    """The objective as the forward of a `DistributedDataParallel` module (torchrun)."""
    # find_unused_parameters stays False: every stage's loss uses every trainable parameter of
    # the model (backbone, tied item table and seen logit; the heads have none), and a DDP that had to
    # search the graph for unused ones would cost a traversal per step.
    # broadcast_buffers=False: the models' buffers are constants computed identically on
    # every rank (no running statistics), so there is nothing to broadcast per forward.
    return torch.nn.parallel.DistributedDataParallel(
        ObjectiveModule(model, objective), device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=False, **_NO_BUFFER_SYNC)


def _train_epoch(run: _Run, state: _State, epoch: int, model: Recommender, seq: SequenceData, objective: Objective,
                 ddp: torch.nn.Module | None, opt: OptimizerBundle, np_rng: np.random.Generator,
                 on_step: Callable[[int], None] | None) -> float:
    """One epoch of optimizer steps (or fewer: `max_steps` sets `state.stop`); returns the mean
    training loss over the micro-batches of every rank."""
    cfg, world, rank = run.cfg, run.world, run.rank
    order = np_rng.permutation(run.n_win)
    if world > 1:
        torch.manual_seed(_rank_seed(cfg.seed, epoch, rank))
    bar = tqdm(total=run.batches_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", file=sys.stderr,
               disable=not (cfg.progress and run.main) or None, leave=False, mininterval=1.0)
    loss_sum = torch.zeros((), device=run.device)
    bad_batches = torch.zeros(run.batches_per_epoch, dtype=torch.bool, device=run.device)
    epoch_start_step = state.step
    n_batches = 0
    opt.zero_grad()
    for b in range(run.batches_per_epoch):
        batch = seq.train_batch(rank_windows(order, b, cfg.batch_size, world, rank))
        if run.device.type == "cuda":
            batch = batch.pin_memory().to(run.device, non_blocking=True)
        last_micro = (b + 1) % cfg.grad_accum == 0 or b + 1 == run.batches_per_epoch
        loss = _forward_backward(run, model, objective, ddp, batch, last_micro)
        # NaN guard without a host sync per step: flag the batch on device, look at the flags later
        bad_batches[b] = ~torch.isfinite(loss.detach())
        loss_sum += loss.detach().float()
        n_batches += 1
        if last_micro:
            opt.clip(cfg.clip_grad)
            opt.step()
            opt.zero_grad()
            state.step += 1
            if on_step is not None:
                on_step(state.step)
        if run.device.type == "cpu" or b % 50 == 0 or b + 1 == run.batches_per_epoch:
            _check_finite(run, bad_batches[: b + 1], epoch, epoch_start_step)
            if run.main:
                bar.set_postfix(loss=f"{float(loss_sum) / n_batches:.4f}", refresh=False)
        bar.update(1)
        if cfg.max_steps > 0 and state.step >= cfg.max_steps:
            state.stop = True
            break
    bar.close()
    if world == 1:
        return float(loss_sum) / max(1, n_batches)
    # the mean over every rank's micro-batches
    sums = distributed.all_reduce_sum(torch.stack([loss_sum.float(), torch.tensor(float(n_batches), device=run.device)]))
    return float(sums[0]) / max(1.0, float(sums[1]))


def _forward_backward(run: _Run, model: Recommender, objective: Objective, ddp: torch.nn.Module | None,
                      batch: SeqBatch, last_micro: bool) -> torch.Tensor:
    """The loss of one micro-batch; its gradient, divided by `grad_accum`, is added to the
    parameters' (under DDP, all-reduced in the backward of the last micro-batch of a step)."""
    if ddp is None:
        with run.autocast():
            loss, _diag = objective(model, batch)
        (loss / run.cfg.grad_accum).backward()
        return loss
    with nullcontext() if last_micro else ddp.no_sync():
        with run.autocast():
            loss, _diag = ddp(batch)
        (loss / run.cfg.grad_accum).backward()
    return loss


def _check_finite(run: _Run, bad_batches: torch.Tensor, epoch: int, epoch_start_step: int) -> None:
    """Raise `NonFiniteLoss` naming the first batch of the epoch so far (of any rank) whose loss
    was not finite."""
    flags = bad_batches if run.world == 1 else distributed.any_flag(bad_batches)
    flagged = flags.nonzero()
    if flagged.numel():
        fb = int(flagged[0])
        raise NonFiniteLoss(f"loss is not finite at step {epoch_start_step + fb // run.cfg.grad_accum} "
                            f"(epoch {epoch + 1}, batch {fb + 1}"
                            f"{f', on one of {run.world} processes' if run.world > 1 else ''}); lower the "
                            "learning rate or check the rewards/weights")


def _end_epoch(run: _Run, state: _State, epoch: int, train_loss: float, model: Recommender, opt: OptimizerBundle,
               np_rng: np.random.Generator, validate: Callable[[Recommender], dict[str, Any]] | None,
               select_metric: str | None, on_epoch_end: Callable[[int, dict[str, Any]], None] | None) -> None:
    """Validate (every `eval_every` epochs and after the last), keep the best model, log the
    epoch (metrics.jsonl, stderr, `on_epoch_end`) and write the resume checkpoint."""
    cfg, res = run.cfg, state.res
    record: dict[str, Any] = {"epoch": epoch + 1, "step": state.step, "train_loss": train_loss,
                              "seconds": round(time.perf_counter() - state.t0, 3)}
    is_last = epoch + 1 == cfg.epochs or state.stop
    if validate is not None and ((epoch + 1) % cfg.eval_every == 0 or is_last):
        metrics = _validate_and_select(run, state, epoch, model, validate, select_metric)
        record.update({f"valid/{k}": v for k, v in metrics.items()})
    elif validate is None:
        ckpt.atomic_save_tensors(run.run_dir / "model.safetensors", ckpt.model_state(model))
        res.best_epoch = epoch + 1
    res.history.append(record)
    ckpt.append_jsonl(run.run_dir / "metrics.jsonl", record)
    msg = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
                   if k in ("epoch", "train_loss", "valid/ndcg@10", "valid/hr@10", "seconds"))
    if cfg.progress and run.main:
        print(f"recalign: {msg}", file=sys.stderr)
    if on_epoch_end is not None:
        on_epoch_end(epoch, record)
    ckpt.save_resume(run.run_dir, model, opt.optimizers, np_rng, {
        "epoch": epoch, "step": state.step, "bad_evals": state.bad_evals,
        "best_val": None if state.best_val == -math.inf else state.best_val, "best": res.best,
        "best_epoch": res.best_epoch, "history": res.history, "scheduler": opt.scheduler.state_dict(),
        "seconds": time.perf_counter() - state.t0, "seconds_to_best": res.seconds_to_best,
        "stopped": state.stop,
    })


def _validate_and_select(run: _Run, state: _State, epoch: int, model: Recommender,
                         validate: Callable[[Recommender], dict[str, Any]], select_metric: str | None) -> dict[str, Any]:
    """Validate; save the model if it is the best so far on `select_metric` (every validated
    model without one), else count toward early stopping (`patience`). Returns the metrics."""
    model.eval()
    with torch.no_grad(), run.autocast():
        metrics = validate(model)
    model.train()
    val = metrics.get(select_metric) if select_metric else 0.0
    if run.world > 1:  # every rank decides on rank 0's number
        val = distributed.broadcast_float(val)
    if val is not None and (val > state.best_val or not select_metric):
        state.best_val, state.bad_evals = val, 0
        state.res.best, state.res.best_epoch = dict(metrics), epoch + 1
        state.res.seconds_to_best = time.perf_counter() - state.t0
        ckpt.atomic_save_tensors(run.run_dir / "model.safetensors", ckpt.model_state(model))
    else:
        state.bad_evals += 1
    if select_metric and state.bad_evals >= run.cfg.patience:
        state.stop = True
    return metrics
