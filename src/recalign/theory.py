"""The noise-robustness bound of exponential reward-weighted SFT, as a calculator.

As reported from the paper (Chidambaram et al. 2026, arXiv 2603.10279); the algebra below was
re-derived here, the paper's exact statement and constants should be checked before quoting.

Setting: observed rewards `r̂(s,a) = r(s,a) + ε(s,a)` with independent, zero-mean,
σ-sub-Gaussian noise and `|r| ≤ R_max`. The population optimum of the exp_sft loss with the noisy
rewards is `π̂ ∝ π_β·exp(r̂/λ)`; with the true rewards it is `π* ∝ π_β·exp(r/λ)`.

1. Noise level. `P(|ε(s,a)| > t) ≤ 2·exp(−t²/(2σ²))`; a union bound over the |A| actions of a
   context gives, with probability ≥ 1 − δ, `max_a |ε(s,a)| ≤ ε := σ·sqrt(2·log(2|A|/δ))`.
2. Distortion. Each unnormalised weight is off by a factor in `[e^(−ε/λ), e^(ε/λ)]`, so after
   normalisation `π̂(a|s)/π*(a|s) ∈ [e^(−2ε/λ), e^(2ε/λ)]`.
3. Value. `|V(π̂) − V(π*)| ≤ R_max·Σ_a |π̂ − π*| ≤ R_max·Σ_a π*·|π̂/π* − 1| ≤ R_max·(e^(2ε/λ) − 1)`,
   and `V(π*) ≥ V_β` (π* maximises `E_π[r] − λ·KL(π‖π_β)`, which is `V_β` at `π = π_β`). Hence
   `V(π̂) ≥ V_β − R_max·(e^(2ε/λ) − 1)`.
4. Choosing λ. The loss is at most τ when `λ ≥ 2ε / log(1 + τ/R_max)`.

Caveats found while re-deriving: the union bound in step 1 is over the actions of one context;
for the guarantee to hold in every context at once, replace |A| by |S|·|A| (i.e. pass
`n_items = n_contexts·n_items`). The bound is on the population optimum (infinite data, exact
fit), not on a finitely trained network. It is conservative (it even allows a value below
`V_β`); the log of the catalog size enters only through ε.

Verdict (`theory_report`'s `verdict` and `vacuous`). No policy can lose more than the reward
range `R_max − R_min` against another (values lie in `[R_min, R_max]`), so a bound at or above
the range says nothing: it is *vacuous*. `R_min` defaults to 0 (ratings, clicks: rewards in
`[0, R_max]`, range `R_max`); pass `r_min = −R_max` for signed rewards with `|r| ≤ R_max`. The
formulas above keep `R_max`; `R_min` enters only the verdict. A vacuous verdict names the λ that
step 4 needs for a loss below τ: the given τ, else `VERDICT_TAU = 10%` of the reward range.
"""

from __future__ import annotations

import math
from typing import Any

from recalign.errors import InputError

VERDICT_TAU = 0.1  # without a τ, the verdict asks for a value loss below 10% of the reward range


def _check(sigma: float, n_items: float, delta: float) -> None:
    if not sigma >= 0:
        raise InputError(f"sigma (noise scale) must be >= 0, got {sigma}")
    if not n_items >= 1:
        raise InputError(f"n_items (catalog size) must be >= 1, got {n_items}")
    if not 0 < delta < 1:
        raise InputError(f"delta (failure probability) must be in (0, 1), got {delta}")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise InputError(f"{name} must be > 0, got {value}")


def epsilon(sigma: float, n_items: float, delta: float) -> float:
    """Noise level `ε = σ·sqrt(2·log(2|A|/δ))` exceeded by no action's noise w.p. ≥ 1 − δ."""
    _check(sigma, n_items, delta)
    return sigma * math.sqrt(2.0 * (math.log(2.0 * n_items) - math.log(delta)))


def value_loss_bound(sigma: float, n_items: float, delta: float, r_max: float, lam: float) -> float:
    """Worst-case value loss against the logging policy, `R_max·(exp(2ε/λ) − 1)`; inf on overflow."""
    _positive("r_max", r_max)
    _positive("lam", lam)
    x = 2.0 * epsilon(sigma, n_items, delta) / lam
    try:
        return r_max * math.expm1(x)
    except OverflowError:
        return math.inf


