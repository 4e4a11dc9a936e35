"""RLHF with PPO's clipped-ratio loss and group-normalised advantages (`ppo`; Schulman et al.
2017, Ouyang et al. 2022; advantages and the several updates per batch of samples as in GRPO,
Shao et al. 2024, whose μ is `posttrain.ppo_epochs` here).

A rollout:

1. Contexts: every scored position of the batch (every logged training transition, so `ppo`
   sees as many contexts per epoch as `sft` when `ppo_epochs = 1`). Its history is the logged
   one: a sampled item is a one-step action (a contextual bandit per position), it does not
   enter later contexts.
2. Samples: `k_samples` items drawn i.i.d. (with replacement) from the current π_θ(·|s), over
   the whole catalog.
3. Reward of each sample: `r̂(s, a) − β·(log π_θ(a|s) − log π_0(a|s))` (`losses.
   kl_penalized_reward`; the log-ratio is the single-sample estimate of KL(π_θ ‖ π_0),
   `β = posttrain.kl_coef`); π_0's log-probs need one no-grad forward of the reference per batch.
4. Advantages: rewards normalised within each context's group of K samples
   (`losses.group_advantages`; no value network).
5. `π_old` = the sampling policy: the log-probs of the samples under π_θ at the rollout, kept.

Then `ppo_epochs` optimizer steps on that rollout, each `losses.ppo_loss` (clipped ratio
`π_θ/π_old`, `ε = posttrain.clip_eps`) over the whole rollout with the current π_θ.

How several updates per rollout fit the one training loop (which never branches on a method's
name, draws a fresh batch for every call and steps the optimizer after every `train.grad_accum`
calls): the method keeps its rollout and *replays* it. Of every `ppo_epochs × grad_accum`
consecutive calls, the first `grad_accum` draw fresh rollouts from the batches they are given
(one optimizer step's worth, kept in slots) and the following ones ignore their batch and
recompute the loss on the kept rollout (slot = call mod `grad_accum`) with the current
parameters, which the optimizer has moved since: the ratio leaves 1 and the clip binds
(`clip_frac` is the fraction of clipped samples). Why this and not the alternatives: the method
has no optimizer, so it cannot run inner passes itself; summing `ppo_epochs` losses over one
batch would take them all at the same parameters (ratio 1 again); a loop hook
(`steps_per_batch`) would change how the loop counts steps, schedules the learning rate and
splits epochs for every stage, to serve one method. Replaying keeps the loop and its step
budget untouched.

The cost/benefit trade-off this makes explicit: the loop's steps per epoch are unchanged, so
with `ppo_epochs = E` an epoch draws fresh rollouts from only 1/E of its batches (the batches
handed to a replaying call are skipped; the next epoch's permutation draws others) and queries
the reward model 1/E as often; each rollout is used E times. At an equal number of optimizer
steps it is cheaper in samples and reward-model queries and moves further per sample; to see as
many fresh contexts as `ppo_epochs = 1`, multiply `posttrain.epochs` by E.

Epochs and resume: the cycle restarts at every epoch of the loop (the method counts its calls
and knows the loop's micro-batches per epoch, `ceil(windows / (batch_size × processes))`), so a
rollout never outlives its epoch; an epoch that ends inside a cycle (its batches are not a
multiple of `ppo_epochs × grad_accum`) cuts the last rollout's passes short. The loop's resume
checkpoint is written between epochs, when no rollout is kept, and it restores the RNG that
draws the samples: a resumed run equals an uninterrupted one with any `ppo_epochs`.

`ppo_epochs = 1` (the default) is one update per rollout: the ratio is exactly 1 when the
gradient is taken, no clip binds (`clip_frac` = 0) and the update is the REINFORCE gradient with
group-baseline advantages (GRPO with μ = 1). The loss is then the same computation as before
`ppo_epochs` existed, bit for bit (the clip with `clip_eps` at ratio 1 is the identity in value
and gradient, so it is passed in every case). No separate method name is registered for it:
it is `ppo` with one knob at its default, and a sweep can put `ppo_epochs` on its grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from recalign import distributed
from recalign.data.sequences import SeqBatch
from recalign.errors import InputError
from recalign.posttrain.losses import group_advantages, kl_penalized_reward, ppo_loss
from recalign.posttrain.registry import Method, PostTrainContext, register
from recalign.posttrain.scoring import sample_items


@dataclass
class Rollout:
    """What one batch's rollout keeps for its later updates (all `[M, K]`: M scored positions of
    `batch`, K samples each; detached)."""

    batch: SeqBatch  # the contexts
    samples: Tensor  # item tokens drawn from π_old
    logp_old: Tensor  # log π_old of the samples (the sampling policy)
    logp_ref: Tensor  # log π_0 of the samples
    ref_logp: Tensor  # `[M, N+1]` log π_0 of the catalog at the contexts (for the exact KL; π_0 is frozen)
    adv: Tensor  # group-normalised advantages of the KL-penalised rewards
    rm_reward: Tensor  # the reward model's scores
    rewards: Tensor  # the KL-penalised rewards


def exact_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Mean over rows of `Σ_{a ≥ 1} π(a)·(log π(a) − log π_0(a))`: exact KL(π ‖ π_0), `[M, N+1]` in."""
    p = logp.exp()
    return (p[:, 1:] * (logp[:, 1:] - ref_logp[:, 1:])).sum(-1).mean()


