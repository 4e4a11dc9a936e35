"""METHOD.md claim 5, the tabular sanity check: with a fully expressive policy and exact
expectations, exp_sft converges to `π*(a|c) ∝ π_β(a|c)·exp(r(c,a)/λ)`.

Exact expectations without sampling: the behaviour policy and the context frequencies are given
as integer counts `N[c, a]` (`ρ(c) = N_c/N`, `π_β(a|c) = N[c,a]/N_c`), and the "dataset" holds
each `(c, a)` exactly `N[c, a]` times. Then the loss training calls (the full-softmax head's
`loss`, which ends in `weighted_nll`) over that dataset IS
`E_{c∼ρ, a∼π_β}[w(c,a)·(−log π(a|c))]`, and the weights go through the real
`log_weights`/`normalize` code. The tabular policy is the head with one-hot context states:
`hidden = e_c` and item table `item_weight[a + 1] = θ[·, a]`, so the logits are `θ[c, ·]`.

For a logits table θ[c, ·] the gradient of that loss is
`∇_{θ[c]} L = M_c·(π_θ(·|c) − π*(·|c))`, with `M_c = (1/N)·Σ_{rows in c} w` the mass of context
c. So the per-context optimum is `π*` whatever the normaliser; the normaliser only decides `M_c`,
how much each context counts:

- `context`: `M_c = ρ(c)` (as in SFT);
- `global`: `M_c = ρ(c)·Z(c)/Z̄`, `Z(c) = Σ_a π_β(a|c)·exp(r(c,a)/λ)`, `Z̄ = Σ_c ρ(c)·Z(c)`:
  contexts whose logged items have high rewards count more;
- `none`: `M_c = ρ(c)·Z(c)·exp(−r_max/λ)`, the same relative weighting as `global`.

This matters as soon as contexts share parameters (a real network): the limiting case, a
context-blind policy (one logits vector for every context), converges to the `M_c`-weighted
mixture `Σ_c M_c·π*(·|c) / Σ_c M_c`, which differs between `context` and `global`.

Caveat for real logs: `context` needs several logged actions per context id; with one logged
item per context (a sequence position is its own context) it gives every weight 1, i.e. SFT.
"""

from __future__ import annotations

import math

import pytest
import torch

from recalign.models.heads import FullSoftmaxHead
from recalign.posttrain.weights import (
    global_log_max,
    global_log_z,
    log_weights,
    normalize,
    transform_rewards,
)

LAM = 0.7
# counts N[c, a]: contexts of frequency 12/25, 8/25, 5/25; a non-uniform π_β in each
COUNTS = torch.tensor([[6, 3, 2, 1], [1, 1, 4, 2], [2, 1, 1, 1]])
REWARDS = torch.tensor([[0.0, 1.0, 2.0, 0.5], [1.0, 0.0, 0.2, 2.0], [3.0, 3.0, 0.0, 1.0]], dtype=torch.float64)
C, A = COUNTS.shape
N = int(COUNTS.sum())
RHO = COUNTS.sum(1).double() / N
PI_B = COUNTS.double() / COUNTS.sum(1, keepdim=True)
Z_C = (PI_B * torch.exp(REWARDS / LAM)).sum(1)  # Z(c)
PI_STAR = PI_B * torch.exp(REWARDS / LAM) / Z_C[:, None]

# the exact "dataset": row i is (ctx[i], act[i]) with reward rew[i]
CTX = torch.arange(C).repeat_interleave(COUNTS.sum(1))
ACT = torch.cat([torch.arange(A).repeat_interleave(COUNTS[c]) for c in range(C)])
REW = REWARDS[CTX, ACT]


def weights(norm: str) -> torch.Tensor:
    lw = log_weights(REW, "exp", lam=LAM)
    return normalize(lw, norm=norm, context=CTX, global_log_z=global_log_z(lw),
                     log_shift=global_log_max(lw), dtype=torch.float64)