def min_lambda(sigma: float, n_items: float, delta: float, r_max: float, tau: float) -> float:
    """Smallest temperature with value loss ≤ τ: `λ_min = 2ε / log(1 + τ/R_max)`."""
    _positive("r_max", r_max)
    _positive("tau", tau)
    return 2.0 * epsilon(sigma, n_items, delta) / math.log1p(tau / r_max)


def verdict(sigma: float, n_items: float, delta: float, r_max: float, lam: float | None = None,
            tau: float | None = None, r_min: float = 0.0) -> dict[str, Any]:
    """Is the guarantee informative? `{"verdict": one line, "vacuous": bool, "reward_range",
    "verdict_tau", "verdict_min_lambda"}`: at `lam`, vacuous when the bound is not below the reward
    range `r_max − r_min`; with `tau` only, when τ itself is not below it."""
    if not r_min < r_max:
        raise InputError(f"r_min must be below r_max, got r_min={r_min}, r_max={r_max}")
    span = r_max - r_min
    t = tau if tau is not None else VERDICT_TAU * span
    need = min_lambda(sigma, n_items, delta, r_max, t)
    t_txt = f"τ = {t:.3g}" + ("" if tau is not None else f" ({VERDICT_TAU:.0%} of the reward range)")
    rng = f"the reward range {span:.3g} ({r_min:g} to {r_max:g})"
    if lam is None:
        vacuous = t >= span
        text = (f"vacuous: τ = {t:.3g} is not below {rng}, any policy meets it" if vacuous else
                f"informative: λ ≥ {need:.3g} keeps the value loss below τ = {t:.3g}, {t / span:.0%} of {rng}")
    else:
        bound = value_loss_bound(sigma, n_items, delta, r_max, lam)
        vacuous = bound >= span
        text = (f"vacuous: the bound {bound:.3g} {'exceeds' if bound > span else 'equals'} {rng} — λ must be ≥ "
                f"{need:.3g} for a loss below {t_txt}" if vacuous else
                f"informative: the bound {bound:.3g} is {bound / span:.0%} of {rng}")
    return {"verdict": text, "vacuous": bool(vacuous), "reward_range": span, "verdict_tau": t,
            "verdict_min_lambda": need}


def theory_report(
    sigma: float,
    n_items: float,
    delta: float,
    r_max: float,
    lam: float | None = None,
    tau: float | None = None,
    r_min: float = 0.0,
) -> dict[str, Any]:
    """The calculator behind `recalign theory`: ε, and the bound at `lam` and/or `λ_min` for `tau`.

    Returns a JSON-ready dict with the inputs (`n_items` an int when it is a whole number),
    `epsilon`, and, where asked, `value_loss_bound` (at `lam`) and `min_lambda` (for `tau`), the
    `verdict` (see `verdict`: `vacuous`, ...), plus a `note` on how to read them.
    """
    out: dict[str, Any] = {
        "sigma": sigma,
        "n_items": int(n_items) if float(n_items).is_integer() else n_items,
        "delta": delta,
        "r_max": r_max,
        "r_min": r_min,
        "epsilon": epsilon(sigma, n_items, delta),
    }
    _positive("r_max", r_max)
    if lam is not None:
        out["lam"] = lam
        out["value_loss_bound"] = value_loss_bound(sigma, n_items, delta, r_max, lam)
    if tau is not None:
        out["tau"] = tau
        out["min_lambda"] = min_lambda(sigma, n_items, delta, r_max, tau)
    if lam is not None or tau is not None:
        out.update(verdict(sigma, n_items, delta, r_max, lam, tau, r_min))
    out["note"] = (
        "with probability >= 1 - delta, V(pi) >= V_beta - value_loss_bound for the population "
        "optimum of exp_sft, per context (pass n_items = contexts x items for all contexts at "
        "once); as reported from arXiv 2603.10279, re-derived in recalign.theory"
    )
    return out
