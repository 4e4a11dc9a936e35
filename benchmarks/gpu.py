"""GPU throughput of recalign's models (written for one H200; runs on CPU with tiny shapes).

    python benchmarks/gpu.py                    # H200: every case; no case starts after 360 s
    python benchmarks/gpu.py --quick            # H200: fewer timed epochs and cases; none starts after 180 s
    python benchmarks/gpu.py --device cpu --quick   # tiny shapes on CPU: tests the code paths only

Cases (each one runs in its own try/except: a failure is recorded with its error and the run
goes on; a case that would start after `--budget-s` seconds is recorded as skipped):

1. `raw`: SASRec and HSTU at a small (64x2) and a large (256x8) size, one ML-1M-shaped epoch
   (6,040 random token sequences of length 200 over 3,416 items, batch 128, full softmax,
   dropout 0.2, bf16 autocast on GPU, fused AdamW, grad clip 1.0: the loop's own settings) with
   the project's `NextItemObjective` and `Recommender`; eager, then with `torch.compile` of the
   backbone. Reports seconds per epoch (median of the timed epochs, after a warm-up epoch),
   tokens/s, achieved TFLOP/s against the peak (`--peak-tflops`, 790 for the H200's bf16 dense)
   and peak GPU memory (`torch.cuda.max_memory_allocated`).
2. `sampled_1m`: a 1,000,000-item catalog with the sampled-softmax head (8,192 shared uniform
   negatives + in-batch, logQ-corrected), same sequence shape: seconds per step.
3. `fit`: `recalign.train.loop.fit` on that ML-1M shape (random interactions through
   `Interactions`, the leave-one-out split and `SequenceData`, or the simulator with
   `--fit-data sim`) for a few epochs with full-ranking validation every epoch
   (`evaluate_targets` on all 6,040 users): training seconds per epoch against the raw epoch of
   the same model, plus validation and checkpoint seconds.

FLOP count (matmuls only, training = 3 x forward, every position of the [B, L] batch counted):

    per token and layer   SASRec: 12 D^2 (qkv 6 D^2, out 2 D^2, FFN 2 x 2 D^2)
                          HSTU:   10 D^2 (f1 D->4D 8 D^2, f2 2 D^2)
                          both:   + 4 L D (Q K^T and A V over all L keys, as a masked dense
                                  kernel computes them; a causal-only count would be half)
    head, per target      2 D C, C = N + 1 (full softmax) or M + K (sampled: M in-batch
                          targets + K shared negatives)
    step FLOPs = 3 (B L layers (c D^2 + 4 L D) + M 2 D C)

Results go to `$OUT/gpu_results.json` when `$OUT` is set (rewritten after every case, so a run
that is killed keeps what it measured), else to stdout as one JSON object; progress on stderr.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from recalign.config import EvalConfig, TrainConfig
from recalign.data.sequences import SeqBatch, SequenceData
from recalign.models.config import ModelConfig
from recalign.models.recommender import Recommender
from recalign.train.loop import NextItemObjective, fit

T_START = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T_START:6.1f}s] {msg}", file=sys.stderr, flush=True)


def parse_size(s: str) -> tuple[int, int]:
    d, n = s.lower().split("x")
    return int(d), int(n)


# ---------------------------------------------------------------------------------- helpers
class Dev:
    def __init__(self, name: str):
        self.device = torch.device(name)
        self.cuda = self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else nullcontext()

    def reset_peak(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gb(self) -> float | None:
        if self.cuda:
            return round(torch.cuda.max_memory_allocated(self.device) / 2**30, 3)
        return None


def peak_rss_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)


def heads_for(dim: int) -> int:
    return max(1, dim // 64) if dim >= 128 else 2  # head size 64 for large models, 2 heads for small


def step_flops(name: str, dim: int, layers: int, B: int, L: int, M: int, C: int) -> float:
    c = 12 if name == "sasrec" else 10
    fwd = B * L * layers * (c * dim * dim + 4 * L * dim) + M * 2 * dim * C
    return 3.0 * fwd


def random_sequences(n_seq: int, L: int, n_items: int, device: torch.device, seed: int = 0):
    """`[n_seq, L + 1]` tokens in 1..n_items and increasing timestamps (random gaps, seconds)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    tok = torch.randint(1, n_items + 1, (n_seq, L + 1), generator=g)
    gaps = torch.randint(1, 7 * 86400, (n_seq, L + 1), generator=g)
    ts = 1_600_000_000 + gaps.cumsum(1)
    return tok.to(device), ts.to(device)