def expected_loss(logits: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """E_{c∼ρ, a∼π_β}[w·(−log π(a|c))] through the training head; `logits` is [C, A] (tabular:
    one-hot context states) or [A] (context-blind: one constant state)."""
    table = logits.T if logits.dim() == 2 else logits[:, None]  # [A, D]: row a scores item a
    item_weight = torch.cat([torch.zeros(1, table.shape[1], dtype=table.dtype), table])  # token a+1 = item a
    hidden = torch.eye(C, dtype=table.dtype)[CTX] if logits.dim() == 2 else torch.ones(len(ACT), 1, dtype=table.dtype)
    loss, _ = FullSoftmaxHead().loss(hidden[None], (ACT + 1)[None], w[None], item_weight)
    return loss


def minimise(shape: tuple[int, ...], w: torch.Tensor, iters: int = 100) -> torch.Tensor:
    """Damped Newton on the logits (the loss is convex in them), from uniform logits.

    The gradient comes from autograd through the head's loss, so a stationary point is a true
    minimiser of the loss under test. The Hessian of a row of logits is the softmax
    cross-entropy's `m·(diag π − π·πᵀ)` (`m` = the row's weight mass); it only sets the step,
    and its pseudo-inverse steps orthogonally to the softmax's shift invariance. (Newton rather
    than torch.optim, whose first step imports torch._dynamo: seconds.)
    """
    theta = torch.zeros(shape, dtype=torch.float64)
    mass = context_mass(w) if len(shape) == 2 else (w.sum() / N).view(1)

    def f(x: torch.Tensor) -> float:
        return expected_loss(x, w).item()

    for _ in range(iters):
        x = theta.clone().requires_grad_(True)
        loss = expected_loss(x, w)
        (grad,) = torch.autograd.grad(loss, x)
        grad = grad.view(-1, shape[-1])
        if grad.abs().max() < 1e-12:
            break
        pi = torch.softmax(theta.view(-1, shape[-1]), -1)
        hess = mass[:, None, None] * (torch.diag_embed(pi) - pi[:, :, None] * pi[:, None, :])
        step = -(torch.linalg.pinv(hess, hermitian=True) @ grad[:, :, None]).squeeze(-1)
        t, slope = 1.0, float((grad * step).sum())
        while f(theta + t * step.view(shape)) > loss.item() + 1e-4 * t * slope:
            t /= 2
            if t < 1e-6:  # no decrease left at float64 precision
                return torch.softmax(theta, -1)
        theta = theta + t * step.view(shape)
    return torch.softmax(theta, -1)


def kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return (p * (p.log() - q.log())).sum(-1)


def context_mass(w: torch.Tensor) -> torch.Tensor:
    return torch.zeros(C, dtype=torch.float64).index_add_(0, CTX, w) / N


def test_setup_is_non_trivial():
    """Frequencies and behaviour differ across contexts, and π* moves far from π_β."""
    assert RHO.tolist() == pytest.approx([0.48, 0.32, 0.2])
    assert (kl(PI_STAR, PI_B) > 0.1).all()
    assert Z_C.max() / Z_C.min() > 5  # contexts differ a lot in Z(c)


def test_exp_sft_context_norm_converges_to_pi_star():
    """Claim 5: the minimiser of the exact expected exp_sft loss is π_β·exp(r/λ)/Z(c)."""
    pi = minimise((C, A), weights("context"))
    assert (kl(PI_STAR, pi) < 1e-3).all(), kl(PI_STAR, pi)
    assert (kl(PI_STAR, pi) < 1e-8).all()  # in fact to optimiser precision


@pytest.mark.parametrize("norm", ["global", "none"])
def test_unnormalised_weights_same_tabular_optimum_different_context_mass(norm):
    """`global`/`none` keep the per-context optimum π* (tabular), but weight contexts by
    ρ(c)·Z(c) instead of ρ(c)."""
    pi = minimise((C, A), weights(norm))
    assert (kl(PI_STAR, pi) < 1e-3).all(), kl(PI_STAR, pi)

    m_ctx = context_mass(weights("context"))
    m = context_mass(weights(norm))
    torch.testing.assert_close(m_ctx, RHO)
    if norm == "global":
        torch.testing.assert_close(m, RHO * Z_C / (RHO * Z_C).sum())
    else:
        torch.testing.assert_close(m, RHO * Z_C * math.exp(-float(REWARDS.max()) / LAM))
    share = m / m.sum()
    assert (share - RHO).abs().max() > 0.1  # contexts count differently than in SFT

    # the gradient of the expected loss is M_c·(π_θ(·|c) − π*(·|c)) at any θ
    theta = torch.randn(C, A, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    theta.requires_grad_(True)
    expected_loss(theta, weights(norm)).backward()
    pi_theta = torch.softmax(theta.detach(), -1)
    torch.testing.assert_close(theta.grad, m[:, None] * (pi_theta - PI_STAR))


def test_context_blind_policy_mixes_contexts_by_their_mass():
    """With one logits vector for all contexts the optimum is Σ_c M_c·π*(·|c)/Σ_c M_c: the
    ρ-weighted mixture under `context`, the ρ·Z-weighted one under `global`, and they differ."""
    out = {}
    for norm in ("context", "global"):
        m = context_mass(weights(norm))
        target = (m[:, None] * PI_STAR).sum(0) / m.sum()
        out[norm] = minimise((A,), weights(norm))
        assert float(kl(target, out[norm])) < 1e-8
    assert float((out["context"] - out["global"]).abs().sum()) > 0.1


@pytest.mark.parametrize("kind", ["rank", "user_rank"])
def test_rank_transform_converges_to_pi_beta_exp_rank_reward(kind):
    """With `reward_transform = rank` the weights are `exp(rank_r/λ)`, `rank_r` the global
    mid-rank quantile of the row's reward (over the dataset rows, so counted N[c, a] times)
    mapped onto [r_min, r_max]; the target is then `π_β·exp(rank_r(c,a)/λ)/Z_rank(c)`. With
    `user_rank` (exp_sft's default) the quantile is within the row's user, here its context (a
    user is the context that generated its sequence): the same target with per-user ranks, under
    both normalisations the defaults contest weighed (`global` chosen, `context`)."""
    rank_rew = transform_rewards(REW, users=CTX if kind == "user_rank" else None, kind=kind)
    table = torch.zeros(C, A, dtype=torch.float64)
    table[CTX, ACT] = rank_rew  # equal rewards get equal ranks: one value per (c, a)
    target = PI_B * torch.exp(table / LAM)
    target = target / target.sum(1, keepdim=True)
    assert float((kl(target, PI_STAR)).max()) > 1e-3  # a different target than with raw rewards
    for norm in ("context", "global"):
        lw = log_weights(rank_rew, "exp", lam=LAM)
        w = normalize(lw, norm=norm, context=CTX, global_log_z=global_log_z(lw), dtype=torch.float64)
        pi = minimise((C, A), w)
        assert (kl(target, pi) < 1e-3).all(), kl(target, pi)
