"""Ground-truth simulator: logged interactions whose true expected reward is known exactly.

The world (all vectors float32, `dim` = `SimConfig.dim`):

- Items. `K` clusters ("genres") with unit centres `c_k`; item `a` belongs to cluster `k(a)`
  (clusters have equal sizes ±1, assignment random) and has the vector
  `v_a = c_k(a) + item_spread · g_a / sqrt(dim)`, `g_a ~ N(0, I)`. Popularity is Zipf over a
  random ranking: `pop_a ∝ rank_a^(−zipf_exponent)` (sums to 1). Quality
  `q_a = quality_std · (ρ·z_a + sqrt(1 − ρ²)·ξ_a)` where `z_a` is the standardised log
  popularity, `ξ_a ~ N(0, 1)` and `ρ = pop_quality_corr`.
- Users. A taste `τ_u` on the unit sphere, drawn uniformly at the start.
- True reward (a rating-like scale, bounded):
  `r*(τ, a) = r_min + (r_max − r_min) · sigmoid(affinity · <τ, v_a> + q_a)`, in `(r_min, r_max)`.
  Threshold users (`threshold_users`, a share of users drawn from their own random stream, off
  by default) replace the affinity term by a step: `±affinity/2` as `<τ, v_a>` is at least or
  below a personal threshold `θ_u ~ Uniform[0, 2·threshold_level]` (they like an item only
  above it). No bilinear head `h·W·e_a + b_a` represents that (over a set of contexts it scores
  a matrix of rank ≤ D + 2; the best rank-18 fit of these users' r* leaves ~0.58 RMSE on the
  1–5 scale, against ~0.14 for the other users: tests/test_worlds.py).
- Drift. Consuming item `a` moves the taste: `τ ← normalise((1 − drift)·τ + drift·v_a)`. The
  taste before step `t` is therefore a deterministic function of the initial taste and the
  items consumed before `t`: order matters, and a sequence model can read the taste off the
  history. The reward of the item at step `t` is judged with the taste BEFORE step `t`.
- Logging policy `π_β(a|s)`, a mixture (weights normalised to sum 1):
  `w_pop · pop_a  +  w_taste · P_s(k(a)) · pop_a / pop(k(a))  +  w_uniform / N`
  where `P_s = softmax_k(logging_beta · <τ̃, c_k>)` is a softmax over clusters of the user's
  DISTORTED taste `τ̃ = normalise(((1 − δ)·I + δ·Q) τ)` (`Q` a fixed random rotation,
  `δ = logging_distortion`) and `pop(k)` is the popularity mass of cluster `k`. The taste
  component picks a genre from a wrong view of the taste and then a popular item in it: it
  never sees the item-level affinity nor the quality, so imitating it is measurably worse
  than the oracle. The mixture is exact: its probabilities (`logging_probs`) are what the
  sampler draws from. With `repeats = false` (the default, as in MovieLens) the logging policy
  never repeats an item: it is `π_β` restricted to the items not yet consumed and renormalised
  (sampled exactly by rejection, with a chunked exact fallback).
- Outcome selection (`selection` = κ ≥ 0, off by default). `π_β` is what the recommender
  shows; the user takes a shown item with odds growing with its own true reward, so the
  consumed (logged) item follows `π_sel(a|s) = π_β(a|s)·exp(κ·r*(s,a)) / Z(s)` (over the
  unseen items when repeats = false). It is then `π_sel` that generated the logs:
  `logging_probs`, `logging_value`, `logging_expected` and the logged propensities are of
  `π_sel` (`shown=True` gives `π_β`). Sampled exactly by rejection: draw from `π_β`, accept
  with probability `exp(κ·(r* − r_max)) ≤ 1` (on average 0.44 per round at κ = 1 and 0.29 at
  κ = 2 in the default world; never below `e^{−κ·(r_max − r_min)}`), for at most
  `_MAX_REJECTION_ROUNDS` rounds, then the chunked exact inverse CDF. The
  item-level factor breaks the cluster factorisation: `Z(s)` is a sum over the catalog, so a
  logged propensity costs O(N·dim) and `logged_propensity` is computed on first use.
- Ratings missing not at random (`rate_prob_slope`, `rate_prob_base`; off by default). Each
  consumption is rated with probability
  `p_rate(r*) = rate_prob_base · sigmoid(slope·(r* − mid)) / sigmoid(slope·(r_max − mid))`
  (`mid = (r_min + r_max)/2`; equal to `rate_prob_base` at `r* = r_max`, increasing in `r*`;
  slope 0 with base < 1 is missing completely at random). A user keeps consuming until
  `seq_len` (~ uniform in [min_len, max_len]) consumptions are rated. An unrated consumption is
  lived but not logged: it moves the taste and is never repeated, but the table has no row for
  it (the logged sequence skips it). The `consumed_*` attributes keep every consumption.
- Why clusters: drawing from a softmax over all N items for every one of ~10M logged
  interactions costs N·dim flops each (1.6·10^14 for 1M items: hours). The cluster form keeps
  sampling at O(K·dim) per interaction while every probability stays exact.

Observed rewards `r = r* + ε` (not clipped: `observe = continuous`, the default), with the
noise drawn from its own random stream (the same seed gives the same items and true rewards
under every noise model). `observe = stars` logs `clip(round(r* + ε), ceil(r_min), floor(r_max))`,
whole stars as MovieLens. Scales, for the default world (500 items; 1–5 scale, range 4): the sd
of r* over the catalog in a user's context is ~1.1 (over the logged rows ~1.0).

- `gaussian`: `ε ~ N(0, noise_scale²)`; zero mean for every action. The default 0.5 is 1/8 of
  the range and ~0.45 sd of r*; 1.0 is ~0.9 sd and puts ~22% of continuous ratings outside
  [r_min, r_max] in the demo world.
- `student_t`: `ε = noise_scale · sqrt((df − 2)/df) · T_df` (std `noise_scale`, heavy tails;
  `df = noise_df > 2`); zero mean for every action.
- `flip`: with probability `p = noise_scale` the rating is mirrored around the midpoint,
  `r = r_min + r_max − r*`; so `E[r | s, a] = mid + (1 − 2p)(r* − mid)` (`mid = (r_min + r_max)/2`):
  NOT zero-mean, it shrinks every action toward the midpoint (order kept for p < 0.5, reversed for
  p > 0.5). Observed rewards stay in range.
- `popularity_bias`: `ε = noise_scale · z_a + N(0, popularity_bias_jitter²)` with `z_a` the
  standardised log popularity (mean 0, std 1 over the catalog); `E[ε | a] = noise_scale · z_a`:
  action-dependent on purpose, it favours popular items. `z_a` is skewed (Zipf): from −1.0 to
  +5.4 in the default world (top 1% of items above +3.5; ~ln N − 1 at the head), +1.1 on average
  over the logged rows. So noise_scale 1 gives the head item +5.4, more than the whole range,
  and the logs +1.1 on average; 0.2 (head +1.1, logs +0.2) is a bias of the size of one sd of r*
  at the head only.

Evaluation protocol (the oracle API). A context is a prefix of a user's log: `step` = how many
of the user's logged interactions it contains (with unrated consumptions, the context is every
consumption before the next logged one, rated or not: its taste and its seen items). The
default (`step=None`) is the leave-one-out TEST context: everything before the user's last
logged interaction, i.e. the taste in which the held-out item was chosen and rewarded
(`step=-2` is the validation context; an array gives one prefix length per user, e.g.
`context_end − offsets[user]` of a split). All values are true expected rewards `r*` in that
context's taste:

- `true_reward(users, items)`, `policy_value(users, topk_items)` (mean `r*` of a list),
- `oracle_topk(users, k)` / `oracle_value(users, k)` (the k items of highest `r*`),
- `expected_value_dist(users, dist)` = `Σ_a π(a|s) r*(s,a)` for a given policy distribution,
- `logging_value(users, k)`: both `E_{a∼π_β}[r*]` (one draw) and the mean `r*` of the top-k
  items by `π_β` (the common unit to compare with top-k lists); with selection, of `π_sel`
  (`shown=True`: `π_β`); `logging_expected(users)` is the first alone.
`exclude_seen` (default: `not repeats`) removes the context's items (every consumption, rated or
not) from top-k lists and from `π_β`. A `state` (tastes `[U, dim]`) may replace `step` for a
history-free context. `recalign.data.worlds.world_diagnostics` measures a world's coverage,
selection, missing ratings and reward scale.
Nothing of shape users × items is ever built: every method works on user blocks × item chunks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch

from recalign.configlib import FRACTION, NON_NEGATIVE, field
from recalign.data.schema import Interactions
from recalign.errors import InputError

_EPOCH = 1_577_836_800  # 2020-01-01 UTC: users start within the following year
_USER_BLOCK = 8192  # users simulated together (fixed, so logs never depend on memory settings)
_EVAL_USER_BLOCK = 2048  # users per block in the oracle methods
_CHUNK_ELEMS = 1 << 22  # user-block × item-chunk elements per chunk (16 MB of float32)
_MAX_REJECTION_ROUNDS = 64  # then the few users still drawing seen items are sampled exactly


@dataclass
class SimConfig:
    seed: int = field(0, "random seed: the same seed gives the same users, items and logs")
    n_users: int = field(1000, "number of simulated users")
    n_items: int = field(500, "catalog size")
    dim: int = field(16, "dimension of the latent user and item vectors")
    noise: Literal["gaussian", "student_t", "flip", "popularity_bias"] = field(
        "gaussian", "observation noise model of the logged rewards"
    )
    noise_scale: float = field(
        0.5, "scale of the observation noise: std (gaussian, student_t), flip probability (flip), "
        "bias per standard deviation of log popularity (popularity_bias). Default world (1–5 scale, sd of "
        "r* ≈ 1.1): std 0.5 ≈ 0.45 sd of r*; popularity_bias 1 gives the head item +5.4 (more than the "
        "range) and the logged rows +1.1 on average"
    )
    noise_df: float = field(3.0, "student_t: degrees of freedom (> 2; smaller = heavier tails)")
    popularity_bias_jitter: float = field(0.1, "popularity_bias: std of the zero-mean gaussian added to the bias")
    min_len: int = field(20, "shortest user log (interactions per user ~ uniform in [min_len, max_len])")
    max_len: int = field(50, "longest user log")
    repeats: bool = field(False, "allow a user to consume the same item again (false: as in MovieLens)")
    r_min: float = field(1.0, "lower end of the true reward scale")
    r_max: float = field(5.0, "upper end of the true reward scale")
    affinity: float = field(4.0, "weight of the taste match <taste, item> in the reward logit")
    quality_std: float = field(1.0, "std of the item quality term of the reward logit")
    pop_quality_corr: float = field(0.3, "correlation of item quality with standardised log popularity, in [-1, 1]")
    n_clusters: int = field(0, "item clusters (genres); 0 = round(sqrt(n_items))")
    item_spread: float = field(0.5, "norm scale of an item vector's offset from its cluster centre")
    zipf_exponent: float = field(1.0, "item popularity ~ rank^(-zipf_exponent)")
    drift: float = field(0.1, "taste drift η: taste <- normalise((1-η)·taste + η·item) after each item")
    logging_popularity: float = field(0.2, "logging policy: weight of the popularity component")
    logging_taste: float = field(0.7, "logging policy: weight of the distorted-taste component")
    logging_uniform: float = field(0.1, "logging policy: weight of uniform exploration")
    logging_beta: float = field(5.0, "logging policy: inverse temperature of its softmax over clusters")
    logging_distortion: float = field(
        0.5, "logging policy: δ in [0, 1], how far its view of the taste is rotated (0 = exact taste)"
    )
    mean_gap_seconds: float = field(86400.0, "mean time between two interactions of a user (seconds)")
    log_propensity: bool = field(
        False, "write the logging propensity of each logged row (π_β(a|s), or π_sel(a|s) with selection > 0) "
        "into the table's propensity column"
    )
    # Mechanisms of the paper's failure modes (METHOD.md "Worlds"); every default is off.
    selection: float = field(
        0.0, "outcome selection κ: users take a shown item with odds ∝ exp(κ·r*), so the logged item follows "
        "π_sel ∝ π_β·exp(κ·r*) (0 = off; κ = 1: a one-star better item is e ≈ 2.7x as likely)", check=NON_NEGATIVE
    )
    rate_prob_slope: float = field(
        0.0, "ratings missing not at random: a consumption is rated (logged) with probability "
        "rate_prob_base·sigmoid(slope·(r* − mid))/sigmoid(slope·(r_max − mid)); unrated ones are lived, not "
        "logged (0 with rate_prob_base = 1: every consumption is rated)", check=NON_NEGATIVE
    )
    rate_prob_base: float = field(
        1.0, "probability that a consumption with r* = r_max is rated (with rate_prob_slope = 0: of every "
        "consumption, missing completely at random)", check=(lambda v: 0 < v <= 1, "in (0, 1]")
    )
    observe: Literal["continuous", "stars"] = field(
        "continuous", "logged rating: continuous (r* + noise, unbounded) or stars (r* + noise rounded to a "
        "whole number and clipped to [ceil(r_min), floor(r_max)], as MovieLens)"
    )
    threshold_users: float = field(
        0.0, "share of users whose affinity term is a step: ±affinity/2 as <taste, item> is above or below "
        "a personal threshold (a reward model h·W·e_a + b_a cannot represent it; 0 = off)", check=FRACTION
    )
    threshold_level: float = field(
        0.3, "threshold users: personal threshold ~ Uniform[0, 2·threshold_level] on <taste, item> "
        "(0.3: a threshold user likes 7–60% of the catalog, a quarter at the median, in the demo world)", check=NON_NEGATIVE
    )


class LoggingValue(NamedTuple):
    """True value of the logging policy per user: `expected` = E_{a∼π_β}[r*] (one draw),
    `topk` = mean r* of the k items π_β ranks highest."""

    expected: np.ndarray
    topk: np.ndarray


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt((x * x).sum(axis=-1, keepdims=True))


def _check(cfg: SimConfig) -> None:
    def bad(msg: str) -> InputError:
        return InputError(f"simulator config: {msg}")

    if cfg.seed < 0:
        raise bad(f"seed must be >= 0; got {cfg.seed}")
    if cfg.n_users < 1 or cfg.n_items < 1 or cfg.dim < 1:
        raise bad("n_users, n_items and dim must be >= 1")
    if not 1 <= cfg.min_len <= cfg.max_len:
        raise bad(f"need 1 <= min_len <= max_len; got {cfg.min_len}, {cfg.max_len}")
    if not cfg.repeats and cfg.max_len > cfg.n_items:
        raise bad(f"repeats = false needs max_len <= n_items; got {cfg.max_len} > {cfg.n_items}")
    if not cfg.r_min < cfg.r_max:
        raise bad("r_min must be below r_max")
    if cfg.noise not in ("gaussian", "student_t", "flip", "popularity_bias"):
        raise bad(f"noise must be gaussian, student_t, flip or popularity_bias; got {cfg.noise!r}")
    if cfg.noise_scale < 0 or (cfg.noise == "flip" and cfg.noise_scale > 1):
        raise bad("noise_scale must be >= 0 (and a probability in [0, 1] for flip)")
    if cfg.noise == "student_t" and cfg.noise_df <= 2:
        raise bad(f"noise_df must be > 2 (finite variance); got {cfg.noise_df}")
    if cfg.popularity_bias_jitter < 0 or cfg.quality_std < 0 or cfg.item_spread < 0:
        raise bad("popularity_bias_jitter, quality_std and item_spread must be >= 0")
    if not -1 <= cfg.pop_quality_corr <= 1:
        raise bad("pop_quality_corr must lie in [-1, 1]")
    if not 0 <= cfg.n_clusters <= cfg.n_items:
        raise bad("n_clusters must lie in [0, n_items]")
    if not 0 <= cfg.drift <= 1 or not 0 <= cfg.logging_distortion <= 1:
        raise bad("drift and logging_distortion must lie in [0, 1]")
    w = (cfg.logging_popularity, cfg.logging_taste, cfg.logging_uniform)
    if min(w) < 0 or sum(w) <= 0:
        raise bad("logging weights must be >= 0 with a positive sum")
    if cfg.mean_gap_seconds < 0:
        raise bad("mean_gap_seconds must be >= 0")
    if not (np.isfinite(cfg.selection) and cfg.selection >= 0):
        raise bad(f"selection must be finite and >= 0; got {cfg.selection}")
    if not (np.isfinite(cfg.rate_prob_slope) and cfg.rate_prob_slope >= 0) or not 0 < cfg.rate_prob_base <= 1:
        raise bad("rate_prob_slope must be finite and >= 0, rate_prob_base in (0, 1]")
    if cfg.observe not in ("continuous", "stars"):
        raise bad(f"observe must be continuous or stars; got {cfg.observe!r}")
    if cfg.observe == "stars" and np.ceil(cfg.r_min) > np.floor(cfg.r_max):
        raise bad(f"observe = stars needs a whole number in [r_min, r_max]; got [{cfg.r_min}, {cfg.r_max}]")
    if not 0 <= cfg.threshold_users <= 1 or cfg.threshold_level < 0:
        raise bad("threshold_users must lie in [0, 1] and threshold_level be >= 0")


class Simulator:
    """The simulated world and its logs (built in the constructor; see the module docstring).

    Attributes (n = logged rows, in the `Interactions` row order):
        interactions: the logged table.
        r_min, r_max: the true reward scale.
        item_vec [N, dim] float32, item_cluster [N], cluster_vec [K, dim], popularity [N] (sums
        to 1), pop_z [N] (standardised log popularity), quality [N].
        initial_taste, test_taste (before each user's last logged interaction), final_taste
        [n_users, dim].
        seq_len [n_users], offsets [n_users + 1]: user u's rows are offsets[u]:offsets[u+1].
        logged_true_reward [n] float64: r* of each logged row in the taste before it.
        logged_propensity [n] float64: the logging policy's probability of each logged row in its
        context (π_β, or π_sel with selection > 0; restricted to unseen items when repeats =
        false). With selection > 0 it costs O(n_items·dim) per row and is computed on first use.
        threshold_user [n_users] bool, user_threshold [n_users] float64 (NaN for other users).
        consumed_len [n_users], consumed_offsets, consumed_item, consumed_true_reward: every
        consumption the users lived, rated or not, in (user, time) order; consumed_rated: which
        of them were rated (logged), or None when every consumption is (they are then the
        logged arrays themselves).
    """

    def __init__(self, cfg: SimConfig) -> None:
        _check(cfg)
        self.cfg = cfg
        self.r_min = float(cfg.r_min)
        self.r_max = float(cfg.r_max)
        w = np.array([cfg.logging_popularity, cfg.logging_taste, cfg.logging_uniform], dtype=np.float64)
        self._w_pop, self._w_taste, self._w_unif = (w / w.sum()).tolist()
        self._kappa = float(cfg.selection)
        self._mnar = cfg.rate_prob_slope > 0 or cfg.rate_prob_base < 1
        self._build_world()
        self._build_threshold_users()
        self._simulate_logs()

    # ------------------------------------------------------------------ the world
    def _build_world(self) -> None:
        cfg = self.cfg
        n, d = cfg.n_items, cfg.dim
        k = cfg.n_clusters or max(1, int(round(np.sqrt(n))))
        rng = np.random.default_rng([cfg.seed, 0])
        self.n_clusters = k
        self.cluster_vec = _normalise(rng.standard_normal((k, d))).astype(np.float32)
        self.item_cluster = rng.permutation(np.arange(n) % k).astype(np.int64)
        offs = rng.standard_normal((n, d)) * (cfg.item_spread / np.sqrt(d))
        self.item_vec = (self.cluster_vec[self.item_cluster] + offs).astype(np.float32)
        del offs
        rank = rng.permutation(n).astype(np.float64) + 1.0
        logpop = -cfg.zipf_exponent * np.log(rank)
        pop = np.exp(logpop - logpop.max())
        self.popularity = pop / pop.sum()
        sd = logpop.std()
        self.pop_z = (logpop - logpop.mean()) / sd if sd > 0 else np.zeros(n)
        rho = cfg.pop_quality_corr
        xi = rng.standard_normal(n)
        self.quality = (cfg.quality_std * (rho * self.pop_z + np.sqrt(1 - rho * rho) * xi)).astype(np.float32)
        q, r = np.linalg.qr(rng.standard_normal((d, d)))
        q = q * np.sign(np.diag(r))
        delta = cfg.logging_distortion
        self._distort_t = ((1 - delta) * np.eye(d) + delta * q).T.astype(np.float32)  # τ̃ = τ @ this
        self.initial_taste = _normalise(rng.standard_normal((cfg.n_users, d))).astype(np.float32)
        # Sampling tables: items sorted by cluster, cumulative popularity inside that order.
        self._by_cluster = np.argsort(self.item_cluster, kind="stable")
        self._cl_start = np.searchsorted(self.item_cluster[self._by_cluster], np.arange(k + 1))
        self._cum_by_cluster = np.cumsum(self.popularity[self._by_cluster])
        self._cl_mass = np.bincount(self.item_cluster, weights=self.popularity, minlength=k)
        cum0 = np.concatenate([[0.0], self._cum_by_cluster])
        self._cl_cum_before = cum0[self._cl_start[:-1]]
        self._within = self.popularity / self._cl_mass[self.item_cluster]  # pop_a / pop(k(a))
        self._cum_pop = np.cumsum(self.popularity)
        # Cluster softmax laid out as G groups of H columns (zero padding), for two-level sampling.
        self._h = int(np.ceil(np.sqrt(k)))
        self._g = -(-k // self._h)
        mat = np.zeros((d + 1, self._g * self._h), dtype=np.float32)
        mat[:d, :k] = cfg.logging_beta * self.cluster_vec.T
        mat[d] = -cfg.logging_beta
        self._cluster_mat = mat  # [τ̃, 1] @ mat = logging_beta·<τ̃, c_k> − logging_beta

    def _build_threshold_users(self) -> None:
        """Users whose affinity term is a step (their own random stream, so nothing else moves)."""
        cfg = self.cfg
        self.threshold_user = np.zeros(cfg.n_users, dtype=bool)
        self.user_threshold = np.full(cfg.n_users, np.nan)
        self._any_threshold = False
        if cfg.threshold_users > 0:
            rng = np.random.default_rng([cfg.seed, 6])
            self.threshold_user = rng.random(cfg.n_users) < cfg.threshold_users
            level = rng.uniform(0.0, 2.0 * cfg.threshold_level, cfg.n_users)
            self.user_threshold = np.where(self.threshold_user, level, np.nan)
            self._any_threshold = bool(self.threshold_user.any())
            self._item_vec64 = self.item_vec.astype(np.float64)

    # ------------------------------------------------------------------ building blocks
    def reward_logit(self, taste: np.ndarray, items: np.ndarray, users: np.ndarray) -> np.ndarray:
        """`affinity·<τ, v_a> + q_a` for tastes `[..., dim]` and items `[...]` (same leading shape)
        of `users` [U] (the leading axis); a threshold user's affinity term is `±affinity/2`."""
        v = self.item_vec[items]
        logit = self.cfg.affinity * (taste * v).sum(axis=-1) + self.quality[items]
        if not self._any_threshold:
            return logit
        thr = self.user_threshold[np.asarray(users, dtype=np.int64)]
        thr = thr.reshape(thr.shape + (1,) * (logit.ndim - thr.ndim))
        if np.isnan(thr).all():
            return logit
        # The comparison in float64 (exact products, 16-term sums) so that every path agrees on it.
        x = (taste.astype(np.float64) * v.astype(np.float64)).sum(axis=-1)
        half = np.float32(self.cfg.affinity / 2)
        step = np.where(x >= thr, half, -half) + self.quality[items]
        return np.where(np.isnan(thr), logit, step).astype(np.float32)

    def _to_reward(self, logit: np.ndarray) -> np.ndarray:
        return self.r_min + (self.r_max - self.r_min) / (1.0 + np.exp(-np.asarray(logit, dtype=np.float64)))

    def step_taste(self, taste: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The taste after consuming `items` [U]: `normalise((1 − drift)·τ + drift·v_a)`."""
        eta = np.float32(self.cfg.drift)
        return _normalise((np.float32(1) - eta) * taste + eta * self.item_vec[items])

    def _cluster_weights(self, taste: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unnormalised weights of the logging softmax over clusters, `[U, G·H]` float32 (padding
        columns 0), and their group sums `[U, G]` float64 (their total is the normaliser)."""
        seen = _normalise(taste @ self._distort_t)
        beta = self.cfg.logging_beta
        if beta <= 40:  # |logit| <= beta (unit vectors): the shift -beta (last row) cannot overflow
            w = np.concatenate([seen, np.ones((len(seen), 1), np.float32)], axis=1) @ self._cluster_mat
        else:
            w = seen @ self._cluster_mat[:-1]
            w -= w.max(axis=1, keepdims=True)
        np.exp(w, out=w)
        w[:, self.n_clusters:] = 0.0
        groups = w.reshape(len(w), self._g, self._h).sum(axis=2).astype(np.float64)
        return w, groups

    def cluster_probs(self, taste: np.ndarray) -> np.ndarray:
        """`P_s(k)` of the logging policy's taste component: `[U, dim]` tastes → `[U, K]` float64
        (normalised in float64; the sampler's float32 group sums agree to ~1e-7 relative)."""
        w = self._cluster_weights(taste)[0][:, : self.n_clusters].astype(np.float64)
        return w / w.sum(axis=1, keepdims=True)

    def _pi_items(self, pk: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Unrestricted π_β given cluster probs `pk` [U, K]: of per-user `items` [U, K'], or of a
        shared 1-D item array (a catalog chunk) → [U, len]. float64."""
        cl = self.item_cluster[items]
        p = np.take_along_axis(pk, cl, axis=1) if cl.ndim == 2 else np.take(pk, cl, axis=1)
        p *= self._w_taste * self._within[items]
        p += self._w_pop * self.popularity[items] + self._w_unif / self.cfg.n_items
        return p

    def _draw(self, w: np.ndarray, groups: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One draw per row from the unrestricted π_β, given `_cluster_weights` and uniforms [3, R]."""
        n = self.cfg.n_items
        comp_u, item_u, cl_u = u
        out = np.minimum((item_u * n).astype(np.int64), n - 1)  # uniform component
        pop = comp_u < self._w_pop
        if pop.any():
            idx = np.searchsorted(self._cum_pop, item_u[pop] * self._cum_pop[-1], side="right")
            out[pop] = np.minimum(idx, n - 1)
        rows = np.flatnonzero((comp_u >= self._w_pop) & (comp_u < self._w_pop + self._w_taste))
        if rows.size:
            # Inverse CDF in two levels: the group, then the cluster inside it.
            cg = np.cumsum(groups[rows], axis=1)
            target = cl_u[rows] * cg[:, -1]
            g = np.minimum((cg < target[:, None]).sum(axis=1), self._g - 1)
            rest = target - (cg[np.arange(rows.size), g] - groups[rows, g])
            ch = np.cumsum(w.reshape(len(w), self._g, self._h)[rows, g], axis=1, dtype=np.float64)
            h = np.minimum((ch < rest[:, None]).sum(axis=1), self._h - 1)
            k = np.minimum(g * self._h + h, self.n_clusters - 1)
            target = self._cl_cum_before[k] + item_u[rows] * self._cl_mass[k]
            idx = np.searchsorted(self._cum_by_cluster, target, side="right")
            idx = np.clip(idx, self._cl_start[k], self._cl_start[k + 1] - 1)
            out[rows] = self._by_cluster[idx]
        return out

    # ------------------------------------------------------------------ the logs
    def _simulate_logs(self) -> None:
        cfg = self.cfg
        nu = cfg.n_users
        rng_len = np.random.default_rng([cfg.seed, 1])
        seq_len = rng_len.integers(cfg.min_len, cfg.max_len + 1, size=nu).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(seq_len)]).astype(np.int64)
        self.test_taste = np.empty_like(self.initial_taste)
        self.final_taste = np.empty_like(self.initial_taste)
        lived = _Consumed(offsets if not self._mnar else None)
        for b, start in enumerate(range(0, nu, _USER_BLOCK)):
            stop = min(nu, start + _USER_BLOCK)
            rate_rng = np.random.default_rng([cfg.seed, 5, b]) if self._mnar else None
            lived.add(start, *self._simulate_block(np.random.default_rng([cfg.seed, 2, b]), rate_rng, start, stop,
                                                   seq_len[start:stop]))
        self.seq_len, self.offsets = seq_len, offsets
        items, rstar, prop = self._set_consumed(lived)
        del lived

        user = np.repeat(np.arange(nu, dtype=np.int64), seq_len)
        ts = self._timestamps()
        reward = rstar + self._noise(items, rstar)
        if cfg.observe == "stars":
            reward = np.clip(np.rint(reward), np.ceil(self.r_min), np.floor(self.r_max))
        reward = reward.astype(np.float32)
        self._logged_item = items
        self.logged_true_reward, self._logged_propensity = rstar, prop
        meta = {"simulator": dataclasses.asdict(cfg), "r_min": self.r_min, "r_max": self.r_max}
        inter = Interactions.from_raw(
            user, items, ts, reward, self.logged_propensity.astype(np.float32).clip(np.finfo(np.float32).tiny, 1.0)
            if cfg.log_propensity else None, source="sim", item_ids=np.arange(cfg.n_items), meta=meta,
        )
        # Rows were generated in (user, time) order with strictly increasing times, so the table's
        # sort is the identity and the arrays above stay aligned with its rows.
        if not (np.array_equal(inter.item, items) and np.array_equal(inter.user, user)):
            raise AssertionError("simulator rows are not in the table's (user, timestamp) order")
        self.interactions = inter

    def _set_consumed(self, lived: _Consumed) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Keep the consumption arrays; return the logged rows' (items, r*, propensity or None)."""
        item, rstar, prop, rated, lens = lived.arrays()
        self.consumed_len = lens
        self.consumed_offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        self.consumed_item, self.consumed_true_reward, self.consumed_rated = item, rstar, rated
        self._logged_pos = None  # position of each logged row among its user's consumptions (None: identity)
        if self._kappa:
            prop = None  # π_sel's normaliser is a sum over the catalog: computed on first use
        if rated is None:
            return item, rstar, prop
        self._logged_pos = (np.arange(item.size) - np.repeat(self.consumed_offsets[:-1], lens))[rated]
        return item[rated], rstar[rated], None if prop is None else prop[rated]

    def _timestamps(self) -> np.ndarray:
        """Timestamps of the logged rows: exponential gaps between a user's consumptions."""
        cfg, lens, offs = self.cfg, self.consumed_len, self.consumed_offsets
        n = int(offs[-1])
        rng_t = np.random.default_rng([cfg.seed, 3])
        gaps = 1 + np.floor(rng_t.exponential(cfg.mean_gap_seconds, size=n)).astype(np.int64)
        ts = np.cumsum(gaps)
        ts -= np.repeat(ts[offs[:-1]] - gaps[offs[:-1]], lens)  # restart the clock per user
        ts += np.repeat(_EPOCH + rng_t.integers(0, 365 * 86400, size=cfg.n_users), lens)
        return ts if self.consumed_rated is None else ts[self.consumed_rated]

    @property
    def logged_propensity(self) -> np.ndarray:
        """The logging policy's probability of each logged row in its context (see the class)."""
        if self._logged_propensity is None:
            out = np.empty(self._logged_item.size)
            for j in range(int(self.seq_len.max(initial=0))):
                users = np.flatnonzero(self.seq_len > j)
                for b in range(0, users.size, _EVAL_USER_BLOCK):
                    u = users[b: b + _EVAL_USER_BLOCK]
                    rows = self.offsets[u] + j
                    out[rows] = self.logging_probs(u, self._logged_item[rows][:, None], step=j)[:, 0]
            self._logged_propensity = out
        return self._logged_propensity

    def rate_probability(self, rstar: np.ndarray) -> np.ndarray:
        """P(a consumption is rated | r*) = base·sigmoid(slope·(r* − mid)) / sigmoid(slope·(r_max − mid))."""
        cfg = self.cfg
        mid = 0.5 * (self.r_min + self.r_max)

        def sig(x):
            return 1.0 / (1.0 + np.exp(-x))

        return cfg.rate_prob_base * sig(cfg.rate_prob_slope * (np.asarray(rstar, dtype=np.float64) - mid)) / sig(
            cfg.rate_prob_slope * (self.r_max - mid))

    def _simulate_block(self, rng, rate_rng, start, stop, lens) -> tuple:
        """Users [start, stop) consume until `lens` of their consumptions are rated. Returns the
        per-step rows (users, t, items, propensity (NaN with selection), r*, rated or None)."""
        taste = self.initial_taste[start:stop].copy()
        hist = None if self.cfg.repeats else _History(stop - start, int(lens.max()))
        n_rated = np.zeros(stop - start, dtype=np.int64)
        out = []
        t = 0
        while True:
            act = np.flatnonzero(n_rated < lens)
            if act.size == 0:
                break
            if hist is not None and t >= self.cfg.n_items:
                raise InputError("simulator config: users consumed the whole catalog before rating max_len items; "
                                 "raise rate_prob_base or n_items, or lower rate_prob_slope")
            users, tau = start + act, taste[act]
            w, groups = self._cluster_weights(tau)
            a = self._sample_step(rng, tau, users, w, groups, None if hist is None or t == 0 else hist.item[act, :t])
            p = np.full(act.size, np.nan) if self._kappa else self._step_propensity(a, w, groups, hist, act, t)
            if hist is not None:
                hist.record(act, t, a, self.item_cluster[a], self._within[a],
                            self._w_pop * self.popularity[a] + self._w_unif / self.cfg.n_items)
            rs = self._to_reward(self.reward_logit(tau, a, users))
            rated = None if rate_rng is None else rate_rng.random(act.size) < self.rate_probability(rs)
            last = n_rated[act] + 1 == lens[act] if rated is None else rated & (n_rated[act] + 1 == lens[act])
            self.test_taste[users[last]] = tau[last]
            n_rated[act] += 1 if rated is None else rated
            out.append((act, t, a, p, rs, rated))
            taste[act] = self.step_taste(tau, a)
            t += 1
        self.final_taste[start:stop] = taste
        return out, stop - start

    def _sample_step(self, rng, tau, users, w, groups, hist) -> np.ndarray:
        """One consumption per row: from π_β (without the items in `hist` [R, t], if given), and
        with selection > 0 from π_sel ∝ π_β·exp(κ·r*): rejection from π_β with acceptance
        exp(κ·(r* − r_max)) ≤ 1 (exact), for at most _MAX_REJECTION_ROUNDS rounds; then exact."""
        if not self._kappa:
            a = self._draw(w, groups, rng.random((3, len(tau))))
            if hist is None:
                return a
            pending = np.flatnonzero((hist == a[:, None]).any(axis=1))
        else:
            a = np.empty(len(tau), dtype=np.int64)
            pending = np.arange(len(tau))
        for _ in range(_MAX_REJECTION_ROUNDS):
            if pending.size == 0:
                break
            cand = self._draw(w[pending], groups[pending], rng.random((3, pending.size)))
            ok = np.ones(pending.size, dtype=bool) if hist is None else ~(hist[pending] == cand[:, None]).any(axis=1)
            if self._kappa:
                r = self._to_reward(self.reward_logit(tau[pending], cand, users[pending]))
                ok &= rng.random(pending.size) < self._selection_weight(r)
            a[pending[ok]] = cand[ok]
            pending = pending[~ok]
        if pending.size:
            a[pending] = self._draw_exact(tau[pending], users[pending], None if hist is None else hist[pending],
                                          rng.random(pending.size))
        return a

    def _step_propensity(self, a, w, groups, hist, act, t) -> np.ndarray:
        """π_β(a|s) of the items just drawn (restricted to unseen items when `hist` is given)."""
        z = groups.sum(axis=1)
        unif = self._w_unif / self.cfg.n_items
        cl = self.item_cluster[a]
        p = (self._w_pop * self.popularity[a] + unif
             + self._w_taste * w[np.arange(act.size), cl] / z * self._within[a])
        if hist is not None and t > 0:
            taste_part = (np.take_along_axis(w, hist.cl[act, :t], axis=1) * hist.within[act, :t]).sum(axis=1)
            p /= 1.0 - hist.static[act] - self._w_taste * taste_part / z
        return p

    def _selection_weight(self, rstar: np.ndarray) -> np.ndarray:
        """exp(κ·(r* − r_max)) in float64: π_sel ∝ π_β × this (≤ 1, so it is an acceptance probability)."""
        return np.exp(self._kappa * (np.asarray(rstar, dtype=np.float64) - self.r_max))

    def _draw_exact(self, taste, users, hist, u) -> np.ndarray:
        """Exact draws from the logging policy (π_β, or π_sel with selection) without the items of
        `hist` [R, t] (if given), by a chunked inverse CDF (rare path)."""
        seen = None if hist is None else _Seen(np.repeat(np.arange(len(hist)), hist.shape[1]), hist.ravel(),
                                               len(hist), self.cfg.n_items)
        totals = np.zeros(len(taste))
        for _, _, p in self._logging_chunks(taste, users, seen):
            totals += p.sum(axis=1)
        target = u * totals
        out = np.full(len(taste), self.cfg.n_items - 1, dtype=np.int64)
        done = np.zeros(len(taste), dtype=bool)
        acc = np.zeros(len(taste))
        for s, _, p in self._logging_chunks(taste, users, seen):
            cum = acc[:, None] + np.cumsum(p, axis=1)
            hit = ~done & (cum[:, -1] > target)
            j = (cum[hit] <= target[hit, None]).sum(axis=1)
            out[hit] = s + np.minimum(j, p.shape[1] - 1)
            done |= hit
            acc = cum[:, -1]
        return out

    def _logging_score_fn(self, taste, users, shown: bool = False):
        """`(s, e) -> [U, e − s]` unnormalised logging probabilities of items [s, e) (float64):
        π_β, times exp(κ·(r* − r_max)) with selection unless `shown` (π_β: what is shown)."""
        pk = self.cluster_probs(taste)
        select = bool(self._kappa) and not shown

        def score(s: int, e: int) -> np.ndarray:
            p = self._pi_items(pk, np.arange(s, e))
            if select:
                p *= self._selection_weight(self._chunk_reward(taste, users, s, e))
            return p

        return score

    def _logging_chunks(self, taste, users, seen: _Seen | None, shown: bool = False
                        ) -> Iterator[tuple[int, int, np.ndarray]]:
        """Unnormalised logging probabilities over item chunks (seen items zeroed when `seen` is
        given): (s, e, [U, C])."""
        score = self._logging_score_fn(taste, users, shown)
        for s, e in self._item_chunks(len(taste)):
            p = score(s, e)
            if seen is not None:
                seen.mask(p, s, e, 0.0)
            yield s, e, p

    def _noise(self, items: np.ndarray, rstar: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, 4])
        n = items.size
        if cfg.noise == "gaussian":
            return cfg.noise_scale * rng.standard_normal(n)
        if cfg.noise == "student_t":
            return cfg.noise_scale * np.sqrt((cfg.noise_df - 2) / cfg.noise_df) * rng.standard_t(cfg.noise_df, n)
        if cfg.noise == "flip":
            flip = rng.random(n) < cfg.noise_scale
            return np.where(flip, self.r_min + self.r_max - 2.0 * rstar, 0.0)
        return cfg.noise_scale * self.pop_z[items] + cfg.popularity_bias_jitter * rng.standard_normal(n)

    # ------------------------------------------------------------------ contexts
    def taste_at(self, users: np.ndarray, step: np.ndarray | int) -> np.ndarray:
        """Taste of each user in the context of their first `step` logged interactions ([U, dim]
        float32), replayed from the initial taste over every consumption before the next logged
        one, rated or not (step = seq_len − 1 gives `test_taste` exactly, seq_len `final_taste`)."""
        users = self._users(users)
        lived = self._consumed_steps(users, self._steps(users, step))
        taste = self.initial_taste[users].copy()
        for t in range(int(lived.max(initial=0))):
            act = np.flatnonzero(lived > t)
            taste[act] = self.step_taste(taste[act], self.consumed_item[self.consumed_offsets[users[act]] + t])
        return taste

    def _consumed_steps(self, users: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """How many consumptions precede logged step `steps` of each user (all of them at seq_len)."""
        if self._logged_pos is None:
            return steps
        out = self.consumed_len[users].copy()
        inside = steps < self.seq_len[users]
        out[inside] = self._logged_pos[self.offsets[users[inside]] + steps[inside]]
        return out

    def _users(self, users: np.ndarray) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        if users.size and (users.min() < 0 or users.max() >= self.cfg.n_users):
            raise InputError(f"user codes must lie in [0, {self.cfg.n_users})")
        return users

    def _steps(self, users: np.ndarray, step: np.ndarray | int | None) -> np.ndarray:
        lens = self.seq_len[users]
        if step is None:
            return lens - 1
        s = np.broadcast_to(np.asarray(step, dtype=np.int64), users.shape)
        s = np.where(s < 0, lens + s, s) if np.ndim(step) == 0 else s.copy()
        if (s < 0).any() or (s > lens).any():
            raise InputError("step must lie in [0, seq_len] for every user (or be negative, from the end)")
        return s

    def _context(self, users, step, state, exclude_seen):
        """(users, tastes [U, dim], seen item lists or None) of the requested contexts."""
        users = self._users(users)
        if exclude_seen is None:
            exclude_seen = not self.cfg.repeats
        if state is not None:
            if step is not None:
                raise InputError("give either step or state, not both")
            taste = np.asarray(state, dtype=np.float32)
            if taste.shape != (users.size, self.cfg.dim):
                raise InputError(f"state must have shape [{users.size}, {self.cfg.dim}]; got {taste.shape}")
            return users, taste, None
        steps = self._steps(users, step)
        if np.array_equal(steps, self.seq_len[users] - 1):
            taste = self.test_taste[users]
        else:
            taste = self.taste_at(users, steps)
        seen = None
        if exclude_seen:  # everything consumed before the context, rated or not
            lived = self._consumed_steps(users, steps)
            rows = np.repeat(np.arange(users.size), lived)
            first = np.repeat(self.consumed_offsets[users] - (np.cumsum(lived) - lived), lived)
            seen = _Seen(rows, self.consumed_item[first + np.arange(rows.size)], users.size, self.cfg.n_items)
        return users, taste, seen

    def _item_chunks(self, n_rows: int) -> Iterator[tuple[int, int]]:
        c = max(256, _CHUNK_ELEMS // max(n_rows, 1))
        for s in range(0, self.cfg.n_items, c):
            yield s, min(self.cfg.n_items, s + c)

    # ------------------------------------------------------------------ the oracle API
    def true_reward(self, users, items, *, step=None, state=None) -> np.ndarray:
        """Expected true reward r*(s, a): users [U], items [U, K] (or [U]) → float64 of items' shape."""
        users, taste, _ = self._context(users, step, state, exclude_seen=False)
        items = np.asarray(items, dtype=np.int64)
        if items.shape[0] != users.size or items.ndim not in (1, 2):
            raise InputError(f"items must have shape [U] or [U, K] with U = {users.size}; got {items.shape}")
        if items.size and (items.min() < 0 or items.max() >= self.cfg.n_items):
            raise InputError(f"item codes must lie in [0, {self.cfg.n_items})")
        tau = taste if items.ndim == 1 else taste[:, None, :]
        return self._to_reward(self.reward_logit(tau, items, users))

    def policy_value(self, users, topk_items, *, step=None, state=None) -> np.ndarray:
        """Mean true reward of each user's recommended list `topk_items` [U, k] → [U]."""
        return self.true_reward(users, np.asarray(topk_items).reshape(len(users), -1), step=step, state=state).mean(axis=1)

    def oracle_topk(self, users, k: int, *, step=None, state=None, exclude_seen=None) -> np.ndarray:
        """The k items of highest r* per user, best first: [U, k] int64 (chunked running top-k)."""
        users, taste, seen = self._context(users, step, state, exclude_seen)
        self._check_k(k, seen)
        return self._topk(taste, seen, k, lambda sl: lambda s, e: self._logit_chunk(taste[sl], users[sl], s, e))

    def oracle_value(self, users, k: int, *, step=None, state=None, exclude_seen=None) -> np.ndarray:
        """Mean r* of the oracle's top-k list per user → [U]."""
        top = self.oracle_topk(users, k, step=step, state=state, exclude_seen=exclude_seen)
        return self.policy_value(users, top, step=step, state=state)

    def expected_value_dist(self, users, dist, *, kind: Literal["probs", "logits"] = "probs",
                            step=None, state=None) -> np.ndarray:
        """`Σ_a π(a|s) r*(s, a)` for a policy given as probabilities or logits `[U, n_items]` → [U]."""
        users, taste, _ = self._context(users, step, state, exclude_seen=False)
        if hasattr(dist, "detach"):  # a torch tensor
            dist = dist.detach().cpu().numpy()
        dist = np.asarray(dist)
        if dist.shape != (users.size, self.cfg.n_items):
            raise InputError(f"dist must have shape [{users.size}, {self.cfg.n_items}]; got {dist.shape}")
        if kind not in ("probs", "logits"):
            raise InputError(f"kind must be probs or logits; got {kind!r}")
        if not np.isfinite(dist).all() and kind == "probs":
            raise InputError("probs must be finite")
        out = np.zeros(users.size)
        for b in range(0, users.size, _EVAL_USER_BLOCK):
            sl = slice(b, b + _EVAL_USER_BLOCK)
            rows = dist[sl]
            chunks = list(self._item_chunks(rows.shape[0]))
            if kind == "logits":
                m = rows.max(axis=1).astype(np.float64)[:, None]
                z = sum(np.exp(rows[:, s:e].astype(np.float64) - m).sum(axis=1) for s, e in chunks)
            else:
                z = sum(rows[:, s:e].astype(np.float64).sum(axis=1) for s, e in chunks)
                if (rows < 0).any() or not np.allclose(z, 1.0, atol=1e-3):
                    raise InputError("probs must be non-negative and sum to 1 per user (kind='logits' for logits)")
            for s, e in chunks:
                p = rows[:, s:e].astype(np.float64)
                if kind == "logits":
                    p = np.exp(p - m)
                p *= self._chunk_reward(taste[sl], users[sl], s, e)
                out[sl] += p.sum(axis=1) / z
        return out

    def logging_probs(self, users, items=None, *, step=None, state=None, exclude_seen=None,
                      shown: bool = False) -> np.ndarray:
        """The logging policy's probabilities of `items` [U, K] (or of the whole catalog,
        [U, n_items]: small catalogs only): π_sel ∝ π_β·exp(κ·r*) with selection > 0, else π_β;
        `shown=True` gives π_β, what the recommender showed, before the user's selection.

        With exclude_seen (default: not repeats) it is the policy that generated the logs:
        restricted to the context's unseen items and renormalised."""
        users, taste, seen = self._context(users, step, state, exclude_seen)
        if self._kappa and not shown:
            return self._selection_probs(users, taste, seen, items)
        pk = self.cluster_probs(taste)
        norm = np.ones(users.size)
        if seen is not None:
            r, a = seen.rows, seen.items
            mass = (self._w_pop * self.popularity[a] + self._w_unif / self.cfg.n_items
                    + self._w_taste * pk[r, self.item_cluster[a]] * self._within[a])
            norm -= np.bincount(r, weights=mass, minlength=users.size)
        if items is None:
            p = self._pi_items(pk, np.arange(self.cfg.n_items))
            if seen is not None:
                seen.mask(p, 0, self.cfg.n_items, 0.0)
            return p / norm[:, None]
        items = np.asarray(items, dtype=np.int64).reshape(users.size, -1)
        p = self._pi_items(pk, items)
        if seen is not None:
            p[seen.contains(items)] = 0.0
        return p / norm[:, None]

    def _selection_probs(self, users, taste, seen, items) -> np.ndarray:
        """π_sel(a|s) = π_β(a|s)·exp(κ·r*(s,a)) / Σ_a' (same), the sum over unseen items in chunks."""
        norm = np.zeros(users.size)
        for b in range(0, users.size, _EVAL_USER_BLOCK):
            sl = slice(b, b + _EVAL_USER_BLOCK)
            sb = None if seen is None else seen.block(b, b + _EVAL_USER_BLOCK)
            for _, _, p in self._logging_chunks(taste[sl], users[sl], sb):
                norm[sl] += p.sum(axis=1)
        if items is None:
            p = np.concatenate([p for _, _, p in self._logging_chunks(taste, users, seen)], axis=1)
            return p / norm[:, None]
        items = np.asarray(items, dtype=np.int64).reshape(users.size, -1)
        p = self._pi_items(self.cluster_probs(taste), items)
        p *= self._selection_weight(self._to_reward(self.reward_logit(taste[:, None, :], items, users)))
        if seen is not None:
            p[seen.contains(items)] = 0.0
        return p / norm[:, None]

    def logging_expected(self, users, *, step=None, state=None, exclude_seen=None, shown: bool = False) -> np.ndarray:
        """E_{a∼π}[r*] per user for the logging policy π (π_sel with selection > 0, else π_β;
        `shown=True`: π_β, what was shown before the user's selection) → [U]."""
        users, taste, seen = self._context(users, step, state, exclude_seen)
        return self._logging_expected(users, taste, seen, shown)

    def _logging_expected(self, users, taste, seen, shown: bool) -> np.ndarray:
        expected = np.zeros(users.size)
        for b in range(0, users.size, _EVAL_USER_BLOCK):
            sl = slice(b, b + _EVAL_USER_BLOCK)
            sb = None if seen is None else seen.block(b, b + _EVAL_USER_BLOCK)
            tot = np.zeros(len(taste[sl]))
            for s, e, p in self._logging_chunks(taste[sl], users[sl], sb, shown):
                tot += p.sum(axis=1)
                p *= self._chunk_reward(taste[sl], users[sl], s, e)
                expected[sl] += p.sum(axis=1)
            expected[sl] /= tot
        return expected

    def logging_value(self, users, k: int, *, step=None, state=None, exclude_seen=None,
                      shown: bool = False) -> LoggingValue:
        """True value of the logging policy per user (π_sel with selection > 0, else π_β;
        `shown=True`: π_β): E_{a∼π}[r*] and the mean r* of π's top-k items."""
        users, taste, seen = self._context(users, step, state, exclude_seen)
        self._check_k(k, seen)
        expected = self._logging_expected(users, taste, seen, shown)
        top = self._topk(taste, seen, k, lambda sl: self._logging_score_fn(taste[sl], users[sl], shown))
        return LoggingValue(expected, self._to_reward(self.reward_logit(taste[:, None, :], top, users)).mean(axis=1))

    # ------------------------------------------------------------------ chunked helpers
    def _logit_chunk(self, taste: np.ndarray, users: np.ndarray, s: int, e: int) -> np.ndarray:
        x = (np.float32(self.cfg.affinity) * taste) @ self.item_vec[s:e].T
        x += self.quality[s:e]
        if self._any_threshold:
            thr = self.user_threshold[users]
            on = ~np.isnan(thr)
            if on.any():  # as reward_logit: the comparison in float64
                dot = taste[on].astype(np.float64) @ self._item_vec64[s:e].T
                half = np.float32(self.cfg.affinity / 2)
                x[on] = np.where(dot >= thr[on, None], half, -half) + self.quality[s:e]
        return x

    def _check_k(self, k: int, seen) -> None:
        room = self.cfg.n_items - (0 if seen is None else seen.max_len())
        if not 1 <= k <= room:
            raise InputError(f"k must lie in [1, {room}] (catalog minus seen items); got {k}")

    def _chunk_reward(self, taste: np.ndarray, users: np.ndarray, s: int, e: int) -> np.ndarray:
        """r* of items [s, e) for tastes `[U, dim]`: `[U, e − s]` float32 (chunk-sized work only)."""
        span = np.float32(self.r_max - self.r_min)
        x = self._logit_chunk(taste, users, s, e)
        np.negative(x, out=x)
        with np.errstate(over="ignore"):  # exp overflow → inf → reward r_min, as it should
            np.exp(x, out=x)
        x += np.float32(1)
        np.divide(span, x, out=x)
        x += np.float32(self.r_min)
        return x

    def _topk(self, taste, seen, k, make_score) -> np.ndarray:
        """Running top-k over item chunks of the scores `make_score(row_slice)(s, e)`, best first."""
        out = np.empty((len(taste), k), dtype=np.int64)
        for b in range(0, len(taste), _EVAL_USER_BLOCK):
            tau = taste[b: b + _EVAL_USER_BLOCK]
            sb = None if seen is None else seen.block(b, b + _EVAL_USER_BLOCK)
            score = make_score(slice(b, b + _EVAL_USER_BLOCK))
            best_v = np.empty((len(tau), 0))
            best_i = np.empty((len(tau), 0), dtype=np.int64)
            for s, e in self._item_chunks(len(tau)):
                v = score(s, e)
                if sb is not None:
                    sb.mask(v, s, e, -np.inf)
                if v.shape[1] > k:  # torch.topk: ~10x faster than np.argpartition on CPU
                    top = torch.topk(torch.from_numpy(np.ascontiguousarray(v)), k, dim=1)
                    v, idx = top.values.numpy(), top.indices.numpy() + s
                else:
                    idx = np.broadcast_to(np.arange(s, e), v.shape)
                best_v = np.concatenate([best_v, v.astype(np.float64)], axis=1)
                best_i = np.concatenate([best_i, idx], axis=1)
                if best_v.shape[1] > k:
                    part = np.argpartition(-best_v, k - 1, axis=1)[:, :k]
                    best_v, best_i = np.take_along_axis(best_v, part, 1), np.take_along_axis(best_i, part, 1)
            order = np.argsort(-best_v, axis=1, kind="stable")
            out[b: b + len(tau)] = np.take_along_axis(best_i, order, 1)
        return out


class _History:
    """The items each user of a block has consumed (no-repeat sampling), with what the exact
    restricted propensity needs: their clusters, pop_a / pop(k(a)), and the running sum of
    w_pop·pop_a + w_unif/N. Grows when users consume more than its width (unrated consumptions)."""

    def __init__(self, n: int, width: int) -> None:
        self.item = np.empty((n, width), dtype=np.int64)
        self.cl = np.zeros((n, width), dtype=np.int64)
        self.within = np.zeros((n, width))
        self.static = np.zeros(n)

    def record(self, act, t, items, clusters, within, static) -> None:
        if t >= self.item.shape[1]:
            extra = self.item.shape[1]
            self.item = np.concatenate([self.item, np.empty_like(self.item[:, :extra])], axis=1)
            self.cl = np.concatenate([self.cl, np.zeros_like(self.cl[:, :extra])], axis=1)
            self.within = np.concatenate([self.within, np.zeros_like(self.within[:, :extra])], axis=1)
        self.item[act, t], self.cl[act, t], self.within[act, t] = items, clusters, within
        self.static[act] += static


class _Consumed:
    """Consumption rows gathered block by block in (user, time) order. With `offsets` (every
    consumption is logged, so the lengths are known) the rows go straight into their places."""

    def __init__(self, offsets: np.ndarray | None) -> None:
        self.offsets = offsets
        self.parts: list[tuple] = []
        if offsets is not None:
            n = int(offsets[-1])
            self.item, self.rstar, self.prop = np.empty(n, dtype=np.int64), np.empty(n), np.empty(n)

    def add(self, start: int, steps: list, n_users: int) -> None:
        """`steps` from `Simulator._simulate_block`: (act, t, items, propensity, r*, rated)."""
        if self.offsets is not None:
            for act, t, a, p, rs, _ in steps:
                rows = self.offsets[start + act] + t
                self.item[rows], self.prop[rows], self.rstar[rows] = a, p, rs
            return
        act = np.concatenate([st[0] for st in steps])
        lens = np.bincount(act, minlength=n_users)
        pos = np.concatenate([[0], np.cumsum(lens)])[act] + np.concatenate([np.full(st[0].size, st[1]) for st in steps])
        cols = []
        for j, dtype in ((2, np.int64), (3, np.float64), (4, np.float64), (5, bool)):
            col = np.empty(act.size, dtype=dtype)
            col[pos] = np.concatenate([st[j] for st in steps])
            cols.append(col)
        self.parts.append((*cols, lens))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        """(items, r*, propensity, rated or None, consumptions per user)."""
        if self.offsets is not None:
            return self.item, self.rstar, self.prop, None, np.diff(self.offsets)
        item, prop, rstar, rated, lens = (np.concatenate(c) for c in zip(*self.parts))
        return item, rstar, prop, rated, lens


class _Seen:
    """The distinct items each of `n` context rows has consumed, as (row, item) pairs sorted by
    row (for slicing blocks of rows) and by item (so masking an item chunk is a binary search)."""

    def __init__(self, rows: np.ndarray, items: np.ndarray, n: int, n_items: int) -> None:
        keys = np.unique(rows.astype(np.int64) * n_items + items)  # sorted by row, then item
        self.rows, self.items = keys // n_items, keys % n_items
        self.n, self.n_items = n, n_items
        self.start = np.searchsorted(self.rows, np.arange(n + 1))
        order = np.argsort(self.items, kind="stable")
        self._by_item = (self.rows[order], self.items[order])

    def __len__(self) -> int:
        return self.n

    def block(self, b: int, e: int) -> _Seen:
        """The rows [b, e) (renumbered from 0)."""
        e = min(e, self.n)
        lo, hi = self.start[b], self.start[e]
        return _Seen(self.rows[lo:hi] - b, self.items[lo:hi], e - b, self.n_items)

    def max_len(self) -> int:
        return int(np.diff(self.start).max(initial=0))

    def contains(self, items: np.ndarray) -> np.ndarray:
        """Boolean [n, K]: whether row i's `items[i, j]` is among its consumed items."""
        q = np.arange(self.n)[:, None] * np.int64(self.n_items) + items
        return np.isin(q, self.rows * self.n_items + self.items)

    def mask(self, x: np.ndarray, s: int, e: int, value: float) -> None:
        """Set `x[i, a − s] = value` for every item `a` of row i within [s, e) (in place)."""
        rows, items = self._by_item
        lo, hi = np.searchsorted(items, [s, e])
        x[rows[lo:hi], items[lo:hi] - s] = value


def simulate(cfg: SimConfig) -> tuple[Interactions, Simulator]:
    """Build the world of `cfg`, sample its logs: `(interactions, simulator)`."""
    sim = Simulator(cfg)
    return sim.interactions, sim
