"""The paper's protocol as presets (configs/paper/*-hstu.toml, configs/experiments/<dataset>.toml for
ml-1m, ml-20m and amazon-books-2018), run end to end on tiny synthetic files in each dataset's
real layout, since the real files cannot be downloaded here:

- ml-1m: `ml-1m/ratings.dat` (`UserID::MovieID::Rating::Timestamp`, whole stars) and `movies.dat`;
- ml-20m: `ml-20m/ratings.csv` (header `userId,movieId,rating,timestamp`, half stars);
- amazon-books-2018: `amazon-books-2018/Books.csv` (Amazon 2018 ratings-only CSV,
  `item,user,rating,timestamp`, no header, ASIN item ids).

Each file: 50 users × 20 items, 8-16 ratings per user, timestamp ties included. The pretraining
runs use the paper configs for 3 steps with one change: the model is shrunk to dim 32, 1 block
(`SMALL`; heads, max_len, head, negatives and optimizer stay), since ML-20M's 256 × 4 HSTU over
200-item windows took 10 s for the 3 steps and ML-1M's 64 × 2 about 4 s on a 2-core CPU (both
under 1 s shrunk). The `reproduce` runs use `--quick`, whose model sizes (quick-real.toml)
replace the presets'.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from recalign import cli, configlib
from recalign.config import RunConfig, load_config
from recalign.data.download import SOURCES
from recalign.data.loaders import DATASETS, load_dataset
from recalign.data.stats import dataset_stats
from recalign.experiments.presets import CONFIGS, dataset_presets, preset_config, read_preset

PAPER = Path(str(CONFIGS)) / "paper"
# dataset -> (pretraining epochs in the paper, METHOD.md; the paper's count of high-rating targets)
PROTOCOL = {"ml-1m": (30, 1530), "ml-20m": (12, 40667), "amazon-books-2018": (10, 424271)}
N_USERS, N_ITEMS = 50, 20
SMALL = ["model.dim=32", "model.layers=1"]  # the pretraining runs' only change to the paper configs


def _logs(seed: int, half_stars: bool) -> list[tuple[int, int, float, int]]:
    """(user, item, rating, timestamp) rows in file order: users in order, each user's rows in
    time order but for one swapped pair, every 4th user with a timestamp tie at the end."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(N_USERS):
        n = int(rng.integers(8, 17))
        items = rng.choice(N_ITEMS, n, replace=False)
        stars = rng.integers(1, 11, n) / 2 if half_stars else rng.integers(1, 6, n).astype(float)
        times = 978_300_000 + u * 1000 + np.arange(n) * 60
        if u % 4 == 0:
            times[-1] = times[-2]  # a tie: the file row decides which item is last
        order = np.arange(n)
        order[[1, 2]] = order[[2, 1]]  # the file need not be sorted by time
        rows += [(u + 1, int(items[j]) + 1, float(stars[j]), int(times[j])) for j in order]
    return rows


def _asin(item: int) -> str:
    return f"{item:09d}X"  # an ISBN-10 with check digit X: matches the ASIN pattern


def write_layouts(root: Path) -> dict[str, list[tuple[int, int, float, int]]]:
    """The three files (and ML-1M's movies.dat) under `root`, as the loaders look for them."""
    logs = {"ml-1m": _logs(1, False), "ml-20m": _logs(2, True), "amazon-books-2018": _logs(3, False)}
    (root / "ml-1m").mkdir()
    (root / "ml-1m" / "ratings.dat").write_text("".join(f"{u}::{i}::{int(r)}::{t}\n" for u, i, r, t in logs["ml-1m"]))
    (root / "ml-1m" / "movies.dat").write_text(
        "".join(f"{i}::Movie {i} ({1990 + i})::Drama|Comedy\n" for i in range(1, N_ITEMS + 1)))
    (root / "ml-20m").mkdir()
    (root / "ml-20m" / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r:.1f},{t}\n" for u, i, r, t in logs["ml-20m"]))
    src = SOURCES["amazon-books-2018"]
    (root / src.folder).mkdir()
    (root / src.folder / src.required[0]).write_text(
        "".join(f"{_asin(i)},A{u:013d},{r:.1f},{t}\n" for u, i, r, t in logs["amazon-books-2018"]))
    return logs


