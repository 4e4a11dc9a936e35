"""Data-parallel training with PyTorch's own engine: the process group under `torchrun`.

`torchrun --nproc_per_node=P -m recalign.cli pretrain ...` starts P copies of the command with
`WORLD_SIZE`, `RANK` and `LOCAL_RANK` in their environment. Everything here reads those
variables, so the same code runs unchanged as one process (no variables, or `WORLD_SIZE=1`:
every helper is then a no-op that costs nothing and the process group is never created).

- The process group is created lazily, once, by the first collective (`init`): backend
  `cpu:gloo,cuda:nccl` where CUDA is available (DDP's gradient all-reduce of CUDA tensors goes
  through NCCL; the small CPU tensors of the helpers below through gloo), plain `gloo` on a
  CPU-only machine. Each rank uses the GPU `cuda:LOCAL_RANK`. The group is destroyed at exit.
- `rank()`, `world_size()`, `is_main()` (rank 0 is the one that writes files and logs),
  `barrier()`, `shard_range(n)` (this rank's contiguous share of n items), `shard_batches`
  (the same in whole batches), `all_gather_array(a)` (numpy arrays of different lengths per
  rank, concatenated in rank order), `all_reduce_sum`, `any_flag` and `broadcast_float` for
  the loop's decisions.

The helpers move their (small) payloads through CPU tensors, so they work whatever device the
model is on; nothing is pickled.
"""

from __future__ import annotations

import atexit
import os

import numpy as np
import torch
import torch.distributed as dist


def world_size() -> int:
    """Number of processes of the run (`WORLD_SIZE`, 1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank in `[0, world_size)` (`RANK`, 0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0")) if world_size() > 1 else 0


def local_rank() -> int:
    """This process's rank on its machine (`LOCAL_RANK`): the index of the GPU it uses."""
    return int(os.environ.get("LOCAL_RANK", "0")) if world_size() > 1 else 0


def is_distributed() -> bool:
    return world_size() > 1


def is_main() -> bool:
    """True on rank 0 (and in a single-process run): the process that writes files and logs."""
    return rank() == 0


def init() -> None:
    """Create the process group from the torchrun environment, once (no-op for one process)."""
    if not is_distributed() or dist.is_initialized():
        return
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    # DDP's constructor imports torch._dynamo; imported after the group exists, it keeps a
    # reference to the group that destroy_process_group does not release (seen with torch 2.13 +
    # gloo), so the group's worker threads outlive the interpreter and a process could abort at
    # exit ("terminate called without an active exception"). Imported first, it does not.
    import torch._dynamo  # noqa: F401

    if torch.cuda.is_available():
        if local_rank() < torch.cuda.device_count():  # (CPU training may start more processes than GPUs)
            torch.cuda.set_device(local_rank())
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend)
    if dist.get_world_size() != world_size() or dist.get_rank() != rank():
        raise RuntimeError(f"process group has rank {dist.get_rank()} of {dist.get_world_size()} but the "
                           f"environment says {rank()} of {world_size()}")
    atexit.register(cleanup)


def cleanup() -> None:
    """Destroy the process group (registered at exit by `init`)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_for(device: torch.device) -> torch.device:
    """`cuda` without an index means this rank's GPU (`cuda:LOCAL_RANK`) in a distributed run."""
    if device.type == "cuda" and device.index is None and is_distributed():
        return torch.device("cuda", local_rank())
    return device


def barrier() -> None:
    """Wait until every rank gets here (no-op for one process)."""
    if not is_distributed():
        return
    init()
    # an all-reduce of a CPU tensor goes through gloo whatever the GPU backend (a barrier on a
    # group with several backends would have to pick a device)
    dist.all_reduce(torch.zeros(1))


def shard_range(n: int) -> tuple[int, int]:
    """This rank's contiguous share `[lo, hi)` of `n` items; shares differ by at most one and
    cover `[0, n)` exactly once in rank order."""
    w, r = world_size(), rank()
    base, extra = divmod(n, w)
    lo = r * base + min(r, extra)
    return lo, lo + base + (1 if r < extra else 0)


def shard_batches(n: int, batch_size: int) -> tuple[int, int]:
    """This rank's share `[lo, hi)` of `n` items cut into batches of `batch_size`: a contiguous run
    of whole batches (the batches one process would form), so per-item results computed batch by
    batch do not depend on the number of processes. `(0, n)` for one process."""
    b0, b1 = shard_range(-(-n // batch_size))
    return b0 * batch_size, min(n, b1 * batch_size)


def all_gather_array(a: np.ndarray) -> np.ndarray:
    """Concatenate 1-D numpy arrays of any length (the same dtype on every rank) across ranks, in
    rank order; every rank gets the result. One process: `a` itself."""
    a = np.ascontiguousarray(a)
    if a.ndim != 1:
        raise ValueError(f"all_gather_array takes 1-D arrays; got shape {a.shape}")
    if not is_distributed():
        return a
    init()
    w = world_size()
    n = torch.tensor([a.shape[0]], dtype=torch.int64)
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(w)]
    dist.all_gather(sizes, n)
    sizes_i = [int(s) for s in sizes]
    width = max(sizes_i)
    t = torch.from_numpy(a.copy())
    buf = torch.zeros(width, dtype=t.dtype)
    buf[: t.shape[0]] = t
    parts = [torch.zeros(width, dtype=t.dtype) for _ in range(w)]
    dist.all_gather(parts, buf)
    return np.concatenate([p[:s].numpy() for p, s in zip(parts, sizes_i)])


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of `x` over ranks (a new CPU tensor; `x` itself for one process)."""
    if not is_distributed():
        return x
    init()
    t = x.detach().to("cpu", copy=True)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_flag(flags: torch.Tensor) -> torch.Tensor:
    """Element-wise OR of boolean `flags` over ranks (a CPU tensor; `flags` for one process)."""
    if not is_distributed():
        return flags
    init()
    t = flags.detach().to("cpu", dtype=torch.int32, copy=True)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.bool()


def broadcast_float(x: float | None) -> float | None:
    """Rank 0's value of `x` on every rank (None travels as NaN and comes back as None)."""
    if not is_distributed():
        return x
    init()
    t = torch.tensor([float("nan") if x is None else float(x)], dtype=torch.float64)
    dist.broadcast(t, src=0)
    v = float(t[0])
    return None if v != v else v
