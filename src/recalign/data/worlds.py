"""Diagnostics of a simulated world: does it have the mechanisms that make a learned reward model
unreliable where a policy goes (METHOD.md, "Worlds")?

`world_diagnostics(inter, sim)` measures, on the simulator's own logged table:

- coverage: logged rows per item (min / median / max), the share of items with fewer than 10
  logged rows and with none;
- outcome selection: the mean observed reward and the mean r* of the logged rows against
  E_{a∼π_β}[r*], the mean true reward of what the recommender showed in the same contexts
  (`Simulator.logging_expected(..., shown=True)`, exact, on at most `max_contexts` logged rows
  drawn at random); the gaps are what selection on the outcome adds;
- ratings missing not at random: the share of consumptions that were rated (logged) and the
  mean r* of rated and of unrated consumptions;
- the reward scale: the share of observed rewards outside [r_min, r_max] and the share that are
  whole numbers.

Cost: O(max_contexts · n_items · dim) for the shown-reward term, the rest is linear in the rows.
"""

from __future__ import annotations

import numpy as np

from recalign.data.schema import Interactions
from recalign.data.simulator import Simulator
from recalign.errors import InputError


def world_diagnostics(inter: Interactions, sim: Simulator, *, max_contexts: int = 5000, seed: int = 0) -> dict:
    """The diagnostics above as a flat dict of numbers (see the module docstring)."""
    if len(inter) != sim.logged_true_reward.size or not np.array_equal(inter.item, sim.interactions.item):
        raise InputError("world_diagnostics needs the simulator's own logged table (before any split)")
    n, n_items = len(inter), sim.cfg.n_items
    counts = np.bincount(inter.item, minlength=n_items)
    out: dict = {
        "n_users": int(sim.cfg.n_users), "n_items": int(n_items), "n_logged": int(n),
        "n_consumed": int(sim.consumed_item.size),
        "exposures_min": int(counts.min()), "exposures_median": float(np.median(counts)),
        "exposures_max": int(counts.max()), "share_items_under_10": float(np.mean(counts < 10)),
        "share_items_unlogged": float(np.mean(counts == 0)),
    }
    reward = inter.reward.astype(np.float64)
    rows = np.arange(n)
    if n > max_contexts:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=max_contexts, replace=False))
    users = inter.user[rows]
    shown = sim.logging_expected(users, step=rows - sim.offsets[users], shown=True)
    out.update({
        "observed_reward_mean": float(reward.mean()),
        "logged_true_reward_mean": float(sim.logged_true_reward.mean()),
        "contexts": int(rows.size),
        "shown_true_reward_mean": float(shown.mean()),
        "selection_gap_true": float(sim.logged_true_reward[rows].mean() - shown.mean()),
        "selection_gap_observed": float(reward[rows].mean() - shown.mean()),
    })
    rated = sim.consumed_rated
    lived = sim.consumed_true_reward
    out.update({
        "share_rated": float(n / lived.size),
        "unrated_true_reward_mean": float(lived[~rated].mean()) if rated is not None and (~rated).any() else float("nan"),
        "share_rewards_outside_range": float(np.mean((reward < sim.r_min) | (reward > sim.r_max))),
        "share_rewards_whole": float(np.mean(reward == np.round(reward))),
    })
    return out
