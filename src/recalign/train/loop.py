"""One training loop for every stage (pretraining and every post-training method).

The loop knows nothing about methods: it draws batches of training windows, asks an *objective*
for `(loss, diagnostics)`, and does the optimisation around it: AdamW (`train.optimizer =
sparse_adam`: SparseAdam on the item table, see `recalign.train.optim`), linear warmup then
constant or cosine decay, gradient accumulation and clipping, bf16 autocast on GPU, validation
every `eval_every` epochs with early stopping on validation NDCG@10, an atomic resume checkpoint
after every epoch, and a guard that stops the run, naming the step and batch, when the loss is not
finite.

Determinism: the batch order of epoch `e` comes from a numpy generator whose state is saved with
each checkpoint, and torch's RNG state (dropout, sampled negatives) is saved too, so on CPU a run
killed at any point and resumed with `resume=True` ends with the same weights as an uninterrupted
run.

Data parallel (under `torchrun`, see `recalign.train.distributed` and docs/training.md): every
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

from recalign.config import TrainConfig
from recalign.data.sequences import SeqBatch, SequenceData
from recalign.errors import RecalignError
from recalign.models.recommender import Recommender
from recalign.train import checkpoint as ckpt
from recalign.train import distributed
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
        return model.next_item_loss(hidden, batch.targets, weights)


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
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    world = distributed.world_size()
    rank = distributed.rank()
    main = rank == 0
    if world > 1:
        distributed.init()
    device = resolve_device(cfg.device)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    model.to(device)
    use_amp = device.type == "cuda" and cfg.bf16
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else nullcontext

    n_win = seq.n_windows
    if n_win == 0:
        raise RecalignError("no training windows: every user has fewer than two training interactions")
    micro = cfg.batch_size  # windows per micro-batch in each process
    batches_per_epoch = math.ceil(n_win / (micro * world))
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps > 0:
        total_steps = min(total_steps, cfg.max_steps)

    opt = OptimizerBundle(model, cfg, device, total_steps, world=world)
    ddp = None
    try:
        np_rng = np.random.default_rng(cfg.seed)

        res = FitResult()
        start_epoch, step, bad_evals, best_val = 0, 0, 0, -math.inf
        elapsed_before = 0.0
        resume_dir = ckpt.find_resume(run_dir) if resume else None
        if resume_dir is not None:
            st = ckpt.load_resume(resume_dir, model, opt.optimizers, np_rng)
            opt.scheduler.load_state_dict(st["scheduler"])
            start_epoch, step, bad_evals = st["epoch"] + 1, st["step"], st["bad_evals"]
            best_val = st["best_val"] if st["best_val"] is not None else -math.inf
            res.best, res.best_epoch, res.history = st["best"], st["best_epoch"], st["history"]
            elapsed_before, res.seconds_to_best = st["seconds"], st["seconds_to_best"]
            if st.get("stopped"):
                start_epoch = cfg.epochs  # the run had already finished (early stopping or max_steps)
            # the schedule's length from here on: the same as planned when resuming with the same
            # number of processes; with another, the remaining epochs have another number of steps
            total_steps = step + steps_per_epoch * max(0, cfg.epochs - start_epoch)
            if cfg.max_steps > 0:
                total_steps = min(total_steps, cfg.max_steps)
            opt.reschedule(total_steps)
            if main:
                print(f"recalign: resuming {run_dir} at epoch {start_epoch} (step {step})", file=sys.stderr)

        if world > 1:
            # find_unused_parameters stays False: every stage's loss uses every trainable parameter of
            # the model (backbone and tied item table; the heads have none), and a DDP that had to
            # search the graph for unused ones would cost a traversal per step.
            # broadcast_buffers=False: the models' buffers are constants computed identically on
            # every rank (no running statistics), so there is nothing to broadcast per forward.
            ddp = torch.nn.parallel.DistributedDataParallel(
                ObjectiveModule(model, objective), device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=False, **_NO_BUFFER_SYNC)
        t0 = time.perf_counter() - elapsed_before
        stop = step >= total_steps if cfg.max_steps > 0 else False
        model.train()
        for epoch in range(start_epoch, cfg.epochs):
            if stop:
                break
            order = np_rng.permutation(n_win)
            if world > 1:
                torch.manual_seed(_rank_seed(cfg.seed, epoch, rank))
            bar = tqdm(total=batches_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", file=sys.stderr,
                       disable=not (cfg.progress and main) or None, leave=False, mininterval=1.0)
            loss_sum = torch.zeros((), device=device)
            bad_batches = torch.zeros(batches_per_epoch, dtype=torch.bool, device=device)
            epoch_start_step = step
            n_batches = 0
            opt.zero_grad()
            for b in range(batches_per_epoch):
                batch = seq.train_batch(rank_windows(order, b, micro, world, rank))
                if device.type == "cuda":
                    batch = batch.pin_memory().to(device, non_blocking=True)
                last_micro = (b + 1) % cfg.grad_accum == 0 or b + 1 == batches_per_epoch
                if ddp is None:
                    with autocast():
                        loss, _diag = objective(model, batch)
                    (loss / cfg.grad_accum).backward()
                else:
                    # gradients are all-reduced in the backward of the last micro-batch of a step
                    with nullcontext() if last_micro else ddp.no_sync():
                        with autocast():
                            loss, _diag = ddp(batch)
                        (loss / cfg.grad_accum).backward()
                # NaN guard without a host sync per step: flag the batch on device, look at the flags later
                bad_batches[b] = ~torch.isfinite(loss.detach())
                loss_sum += loss.detach().float()
                n_batches += 1
                if last_micro:
                    opt.clip(cfg.clip_grad)
                    opt.step()
                    opt.zero_grad()
                    step += 1
                    if on_step is not None:
                        on_step(step)
                if device.type == "cpu" or b % 50 == 0 or b + 1 == batches_per_epoch:
                    flags = bad_batches[: b + 1] if world == 1 else distributed.any_flag(bad_batches[: b + 1])
                    flagged = flags.nonzero()
                    if flagged.numel():
                        fb = int(flagged[0])
                        raise NonFiniteLoss(f"loss is not finite at step {epoch_start_step + fb // cfg.grad_accum} "
                                            f"(epoch {epoch + 1}, batch {fb + 1}"
                                            f"{f', on one of {world} processes' if world > 1 else ''}); lower the "
                                            "learning rate or check the rewards/weights")
                    if main:
                        bar.set_postfix(loss=f"{float(loss_sum) / n_batches:.4f}", refresh=False)
                bar.update(1)
                if cfg.max_steps > 0 and step >= cfg.max_steps:
                    stop = True
                    break
            bar.close()
            if world == 1:
                train_loss = float(loss_sum) / max(1, n_batches)
            else:  # the mean over every rank's micro-batches
                sums = distributed.all_reduce_sum(torch.stack([loss_sum.float(),
                                                               torch.tensor(float(n_batches), device=device)]))
                train_loss = float(sums[0]) / max(1.0, float(sums[1]))
            record: dict[str, Any] = {"epoch": epoch + 1, "step": step, "train_loss": train_loss,
                                      "seconds": round(time.perf_counter() - t0, 3)}
            is_last = epoch + 1 == cfg.epochs or stop
            if validate is not None and ((epoch + 1) % cfg.eval_every == 0 or is_last):
                model.eval()
                with torch.no_grad(), autocast():
                    metrics = validate(model)
                model.train()
                record.update({f"valid/{k}": v for k, v in metrics.items()})
                val = metrics.get(select_metric) if select_metric else 0.0
                if world > 1:  # every rank decides on rank 0's number
                    val = distributed.broadcast_float(val)
                if val is not None and (val > best_val or not select_metric):
                    best_val, bad_evals = val, 0
                    res.best, res.best_epoch = dict(metrics), epoch + 1
                    res.seconds_to_best = time.perf_counter() - t0
                    ckpt.atomic_save_tensors(run_dir / "model.safetensors", ckpt.model_state(model))
                else:
                    bad_evals += 1
                if select_metric and bad_evals >= cfg.patience:
                    stop = True
            elif validate is None:
                ckpt.atomic_save_tensors(run_dir / "model.safetensors", ckpt.model_state(model))
                res.best_epoch = epoch + 1
            res.history.append(record)
            ckpt.append_jsonl(run_dir / "metrics.jsonl", record)
            msg = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
                           if k in ("epoch", "train_loss", "valid/ndcg@10", "valid/hr@10", "seconds"))
            if cfg.progress and main:
                print(f"recalign: {msg}", file=sys.stderr)
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)
            ckpt.save_resume(run_dir, model, opt.optimizers, np_rng, {
                "epoch": epoch, "step": step, "bad_evals": bad_evals,
                "best_val": None if best_val == -math.inf else best_val, "best": res.best,
                "best_epoch": res.best_epoch, "history": res.history, "scheduler": opt.scheduler.state_dict(),
                "seconds": time.perf_counter() - t0, "seconds_to_best": res.seconds_to_best,
                "stopped": stop,
            })
    finally:
        if ddp is not None and hasattr(ddp, "_remove_autograd_hooks"):
            ddp._remove_autograd_hooks()  # the model may be trained again (another stage, another wrapper)
        opt.close()
    if world > 1:
        distributed.barrier()  # rank 0's files are complete before anyone reads them
    res.epochs_run = len(res.history)
    res.steps = step
    res.seconds = time.perf_counter() - t0
    return res

