"""RecBole 1.2.1's SASRec on ml-100k under the peer protocol; run inside RecBole's own virtual
environment (benchmarks/.peer-venv) by benchmarks/peer_recbole.py, never imported by recalign.

    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 benchmarks/.peer-venv/bin/python benchmarks/_recbole_side.py \
        --out result.json [--seed 2020] [--epochs 30] [--threads 2] [--workdir DIR]

Protocol (shared/PEERS.md): hidden 64, 2 layers, 2 heads, inner 256, dropout 0.2/0.2, max length
50, CE loss over the full catalog (no negative sampling), Adam lr 1e-3, batch 256 prefixes,
chronological leave-one-out ({'LS': 'valid_and_test'}, order TO), full ranking (RecBole does not
mask already-seen items for sequential models), model selection and early stopping (patience 10)
on validation NDCG@10, test metrics of the best model.

Timings (time.perf_counter, seconds from the start of `Trainer.fit`, so dataset loading, the
split and model construction are excluded):
- `train_end_s` of an epoch: when its training pass ended (just before its validation); earlier
  validations are included. This matches recalign's per-epoch `seconds` in metrics.jsonl.
- `valid_end_s`: when its validation pass ended.
- `seconds_to_best`: `train_end_s` of the epoch that RecBole selected (the first best one).
- `total_seconds`: the whole `fit` (every epoch with its validation, and checkpoint writes).

One deviation from RecBole's defaults, for precision only: `metric_decimal_place` is 6 instead of
4 (RecBole rounds every metric, including the one early stopping compares).

Writes one JSON object to --out; RecBole's own log goes to <workdir>/log/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--epochs", type=int, default=30, help="cap on training epochs (early stopping may end sooner)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--workdir", default=None, help="RecBole writes log/ and saved/ here (default: beside --out)")
    ap.add_argument("--patience", type=int, default=10, help="RecBole stopping_step")
    args = ap.parse_args(argv)
    sys.argv = sys.argv[:1]  # RecBole's Config would read `--key=value` arguments as its own settings

    out_path = Path(args.out).resolve()
    workdir = Path(args.workdir or out_path.parent / f"recbole-work-seed{args.seed}").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)  # RecBole writes ./log/ relative to the working directory
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)

    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_logger, init_seed

    metrics_k = [10, 50]
    config_dict = {
        "seed": args.seed,
        "reproducibility": True,
        "use_gpu": torch.cuda.is_available(),
        "checkpoint_dir": str(workdir / "saved"),
        "show_progress": False,
        "log_wandb": False,
        # model
        "hidden_size": 64,
        "n_layers": 2,
        "n_heads": 2,
        "inner_size": 256,
        "hidden_dropout_prob": 0.2,
        "attn_dropout_prob": 0.2,
        "hidden_act": "gelu",
        "MAX_ITEM_LIST_LENGTH": 50,
        "loss_type": "CE",
        # training
        "train_neg_sample_args": None,
        "learner": "adam",
        "learning_rate": 1e-3,
        "train_batch_size": 256,
        "epochs": args.epochs,
        "stopping_step": args.patience,
        "eval_step": 1,
        # evaluation
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["Hit", "NDCG", "MRR"],
        "topk": metrics_k,
        "valid_metric": "NDCG@10",
        "valid_metric_bigger": True,
        "eval_batch_size": 4096,
        "metric_decimal_place": 6,
    }
    t_start = time.perf_counter()
    config = Config(model="SASRec", dataset="ml-100k", config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    if args.threads > 0:  # init_seed/init_logger do not touch threads, but be explicit after imports
        torch.set_num_threads(args.threads)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = SASRec(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)
    setup_seconds = time.perf_counter() - t_start

    epochs: list[dict] = []
    clock = {"t0": 0.0, "train_start": 0.0}
    orig_train_epoch = trainer._train_epoch
    orig_valid_epoch = trainer._valid_epoch

    def train_epoch(train_data, epoch_idx, *a, **kw):
        clock["train_start"] = time.perf_counter()
        loss = orig_train_epoch(train_data, epoch_idx, *a, **kw)
        now = time.perf_counter()
        epochs.append({"epoch": epoch_idx + 1,
                       "train_loss": float(sum(loss) if isinstance(loss, tuple) else loss),
                       "train_seconds": round(now - clock["train_start"], 3),
                       "train_end_s": round(now - clock["t0"], 3)})
        return loss

    def valid_epoch(valid_data, *a, **kw):
        t = time.perf_counter()
        score, result = orig_valid_epoch(valid_data, *a, **kw)
        now = time.perf_counter()
        rec = epochs[-1]
        rec["valid_seconds"] = round(now - t, 3)
        rec["valid_end_s"] = round(now - clock["t0"], 3)
        rec["valid_score"] = float(score)
        rec.update({f"valid/{k}": float(v) for k, v in result.items()})
        print(f"recbole-side: epoch {rec['epoch']} loss {rec['train_loss']:.4f} "
              f"valid ndcg@10 {score:.4f} t={rec['valid_end_s']:.1f}s", file=sys.stderr, flush=True)
        return score, result

    trainer._train_epoch = train_epoch
    trainer._valid_epoch = valid_epoch

    clock["t0"] = time.perf_counter()
    best_score, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    total_seconds = time.perf_counter() - clock["t0"]
    t = time.perf_counter()
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    test_seconds = time.perf_counter() - t

    # RecBole's early stopping keeps the first epoch with a strictly better score
    scored = [e for e in epochs if "valid_score" in e]
    best_epoch = None
    for e in scored:
        if best_epoch is None or e["valid_score"] > best_epoch["valid_score"]:
            best_epoch = e
    stopped_early = len(epochs) < args.epochs
    result = {
        "peer": "RecBole",
        "recbole_version": __import__("recbole").__version__,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(config["device"]),
        "seed": args.seed,
        "epochs_cap": args.epochs,
        "epochs_run": len(epochs),
        "stopped_early": stopped_early,
        "n_train_prefixes": len(train_data._dataset),
        "batches_per_epoch": len(train_data),
        "n_users_valid": int(valid_data._dataset.user_num - 1),
        "setup_seconds": round(setup_seconds, 3),
        "total_seconds": round(total_seconds, 3),
        "test_eval_seconds": round(test_seconds, 3),
        "seconds_per_epoch": round(total_seconds / max(1, len(epochs)), 3),
        "best_epoch": best_epoch["epoch"] if best_epoch else None,
        "best_valid_ndcg@10": float(best_score),
        "seconds_to_best": best_epoch["train_end_s"] if best_epoch else None,
        "seconds_to_best_incl_valid": best_epoch["valid_end_s"] if best_epoch else None,
        "best_valid": {k: float(v) for k, v in (best_valid or {}).items()},
        "test": {k: float(v) for k, v in test_result.items()},
        "epochs": epochs,
        "timing_note": "seconds from the start of Trainer.fit (dataset loading excluded); seconds_to_best = end of "
                       "the training pass of the best epoch (earlier validations included)",
        "config": {k: (v if isinstance(v, (int, float, str, bool, type(None), list, dict)) else str(v))
                   for k, v in config_dict.items()},
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(out_path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out_path)
    return result


if __name__ == "__main__":
    main()
