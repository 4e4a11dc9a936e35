"""`train.optimizer = sparse_adam`: sparse gradients for the item table (SparseAdam) and AdamW for
the rest. The sparse gradient is checked against the dense one of the plain path, the clip
against torch's, and a resumed run against an uninterrupted one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from recalign.config import load_config
from recalign.data.prepared import prepare
from recalign.errors import InputError
from recalign.models.heads import window_contexts
from recalign.models.reward_model import RewardModel, RewardObjective
from recalign.stages.common import build_model
from recalign.train.loop import NextItemObjective, clip_grad_norm, fit

TINY = ["sim.n_users=60", "sim.n_items=80", "sim.min_len=8", "sim.max_len=14", "model.dim=16", "model.layers=1",
        "model.heads=1", "model.max_len=8", "model.head=\"sampled\"", "model.num_negatives=16",
        "train.batch_size=16", "train.progress=false", "train.device=\"cpu\"", "train.warmup_steps=2",
        "train.lr=0.01", "train.optimizer=\"sparse_adam\"", "train.patience=100"]


@pytest.fixture(scope="module")
def data():
    return prepare(load_config(None, TINY))


def _loss(model, batch, negatives):
    hidden = model.encode(batch.items, batch.timestamps)
    w = (batch.targets > 0).float()
    return model.head.loss(hidden, batch.targets, w, model.item_weight, negatives=negatives)[0]


def test_sparse_item_gradient_equals_the_dense_one(data) -> None:
    """Same batch, same negatives: the sparse gradient holds exactly the rows of the input items,
    the targets and the negatives, and densified it equals the plain path's gradient."""
    cfg = load_config(None, TINY + ["model.dropout=0.0"])
    model = build_model(cfg, data)
    batch = data.seq.train_batch(np.arange(16))
    neg = torch.tensor([3, 7, 7, 40])
    _loss(model, batch, neg).backward()
    dense = model.item_weight.grad.clone()
    model.zero_grad(set_to_none=True)
    model.set_sparse_item_grad(True)
    _loss(model, batch, neg).backward()
    g = model.item_weight.grad
    assert g.is_sparse
    g = g.coalesce()
    rows = set(g.indices()[0].tolist())
    touched = set(batch.items[batch.items > 0].tolist()) | set(batch.targets[batch.targets > 0].tolist()) | {3, 7, 40}
    assert rows == touched
    torch.testing.assert_close(g.to_dense(), dense, rtol=1e-5, atol=1e-7)
    model.set_sparse_item_grad(False)
    assert not model.backbone.item_emb.sparse and not model.head.sparse_grad


def test_clip_with_sparse_gradients_matches_torch_clip() -> None:
    torch.manual_seed(0)
    a, b = torch.nn.Parameter(torch.randn(10, 4)), torch.nn.Parameter(torch.randn(3))
    ga, gb = torch.zeros(10, 4), torch.randn(3)
    ga[[1, 4, 4]] = torch.randn(3, 4) * 5  # row 4 twice: an uncoalesced sparse gradient sums them
    idx = torch.tensor([[1, 4, 4]])
    sparse = torch.sparse_coo_tensor(idx, torch.stack([ga[1], ga[4] / 2, ga[4] / 2]), (10, 4), check_invariants=True)
    a.grad, b.grad = ga.clone(), gb.clone()
    torch.nn.utils.clip_grad_norm_([a, b], 1.0)
    ref_a, ref_b = a.grad.clone(), b.grad.clone()
    a.grad, b.grad = sparse, gb.clone()
    clip_grad_norm([a, b], 1.0)
    torch.testing.assert_close(a.grad.to_dense(), ref_a)
    torch.testing.assert_close(b.grad, ref_b)


def test_sparse_adam_trains_and_resumes_to_the_same_weights(data, tmp_path: Path) -> None:
    cfg = load_config(None, TINY)
    full = build_model(cfg, data)
    before = full.item_weight.detach().clone()
    res = fit(full, data.seq, NextItemObjective(), dataclasses.replace(cfg.train, epochs=3), tmp_path / "full")
    assert res.steps > 0 and np.isfinite(res.history[-1]["train_loss"])
    assert not torch.equal(full.item_weight, before)
    assert not full.backbone.item_emb.sparse  # the model leaves fit in its plain mode

    part = build_model(cfg, data)
    fit(part, data.seq, NextItemObjective(), dataclasses.replace(cfg.train, epochs=2), tmp_path / "part")
    part = build_model(cfg, data)
    fit(part, data.seq, NextItemObjective(), dataclasses.replace(cfg.train, epochs=3), tmp_path / "part",
        resume=True)
    a, b = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(tmp_path / "part" / "model.safetensors"))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(InputError, match="another train.optimizer"):  # the checkpoint has two optimizers
        fit(build_model(cfg, data), data.seq, NextItemObjective(),
            dataclasses.replace(cfg.train, epochs=4, optimizer="adamw"), tmp_path / "part", resume=True)


def test_sparse_adam_refuses_what_it_cannot_do(data, tmp_path: Path) -> None:
    cfg = load_config(None, TINY + ["train.max_steps=1"])
    full_head = build_model(load_config(None, TINY + ['model.head="full"']), data)
    with pytest.raises(InputError, match="model.head = sampled"):
        fit(full_head, data.seq, NextItemObjective(), cfg.train, tmp_path / "a")
    with pytest.raises(InputError, match="weight_decay"):
        fit(build_model(cfg, data), data.seq, NextItemObjective(),
            dataclasses.replace(cfg.train, weight_decay=0.1), tmp_path / "b")
    rm = RewardModel(cfg.model, data.inter.n_items)
    with pytest.raises(InputError, match="sampled"):
        fit(rm, data.seq, RewardObjective(), cfg.train, tmp_path / "c")

    def full_logits_objective(model, batch):  # forms full-catalog logits: a dense table gradient
        hidden = model.encode(batch.items, batch.timestamps)
        sel = batch.targets > 0
        return model.logits(hidden[sel], window_contexts(batch.items)[sel]).logsumexp(-1).mean(), {}

    model = build_model(cfg, data)
    with pytest.raises(InputError, match="dense"):
        fit(model, data.seq, full_logits_objective, cfg.train, tmp_path / "d")
    assert not model.backbone.item_emb.sparse