def batches(tok: torch.Tensor, ts: torch.Tensor, B: int):
    n = tok.shape[0]
    for lo in range(0, n, B):
        t, s = tok[lo:lo + B], ts[lo:lo + B]
        b = t.shape[0]
        yield SeqBatch(items=t[:, :-1], timestamps=s[:, :-1], targets=t[:, 1:],
                       rewards=torch.ones(b, t.shape[1] - 1, device=t.device),
                       target_rows=torch.zeros(b, t.shape[1] - 1, dtype=torch.long, device=t.device),
                       users=torch.arange(lo, lo + b, device=t.device))


class CompiledObjective:
    """NextItemObjective with the backbone run through `torch.compile` (its forward is `encode`)."""

    def __init__(self, model: Recommender, mode: str | None):
        self.enc = torch.compile(model.backbone, mode=mode)

    def __call__(self, model, batch):
        hidden = self.enc(batch.items, batch.timestamps)
        weights = (batch.targets > 0).to(hidden.dtype)
        return model.next_item_loss(hidden, batch.targets, weights, batch.items)


def make_model(name: str, dim: int, layers: int, L: int, n_items: int, head: str, negatives: int,
               dev: Dev, seed: int = 0) -> Recommender:
    torch.manual_seed(seed)
    cfg = ModelConfig(name=name, dim=dim, layers=layers, heads=heads_for(dim), max_len=L, dropout=0.2,
                      head=head, num_negatives=negatives)
    counts = np.ones(n_items + 1)  # as the pipeline passes training counts: uniform here
    return Recommender(cfg, n_items, counts).to(dev.device)


def train_steps(model, objective, batch_iter, dev: Dev, opt) -> tuple[int, float]:
    """The loop's step (autocast, backward, clip 1.0, AdamW, zero_grad) over `batch_iter`;
    returns (steps, seconds) with a device sync at both ends only."""
    dev.sync()
    t0 = time.perf_counter()
    n = 0
    for batch in batch_iter:
        with dev.autocast():
            loss, _ = objective(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        n += 1
    last = float(loss.detach())  # syncs
    dev.sync()
    if not math.isfinite(last):
        raise FloatingPointError(f"loss is not finite: {last}")
    return n, time.perf_counter() - t0


# ---------------------------------------------------------------------------------- cases
def case_raw(args, dev: Dev, name: str, size: str, compiled: bool) -> dict:
    dim, layers = parse_size(size)
    L, N, S, B = args.seq_len, args.n_items, args.n_seq, args.batch_size
    dev.reset_peak()
    model = make_model(name, dim, layers, L, N, "full", 0, dev)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=dev.cuda)
    objective = CompiledObjective(model, args.compile_mode) if compiled else NextItemObjective()
    tok, ts = random_sequences(S, L, N, dev.device)
    t0 = time.perf_counter()
    _, warm_s = train_steps(model, objective, batches(tok, ts, B), dev, opt)  # warm-up (and compile)
    epochs = []
    for _ in range(args.epochs):
        _, s = train_steps(model, objective, batches(tok, ts, B), dev, opt)
        epochs.append(s)
    ep = statistics.median(epochs)
    # FLOPs of one epoch: exact batch sizes, every position has a target (random sequences)
    fl = sum(step_flops(name, dim, layers, b, L, b * L, N + 1) for b in
             [min(B, S - lo) for lo in range(0, S, B)])
    out = {"case": "raw", "model": name, "size": size, "heads": heads_for(dim), "compiled": compiled,
           "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
           "epoch_s": round(ep, 4), "epoch_s_all": [round(x, 4) for x in epochs],
           "warmup_epoch_s": round(warm_s, 2), "tokens_per_s": round(S * L / ep),
           "tflop_per_epoch": round(fl / 1e12, 4), "tflops": round(fl / ep / 1e12, 4),
           "pct_of_peak": round(100 * fl / ep / 1e12 / args.peak_tflops, 3),
           "peak_gpu_gb": dev.peak_gb(), "setup_plus_warmup_s": round(time.perf_counter() - t0 - sum(epochs), 2)}
    del model, opt, objective
    return out


