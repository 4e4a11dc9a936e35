"""Data-parallel training under torchrun: 2 CPU processes (gloo) on a tiny simulator run.

Each torchrun launch starts two Python processes (a few seconds each on a shared 2-core box), so
the launches are shared between the tests through module fixtures.

Why two processes do not give bit-identical numbers to one process with `train.batch_size`
doubled, although every optimizer step sees exactly the same windows (rank r takes the r-th half
of the global batch that the single process draws): (1) reduction order and weighting: each rank
averages the loss over its own targets and DDP averages the two gradients, while one process
averages over all targets of the batch (the two halves have different numbers of targets), so
the gradients differ in the last bits and then a little more; (2) random streams: dropout and
sampled negatives come from a per-rank generator. The config has dropout 0 and the full softmax,
so (1) is the only difference here; the test metrics then agree to within a few hundredths.

Evaluation, on the other hand, is exact: every rank ranks whole user batches of its own and the
per-user ranks are gathered, so a run's own (gathered) test metrics equal a single-process
evaluation of its saved weights, and every test user is counted exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist
from safetensors.numpy import load_file

from recalign import distributed
from recalign.cli import main
from recalign.stages.common import load_run
from recalign.stages.inference import evaluate_run
from recalign.train.loop import rank_windows

needs_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")

SRC = Path(__file__).resolve().parents[1] / "src"

CONFIG = """
[sim]
n_users = 200
n_items = 100
min_len = 10
max_len = 20
[model]
dim = 16
layers = 1
heads = 1
max_len = 10
dropout = 0.0
[train]
epochs = 4
batch_size = 16
lr = 3e-3
warmup_steps = 3
patience = 100
num_threads = 1
progress = false
[eval]
batch_size = 32
"""

# test metrics of 2 processes x 16 vs 1 process x 32 (same windows per step, see the docstring);
# measured differences: hr@10 0, ndcg@10 0.0003, mrr 0.0001, true_value 0.0012
TOLERANCE = {"hr@10": 0.02, "ndcg@10": 0.01, "mrr": 0.01, "true_value": 0.02}


# ------------------------------------------------------------------ pure helpers (no processes)
def test_rank_windows_split_each_global_batch() -> None:
    order = np.random.default_rng(0).permutation(23)
    # one process: the single-process slices, unchanged
    assert all(np.array_equal(rank_windows(order, b, 5, 1, 0), order[b * 5:(b + 1) * 5]) for b in range(5))
    # two processes x 5: batch b of each rank = the halves of one process's batch of 10
    n_batches = -(-23 // 10)
    seen = []
    for b in range(n_batches):
        parts = [rank_windows(order, b, 5, 2, r) for r in range(2)]
        assert np.array_equal(np.concatenate(parts), order[b * 10:(b + 1) * 10])
        assert abs(len(parts[0]) - len(parts[1])) <= 1 and all(len(p) for p in parts)
        seen += [w for p in parts for w in p]
    assert sorted(seen) == list(range(23))  # every window once per epoch
    # fewer windows left than processes: padded from the start of the order, nobody idles
    parts = [rank_windows(order[:9], 1, 2, 4, r) for r in range(4)]  # 1 window left for 4 processes
    assert [len(p) for p in parts] == [1, 1, 1, 1] and parts[0][0] == order[8]


def test_shards_cover_every_item_once(monkeypatch) -> None:
    for world in (1, 2, 3):
        monkeypatch.setenv("WORLD_SIZE", str(world))
        got, got_b = [], []
        for r in range(world):
            monkeypatch.setenv("RANK", str(r))
            lo, hi = distributed.shard_range(10)
            got += range(lo, hi)
            lo, hi = distributed.shard_batches(10, 3)
            assert lo % 3 == 0 and (hi % 3 == 0 or hi == 10)  # whole batches of 3
            got_b += range(lo, hi)
        assert got == got_b == list(range(10))
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.is_main() and distributed.all_gather_array(np.arange(3)).tolist() == [0, 1, 2]


# ------------------------------------------------------------------ under torchrun
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], module: bool = True, nproc: int = 2) -> subprocess.CompletedProcess:
    """Run `recalign <args>` (or a script) under torchrun with `nproc` CPU processes."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           f"--master_port={_free_port()}"] + (["-m", "recalign.cli"] if module else []) + args
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, f"torchrun {' '.join(args)} failed:\n{r.stderr[-4000:]}"
    return r


