"""Post-training losses (`recalign.posttrain.losses`) against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from recalign.posttrain.losses import (
    cql_loss,
    dpo_loss,
    group_advantages,
    ipo_loss,
    ips_loss,
    kl_penalized_reward,
    ppo_loss,
    weighted_nll,
)


def leaf(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# --- weighted_nll ---------------------------------------------------------------------------


def test_weighted_nll_by_hand():
    """logp = [log 0.5, log 0.25], w = [2, 0]: L = −(2·log 0.5 + 0)/2 = log 2 = 0.693147;
    ∂L/∂logp = −w/n = [−1, 0]."""
    logp = leaf(math.log(0.5), math.log(0.25))
    loss, diag = weighted_nll(logp, t(2.0, 0.0))
    assert loss.item() == pytest.approx(math.log(2.0))
    loss.backward()
    assert logp.grad.tolist() == pytest.approx([-1.0, 0.0])
    # nll = (0.693147 + 1.386294)/2 = 1.039721; mean weight 1; ESS = 2²/(2·4) = 0.5
    assert diag["nll"] == pytest.approx(1.039721, rel=1e-6)
    assert diag["weight_mean"] == pytest.approx(1.0)
    assert diag["weight_max"] == 2.0
    assert diag["ess"] == pytest.approx(0.5)


def test_weighted_nll_mask_counts_real_positions_only():
    """Padding (mask False) neither adds loss nor counts in n, whatever its weight:
    logp = [log 0.5, log 0.25, −9], w = [1, 1, 5], mask = [T, T, F] →
    L = (0.693147 + 1.386294)/2 = 1.039721, ∂L/∂logp = [−1/2, −1/2, 0]."""
    logp = leaf(math.log(0.5), math.log(0.25), -9.0)
    loss, diag = weighted_nll(logp, t(1.0, 1.0, 5.0), torch.tensor([True, True, False]))
    assert loss.item() == pytest.approx(1.039721, rel=1e-6)
    loss.backward()
    assert logp.grad.tolist() == pytest.approx([-0.5, -0.5, 0.0])
    assert diag["weight_mean"] == pytest.approx(1.0)


def test_weighted_nll_does_not_differentiate_weights():
    w = leaf(1.0, 2.0)
    loss, _ = weighted_nll(leaf(-1.0, -2.0), w)
    loss.backward()
    assert w.grad is None


# --- dpo / ipo ------------------------------------------------------------------------------


def test_dpo_by_hand():
    """logπ_w = −1, logπ_l = −2, ref = −1.5 for both, β = 0.5: chosen = 0.5, rejected = −0.5,
    h = 1, L = −log σ(0.5) = log(1 + e^−0.5) = 0.474077; implicit rewards β·[0.5, −0.5] =
    [0.25, −0.25], margin 0.5, accuracy 1."""
    loss, diag = dpo_loss(leaf(-1.0), leaf(-2.0), t(-1.5), t(-1.5), beta=0.5)
    assert loss.item() == pytest.approx(0.474077, rel=1e-6)
    assert diag == pytest.approx(
        {"rewards_chosen": 0.25, "rewards_rejected": -0.25, "reward_margin": 0.5, "reward_accuracy": 1.0}
    )


def test_dpo_gradient_at_zero_margin():
    """At h = 0: ∂L/∂logπ_w = −β·σ(0) = −β/2, ∂L/∂logπ_l = +β/2; the reference gets none."""
    beta = 0.3
    lw, ll, rw = leaf(-1.0), leaf(-1.0), leaf(-1.0)
    loss, diag = dpo_loss(lw, ll, rw, t(-1.0), beta)
    assert loss.item() == pytest.approx(math.log(2.0))
    loss.backward()
    assert float(lw.grad) == pytest.approx(-beta / 2)
    assert float(ll.grad) == pytest.approx(beta / 2)
    assert rw.grad is None
    assert diag["reward_accuracy"] == 0.0


def test_ipo_by_hand():
    """Same pair (h = 1): β = 0.5 → target 1/(2β) = 1, L = 0;
    β = 0.25 → target 2, L = (1 − 2)² = 1, ∂L/∂logπ_w = 2(h − 2) = −2."""
    loss, _ = ipo_loss(leaf(-1.0), leaf(-2.0), t(-1.5), t(-1.5), beta=0.5)
    assert loss.item() == pytest.approx(0.0)
    lw = leaf(-1.0)
    loss, diag = ipo_loss(lw, leaf(-2.0), t(-1.5), t(-1.5), beta=0.25)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert float(lw.grad) == pytest.approx(-2.0)
    assert diag["reward_margin"] == pytest.approx(0.25)


def test_pair_losses_reject_bad_beta():
    for fn in (dpo_loss, ipo_loss):
        with pytest.raises(ValueError, match="beta"):
            fn(t(0.0), t(0.0), t(0.0), t(0.0), 0.0)


# --- ppo ------------------------------------------------------------------------------------


def test_group_advantages_and_kl_reward_by_hand():
    """[[1, 2, 3], [5, 5, 5]]: mean 2, population std sqrt(2/3) = 0.816497 →
    [−1.224745, 0, 1.224745]; a constant group → 0.
    KL-penalised reward: RM 1, logπ −1, logπ_ref −2, β 0.1 → 1 − 0.1·(−1 + 2) = 0.9."""
    adv = group_advantages(t(1.0, 2.0, 3.0, 5.0, 5.0, 5.0).view(2, 3))
    assert adv[0].tolist() == pytest.approx([-1.224745, 0.0, 1.224745], rel=1e-5)
    assert adv[1].tolist() == [0.0, 0.0, 0.0]
    r = kl_penalized_reward(t(1.0), leaf(-1.0), t(-2.0), beta=0.1)
    assert float(r) == pytest.approx(0.9)
    assert not r.requires_grad


def test_ppo_by_hand():
    """ratios ρ = [1.5, 0.5, 1.1] (logπ_old = 0), A = [1, −1, 2], ε = 0.2:
    min(ρA, clip(ρ)A) = [min(1.5, 1.2), min(−0.5, −0.8), min(2.2, 2.2)] = [1.2, −0.8, 2.2];
    L = −2.6/3 = −0.866667. The two clipped samples get no gradient; the third gets
    ∂L/∂logπ = −ρA/3 = −0.733333. clip_frac = 2/3;
    approx_kl = mean((ρ−1) − log ρ) = (0.094535 + 0.193147 + 0.004690)/3 = 0.097457;
    ratio_mean = 3.1/3."""
    logp_new = leaf(math.log(1.5), math.log(0.5), math.log(1.1))
    loss, diag = ppo_loss(logp_new, t(0.0, 0.0, 0.0), t(1.0, -1.0, 2.0), clip_eps=0.2)
    assert loss.item() == pytest.approx(-2.6 / 3)
    loss.backward()
    assert logp_new.grad.tolist() == pytest.approx([0.0, 0.0, -2.2 / 3])
    assert diag["clip_frac"] == pytest.approx(2 / 3)
    assert diag["approx_kl"] == pytest.approx(0.097457, rel=1e-5)
    assert diag["ratio_mean"] == pytest.approx(3.1 / 3)


def test_ppo_on_policy_is_policy_gradient():
    """At ρ = 1 the clip is inactive and ∂L/∂logπ = −A/n (REINFORCE with advantages)."""
    logp = leaf(-1.0, -2.0, -0.5, -3.0)
    adv = t(0.5, -1.0, 2.0, 0.0)
    loss, diag = ppo_loss(logp, logp.detach(), adv, 0.2)
    loss.backward()
    assert logp.grad.tolist() == pytest.approx((-adv / 4).tolist())
    assert diag["clip_frac"] == 0.0 and diag["approx_kl"] == pytest.approx(0.0)


# --- cql ------------------------------------------------------------------------------------


def test_cql_bandit_by_hand():
    """Q = [[1, 2, 0], [0, 0, 0]], logged a = [1, 0], r = [1, 0], γ = 0, α = 1:
    Q(s,a) = [2, 0]; TD = ((2 − 1)² + 0²)/2 = 0.5;
    logsumexp = [log(e + e² + 1), log 3] = [2.407606, 1.098612], gap = (0.407606 + 1.098612)/2
    = 0.753109; L = 1.253109.
    ∂L/∂Q[0] = TD: 2(Q − y)/B at a = 1 → [0, 1, 0]; CQL: (softmax − onehot)/B with
    softmax = [0.244728, 0.665241, 0.090031] → [0.122364, −0.167379, 0.045015]."""
    q = leaf(1.0, 2.0, 0.0, 0.0, 0.0, 0.0)
    loss, diag = cql_loss(q.view(2, 3), torch.tensor([1, 0]), t(1.0, 0.0), None, None, gamma=0.0, alpha=1.0)
    assert loss.item() == pytest.approx(1.253109, rel=1e-6)
    assert diag["td_loss"] == pytest.approx(0.5)
    assert diag["cql_gap"] == pytest.approx(0.753109, rel=1e-6)
    loss.backward()
    assert q.grad[:3].tolist() == pytest.approx([0.122364, 1 - 0.167379, 0.045015], rel=1e-5)


def test_cql_bootstraps_through_detached_target():
    """γ = 0.5, max Q(s') = [2, 4], done = [0, 1]: y = [1 + 0.5·2, 0 + 0] = [2, 0] = Q(s,a), so
    TD = 0 and L = α·gap; the target gets no gradient."""
    q = leaf(1.0, 2.0, 0.0, 0.0, 0.0, 0.0)
    q_next = leaf(2.0, 4.0)
    loss, diag = cql_loss(q.view(2, 3), torch.tensor([1, 0]), t(1.0, 0.0), q_next, t(0.0, 1.0), 0.5, 2.0)
    assert diag["td_loss"] == pytest.approx(0.0)
    assert loss.item() == pytest.approx(2 * 0.753109, rel=1e-6)
    loss.backward()
    assert q_next.grad is None
    with pytest.raises(ValueError, match="q_next_max"):
        cql_loss(q.view(2, 3), torch.tensor([1, 0]), t(1.0, 0.0), None, None, 0.5, 1.0)


# --- ips ------------------------------------------------------------------------------------


def test_ips_by_hand():
    """π = [0.2, 0.5], π_β = [0.1, 0.5], r = [1, 2], clip c = 1.5: ρ = [2, 1] → [1.5, 1];
    L = −(1.5·1·log 0.2 + 1·2·log 0.5)/2 = 1.900226; ∂L/∂logπ = −ρ·r/2 = [−0.75, −1].
    top-K, K = 2: λ_K = 2(1 − π) = [1.6, 1.0] → L = −(2.4·log 0.2 + 2·log 0.5)/2 = 2.624473."""
    logp = leaf(math.log(0.2), math.log(0.5))
    logb = t(math.log(0.1), math.log(0.5))
    r = t(1.0, 2.0)
    loss, diag = ips_loss(logp, logb, r, clip=1.5)
    assert loss.item() == pytest.approx(1.900226, rel=1e-6)
    loss.backward()
    assert logp.grad.tolist() == pytest.approx([-0.75, -1.0])
    assert diag["clip_frac"] == 0.5 and diag["ratio_mean"] == pytest.approx(1.5)
    loss_k, _ = ips_loss(logp.detach(), logb, r, clip=1.5, topk=2)
    assert loss_k.item() == pytest.approx(2.624473, rel=1e-6)
    loss_noclip, _ = ips_loss(logp.detach(), logb, r, clip=0.0)
    assert loss_noclip.item() == pytest.approx(-(2 * math.log(0.2) + 2 * math.log(0.5)) / 2)
