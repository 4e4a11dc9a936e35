"""The optimizer(s) of the training loop and their learning-rate schedule, behind one interface.

`train.optimizer = adamw`: AdamW on every parameter. `train.optimizer = sparse_adam`: AdamW on
every parameter but the item table, and SparseAdam on the item table, whose gradient the model
then makes sparse (only the rows of the batch's items and candidates). Both follow one schedule
(`lr_lambda`: linear warmup, then constant or cosine decay): the scheduler drives AdamW and its
learning rate is copied to SparseAdam after every change. `OptimizerBundle` holds the special
cases of SparseAdam (sparse gradient clipping, the check that the loss gave the table a sparse
gradient, one process only, the model back to dense gradients at the end), so the loop has none.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from recalign.config import TrainConfig
from recalign.errors import InputError


def make_optimizers(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> list[torch.optim.Optimizer]:
    """`train.optimizer`: `adamw` -> `[AdamW(all parameters)]`; `sparse_adam` -> `[AdamW(all but
    the item table), SparseAdam(item table)]` (the model is switched to sparse item gradients)."""
    if cfg.optimizer == "adamw":
        return [torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  fused=device.type == "cuda")]
    if cfg.optimizer != "sparse_adam":
        raise InputError(f"unknown train.optimizer {cfg.optimizer!r}; valid: adamw, sparse_adam")
    if cfg.weight_decay > 0:
        raise InputError("train.optimizer = sparse_adam has no weight decay on the item table (SparseAdam has none); "
                         "set train.weight_decay = 0 or use train.optimizer = adamw")
    if not hasattr(model, "set_sparse_item_grad"):
        raise InputError(f"train.optimizer = sparse_adam is for policies with model.head = sampled; "
                         f"{type(model).__name__} scores items densely (use train.optimizer = adamw)")
    model.set_sparse_item_grad(True)
    table = model.item_table
    dense = [p for p in model.parameters() if p is not table]
    return [torch.optim.AdamW(dense, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda"),
            torch.optim.SparseAdam([table], lr=cfg.lr)]


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> None:
    """`torch.nn.utils.clip_grad_norm_`, also for sparse gradients (which it does not take):
    sparse ones are coalesced and count by the norm of their values."""
    grads = [p.grad for p in params if p.grad is not None]
    if not any(g.is_sparse for g in grads):
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        return
    sq = []
    for p in params:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            p.grad = p.grad.coalesce()
            sq.append(p.grad.values().float().pow(2).sum())
        else:
            sq.append(p.grad.float().pow(2).sum())
    total = torch.stack(sq).sum().sqrt()
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for p in params:
        if p.grad is not None:
            p.grad.mul_(coef.to(p.grad.dtype))


def lr_lambda(warmup: int, total: int, cosine: bool) -> Callable[[int], float]:
    """The lr factor at a step: linear warmup over `warmup` steps, then 1, or a cosine decay to 0
    at step `total` with `cosine`."""
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if not cosine or total <= warmup:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


class OptimizerBundle:
    """The optimizer(s) of a run (`make_optimizers`) and the lr schedule, as one optimizer.

    `optimizers` is the list `checkpoint.save_resume`/`load_resume` take (AdamW first, then
    SparseAdam with `train.optimizer = sparse_adam`) and `scheduler` the `LambdaLR` on the first,
    whose state the resume checkpoint holds. Creating the bundle switches a `sparse_adam` model to
    sparse item gradients; `close()` switches it back.
    """

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, device: torch.device, total_steps: int,
                 world: int = 1):
        if cfg.optimizer == "sparse_adam" and world > 1:
            raise InputError("train.optimizer = sparse_adam runs in one process only: DistributedDataParallel would have "
                             "to all-reduce sparse gradients, which NCCL cannot do; use train.optimizer = adamw with torchrun")
        self.model, self.cfg = model, cfg
        self.optimizers = make_optimizers(model, cfg, device)
        self.sparse = len(self.optimizers) > 1
        self.params = [p for o in self.optimizers for g in o.param_groups for p in g["params"]]
        self.total_steps = total_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizers[0],
                                                           lr_lambda(cfg.warmup_steps, total_steps, cfg.cosine))
        self._copy_lr()

    @property
    def lr(self) -> float:
        """The current learning rate (of every parameter group)."""
        return self.optimizers[0].param_groups[0]["lr"]

    def _copy_lr(self) -> None:
        """The schedule of the first optimizer, for the others: copy its lr after every change."""
        for o in self.optimizers[1:]:
            for g in o.param_groups:
                g["lr"] = self.lr

    def reschedule(self, total_steps: int) -> None:
        """The schedule's length from here on (a resumed run: the steps it now plans to make)."""
        self.total_steps = total_steps
        self.scheduler.lr_lambdas = ([lr_lambda(self.cfg.warmup_steps, total_steps, self.cfg.cosine)]
                                     * len(self.optimizers[0].param_groups))

    def zero_grad(self) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=True)

    def clip(self, max_norm: float) -> None:
        """Clip the gradients' total norm to `max_norm` (nothing when `max_norm <= 0`)."""
        if max_norm <= 0:
            return
        if self.sparse:
            clip_grad_norm(self.params, max_norm)
        else:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)

    def step(self) -> None:
        """One optimizer step of every optimizer, then one step of the schedule."""
        if self.sparse:
            self._check_sparse_grads()
        for o in self.optimizers:
            o.step()
        self.scheduler.step()
        self._copy_lr()

    def _check_sparse_grads(self) -> None:
        for o in self.optimizers[1:]:
            for g in o.param_groups:
                for p in g["params"]:
                    if p.grad is not None and not p.grad.is_sparse:
                        raise InputError("train.optimizer = sparse_adam: this stage's loss gives the item table a dense "
                                         "gradient (it forms full-catalog logits, as dpo, ppo, ips, cql, asft and the "
                                         "reward model do); use train.optimizer = adamw for it")

    def close(self) -> None:
        """The model back to dense item gradients (it may be trained again, by another stage)."""
        if self.sparse:
            self.model.set_sparse_item_grad(False)