def case_sampled(args, dev: Dev, name: str, size: str, compiled: bool = False) -> dict:
    dim, layers = parse_size(size)
    L, N, B, K = args.seq_len, args.big_items, args.batch_size, args.negatives
    dev.reset_peak()
    model = make_model(name, dim, layers, L, N, "sampled", K, dev)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=dev.cuda)
    objective = CompiledObjective(model, args.compile_mode) if compiled else NextItemObjective()
    n_seq = B * (args.sampled_steps + args.sampled_warmup)
    tok, ts = random_sequences(n_seq, L, N, dev.device, seed=1)
    it = batches(tok, ts, B)
    warm = [next(it) for _ in range(args.sampled_warmup)]
    _, warm_s = train_steps(model, objective, warm, dev, opt)
    steps, s = train_steps(model, objective, it, dev, opt)
    M = B * L
    fl = step_flops(name, dim, layers, B, L, M, M + K)
    out = {"case": "sampled_1m", "model": name, "size": size, "heads": heads_for(dim), "compiled": compiled,
           "n_items": N, "negatives": K, "batch": B, "seq_len": L,
           "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
           "step_s": round(s / steps, 5), "steps_timed": steps, "warmup_s": round(warm_s, 2),
           "tokens_per_s": round(B * L * steps / s), "tflops": round(fl * steps / s / 1e12, 4),
           "pct_of_peak": round(100 * fl * steps / s / 1e12 / args.peak_tflops, 3),
           "peak_gpu_gb": dev.peak_gb()}
    del model, opt, objective
    return out


def fit_data(args, dev: Dev):
    """ML-1M-shaped interactions: every user has seq_len + 3 rows, so the leave-one-out split
    leaves seq_len + 1 training rows = exactly one window of seq_len transitions per user."""
    from recalign.data.schema import Interactions
    from recalign.data.split import make_split

    S, L, N = args.n_seq, args.seq_len, args.n_items
    if args.fit_data == "sim":
        from recalign.data.simulator import SimConfig, simulate
        inter, _ = simulate(SimConfig(n_users=S, n_items=N, min_len=L + 3, max_len=L + 3))
    else:
        rng = np.random.default_rng(0)
        n = S * (L + 3)
        user = np.repeat(np.arange(S), L + 3)
        item = rng.integers(0, N, n)
        ts = 1_600_000_000 + np.cumsum(rng.integers(1, 86400, n))
        reward = rng.integers(1, 6, n).astype(np.float32)
        inter = Interactions.from_raw(user, item, ts, reward, item_ids=np.arange(N), source="random")
    split = make_split(inter, "loo", 3)
    return inter, split, SequenceData(split, L)


def case_fit(args, dev: Dev, name: str, size: str, raw_epoch_s: float | None, data) -> dict:
    from recalign.eval.evaluate import evaluate_targets

    dim, layers = parse_size(size)
    inter, split, seq = data
    dev.reset_peak()
    torch.manual_seed(0)
    mcfg = ModelConfig(name=name, dim=dim, layers=layers, heads=heads_for(dim), max_len=args.seq_len, dropout=0.2)
    counts = np.concatenate([[0], np.bincount(inter.item[split.train_rows()], minlength=inter.n_items)])
    model = Recommender(mcfg, inter.n_items, counts.astype(np.float64))
    tcfg = TrainConfig(epochs=args.fit_epochs, batch_size=args.batch_size, device=str(dev.device), bf16=True,
                       progress=False, patience=10**6, warmup_steps=20)
    ecfg = EvalConfig()
    val_s: list[float] = []
    first_call: list[float] = []
    ends: list[float] = []
    records: list[dict] = []

    class Obj(NextItemObjective):
        epoch_started = False

        def __call__(self, m, batch):
            if not self.epoch_started:
                first_call.append(time.perf_counter())
                self.epoch_started = True
            return super().__call__(m, batch)

    obj = Obj()

    def validate(m):
        t = time.perf_counter()
        r = evaluate_targets(m, seq, split.valid, ecfg, 4.5, None)
        dev.sync()
        val_s.append(time.perf_counter() - t)
        return r

    def on_epoch_end(epoch, record):
        ends.append(time.perf_counter())
        records.append(record)
        obj.epoch_started = False

    run_dir = Path(tempfile.mkdtemp(prefix="recalign_gpu_fit_"))
    try:
        t_fit = time.perf_counter()
        res = fit(model, seq, obj, tcfg, run_dir, validate=validate, on_epoch_end=on_epoch_end)
        t_end = time.perf_counter()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    # training part of epoch e: from its first objective call to the moment fit stamped the
    # record (after the epoch's last step and a sync), i.e. t_fit + record.seconds (fit's own t0
    # is a few ms after t_fit: model.to and the optimizer's creation)
    train_s = [t_fit + r["seconds"] - f for r, f in zip(records, first_call)]
    # everything else between two epochs: validation, best-model save, resume checkpoint, batch
    # order; wall per epoch from the end of the previous epoch's callback
    walls = np.diff([t_fit] + ends).tolist()
    steady = train_s[1:] if len(train_s) > 1 else train_s
    out = {"case": "fit", "model": name, "size": size, "data": args.fit_data, "epochs": res.epochs_run,
           "windows": seq.n_windows, "train_epoch_s": [round(x, 3) for x in train_s],
           "train_epoch_s_steady": round(statistics.median(steady), 4),
           "validate_s": [round(x, 3) for x in val_s],
           "epoch_wall_s": [round(x, 3) for x in walls], "fit_total_s": round(t_end - t_fit, 2),
           "raw_epoch_s": raw_epoch_s, "valid_ndcg@10_last": records[-1].get("valid/ndcg@10") if records else None,
           "train_loss": [round(r["train_loss"], 4) for r in records], "peak_gpu_gb": dev.peak_gb()}
    if raw_epoch_s:
        out["train_over_raw"] = round(out["train_epoch_s_steady"] / raw_epoch_s, 2)
    del model
    return out