@pytest.fixture(scope="module")
def paper_data(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("paper-data")
    return root, write_layouts(root)


def high_rating_targets(rows: list[tuple[int, int, float, int]], threshold: float = 4.5) -> int:
    """Users whose last rating, by (timestamp, file row), is >= threshold (all have >= 3)."""
    last: dict[int, tuple[int, int, float]] = {}
    for row, (u, _, r, t) in enumerate(rows):
        if u not in last or (t, row) > last[u][:2]:
            last[u] = (t, row, r)
    return sum(r >= threshold for _, _, r in last.values())


def test_the_names_and_files_agree_with_the_downloads():
    """Every paper dataset is a loader name and a download source, and the loader reads the file
    where the download leaves it (write_layouts uses the download's folder and file)."""
    for ds in PROTOCOL:
        assert ds in DATASETS and ds in SOURCES and ds in dataset_presets()
    assert (SOURCES["amazon-books-2018"].folder, SOURCES["amazon-books-2018"].required) == (
        "amazon-books-2018", ("Books.csv",))


@pytest.mark.parametrize("ds", PROTOCOL)
def test_the_loaders_read_each_layout(paper_data, ds):
    root, logs = paper_data
    inter = load_dataset(ds, root)
    rows = logs[ds]
    assert (inter.n_users, len(inter)) == (N_USERS, len(rows))
    assert inter.n_items == len({i for _, i, _, _ in rows})
    assert sorted(inter.reward.tolist()) == sorted(r for _, _, r, _ in rows)
    assert inter.meta["dataset"] == ds


@pytest.mark.parametrize("ds", PROTOCOL)
def test_data_stats_counts_the_high_rating_targets(paper_data, ds, capsys):
    root, logs = paper_data
    assert cli.main(["data", "stats", ds, "--data-dir", str(root), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["high_reward_test_targets"] == high_rating_targets(logs[ds]) > 0
    assert s["high_reward_threshold"] == 4.5 and s["loo_test_targets"] == N_USERS
    assert s["data_summary"]["test_targets"] == N_USERS
    assert cli.main(["data", "stats", ds, "--data-dir", str(root)]) == 0
    text = capsys.readouterr().out
    line = rf"high-reward test targets \(reward >= 4\.5\)\s+{high_rating_targets(logs[ds])} \("
    assert re.search(line, text), text


def test_high_reward_test_targets_follow_the_threshold_and_the_minimum(paper_data):
    """`dataset_stats` counts the users the split keeps (`min_user_interactions`) and the
    threshold it is given (`data.high_reward`)."""
    root, logs = paper_data
    rows = logs["ml-20m"]
    inter = load_dataset("ml-20m", root)
    lengths = np.bincount([u for u, _, _, _ in rows])
    kept = [r for r in rows if lengths[r[0]] >= 13]
    s = dataset_stats(inter, high_reward=4.0, min_user_interactions=13)
    assert s["loo_test_targets"] == int((lengths >= 13).sum()) < N_USERS
    assert s["high_reward_test_targets"] == s["loo_high_reward_targets"] == high_rating_targets(kept, 4.0)
    assert s["high_reward_threshold"] == 4.0


@pytest.mark.parametrize("ds", PROTOCOL)
def test_each_paper_config_states_the_protocol(ds):
    path = PAPER / f"{ds}-hstu.toml"
    text = path.read_text()
    cfg = load_config(str(path))
    epochs, targets = PROTOCOL[ds]
    assert (cfg.data.name, cfg.data.split, cfg.data.high_reward, cfg.model.name) == (ds, "loo", 4.5, "hstu")
    assert cfg.train.epochs == epochs and cfg.train.patience >= epochs  # the paper's budget, run in full
    assert cfg.eval.mask_seen
    # the comment names its source, the paper's target count, and how to produce the missing metrics
    assert "METHOD.md" in text and f"{targets:,}" in text
    assert "Expected metrics: none yet" in text and f"recalign data download {ds}" in text
    assert f"recalign pretrain --config configs/paper/{ds}-hstu.toml" in text
    assert not any(line.startswith("#:") for line in text.splitlines())  # nothing measured, nothing claimed
    large = ds == "amazon-books-2018"
    assert cfg.model.head == ("sampled" if large else "full")
    assert cfg.train.optimizer == ("sparse_adam" if large else "adamw")


@pytest.mark.parametrize("ds", PROTOCOL)
def test_each_preset_builds_on_its_paper_config(ds):
    base, own = read_preset(f"experiments/{ds}.toml")
    assert base == configlib.load_toml(str(PAPER / f"{ds}-hstu.toml"))
    assert "model" not in own and "data" not in own and {"posttrain", "eval"} <= set(own)
    cfg = preset_config(ds)
    frozen = load_config(str(PAPER / f"{ds}-hstu.toml"), base=configlib.update(RunConfig(), {"data": {"name": ds}}))
    assert cfg.model == frozen.model and cfg.data == frozen.data
    assert cfg.train.epochs == frozen.train.epochs == PROTOCOL[ds][0]
    # amazon: reproduce trains reward models and runs ppo/dpo, which refuse SparseAdam
    assert cfg.train.optimizer == "adamw"


@pytest.mark.parametrize("ds", PROTOCOL)
def test_pretrain_runs_each_paper_config(paper_data, ds, tmp_path, capsys):
    root, _ = paper_data
    argv = ["pretrain", "--config", str(PAPER / f"{ds}-hstu.toml"), "--data-dir", str(root),
            "--set", "train.epochs=1", "--set", "train.max_steps=3", "--set", "train.device=cpu",
            "--set", "train.num_threads=1", "--set", "train.progress=false", "--out", str(tmp_path / "run"), "--json"]
    for kv in SMALL + ["train.batch_size=16"]:  # 16: 4 batches of the 50 users, so 3 steps in the epoch
        argv += ["--set", kv]
    assert cli.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["steps"] == 3 and {"hr@10", "ndcg@10", "high/ndcg@10"} <= set(out["test"])
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["data_summary"]["test_targets"] == N_USERS
    ran = configlib.load_toml(str(tmp_path / "run" / "config.toml"))
    paper = configlib.load_toml(str(PAPER / f"{ds}-hstu.toml"))
    for section in ("data", "model", "train"):  # the paper config ran, but for the overrides above
        changed = {k for k, v in paper[section].items() if ran[section][k] != v}
        assert changed <= {"dim", "layers", "epochs", "batch_size"}, (section, changed)


@pytest.mark.parametrize("ds", PROTOCOL)
def test_reproduce_quick_runs_each_preset(paper_data, ds, tmp_path, capsys):
    root, _ = paper_data
    argv = ["reproduce", "--quick", "--datasets", ds, "--seeds", "1", "--no-judges", "--methods", "sft,exp_sft",
            "--lams", "1", "--noise-scales", "", "--data-dir", str(root), "--out", str(tmp_path / "rep"), "--json"]
    assert cli.main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert list(res["datasets"]) == [ds]
    cfg = res["datasets"][ds]["config"]
    assert cfg["data"]["high_reward"] == 4.5 and cfg["model"]["name"] == "hstu"
    assert cfg["model"]["head"] == ("sampled" if ds == "amazon-books-2018" else "full")
    assert (tmp_path / "rep" / "report.md").is_file()
