"""Run folders and atomic checkpoints (safetensors + JSON; nothing is ever unpickled).

A run folder holds:

- `config.toml`      the resolved configuration
- `model.safetensors` the weights of the best model (best validation NDCG@10)
- `state.json`       step, epoch, seed, best metrics, git revision, data fingerprint
- `metrics.jsonl`    one JSON object per validation (and the final test metrics)
- `user_ids.json`, `item_ids.json`  code -> original id, so results speak the original ids
- `last/`            the resume checkpoint of the latest finished epoch: `model.safetensors`,
                     `optim.safetensors` (optimizer moments), `state.json` (step, epoch,
                     scheduler, RNG states, early-stopping counters)

Every file is written to a temporary name and renamed into place; `last/` is replaced as a whole
(a new folder is written, then swapped in), so a run killed at any moment leaves either the old
or the new checkpoint, never half of one.

In a distributed run (torchrun) only rank 0 writes: every writer here returns without writing on
the other ranks, whoever calls it. Readers that may run while rank 0 writes must wait at a
`distributed.barrier()` first (the training loop and `pipeline.write_run_files` do).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from recalign import distributed
from recalign.errors import InputError


def atomic_write_text(path: Path, text: str) -> None:
    if not distributed.is_main():
        return
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    if not distributed.is_main():
        return
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def git_revision() -> str:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict without tied duplicates (safetensors refuses shared storage)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in model.state_dict().items():
        key = v.data_ptr() if v.numel() else id(v)
        if key in seen:
            continue
        seen.add(key)
        out[k] = v
    return out


def load_model_weights(model: torch.nn.Module, path: Path) -> None:
    path = Path(path)
    if not path.is_file():
        raise InputError("model weights not found (is this a recalign run folder?)", path=path)
    state = load_file(str(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # tied weights are stored once; anything else missing is a real mismatch
    tied = {k for k in missing if _is_tied_alias(model, k, state)}
    if set(missing) - tied or unexpected:
        raise InputError(f"weights do not match the model: missing {sorted(set(missing) - tied)}, "
                         f"unexpected {sorted(unexpected)}", path=path)


def _is_tied_alias(model: torch.nn.Module, key: str, state: dict[str, torch.Tensor]) -> bool:
    params = dict(model.named_parameters(remove_duplicate=False))
    p = params.get(key)
    if p is None:
        return False
    return any(q is p and k in state for k, q in params.items() if k != key)


# ------------------------------------------------------------------ optimizer state <-> flat tensors
def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{name}"] = v
            else:
                scalars[f"{pid}.{name}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        pid, name = k.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    for k, v in meta["scalars"].items():
        pid, name = k.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# ------------------------------------------------------------------ RNG states
def rng_state(np_rng: np.random.Generator) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["torch_cuda"] = torch.cuda.get_rng_state()
    return tensors, {"numpy": _jsonable(np_rng.bit_generator.state)}


def restore_rng(np_rng: np.random.Generator, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if "torch_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["torch_cuda"])
    np_rng.bit_generator.state = meta["numpy"]


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.generic):
        return o.item()
    return o


# ------------------------------------------------------------------ resume checkpoint folder
def _as_list(opt: torch.optim.Optimizer | Sequence[torch.optim.Optimizer]) -> list[torch.optim.Optimizer]:
    return [opt] if isinstance(opt, torch.optim.Optimizer) else list(opt)


def _opt_prefix(i: int) -> str:
    """Key prefix of optimizer i in `optim.safetensors` (`opt.` for the first: the layout of a
    one-optimizer run, `opt1.`, ... for the others, e.g. SparseAdam's item table)."""
    return "opt" if i == 0 else f"opt{i}"


def save_resume(run_dir: Path, model: torch.nn.Module,
                opt: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
                np_rng: np.random.Generator, state: dict[str, Any]) -> None:
    """Write `run_dir/last/` atomically (new folder, then swap). `opt`: the optimizer, or the
    list of optimizers of the run (`train.optimizer = sparse_adam` has two). Rank 0 only."""
    if not distributed.is_main():
        return
    run_dir = Path(run_dir)
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=".last."))
    try:
        atomic_save_tensors(tmp / "model.safetensors", model_state(model))
        flat: dict[str, torch.Tensor] = {}
        metas: dict[str, Any] = {}
        for i, o in enumerate(_as_list(opt)):
            opt_t, opt_meta = optimizer_to_flat(o)
            flat.update({f"{_opt_prefix(i)}.{k}": v for k, v in opt_t.items()})
            metas["optimizer" if i == 0 else f"optimizer{i}"] = opt_meta
        rng_t, rng_meta = rng_state(np_rng)
        atomic_save_tensors(tmp / "optim.safetensors", {**flat, **{f"rng.{k}": v for k, v in rng_t.items()}})
        atomic_write_text(tmp / "state.json", json.dumps({**state, **metas, "rng": rng_meta}))
        last, old = run_dir / "last", run_dir / "last.old"
        if last.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(last, old)
        os.replace(tmp, last)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def find_resume(run_dir: Path) -> Path | None:
    """The resume folder of a run (`last/`, or `last.old/` if a swap was interrupted)."""
    for name in ("last", "last.old"):
        p = Path(run_dir) / name
        if (p / "state.json").is_file():
            return p
    return None


def load_resume(path: Path, model: torch.nn.Module,
                opt: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
                np_rng: np.random.Generator) -> dict[str, Any]:
    load_model_weights(model, path / "model.safetensors")
    flat = load_file(str(path / "optim.safetensors"))
    state = json.loads((path / "state.json").read_text())
    opts = _as_list(opt)
    saved = 1 + sum(1 for k in state if k.startswith("optimizer") and k[len("optimizer"):].isdigit())
    if saved != len(opts):
        raise InputError(f"the resume checkpoint holds {saved} optimizer(s) but this run has {len(opts)}: "
                         "it was written with another train.optimizer; resume with the same setting", path=path)
    for i, o in enumerate(opts):
        pre = _opt_prefix(i) + "."
        optimizer_from_flat(o, {k[len(pre):]: v for k, v in flat.items() if k.startswith(pre)},
                            state["optimizer" if i == 0 else f"optimizer{i}"])
    restore_rng(np_rng, {k[4:]: v for k, v in flat.items() if k.startswith("rng.")}, state["rng"])
    return state


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    if not distributed.is_main():
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