def write_config(folder: Path) -> Path:
    p = folder / "tiny.toml"
    p.write_text(CONFIG)
    return p


def state(run: Path) -> dict:
    return json.loads((run / "state.json").read_text())


def metric_lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """`w2`: 2 processes x batch 16, 4 epochs; `w1`: 1 process x batch 32; `half`: 2 processes,
    2 epochs (the starting point of the resume tests)."""
    tmp = tmp_path_factory.mktemp("ddp")
    cfg = write_config(tmp)
    out = {"cfg": cfg, "tmp": tmp}
    for name, extra in (("w2", []), ("half", ["--set", "train.epochs=2"])):
        out[name] = tmp / name
        r = torchrun(["pretrain", "--data", "sim", "--config", str(cfg), "--out", str(out[name]), "--json", *extra])
        assert json.loads(r.stdout)["stage"] == "pretrain"  # one JSON object on stdout: rank 0's alone
    out["w1"] = tmp / "w1"
    assert main(["pretrain", "--data", "sim", "--config", str(cfg), "--set", "train.batch_size=32",
                 "--out", str(out["w1"]), "--json"]) == 0
    return out


@pytest.mark.slow
@needs_gloo
def test_two_processes_match_one_process_with_the_same_global_batch(runs, capsys) -> None:
    capsys.readouterr()
    s2, s1 = state(runs["w2"]), state(runs["w1"])
    assert s2["steps"] == s1["steps"] > 0  # the same number of global batches
    for k, tol in TOLERANCE.items():
        assert abs(s2["test"][k] - s1["test"][k]) <= tol, (k, s2["test"][k], s1["test"][k])
    # rank 0 alone writes: one line per epoch and the final line, not one per process
    lines = metric_lines(runs["w2"])
    assert [r.get("epoch") for r in lines] == [1, 2, 3, 4, None] and lines[-1]["final"]


@pytest.mark.slow
@needs_gloo
def test_every_test_user_is_evaluated_exactly_once(runs, tmp_path) -> None:
    _, data, _ = load_run(runs["w2"])
    n_test = len(data.split.test)
    s2 = state(runs["w2"])
    assert s2["test"]["n"] == n_test == 200
    # the gathered evaluation of the 2-process run equals one process evaluating its weights
    single = evaluate_run(runs["w2"], "test", device="cpu")
    for k, v in single.items():
        if isinstance(v, float) and np.isfinite(v):
            assert s2["test"][k] == pytest.approx(v, rel=1e-12, abs=1e-12), k

    # per user, under torchrun: shares are disjoint and cover every user; gathered ranks = 1 process
    script = tmp_path / "eval_shards.py"
    script.write_text(f"""
import json, sys
import numpy as np
from recalign.eval.evaluate import evaluate_targets
from recalign.stages.common import load_run
from recalign import distributed

cfg, data, model = load_run({str(runs["w2"])!r})
test = data.split.test
lo, hi = distributed.shard_batches(len(test), 16)
users = distributed.all_gather_array(test.users[lo:hi])
cfg.eval.batch_size = 16
m = evaluate_targets(model, data.seq, test, cfg.eval, cfg.data.high_reward, data.simulator, return_ranks=True)
if distributed.is_main():
    np.savez({str(tmp_path / "gathered.npz")!r}, users=users, ranks=m["_ranks"], values=m["_true_values"],
             own=np.array([hi - lo]))
""")
    torchrun([str(script)], module=False)
    g = np.load(tmp_path / "gathered.npz")
    assert len(g["users"]) == n_test and len(np.unique(g["users"])) == n_test
    assert 0 < int(g["own"][0]) < n_test  # both ranks had users to rank
    cfg, data, model = load_run(runs["w2"])
    from recalign.eval.evaluate import evaluate_targets

    cfg.eval.batch_size = 16
    ref = evaluate_targets(model, data.seq, data.split.test, cfg.eval, cfg.data.high_reward, data.simulator,
                           return_ranks=True)
    np.testing.assert_array_equal(g["ranks"], ref["_ranks"])
    np.testing.assert_array_equal(g["values"], ref["_true_values"])