# ---------------------------------------------------------------------------------- driver
def env_info(dev: Dev) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": str(dev.device),
            "cpu_count": os.cpu_count(), "load": [round(x, 2) for x in os.getloadavg()]}
    try:
        from recalign.train.checkpoint import git_revision
        info["git_revision"] = git_revision()
    except Exception:  # noqa: BLE001
        pass
    if dev.cuda:
        p = torch.cuda.get_device_properties(dev.device)
        info.update({"gpu": p.name, "gpu_mem_gb": round(p.total_memory / 2**30, 1), "cuda": torch.version.cuda,
                     "cudnn": torch.backends.cudnn.version(),
                     "sdpa": {"flash": torch.backends.cuda.flash_sdp_enabled(),
                              "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                              "math": torch.backends.cuda.math_sdp_enabled()}})
    return info


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="fewer timed epochs and cases (tiny shapes on CPU)")
    ap.add_argument("--models", default="sasrec,hstu")
    ap.add_argument("--small", default=None, help="DIMxLAYERS (default 64x2; CPU quick 32x1)")
    ap.add_argument("--large", default=None, help="DIMxLAYERS (default 256x8; CPU quick 64x2)")
    ap.add_argument("--n-seq", type=int, default=None, help="sequences per epoch (default 6040)")
    ap.add_argument("--seq-len", type=int, default=None, help="default 200")
    ap.add_argument("--n-items", type=int, default=None, help="default 3416")
    ap.add_argument("--big-items", type=int, default=None, help="sampled-softmax catalog (default 1,000,000)")
    ap.add_argument("--negatives", type=int, default=None, help="default 8192")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=None, help="timed epochs per raw case (default 3, quick 1)")
    ap.add_argument("--sampled-steps", type=int, default=None, help="timed steps of sampled_1m (default 20)")
    ap.add_argument("--sampled-warmup", type=int, default=3)
    ap.add_argument("--fit-epochs", type=int, default=None, help="default 3, quick 2")
    ap.add_argument("--fit-data", choices=["random", "sim"], default="random")
    ap.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                    help="auto: on for cuda, off for cpu")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode (default: None)")
    ap.add_argument("--peak-tflops", type=float, default=790.0, help="bf16 dense peak of the GPU")
    ap.add_argument("--budget-s", type=float, default=None, help="skip cases that would start after this")
    ap.add_argument("--only", default="", help="comma-separated case kinds to run: raw,sampled,fit,compile")
    args = ap.parse_args(argv)

    dev = Dev(args.device)
    tiny = not dev.cuda and args.quick
    d = {"small": "32x1" if tiny else "64x2", "large": "64x2" if tiny else "256x8",
         "n_seq": 256 if tiny else 6040, "seq_len": 20 if tiny else 200, "n_items": 500 if tiny else 3416,
         "big_items": 20000 if tiny else 1_000_000, "negatives": 256 if tiny else 8192,
         "epochs": 1 if args.quick else 3, "sampled_steps": 3 if tiny else (10 if args.quick else 20),
         "fit_epochs": 2 if args.quick else 3, "budget_s": 180.0 if args.quick else 360.0}
    for k, v in d.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if tiny:
        args.sampled_warmup = min(args.sampled_warmup, 1)
    compile_on = args.compile == "on" or (args.compile == "auto" and dev.cuda)
    models = [m for m in args.models.split(",") if m]
    only = {x for x in args.only.split(",") if x}

    def want(kind: str) -> bool:
        return not only or kind in only

    out_dir = os.environ.get("OUT")
    out_path = Path(out_dir) / "gpu_results.json" if out_dir else None
    results: dict = {"env": env_info(dev), "args": vars(args), "cases": [],
                     "flop_formula": "3*(B*L*layers*(c*D^2 + 4*L*D) + M*2*D*C); c=12 SASRec, 10 HSTU; "
                                     "C=N+1 full, M+K sampled; matmuls only, all L keys counted",
                     "status": "running"}

    def save() -> None:
        if out_path is None:
            return
        tmp = out_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=2, default=str))
        os.replace(tmp, out_path)

    def run(label: str, fn, *a) -> dict | None:
        elapsed = time.perf_counter() - T_START
        if elapsed > args.budget_s:
            rec = {"case": label, "skipped": f"budget: {elapsed:.0f} s > {args.budget_s:.0f} s"}
            results["cases"].append(rec)
            log(f"{label}: skipped (budget)")
            save()
            return None
        log(f"{label} ...")
        t = time.perf_counter()
        try:
            rec = fn(*a)
            rec["label"] = label
            rec["case_wall_s"] = round(time.perf_counter() - t, 2)
            results["cases"].append(rec)
            brief = {k: rec[k] for k in ("epoch_s", "step_s", "tokens_per_s", "tflops", "peak_gpu_gb",
                                         "train_epoch_s_steady", "train_over_raw", "validate_s") if k in rec}
            log(f"{label}: {brief} ({rec['case_wall_s']} s)")
        except Exception as e:  # noqa: BLE001 -- record and go on
            rec = {"case": label, "error": f"{type(e).__name__}: {e}",
                   "traceback": traceback.format_exc(limit=6)[-3000:], "case_wall_s": round(time.perf_counter() - t, 2)}
            results["cases"].append(rec)
            log(f"{label}: FAILED {rec['error']}")
            rec = None
        finally:
            gc.collect()
            if dev.cuda:
                torch.cuda.empty_cache()
            try:
                torch._dynamo.reset()
            except Exception:  # noqa: BLE001
                pass
        save()
        return rec

    log(f"device {dev.device}, quick={args.quick}, compile={compile_on}, shapes: {args.n_seq} x {args.seq_len} "
        f"over {args.n_items} items, sizes {args.small} / {args.large}, budget {args.budget_s:.0f} s")
    if dev.cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    raw_eager: dict[tuple[str, str], float] = {}
    sizes = [args.small, args.large]
    # order: the most important figures first, so that the budget cuts the least useful ones
    if want("raw"):
        for m in models:
            for s in sizes:
                r = run(f"raw/{m}/{s}/eager", case_raw, args, dev, m, s, False)
                if r:
                    raw_eager[(m, s)] = r["epoch_s"]
    if want("sampled"):
        run(f"sampled_1m/sasrec/{args.large}/eager", case_sampled, args, dev, "sasrec", args.large)
    if want("fit"):
        data = None
        try:
            t = time.perf_counter()
            data = fit_data(args, dev)
            results["fit_data_s"] = round(time.perf_counter() - t, 2)
        except Exception as e:  # noqa: BLE001
            results["cases"].append({"case": "fit/data", "error": f"{type(e).__name__}: {e}",
                                     "traceback": traceback.format_exc(limit=6)[-3000:]})
        if data is not None:
            fit_sizes = [args.small] if args.quick else sizes
            for s in fit_sizes:
                run(f"fit/sasrec/{s}", case_fit, args, dev, "sasrec", s, raw_eager.get(("sasrec", s)), data)
    if compile_on and want("compile"):
        comp_sizes = [args.small] if args.quick else sizes
        for m in models:
            for s in comp_sizes:
                run(f"raw/{m}/{s}/compiled", case_raw, args, dev, m, s, True)
    if want("sampled") and not args.quick:
        run(f"sampled_1m/hstu/{args.large}/eager", case_sampled, args, dev, "hstu", args.large)
        run(f"sampled_1m/sasrec/{args.small}/eager", case_sampled, args, dev, "sasrec", args.small)
        if compile_on and want("compile"):
            run(f"sampled_1m/sasrec/{args.large}/compiled", case_sampled, args, dev, "sasrec", args.large, True)
    results["status"] = "done"
    results["total_s"] = round(time.perf_counter() - T_START, 1)
    results["peak_rss_gb"] = peak_rss_gb()
    results["n_errors"] = sum(1 for c in results["cases"] if "error" in c)
    save()
    log(f"done in {results['total_s']} s, {results['n_errors']} error(s)"
        + (f"; results in {out_path}" if out_path else ""))
    if out_path is None:
        print(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