@register("ppo")
class PPO(Method):
    description = ("RLHF: K samples from π_θ, reward model − β·KL to π_0, group advantages, clipped ratio, "
                   "ppo_epochs updates per rollout")
    knobs = ("kl_coef", "k_samples", "ppo_epochs", "clip_eps")
    needs_reward_model = True
    disable_dropout = True

    def prepare(self, ctx: PostTrainContext) -> dict[str, Any]:
        pt = self.pt
        if ctx.reference is None:
            raise InputError("ppo needs the reference policy π_0")
        if pt.k_samples < 2:
            raise InputError(f"ppo needs posttrain.k_samples >= 2 (group advantages); got {pt.k_samples}")
        if pt.kl_coef < 0:
            raise InputError(f"posttrain.kl_coef must be >= 0; got {pt.kl_coef}")
        if pt.ppo_epochs < 1:
            raise InputError(f"posttrain.ppo_epochs must be >= 1; got {pt.ppo_epochs}")
        if not pt.clip_eps > 0:
            raise InputError(f"posttrain.clip_eps must be > 0; got {pt.clip_eps}")
        tr = ctx.cfg.train
        # the loop's micro-batches per epoch on this process (train/loop.py:_setup)
        self._batches_per_epoch = max(1, math.ceil(ctx.data.seq.n_windows / (tr.batch_size * distributed.world_size())))
        self._group = tr.grad_accum  # calls per optimizer step
        self._epochs = pt.ppo_epochs
        self._n = 0  # calls so far
        self._slots: dict[int, Rollout] = {}
        return {"k_samples": pt.k_samples, "kl_coef": pt.kl_coef, "ppo_epochs": pt.ppo_epochs, "clip_eps": pt.clip_eps}

    def loss(self, model, batch):
        call = self._n % self._batches_per_epoch  # the call's micro-batch in the loop's epoch
        self._n += 1
        if call == 0:
            self._slots.clear()  # a rollout never outlives its epoch
        phase = call % (self._group * self._epochs)
        if phase < self._group:
            return self._fresh(model, batch, slot=phase)
        return self._replay(model, self._slots[phase % self._group])

    def _ref_logp(self, batch: SeqBatch, sel: Tensor) -> Tensor:
        ref = self.ctx.reference
        return ref.position_log_probs(batch.items, batch.timestamps, sel)

    def _fresh(self, model, batch: SeqBatch, slot: int):
        """A new rollout from `batch` and the first update on it (kept in `slot` for the next
        `ppo_epochs − 1` passes)."""
        sel = batch.targets > 0
        logp = model.position_log_probs(batch.items, batch.timestamps, sel)  # [M, N+1]
        with torch.no_grad():
            samples = sample_items(logp, self.pt.k_samples, replacement=True)  # [M, K]
            logp_old = logp.detach().gather(1, samples)
            ref_logp = self._ref_logp(batch, sel)
            logp_ref = ref_logp.gather(1, samples)
            rm = self.ctx.reward_model
            rm_reward = rm.score(rm.encode(batch.items, batch.timestamps)[sel], samples).float()
            rewards = kl_penalized_reward(rm_reward, logp_old, logp_ref, self.pt.kl_coef)
            ro = Rollout(batch, samples, logp_old, logp_ref, ref_logp, group_advantages(rewards), rm_reward, rewards)
        if self._epochs > 1:
            self._slots[slot] = ro
        return self._update(logp, ro)

    def _replay(self, model, ro: Rollout):
        """A further update on a kept rollout, with the current parameters."""
        sel = ro.batch.targets > 0
        logp = model.position_log_probs(ro.batch.items, ro.batch.timestamps, sel)
        return self._update(logp, ro)

    def _update(self, logp: Tensor, ro: Rollout) -> tuple[Tensor, dict[str, Any]]:
        with torch.no_grad():
            kl = exact_kl(logp.detach(), ro.ref_logp)  # exact KL(π_θ ‖ π_0) at the scored positions
        loss, diag = ppo_loss(logp.gather(1, ro.samples), ro.logp_old, ro.adv, clip_eps=self.pt.clip_eps)
        diag.update({"rm_reward": ro.rm_reward.mean(), "reward": ro.rewards.mean(), "kl": kl,
                     "kl_sample": (ro.logp_old - ro.logp_ref).mean()})
        return loss, diag
