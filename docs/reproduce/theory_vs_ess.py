"""The λ `recalign theory` calls safe against the λ `lam_rule = ess` picks, on bounded ratings.

    python docs/reproduce/theory_vs_ess.py

10,000 ratings uniform on the whole stars 1–5 (500 users of 20), plus Gaussian noise of scale σ
(not rounded): the theory's safe λ (`theory.verdict`: value loss below 10% of the range [1, 5],
1,000 items, δ = 0.05) and the ESS rule's λ (target 0.5, `ExpSFT.choose_lam`) without a
transform and with exp_sft's default `user_rank`. Prints a markdown table (docs/methods.md).
"""

from __future__ import annotations

import contextlib
import io
from types import SimpleNamespace

import numpy as np
import torch

from recalign import theory
from recalign.config import PostTrainConfig
from recalign.posttrain.sft import ExpSFT
from recalign.posttrain.weights import log_weights, transform_rewards


def ess_lam(rewards: torch.Tensor, users: torch.Tensor, kind: str) -> float:
    meth = ExpSFT(PostTrainConfig(lam_rule="ess", reward_transform=kind))
    ctx = SimpleNamespace(data=SimpleNamespace(inter=SimpleNamespace(user=users.numpy())))
    logw = log_weights(transform_rewards(rewards, users, kind), "exp", lam=1.0)
    with contextlib.redirect_stderr(io.StringIO()):
        return meth.choose_lam(ctx, np.arange(len(rewards)), logw)[0]


def main() -> None:
    g = torch.Generator().manual_seed(0)
    stars = torch.randint(1, 6, (10_000,), generator=g).double()
    users = torch.arange(10_000) // 20
    print("| σ | theory's safe λ | ESS rule λ (none) | ESS rule λ (user_rank) |")
    print("|---|---|---|---|")
    for sigma in (0.01, 0.05, 0.1, 0.25, 0.5, 1.0):
        r = stars + sigma * torch.randn(10_000, generator=g, dtype=torch.float64)
        safe = theory.verdict(sigma, 1000, 0.05, 5.0, r_min=1.0)["verdict_min_lambda"]
        print(f"| {sigma:g} | {safe:.3g} | {ess_lam(r, users, 'none'):.3g} | {ess_lam(r, users, 'user_rank'):.3g} |")


if __name__ == "__main__":
    main()
