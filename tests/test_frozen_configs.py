"""Frozen reference configs (configs/pretrain/*.toml) carry the command that runs them and the
numbers it should give, as TOML in their `#:` comment lines (the config loader refuses unknown
keys, so the expectations cannot be ordinary keys: `recalign pretrain --config FILE` must keep
reading the file as it is):

- `[expected.full]`: the full run's command and its test metrics over seeds (mean, std); the
  benchmark (benchmarks/pretrain_table.py) reruns it, in minutes per seed;
- `[expected.smoke]`: a short run of the same config (1-2 epochs, seed 0, CPU, the config's one
  torch thread) that this file repeats through the real CLI and compares with the stored test
  NDCG@10 and HR@10.

Tolerance: on CPU with one thread and the same torch, numpy and CPU capability (the kernels torch
dispatches to), reruns give bit-identical numbers, so `atol_same` is 1e-6 and any larger
difference is a change in what the code computes. Elsewhere the summation order differs: the files
state what AVX2 kernels or 2 threads changed (at most 4.2e-4 in NDCG@10, nothing in HR@10) and
`atol_other` allows for that (1e-3 in NDCG@10, one user in HR@10), enough to catch broken
training or evaluation but not every change (seed 2 instead of 0 moves ml-100k SASRec's NDCG@10 by
7.6e-4; seed 1 by 6e-3).

The ml-100k runs take ~10 s each (marked `data`); ml-latest-small ones ~25 s (`data`, `slow`).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from recalign import cli, configlib
from recalign.config import load_config
from recalign.experiments.presets import CONFIGS

FROZEN = Path(str(CONFIGS)) / "pretrain"
NAMES = sorted(p.stem for p in FROZEN.glob("*.toml"))
METRICS = ("ndcg@10", "hr@10")


def expected(name: str) -> dict:
    """The `[expected]` table written in the `#:` comment lines of configs/pretrain/NAME.toml."""
    lines = [line[2:] for line in (FROZEN / f"{name}.toml").read_text().splitlines() if line.startswith("#:")]
    return configlib.tomllib.loads("\n".join(lines))["expected"]


def environment() -> dict[str, str]:
    return {"torch": torch.__version__, "numpy": np.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def test_the_frozen_configs():
    assert NAMES == ["ml-100k-hstu", "ml-100k-sasrec", "ml-latest-small-hstu", "ml-latest-small-sasrec"]


@pytest.mark.parametrize("name", NAMES)
def test_each_states_its_command_and_numbers(name):
    cfg = load_config(str(FROZEN / f"{name}.toml"))  # the expectations are invisible to the loader
    dataset, model = name.rsplit("-", 1)
    assert (cfg.data.name, cfg.model.name, cfg.train.num_threads) == (dataset, model, 1)
    exp = expected(name)
    for part in ("full", "smoke"):
        argv = shlex.split(exp[part]["command"])
        assert argv[:2] == ["recalign", "pretrain"]
        assert argv[argv.index("--config") + 1] == f"configs/pretrain/{name}.toml"
    full = exp["full"]
    assert len(full["seeds"]) == len(full["best_epoch"]) == len(full["epochs_run"])
    assert {"hr@10", "ndcg@10"} <= set(full["test"]) and all(len(v) == 2 for v in full["test"].values())
    smoke = exp["smoke"]
    assert set(smoke["test"]) == set(METRICS) == set(smoke["atol_other"])
    assert set(smoke["measured_with"]) == set(environment())
    assert smoke["atol_same"] <= 1e-6 and all(t < 2e-3 for t in smoke["atol_other"].values())
    # the short run is this config with a few overrides that still apply on top of it
    sets = [argv[i + 1] for i, a in enumerate(shlex.split(smoke["command"])) if a == "--set"]
    short = load_config(str(FROZEN / f"{name}.toml"), sets)
    assert short.train.device == "cpu" and short.train.epochs <= 2
    assert configlib.update(short, {"train": {"epochs": cfg.train.epochs, "seed": cfg.train.seed,
                                              "device": cfg.train.device}}) == cfg


SMOKE_RUNS = [pytest.param(name, id=name, marks=[pytest.mark.data] + (
    [pytest.mark.slow] if name.startswith("ml-latest-small") else [])) for name in NAMES]


@pytest.mark.parametrize("name", SMOKE_RUNS)
def test_smoke_run_gives_the_stored_metrics(name, shared_data, tmp_path, capsys):
    smoke = expected(name)["smoke"]
    argv = shlex.split(smoke["command"])[1:]
    subst = {"$RECALIGN_DATA": str(shared_data), "RUN": str(tmp_path / "run"),
             f"configs/pretrain/{name}.toml": str(FROZEN / f"{name}.toml")}
    argv = [subst.get(a, a) for a in argv]
    assert cli.main(argv) == 0
    got = json.loads(capsys.readouterr().out)["test"]
    env = environment()
    same = env == smoke["measured_with"]
    for m in METRICS:
        tol = smoke["atol_same"] if same else smoke["atol_other"][m]
        assert abs(got[m] - smoke["test"][m]) <= tol, (
            f"{name}: test {m} {got[m]!r}, stored {smoke['test'][m]!r} (tolerance {tol:g}; measured with "
            f"{smoke['measured_with']}, this run {env}). If the change is intended, rerun the command in "
            f"configs/pretrain/{name}.toml and update [expected.smoke] there.")
