"""RLHF with PPO's clipped-ratio loss and group-normalised advantages (`ppo`; Schulman et al.
2017, Ouyang et al. 2022; advantages as in GRPO, Shao et al. 2024).

Each step is one rollout and one update:

1. Contexts: every scored position of the batch (every logged training transition, so `ppo`
   sees as many contexts per epoch as `sft`). Its history is the logged one: a sampled item is
   a one-step action (a contextual bandit per position), it does not enter later contexts.
2. Rollout: `k_samples` items drawn i.i.d. (with replacement) from the current π_θ(·|s),
   over the whole catalog.
3. Reward of each sample: `r̂(s, a) − β·(log π_θ(a|s) − log π_0(a|s))` (`losses.
   kl_penalized_reward`; the log-ratio is the single-sample estimate of KL(π_θ ‖ π_0),
   `β = posttrain.kl_coef`); π_0's log-probs need one no-grad forward of the reference per batch.
4. Advantages: rewards normalised within each context's group of K samples
   (`losses.group_advantages`; no value network).
5. Loss: `losses.ppo_loss` with `π_old` = the sampling policy (the same forward, detached).

With one update per rollout the ratio `π_θ/π_old` is exactly 1 when the gradient is taken, so
no clip could ever bind: the update is the REINFORCE gradient with group-baseline advantages,
and `ppo_loss` is called without a clip (`clip_eps = inf`; `clip_frac` is logged and stays 0).
Reusing a rollout for several updates would make a clip bind; the training loop draws a fresh
batch for every step, so this is left out (and so is a `clip_eps` setting that would do nothing).
"""

from __future__ import annotations

from typing import Any

import torch

from recalign.errors import InputError
from recalign.posttrain.losses import group_advantages, kl_penalized_reward, ppo_loss
from recalign.posttrain.registry import Method, PostTrainContext, register
from recalign.posttrain.scoring import sample_items

NO_CLIP = float("inf")  # the ratio is 1 at every update (see the module docstring)


@register("ppo")
class PPO(Method):
    description = "RLHF: K samples from π_θ, reward model − β·KL to π_0, group advantages, one update per rollout"
    knobs = ("kl_coef", "k_samples")
    needs_reward_model = True
    disable_dropout = True

    def prepare(self, ctx: PostTrainContext) -> dict[str, Any]:
        if ctx.reference is None:
            raise InputError("ppo needs the reference policy π_0")
        if self.pt.k_samples < 2:
            raise InputError(f"ppo needs posttrain.k_samples >= 2 (group advantages); got {self.pt.k_samples}")
        if self.pt.kl_coef < 0:
            raise InputError(f"posttrain.kl_coef must be >= 0; got {self.pt.kl_coef}")
        return {"k_samples": self.pt.k_samples, "kl_coef": self.pt.kl_coef}

    def loss(self, model, batch):
        sel = batch.targets > 0
        hidden = model.encode(batch.items, batch.timestamps)
        logp = model.log_probs(hidden[sel])  # [M, N+1]
        with torch.no_grad():
            samples = sample_items(logp, self.pt.k_samples, replacement=True)  # [M, K]
            logp_old = logp.detach().gather(1, samples)
            ref = self.ctx.reference
            ref_logp = ref.log_probs(ref.encode(batch.items, batch.timestamps)[sel])
            logp_ref = ref_logp.gather(1, samples)
            rm = self.ctx.reward_model
            rm_reward = rm.score(rm.encode(batch.items, batch.timestamps)[sel], samples).float()
            rewards = kl_penalized_reward(rm_reward, logp_old, logp_ref, self.pt.kl_coef)
            adv = group_advantages(rewards)
            p = logp.detach().exp()
            kl = (p[:, 1:] * (logp.detach()[:, 1:] - ref_logp[:, 1:])).sum(-1).mean()  # exact KL(π_θ ‖ π_0)
        loss, diag = ppo_loss(logp.gather(1, samples), logp_old, adv, clip_eps=NO_CLIP)
        diag.update({"rm_reward": rm_reward.mean(), "reward": rewards.mean(), "kl": kl,
                     "kl_sample": (logp_old - logp_ref).mean()})
        return loss, diag
