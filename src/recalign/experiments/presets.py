"""Recommended starting settings per dataset for `demo`, `sweep` and `reproduce`.

Each preset is a list of ordinary `--set` overrides applied before the user's own (`--set`
always wins). `sim` is the demo's world: small enough to simulate, pretrain and post-train five
methods in a minute or two on 2 CPU cores. The MovieLens presets are the frozen pretraining
configs of `configs/pretrain/` (SASRec 64×2, max length 50) with a CPU budget on epochs.
`quick` variants exist for CI and smoke tests: they show the pipeline runs, not the science.
"""

from __future__ import annotations

from pathlib import Path

from recalign import configlib
from recalign.config import RunConfig, load_config

COMMON = ["train.progress=false", "train.num_threads=1"]  # tiny models: a 2nd thread costs more than it gains

PRESETS: dict[str, list[str]] = {
    "sim": [
        "sim.n_users=1500", "sim.n_items=300", "sim.min_len=15", "sim.max_len=40", "sim.noise_scale=1.0",
        "model.dim=32", "model.layers=2", "model.heads=2", "model.max_len=30", "model.dropout=0.1",
        "train.epochs=40", "train.batch_size=64", "train.lr=2e-3", "train.patience=5", "train.eval_every=2",
        "posttrain.epochs=3", "posttrain.lr=5e-4", "posttrain.lam=0.5",
    ],
    "ml-100k": [
        "model.name=\"sasrec\"", "model.dim=64", "model.layers=2", "model.heads=2", "model.max_len=50",
        "model.dropout=0.2", "train.epochs=30", "train.batch_size=32", "train.lr=1e-3", "train.patience=5",
        "train.eval_every=2", "posttrain.epochs=3", "posttrain.lr=1e-4", "posttrain.lam=1.0",
        "eval.judge_epochs=8",
    ],
    "ml-latest-small": [
        "model.name=\"sasrec\"", "model.dim=64", "model.layers=2", "model.heads=2", "model.max_len=50",
        "model.dropout=0.2", "train.epochs=15", "train.batch_size=32", "train.lr=1e-3", "train.patience=5",
        "train.eval_every=3", "posttrain.epochs=3", "posttrain.lr=1e-4", "posttrain.lam=1.0",
        "eval.judge_epochs=6",
    ],
}

QUICK: dict[str, list[str]] = {
    "sim": [
        "sim.n_users=300", "sim.n_items=80", "sim.min_len=10", "sim.max_len=20",
        "model.dim=16", "model.layers=1", "model.max_len=20", "train.epochs=6", "train.eval_every=2",
        "posttrain.epochs=1",
    ],
    "real": [
        "model.dim=16", "model.layers=1", "model.max_len=20", "train.epochs=2", "train.eval_every=1",
        "posttrain.epochs=1", "posttrain.k_samples=4", "eval.judges=2", "eval.judge_epochs=1",
    ],
}


def preset_config(dataset: str, quick: bool = False, overrides: list[str] | None = None,
                  data_dir: str | None = None, config_file: str | Path | None = None) -> RunConfig:
    """Defaults, then the dataset's preset (none for a file path or another name), its quick
    variant, `config_file`, then `overrides` (`--set`)."""
    cfg = configlib.update(RunConfig(), {"data": {"name": dataset}})
    settings = list(PRESETS.get(dataset, [])) + COMMON
    if quick:
        settings += QUICK["sim" if dataset == "sim" else "real"]
    cfg = configlib.update(cfg, configlib.parse_overrides(settings))
    if data_dir:
        cfg = configlib.update(cfg, {"data": {"data_dir": str(data_dir)}})
    return load_config(config_file, overrides, base=cfg)
