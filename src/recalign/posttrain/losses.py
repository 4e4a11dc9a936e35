"""Post-training losses as pure functions over tensors.

Each loss takes log-probabilities (or Q-values), weights, rewards and masks, never a model, and
returns `(loss, diagnostics)`: a scalar tensor to call `.backward()` on and a dict of floats to
log. Weights, advantages, importance ratios and TD targets are treated as constants (detached).
Shapes: `[n]` = positions (flattened batch × sequence), `[B]` = contexts, `[B, K]` = K samples
per context, `[B, N]` = one value per catalog item.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from recalign.models.heads import weighted_nll
from recalign.posttrain.weights import ess

Diagnostics = dict[str, float]
__all__ = ["weighted_nll", "dpo_loss", "ipo_loss", "kl_penalized_reward", "group_advantages", "ppo_loss", "cql_loss",
           "ips_loss"]


# ---------------------------------------------------------------------------------------------
# Weighted next-item likelihood: sft, linear_sft, exp_sft, filtered_sft, asft
# ---------------------------------------------------------------------------------------------
# `weighted_nll` lives with the output heads (`models/heads.py`), which end in it: pretraining
# and every SFT-style method train through it, and it is exported here beside the other losses.


# ---------------------------------------------------------------------------------------------
# Preference losses: dpo, ipo
# ---------------------------------------------------------------------------------------------


def _pair_logits(
    logp_w: Tensor, logp_l: Tensor, ref_logp_w: Tensor, ref_logp_l: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    chosen = logp_w - ref_logp_w.detach()
    rejected = logp_l - ref_logp_l.detach()
    return chosen - rejected, chosen, rejected


def _pair_diagnostics(h: Tensor, chosen: Tensor, rejected: Tensor, beta: float) -> Diagnostics:
    return {
        "rewards_chosen": float(beta * chosen.detach().mean()),
        "rewards_rejected": float(beta * rejected.detach().mean()),
        "reward_margin": float(beta * h.detach().mean()),
        "reward_accuracy": float((h.detach() > 0).double().mean()),
    }


def dpo_loss(
    logp_w: Tensor, logp_l: Tensor, ref_logp_w: Tensor, ref_logp_l: Tensor, beta: float
) -> tuple[Tensor, Diagnostics]:
    """Direct Preference Optimization (Rafailov et al. 2023, arXiv 2305.18290).

    `h = (log π_θ(a_w|s) − log π_ref(a_w|s)) − (log π_θ(a_l|s) − log π_ref(a_l|s))`,
    `L = mean_B −log σ(β·h)`. The implicit reward of an item is `β·(log π_θ − log π_ref)`; at
    `h = 0`, `∂L/∂ log π_θ(a_w|s) = −β/2` per pair (divided by B for the mean).

    Args:
        logp_w, logp_l: `[B]` log π_θ of the preferred and the dispreferred item.
        ref_logp_w, ref_logp_l: `[B]` the same under the frozen reference π_0 (detached).
        beta: temperature β > 0 (config `posttrain.beta`).

    Returns:
        loss, diagnostics `rewards_chosen`, `rewards_rejected` (mean implicit rewards),
        `reward_margin` (mean β·h), `reward_accuracy` (fraction of pairs with h > 0).
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    h, chosen, rejected = _pair_logits(logp_w, logp_l, ref_logp_w, ref_logp_l)
    loss = -F.logsigmoid(beta * h).mean()
    return loss, _pair_diagnostics(h, chosen, rejected, beta)


