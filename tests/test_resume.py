"""Resume = uninterrupted: a pretraining run killed with SIGKILL and resumed with --resume ends with
the same weights and metrics as a run that was never interrupted (CPU, same seed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from recalign.cli import main

CONFIG = """
[data]
name = "{csv}"
[model]
dim = 16
layers = 1
heads = 1
max_len = 8
dropout = 0.3
[train]
epochs = 25
batch_size = 4
lr = 3e-3
warmup_steps = 3
patience = 100
num_threads = 1
progress = false
"""


def write_logs(path: Path, n_users: int = 40, n_items: int = 30, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    rows = ["user,item,reward,timestamp"]
    for u in range(n_users):
        start = rng.integers(n_items)
        for t in range(int(rng.integers(6, 14))):
            rows.append(f"u{u},{(start + t) % n_items},{rng.integers(1, 6)},{1000 + 10 * t}")
    path.write_text("\n".join(rows) + "\n")


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Path, Path]:
    csv = tmp_path / "logs.csv"
    write_logs(csv)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(CONFIG.format(csv=csv.as_posix()))
    return tmp_path, cfg


def test_killed_run_resumes_to_the_same_result(setup, capsys) -> None:
    tmp, cfg = setup
    assert main(["pretrain", "--config", str(cfg), "--out", str(tmp / "full"), "--json"]) == 0
    full = json.loads(capsys.readouterr().out)

    killed = tmp / "killed"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "recalign.cli", "pretrain", "--config", str(cfg), "--out",
                             str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        # kill after the third epoch's checkpoint: the process is then inside a later epoch
        while time.monotonic() < deadline and proc.poll() is None:
            st = killed / "last" / "state.json"
            if st.is_file():
                try:
                    if json.loads(st.read_text())["epoch"] >= 2:
                        break
                except (json.JSONDecodeError, KeyError):
                    pass
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    if proc.returncode != -signal.SIGKILL:
        pytest.skip("the run finished before it could be killed (machine too fast for this test's timing)")
    state = json.loads((killed / "last" / "state.json").read_text())
    assert state["epoch"] + 1 < 25, "the kill must interrupt the run before its end"

    assert main(["pretrain", "--config", str(cfg), "--out", str(killed), "--resume", "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out)

    assert resumed["best_epoch"] == full["best_epoch"]
    assert resumed["test"] == full["test"]
    a, b = load_file(tmp / "full" / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_existing_run_folder_needs_resume(setup, capsys) -> None:
    tmp, cfg = setup
    out = tmp / "run"
    assert main(["pretrain", "--config", str(cfg), "--set", "train.epochs=1", "--out", str(out)]) == 0
    assert main(["pretrain", "--config", str(cfg), "--set", "train.epochs=1", "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err


def test_non_finite_loss_stops_the_run_naming_step_and_batch(setup, tmp_path) -> None:
    """A loss that turns NaN on the 3rd batch of epoch 2 stops the run there, naming it."""
    import dataclasses

    from recalign.config import load_config
    from recalign.data.prepared import prepare
    from recalign.stages.common import build_model
    from recalign.train.loop import NextItemObjective, NonFiniteLoss, fit

    _, cfg_file = setup
    cfg = load_config(cfg_file, ["train.epochs=3", "train.grad_accum=2"])
    data = prepare(cfg)
    model = build_model(cfg, data)
    per_epoch = -(-data.seq.n_windows // cfg.train.batch_size)
    calls = {"n": 0}
    inner = NextItemObjective()

    def objective(m, batch):
        loss, diag = inner(m, batch)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == per_epoch + 3 else loss), diag

    with pytest.raises(NonFiniteLoss) as err:
        fit(model, data.seq, objective, dataclasses.replace(cfg.train, progress=False), tmp_path / "nan")
    steps_epoch1 = -(-per_epoch // 2)
    assert f"at step {steps_epoch1 + 1} (epoch 2, batch 3)" in str(err.value)
