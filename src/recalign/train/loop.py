"""One training loop for every stage (pretraining and every post-training method).

The loop knows nothing about methods: it draws batches of training windows, asks an *objective*
for `(loss, diagnostics)`, and does the optimisation around it: AdamW, linear warmup then constant
or cosine decay, gradient accumulation and clipping, bf16 autocast on GPU, validation every
`eval_every` epochs with early stopping on validation NDCG@10, an atomic resume checkpoint after
every epoch, and a guard that stops the run, naming the step and batch, when the loss is not
finite.

Determinism: the batch order of epoch `e` comes from a numpy generator whose state is saved with
each checkpoint, and torch's RNG state (dropout, sampled negatives) is saved too, so on CPU a run
killed at any point and resumed with `resume=True` ends with the same weights as an uninterrupted
run.
"""

from __future__ import annotations

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
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_lambda(warmup: int, total: int, cosine: bool) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if not cosine or total <= warmup:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


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
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    model.to(device)
    use_amp = device.type == "cuda" and cfg.bf16
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else nullcontext

    n_win = seq.n_windows
    if n_win == 0:
        raise RecalignError("no training windows: every user has fewer than two training interactions")
    micro = cfg.batch_size
    batches_per_epoch = math.ceil(n_win / micro)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps > 0:
        total_steps = min(total_steps, cfg.max_steps)

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            fused=device.type == "cuda")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.warmup_steps, total_steps, cfg.cosine))
    np_rng = np.random.default_rng(cfg.seed)

    res = FitResult()
    start_epoch, step, bad_evals, best_val = 0, 0, 0, -math.inf
    elapsed_before = 0.0
    resume_dir = ckpt.find_resume(run_dir) if resume else None
    if resume_dir is not None:
        st = ckpt.load_resume(resume_dir, model, opt, np_rng)
        sched.load_state_dict(st["scheduler"])
        start_epoch, step, bad_evals = st["epoch"] + 1, st["step"], st["bad_evals"]
        best_val = st["best_val"] if st["best_val"] is not None else -math.inf
        res.best, res.best_epoch, res.history = st["best"], st["best_epoch"], st["history"]
        elapsed_before, res.seconds_to_best = st["seconds"], st["seconds_to_best"]
        if st.get("stopped"):
            start_epoch = cfg.epochs  # the run had already finished (early stopping or max_steps)
        print(f"recalign: resuming {run_dir} at epoch {start_epoch} (step {step})", file=sys.stderr)

    t0 = time.perf_counter() - elapsed_before
    stop = step >= total_steps if cfg.max_steps > 0 else False
    model.train()
    for epoch in range(start_epoch, cfg.epochs):
        if stop:
            break
        order = np_rng.permutation(n_win)
        bar = tqdm(total=batches_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", file=sys.stderr,
                   disable=not cfg.progress or None, leave=False, mininterval=1.0)
        loss_sum = torch.zeros((), device=device)
        bad_batches = torch.zeros(batches_per_epoch, dtype=torch.bool, device=device)
        epoch_start_step = step
        n_batches = 0
        opt.zero_grad(set_to_none=True)
        for b in range(batches_per_epoch):
            batch = seq.train_batch(order[b * micro:(b + 1) * micro])
            if device.type == "cuda":
                batch = batch.pin_memory().to(device, non_blocking=True)
            with autocast():
                loss, _diag = objective(model, batch)
            (loss / cfg.grad_accum).backward()
            # NaN guard without a host sync per step: flag the batch on device, look at the flags later
            bad_batches[b] = ~torch.isfinite(loss.detach())
            loss_sum += loss.detach().float()
            n_batches += 1
            last_micro = (b + 1) % cfg.grad_accum == 0 or b + 1 == batches_per_epoch
            if last_micro:
                if cfg.clip_grad > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                if on_step is not None:
                    on_step(step)
            if device.type == "cpu" or b % 50 == 0 or b + 1 == batches_per_epoch:
                flagged = bad_batches[: b + 1].nonzero()
                if flagged.numel():
                    fb = int(flagged[0])
                    raise NonFiniteLoss(f"loss is not finite at step {epoch_start_step + fb // cfg.grad_accum} "
                                        f"(epoch {epoch + 1}, batch {fb + 1}); lower the learning rate or check "
                                        "the rewards/weights")
                bar.set_postfix(loss=f"{float(loss_sum) / n_batches:.4f}", refresh=False)
            bar.update(1)
            if cfg.max_steps > 0 and step >= cfg.max_steps:
                stop = True
                break
        bar.close()
        record: dict[str, Any] = {"epoch": epoch + 1, "step": step, "train_loss": float(loss_sum) / max(1, n_batches),
                                  "seconds": round(time.perf_counter() - t0, 3)}
        is_last = epoch + 1 == cfg.epochs or stop
        if validate is not None and ((epoch + 1) % cfg.eval_every == 0 or is_last):
            model.eval()
            with torch.no_grad(), autocast():
                metrics = validate(model)
            model.train()
            record.update({f"valid/{k}": v for k, v in metrics.items()})
            val = metrics.get(select_metric) if select_metric else 0.0
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
        if cfg.progress:
            print(f"recalign: {msg}", file=sys.stderr)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
        ckpt.save_resume(run_dir, model, opt, np_rng, {
            "epoch": epoch, "step": step, "bad_evals": bad_evals,
            "best_val": None if best_val == -math.inf else best_val, "best": res.best,
            "best_epoch": res.best_epoch, "history": res.history, "scheduler": sched.state_dict(),
            "seconds": time.perf_counter() - t0, "seconds_to_best": res.seconds_to_best,
            "stopped": stop,
        })
    res.epochs_run = len(res.history)
    res.steps = step
    res.seconds = time.perf_counter() - t0
    return res