def ipo_loss(
    logp_w: Tensor, logp_l: Tensor, ref_logp_w: Tensor, ref_logp_l: Tensor, beta: float
) -> tuple[Tensor, Diagnostics]:
    """Identity Preference Optimisation (Azar et al. 2023, "A General Theoretical Paradigm to
    Understand Learning from Human Preferences", arXiv 2310.12036).

    `L = mean_B (h − 1/(2β))²` with `h` as in `dpo_loss`: a squared loss that regresses the
    log-ratio margin to `1/(2β)` instead of pushing it to infinity, so it does not overfit
    deterministic preferences. `β` plays the role of the paper's τ (regularisation strength).

    Returns:
        loss and the same diagnostics as `dpo_loss`.
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    h, chosen, rejected = _pair_logits(logp_w, logp_l, ref_logp_w, ref_logp_l)
    loss = ((h - 1.0 / (2.0 * beta)) ** 2).mean()
    return loss, _pair_diagnostics(h, chosen, rejected, beta)


# ---------------------------------------------------------------------------------------------
# RLHF: ppo with group-normalised advantages
# ---------------------------------------------------------------------------------------------


def kl_penalized_reward(
    rm_reward: Tensor, logp_policy: Tensor, logp_ref: Tensor, beta: float
) -> Tensor:
    """Reward of a sampled item with the KL penalty folded in: `r = RM(s,a) − β·(log π(a|s) − log π_ref(a|s))`.

    For `a ∼ π(·|s)`, `log π(a|s) − log π_ref(a|s)` is the single-sample unbiased estimate of
    `KL(π(·|s) ‖ π_ref(·|s))`, so `E[r] = E[RM] − β·KL`: the RLHF objective (Ouyang et al. 2022;
    Stiennon et al. 2020). All inputs any shape (e.g. `[B, K]`); the result is detached.
    """
    return (rm_reward - beta * (logp_policy - logp_ref)).detach()


def group_advantages(rewards: Tensor, eps: float = 1e-6) -> Tensor:
    """Group-normalised advantages (GRPO-style; Shao et al. 2024, arXiv 2402.03300).

    `A[b,k] = (r[b,k] − mean_k r[b,:]) / (std_k r[b,:] + eps)` over the K samples of context b,
    with the population std (so a group's advantages have unit variance; TRL's GRPO uses the
    sample std, which differs by the factor sqrt((K−1)/K)). A group whose rewards are all equal
    gets advantages 0. Detached.

    Args:
        rewards: `[B, K]` rewards of K sampled items per context.
    """
    r = rewards.detach()
    mean = r.mean(dim=-1, keepdim=True)
    std = r.std(dim=-1, keepdim=True, unbiased=False)
    return (r - mean) / (std + eps)


def ppo_loss(
    logp_new: Tensor, logp_old: Tensor, advantages: Tensor, clip_eps: float = 0.2
) -> tuple[Tensor, Diagnostics]:
    """PPO clipped-ratio policy loss (Schulman et al. 2017, arXiv 1707.06347).

    `ρ = exp(log π_θ(a|s) − log π_old(a|s))`,
    `L = −mean( min(ρ·A, clip(ρ, 1 − ε, 1 + ε)·A) )`.
    There is no value function: advantages come from `group_advantages` on KL-penalised rewards
    (`kl_penalized_reward`), so the KL to π_0 enters through the reward, as in METHOD.md.

    Args:
        logp_new: `[B, K]` log π_θ of the sampled items (with gradient).
        logp_old: `[B, K]` log π of the policy that sampled them (detached).
        advantages: `[B, K]` (detached).
        clip_eps: ε of the clip (PPO's default 0.2).

    Returns:
        loss, diagnostics `clip_frac` (fraction of samples with |ρ − 1| > ε), `approx_kl`
        (`mean((ρ − 1) − log ρ)`, the non-negative estimator of KL(π_old ‖ π_θ)), `ratio_mean`.
    """
    if not clip_eps > 0:
        raise ValueError(f"clip_eps must be > 0, got {clip_eps}")
    adv = advantages.detach()
    log_ratio = logp_new - logp_old.detach()
    ratio = torch.exp(log_ratio)
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv
    loss = -torch.minimum(unclipped, clipped).mean()
    with torch.no_grad():
        diag = {
            "clip_frac": float(((ratio - 1.0).abs() > clip_eps).double().mean()),
            "approx_kl": float(((ratio - 1.0) - log_ratio).mean()),
            "ratio_mean": float(ratio.mean()),
        }
    return loss, diag


# ---------------------------------------------------------------------------------------------
# Offline RL: cql
# ---------------------------------------------------------------------------------------------


def cql_loss(
    q_all: Tensor,
    actions: Tensor,
    rewards: Tensor,
    q_next_max: Tensor | None,
    done: Tensor | None,
    gamma: float,
    alpha: float,
) -> tuple[Tensor, Diagnostics]:
    """Discrete conservative Q-learning (Kumar et al. 2020, arXiv 2006.04779; CQL(H)).

    `y = r + γ·(1 − done)·max_a' Q(s', a')` (a detached target),
    `L = mean_B (Q(s, a) − y)² + α·mean_B (logsumexp_a Q(s, ·) − Q(s, a))`.
    The first term is the TD mean squared error, the second pushes down the Q-values of items
    the log does not support. `γ = 0` is the contextual bandit (`y = r`; `q_next_max` may be
    None).

    Args:
        q_all: `[B, N]` Q(s, ·) over the catalog.
        actions: `[B] long` logged items.
        rewards: `[B]` logged rewards.
        q_next_max: `[B]` max_a' Q(s', a') from the target network, or None when γ = 0.
        done: `[B]` 1 where s is the last step of its sequence (no bootstrap); None = none done.
        gamma: discount γ in [0, 1).
        alpha: weight α ≥ 0 of the conservative term.

    Returns:
        loss, diagnostics `td_loss`, `cql_gap` (mean logsumexp − Q(s, a)), `q_taken`, `target`.
    """
    if not 0 <= gamma < 1:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    q_taken = q_all.gather(1, actions.long().unsqueeze(1)).squeeze(1)
    target = rewards.to(q_all.dtype)
    if gamma > 0:
        if q_next_max is None:
            raise ValueError("cql_loss with gamma > 0 needs q_next_max")
        not_done = 1.0 if done is None else 1.0 - done.to(q_all.dtype)
        target = target + gamma * not_done * q_next_max.to(q_all.dtype)
    target = target.detach()
    td = ((q_taken - target) ** 2).mean()
    gap = (torch.logsumexp(q_all, dim=1) - q_taken).mean()
    loss = td + alpha * gap
    diag = {
        "td_loss": float(td.detach()),
        "cql_gap": float(gap.detach()),
        "q_taken": float(q_taken.detach().mean()),
        "target": float(target.mean()),
    }
    return loss, diag


# ---------------------------------------------------------------------------------------------
# Off-policy policy gradient: ips
# ---------------------------------------------------------------------------------------------


def ips_loss(
    logp_taken: Tensor,
    logp_behavior: Tensor,
    rewards: Tensor,
    clip: float = 0.0,
    topk: int | None = None,
) -> tuple[Tensor, Diagnostics]:
    """Off-policy REINFORCE with clipped importance weights (Chen et al. 2019, "Top-K
    Off-Policy Correction for a REINFORCE Recommender System", arXiv 1812.02353).

    `ρ = min(π_θ(a|s) / π_β(a|s), c)`, `L = −mean_B( ρ · λ_K · r · log π_θ(a|s) )` with `ρ`
    and `λ_K` detached, so `∇L` is the clipped importance-sampled policy gradient. `π_β` is
    estimated by the pretrained π_0 (no logged propensities). With `topk = K` the top-K
    correction `λ_K = K·(1 − π_θ(a|s))^(K−1)` accounts for a slate of K items sampled from
    π_θ; otherwise `λ_K = 1`.

    Args:
        logp_taken: `[B]` log π_θ of the logged item (with gradient).
        logp_behavior: `[B]` log π_β of the logged item (estimate; detached).
        rewards: `[B]` logged rewards.
        clip: cap c of the importance ratio (0 = no cap).
        topk: slate size K of the top-K correction, or None.

    Returns:
        loss, diagnostics `ratio_mean`, `clip_frac` (fraction of ratios above c), `ratio_ess`.
    """
    if clip < 0:
        raise ValueError(f"clip must be >= 0 (0 = no clip), got {clip}")
    if topk is not None and topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    with torch.no_grad():
        raw = torch.exp(logp_taken - logp_behavior)
        ratio = raw.clamp(max=clip) if clip > 0 else raw
        factor = ratio
        if topk is not None:
            p = torch.exp(logp_taken).clamp(max=1.0)
            factor = factor * topk * (1.0 - p) ** (topk - 1)
    loss = -(factor * rewards.to(logp_taken.dtype) * logp_taken).mean()
    diag = {
        "ratio_mean": float(raw.mean()),
        "clip_frac": float((raw > clip).double().mean()) if clip > 0 else 0.0,
        "ratio_ess": ess(ratio),
    }
    return loss, diag
