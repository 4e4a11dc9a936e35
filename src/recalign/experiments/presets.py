"""Recommended starting settings per dataset for `demo`, `sweep` and `reproduce`.

The settings are TOML files shipped inside the package, in `src/recalign/configs/` (package data,
so a wheel carries them; a checkout's top-level `configs/` is a link to that folder):

    configs/experiments/sim.toml              the demo's world: small enough to simulate, pretrain
                                              and post-train five methods in a minute or two on 2
                                              CPU cores
    configs/experiments/ml-100k.toml          the frozen pretraining configs (their `base`) with a
    configs/experiments/ml-latest-small.toml  CPU budget on epochs, plus post-training and judges
    configs/experiments/common.toml           every dataset: one torch thread, no progress bar
    configs/experiments/quick-sim.toml        `--quick` for `sim`  } CI and smoke tests: they show
    configs/experiments/quick-real.toml       `--quick` otherwise  } the pipeline runs, not the science
    configs/pretrain/<dataset>-<model>.toml   frozen reference configs, with their expected metrics
    configs/experiments/{ml-1m,ml-20m,amazon-books-2018}.toml   the paper's protocol: they build on
    configs/paper/<dataset>-hstu.toml          (HSTU, 30 / 12 / 10 epochs; no expected metrics yet)
    configs/worlds/<name>.toml                named simulator worlds (`--world`): a `[sim]` table
                                              each, with the reason for every value (clean,
                                              ratings, watch-time, popular)

`preset_config` applies, each on top of the one before (where two set the same key, the later wins):

1. the defaults of the config dataclasses (`recalign.config`), with `data.name` = the dataset;
2. the dataset's preset, `configs/experiments/<dataset>.toml` (none for a file path or a name
   without one); a preset's top-level `base = "dir/file.toml"` (relative to `configs/`) names a
   file applied first, so a preset states only what it changes;
   then, with `world`, the `[sim]` table of `configs/worlds/<world>.toml`;
3. `common.toml`;
4. with `quick`: `quick-sim.toml` for `sim`, `quick-real.toml` for any other dataset;
5. `data.data_dir` = `data_dir`, when given;
6. the user's config file (`--config`);
7. the user's overrides (`--set`, which always win).
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from recalign import configlib
from recalign.config import RunConfig, load_config
from recalign.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIGS = resources.files("recalign") / "configs"  # a Traversable: works from a checkout and a wheel
EXPERIMENTS = CONFIGS / "experiments"
COMMON = "common.toml"
QUICK = {"sim": "quick-sim.toml", "real": "quick-real.toml"}
WORLDS = CONFIGS / "worlds"
GRIDS = "contest/grids.toml"  # the contest's equal tuning grids (contest.load_grid)


def grid_names() -> list[str]:
    """The grids of the packaged `configs/contest/grids.toml` (the `--grid` choices)."""
    (values,) = read_preset(GRIDS)
    return list(values)


def read_preset(relpath: str, _seen: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The settings of the packaged config file `relpath` (relative to `configs/`), as the list of
    tables to apply in order: its `base` (recursively) first, then its own values."""
    if relpath in _seen:
        raise InputError(f"preset `base` loop: {' -> '.join(_seen + (relpath,))}", path=CONFIGS / relpath)
    res = CONFIGS.joinpath(*relpath.split("/"))
    if not res.is_file():
        raise InputError("preset file not found", path=res)
    try:
        values = tomllib.loads(res.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"not valid TOML: {e}", path=res) from None
    base = values.pop("base", None)
    if base is None:
        return [values]
    if not isinstance(base, str):
        raise InputError(f"`base` must be a path relative to configs/; got {base!r}", path=res)
    return read_preset(base, _seen + (relpath,)) + [values]


def dataset_presets() -> list[str]:
    """Datasets with a preset: every `configs/experiments/*.toml` but the shared ones."""
    shared = {COMMON, *QUICK.values()}
    return sorted(p.name.removesuffix(".toml") for p in EXPERIMENTS.iterdir()
                  if p.name.endswith(".toml") and p.name not in shared)


def world_names() -> list[str]:
    """The named worlds: every `configs/worlds/*.toml`."""
    return sorted(p.name.removesuffix(".toml") for p in WORLDS.iterdir() if p.name.endswith(".toml"))


def read_world(name: str) -> dict[str, Any]:
    """The `sim` values of the named world `configs/worlds/<name>.toml` (its `[sim]` table, the
    only one a world may have); an unknown name lists the valid ones."""
    names = world_names()
    if name not in names:
        raise InputError(f"unknown world {name!r}; valid worlds: {', '.join(names)}")
    (values,) = read_preset(f"worlds/{name}.toml")
    if set(values) != {"sim"} or not isinstance(values["sim"], dict):
        raise InputError("a world file holds one [sim] table and nothing else", path=WORLDS / f"{name}.toml")
    return values["sim"]


def world_overrides(world: str | None, quick: bool = False) -> list[str]:
    """The named world as `--set sim.KEY=VALUE` overrides, for callers that take overrides only
    (`demo`, `reproduce`). Placed before the user's `--set`, they give for `sim` the config that
    `preset_config(..., world=world)` gives: the keys the quick variant sets (applied after the
    world there) are left out with `quick`. None: no overrides."""
    if world is None:
        return []
    values = read_world(world)
    later = read_preset(f"experiments/{QUICK['sim']}")[-1].get("sim", {}) if quick else {}
    return [f"sim.{k}={json.dumps(v)}" for k, v in values.items() if k not in later]


def preset_config(dataset: str, quick: bool = False, overrides: list[str] | None = None,
                  data_dir: str | None = None, config_file: str | Path | None = None,
                  world: str | None = None) -> RunConfig:
    """Defaults, then the dataset's preset (none for a file path or another name), the named
    `world`'s `sim` values, common.toml, the quick variant, `data_dir`, `config_file`, then
    `overrides` (`--set`); see the module docstring for the files."""
    cfg = configlib.update(RunConfig(), {"data": {"name": dataset}})
    files = [f"experiments/{dataset}.toml"] if dataset in dataset_presets() else []
    tables = [values for f in files for values in read_preset(f)]
    if world is not None:
        if dataset != "sim":
            raise InputError(f"world {world!r} sets the simulator's world; the dataset is {dataset!r}, not sim")
        tables.append({"sim": read_world(world)})
    tables += read_preset(f"experiments/{COMMON}")
    if quick:
        tables += read_preset(f"experiments/{QUICK['sim' if dataset == 'sim' else 'real']}")
    for values in tables:
        cfg = configlib.update(cfg, values)
    if data_dir:
        cfg = configlib.update(cfg, {"data": {"data_dir": str(data_dir)}})
    return load_config(config_file, overrides, base=cfg)
