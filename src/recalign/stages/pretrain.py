"""Stage 1: next-item pretraining (behaviour cloning), the π0 every post-training starts from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recalign.config import RunConfig
from recalign.data.prepared import prepare
from recalign.errors import InputError
from recalign.stages.common import build_model, train_and_test
from recalign.train import checkpoint as ckpt
from recalign.train.loop import NextItemObjective
from recalign.train.runfolder import update_state, write_run_files


def pretrain(cfg: RunConfig, run_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    """Pretrain a policy on `cfg`'s data with early stopping on validation NDCG@10. Writes the
    run folder; returns its summary (best epoch, timings, best validation and test metrics)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        if (run_dir / "state.json").is_file():
            raise InputError("run folder exists; pass --resume to continue it or choose another --out", path=run_dir)
    data = prepare(cfg)
    model = build_model(cfg, data)
    write_run_files(run_dir, cfg, data.inter, {"stage": "pretrain"}, data_summary=data.summary)
    res, test = train_and_test(cfg, data, model, NextItemObjective(), run_dir, resume=resume)
    summary = {"stage": "pretrain", "best_epoch": res.best_epoch, "epochs_run": res.epochs_run, "steps": res.steps,
               "train_seconds": round(res.seconds, 2), "seconds_to_best": round(res.seconds_to_best, 2),
               "valid": res.best, "test": test}
    update_state(run_dir, **summary)
    ckpt.append_jsonl(run_dir / "metrics.jsonl", {"final": True, **{f"test/{k}": v for k, v in test.items()}})
    return summary
