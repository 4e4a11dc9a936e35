"""How far a policy moved from π0, and the true value of its whole distribution, exactly, on
held-out contexts (METHOD.md, "The contest": a value is read beside its distance).

- `kl_to_reference`: per target context `s`,
  `KL(π ‖ π0)(s) = Σ_{a=1..N} π(a|s) · (log π(a|s) − log π0(a|s))`, summed over the whole
  catalog (padding excluded), not estimated from samples.
- `expected_true_value` (simulator only): per context, `E_{a∼π(·|s)}[r*(s, a)] =
  Σ_{a=1..N} π(a|s) · r*(s, a)`, the oracle's true reward averaged over the policy's whole
  distribution (`Simulator.expected_value_dist`); the top-10 `true_value` of `evaluate_targets`
  reads only the head of the ranking.

Which distribution: the policy's own full softmax over the catalog, π(·|s) = softmax(h(s)·e /
temperature) over items 1..N, with nothing masked. The ranking metrics mask already-seen items
(`eval.mask_seen`); that is a rule of how a list is shown, not part of the policy. The methods
train and regularise that full softmax (exp_sft's optimum is π_β·exp(r/λ)/Z over the catalog,
ppo penalises KL to π0 of the full softmax at every sampled item), so this is the distance the
policy moved and the value of the policy that moved; a policy that shifts mass onto items the
user has seen moves, and a masked, renormalised KL would not see it. Both numbers are of the
same distribution, so a reward–KL frontier plots one object against itself.

Precision: the log-probabilities are the model's own (`model.log_probs`, float32), contracted in
float64; the KL's absolute error is then about 1e-6 (mostly the two log-normalisers' rounding).

Contexts are those of `evaluate_targets` (the test targets' histories, `model.max_len` last
items); users are processed in blocks of at most `eval.batch_size` that also keep a
`[users, N+1]` block of log-probabilities bounded. Every process computes every target (no
sharding under torchrun): the numbers do not depend on how many processes there are.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from recalign.config import EvalConfig
from recalign.data.sequences import SequenceData
from recalign.data.split import Targets
from recalign.eval.evaluate import user_states
from recalign.models.recommender import Recommender

# elements of one `[users, N+1]` block of log-probabilities (float64 when contracted: 128 MB)
_BLOCK_ELEMS = 1 << 24


def _blocks(n: int, n_tokens: int, batch_size: int) -> Iterator[np.ndarray]:
    size = max(1, min(batch_size, _BLOCK_ELEMS // max(1, n_tokens)))
    for lo in range(0, n, size):
        yield np.arange(lo, min(n, lo + size))


def _log_probs(model: Recommender, seq: SequenceData, targets: Targets, idx: np.ndarray) -> torch.Tensor:
    """`log π(·|s)` of the contexts `idx`, `[B, N+1]` float64 (column 0 = padding, -inf)."""
    device = next(model.parameters()).device
    return model.log_probs(*user_states(model, seq, targets, idx, device)).double()


@torch.no_grad()
def whole_policy(model: Recommender, seq: SequenceData, targets: Targets, cfg: EvalConfig,
                 reference: Recommender | None = None, simulator: Any = None) -> dict[str, np.ndarray]:
    """Per-target arrays, in target order: `kl` (KL(π ‖ π0), with a `reference` π0) and
    `expected_value` (E_π[r*], with a `simulator`); one forward of each model per user block."""
    models = [m for m in (model, reference) if m is not None]
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    kl, ev = [], []
    try:
        for idx in _blocks(len(targets), model.n_items + 1, cfg.batch_size):
            logp = _log_probs(model, seq, targets, idx)
            if reference is not None:
                ref = _log_probs(reference, seq, targets, idx)
                kl.append((logp[:, 1:].exp() * (logp[:, 1:] - ref[:, 1:])).sum(-1).cpu().numpy())
            if simulator is not None:
                ev.append(simulator.expected_value_dist(targets.users[idx], logp[:, 1:].cpu().numpy(), kind="logits",
                                                        step=seq.context_steps(targets, idx)))
    finally:
        for m, was in zip(models, modes):
            m.train(was)
    out: dict[str, np.ndarray] = {}
    if reference is not None:
        out["kl"] = np.concatenate(kl) if kl else np.zeros(0)
    if simulator is not None:
        out["expected_value"] = np.concatenate(ev) if ev else np.zeros(0)
    return out


def kl_to_reference(model: Recommender, reference: Recommender, seq: SequenceData, targets: Targets,
                    cfg: EvalConfig) -> np.ndarray:
    """`KL(π ‖ π0)` per target context, exactly over the full catalog: `[len(targets)]` float64."""
    return whole_policy(model, seq, targets, cfg, reference=reference)["kl"]


def expected_true_value(model: Recommender, seq: SequenceData, targets: Targets, cfg: EvalConfig,
                        simulator: Any) -> np.ndarray:
    """`E_{a∼π(·|s)}[r*(s, a)]` per target context (simulator): `[len(targets)]` float64."""
    return whole_policy(model, seq, targets, cfg, simulator=simulator)["expected_value"]


def distance_metrics(model: Recommender, reference: Recommender, seq: SequenceData, targets: Targets,
                     cfg: EvalConfig, simulator: Any = None) -> dict[str, float]:
    """The means over the targets: `kl` and, with a simulator, `expected_value`."""
    per = whole_policy(model, seq, targets, cfg, reference=reference, simulator=simulator)
    return {k: float(v.mean()) if v.size else float("nan") for k, v in per.items()}