@pytest.mark.slow
@needs_gloo
@pytest.mark.parametrize("method,extra", [
    ("exp_sft", []),
    ("ppo", ["--set", "posttrain.k_samples=4", "--set", "train.epochs=2"]),  # train.epochs: its reward model
])
def test_posttrain_under_torchrun(runs, method, extra) -> None:
    out = runs["tmp"] / f"post_{method}"
    torchrun(["posttrain", "--init", str(runs["w2"]), "--method", method, "--set", "posttrain.epochs=1",
              "--out", str(out), "--json", *extra])
    st = state(out)
    assert st["stage"] == "posttrain" and st["method"] == method and st["steps"] > 0
    assert np.isfinite(st["test"]["ndcg@10"]) and st["test"]["n"] == 200
    assert [r.get("epoch") for r in metric_lines(out)] == [1, None]
    if method == "ppo":
        assert state(out / "reward_model")["trained"]


@pytest.mark.slow
@needs_gloo
def test_resume_at_the_same_and_at_another_world_size(runs) -> None:
    """A 2-process checkpoint after 2 of 4 epochs, resumed (a) with 2 processes: the same weights
    as the uninterrupted 2-process run (the per-rank random streams are seeded per epoch); (b)
    with 1 process; and a 1-process checkpoint resumed with 2 processes (c). The state is
    world-size independent (epoch, step, optimizer, schedule, the shared numpy generator of the
    batch order); the remaining epochs take the new number of steps per epoch."""
    tmp, cfg = runs["tmp"], runs["cfg"]
    n_win = load_run(runs["w2"])[1].seq.n_windows
    per_epoch = {1: -(-n_win // 16), 2: -(-n_win // 32)}  # steps per epoch at batch 16 per process
    four = ["--set", "train.epochs=4", "--resume", "--json"]

    same = tmp / "resume_2_2"
    shutil.copytree(runs["half"], same)
    torchrun(["pretrain", "--data", "sim", "--config", str(cfg), "--out", str(same), *four])
    a, b = load_file(str(same / "model.safetensors")), load_file(str(runs["w2"] / "model.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert state(same)["steps"] == 4 * per_epoch[2]

    down = tmp / "resume_2_1"
    shutil.copytree(runs["half"], down)
    assert main(["pretrain", "--data", "sim", "--config", str(cfg), "--out", str(down), *four]) == 0
    st = state(down)
    assert st["epochs_run"] == 4 and st["steps"] == 2 * per_epoch[2] + 2 * per_epoch[1]
    assert np.isfinite(st["test"]["ndcg@10"])

    up = tmp / "resume_1_2"
    assert main(["pretrain", "--data", "sim", "--config", str(cfg), "--set", "train.epochs=2", "--out", str(up),
                 "--json"]) == 0
    torchrun(["pretrain", "--data", "sim", "--config", str(cfg), "--out", str(up), *four])
    st = state(up)
    assert st["epochs_run"] == 4 and st["steps"] == 2 * per_epoch[1] + 2 * per_epoch[2]
    assert [r.get("epoch") for r in metric_lines(up)] == [1, 2, None, 3, 4, None]


@pytest.mark.slow
@needs_gloo
def test_a_nan_on_one_process_stops_every_process(tmp_path) -> None:
    """The NaN guard looks at every process's flags: a loss that is NaN on rank 1 only stops
    both ranks at the same step (and neither waits forever for the other)."""
    script = tmp_path / "nan_on_rank1.py"
    script.write_text(f"""
from recalign.config import load_config
from recalign.data.prepared import prepare
from recalign.stages.common import build_model
from recalign import distributed
from recalign.train.loop import NextItemObjective, NonFiniteLoss, fit

cfg = load_config({str(write_config(tmp_path))!r}, ['train.device="cpu"'])
data = prepare(cfg)
model = build_model(cfg, data)
inner, calls = NextItemObjective(), [0]

def objective(m, batch):
    loss, diag = inner(m, batch)
    calls[0] += 1
    return (loss * float("nan") if distributed.rank() == 1 and calls[0] == 5 else loss), diag

try:
    fit(model, data.seq, objective, cfg.train, {str(tmp_path / "run")!r})
    msg = "finished"
except NonFiniteLoss as e:
    msg = str(e)
open({str(tmp_path)!r} + f"/rank{{distributed.rank()}}.txt", "w").write(msg)
""")
    torchrun([str(script)], module=False)
    msgs = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    assert msgs[0] == msgs[1] and msgs[0].startswith("loss is not finite at step 4 (epoch 1, batch 5")
