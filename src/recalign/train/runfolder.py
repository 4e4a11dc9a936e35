"""Run-folder I/O: what every stage writes beside its checkpoint and reads back.

A run folder holds `config.toml` (the resolved configuration), `state.json` (stage, seed, git
revision, data fingerprint, sizes, then the stage's summary), the id maps `user_ids.json` and
`item_ids.json`, `model.safetensors`, `metrics.jsonl` and the resume checkpoint (see
`checkpoint.py`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from recalign import configlib, distributed
from recalign.config import RunConfig, config_from_dict
from recalign.data.prepared import fingerprint
from recalign.data.schema import Interactions
from recalign.errors import InputError
from recalign.train import checkpoint as ckpt

# What older versions wrote into config.toml and this one reads differently: a split key's value
# is copied to its new key when that is absent. (`posttrain.clip_eps`, briefly retired while ppo
# made one update per rollout, is back with `posttrain.ppo_epochs`: an old folder's value is read.)
SPLIT_KEYS = {"posttrain.beta": "posttrain.kl_coef"}  # beta was dpo's temperature and ppo's KL coefficient


def write_run_files(run_dir: Path, cfg: RunConfig, inter: Interactions,
                    extra_state: dict[str, Any] | None = None, data_summary: dict[str, Any] | None = None) -> None:
    """Start a run folder: resolved config, id maps, `state.json`. Under torchrun every rank calls
    it and rank 0 writes; the barriers let every rank finish its checks of the folder (does it
    exist already?) before anything is written, and find the files complete afterwards.
    `data_summary` (`Prepared.summary`: users and rows dropped, duplicates, repeat targets) goes
    into `state.json` under that name; `n_users` there counts every user of the table."""
    distributed.barrier()
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt.atomic_write_text(run_dir / "config.toml", configlib.to_toml(cfg))
    for name, ids in (("user_ids.json", inter.user_ids), ("item_ids.json", inter.item_ids)):
        ckpt.atomic_write_text(run_dir / name, json.dumps([x.item() if hasattr(x, "item") else x for x in ids]))
    state = {"seed": cfg.train.seed, "git_revision": ckpt.git_revision(), "data_fingerprint": fingerprint(inter),
             "n_users": inter.n_users, "n_items": inter.n_items, "interactions": len(inter)}
    if data_summary is not None:
        state["data_summary"] = data_summary
    state.update(extra_state or {})
    ckpt.atomic_write_text(run_dir / "state.json", json.dumps(state, indent=2))
    distributed.barrier()


def read_state(run_dir: str | Path) -> dict[str, Any]:
    """`state.json` of a run folder ({} when there is none)."""
    p = Path(run_dir) / "state.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def update_state(run_dir: str | Path, **fields: Any) -> dict[str, Any]:
    """Merge `fields` into the run's `state.json` (atomically) and return the new state."""
    state = read_state(run_dir)
    state.update(fields)
    ckpt.atomic_write_text(Path(run_dir) / "state.json", json.dumps(state, indent=2, default=float))
    return state


def read_config(run_dir: str | Path) -> RunConfig:
    """The resolved configuration a run folder was trained with (retired keys migrated)."""
    run_dir = Path(run_dir)
    path = run_dir / "config.toml"
    if not path.is_file():
        raise InputError("not a recalign run folder (config.toml missing)", path=run_dir)
    return config_from_dict(migrate_old_keys(configlib.load_toml(path)))


def migrate_old_keys(values: dict[str, Any]) -> dict[str, Any]:
    """A nested config dict from an older run folder, in today's keys (`SPLIT_KEYS`)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    for old, new in SPLIT_KEYS.items():
        (s_old, k_old), (s_new, k_new) = old.split("."), new.split(".")
        if k_old in out.get(s_old, {}):
            out.setdefault(s_new, {}).setdefault(k_new, out[s_old][k_old])
    if "model" in out and "seen_bias" not in out["model"]:  # written before the seen logit existed
        out["model"]["seen_bias"] = False
    return out


def warn_if_data_changed(run_dir: Path, state: dict[str, Any], inter: Interactions) -> None:
    """A warning on stderr when `inter` differs from the data the run was trained on."""
    fp = state.get("data_fingerprint")
    if fp and fp != fingerprint(inter):
        print(f"recalign: warning: {run_dir} was trained on other data than these (its data changed)",
              file=sys.stderr)


def run_status(run_dir: str | Path) -> dict[str, Any]:
    """Whether a run finished: `{"stage", "finished", "epochs_done", "epochs_planned",
    "has_weights"}` (epochs unknown = None, for folders written before they were recorded)."""
    run_dir = Path(run_dir)
    state = read_state(run_dir)
    done = "test" in state or bool(state.get("trained"))
    return {"stage": state.get("stage"), "finished": bool(state.get("finished", done)),
            "epochs_done": state.get("epochs_done"), "epochs_planned": state.get("epochs_planned"),
            "has_weights": (run_dir / "model.safetensors").is_file()}


def resume_command(run_dir: str | Path) -> str:
    """The command that continues an interrupted run folder."""
    run_dir = Path(run_dir)
    state = read_state(run_dir)
    if state.get("stage") == "posttrain":
        return (f"recalign posttrain --init {state.get('init', 'INIT')} --method {state.get('method', 'METHOD')} "
                f"--out {run_dir} --resume")
    return f"recalign pretrain --config {run_dir / 'config.toml'} --out {run_dir} --resume"


def check_finished(run_dir: str | Path) -> dict[str, Any]:
    """A run's status; refuses a folder without weights ("unfinished run") and warns on stderr
    when the run stopped before its planned end (its last saved weights are used)."""
    status = run_status(run_dir)
    if not status["has_weights"]:
        raise InputError(f"unfinished run: no weights saved yet (it stopped before its first epoch ended); "
                         f"continue it with: {resume_command(run_dir)}", path=Path(run_dir))
    if not status["finished"]:
        done, planned = status["epochs_done"], status["epochs_planned"]
        when = f" after {done} of {planned} epochs" if done is not None and planned is not None else ""
        print(f"recalign: warning: {run_dir} is an unfinished run (stopped{when}): these are its last saved "
              f"weights; continue it with: {resume_command(run_dir)}", file=sys.stderr)
    return status
