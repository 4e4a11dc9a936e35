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
- Why clusters: drawing from a softmax over all N items for every one of ~10M logged
  interactions costs N·dim flops each (1.6·10^14 for 1M items: hours). The cluster form keeps
  sampling at O(K·dim) per interaction while every probability stays exact.

Observed rewards `r = r* + ε` (not clipped), with the noise drawn from its own random stream
(the same seed gives the same items and true rewards under every noise model):

- `gaussian`: `ε ~ N(0, noise_scale²)`; zero mean for every action.
- `student_t`: `ε = noise_scale · sqrt((df − 2)/df) · T_df` (std `noise_scale`, heavy tails;
  `df = noise_df > 2`); zero mean for every action.
- `flip`: with probability `p = noise_scale` the rating is mirrored around the midpoint,
  `r = r_min + r_max − r*`; so `E[r | s, a] = mid + (1 − 2p)(r* − mid)` (`mid = (r_min + r_max)/2`):
  NOT zero-mean, it shrinks every action toward the midpoint (order kept for p < 0.5, reversed for
  p > 0.5). Observed rewards stay in range.
- `popularity_bias`: `ε = noise_scale · z_a + N(0, popularity_bias_jitter²)` with `z_a` the
  standardised log popularity (mean 0, std 1 over the catalog); `E[ε | a] = noise_scale · z_a`:
  action-dependent on purpose, it favours popular items.

Evaluation protocol (the oracle API). A context is a prefix of a user's log: `step` = how many
of the user's logged interactions it contains. The default (`step=None`) is the leave-one-out
TEST context: everything before the user's last interaction, i.e. the taste in which the
held-out item was chosen and rewarded (`step=-2` is the validation context; an array gives
one prefix length per user, e.g. `context_end − offsets[user]` of a split). All values are
true expected rewards `r*` in that context's taste:

- `true_reward(users, items)`, `policy_value(users, topk_items)` (mean `r*` of a list),
- `oracle_topk(users, k)` / `oracle_value(users, k)` (the k items of highest `r*`),
- `expected_value_dist(users, dist)` = `Σ_a π(a|s) r*(s,a)` for a given policy distribution,
- `logging_value(users, k)`: both `E_{a∼π_β}[r*]` (one draw) and the mean `r*` of the top-k
  items by `π_β` (the common unit to compare with top-k lists).
`exclude_seen` (default: `not repeats`) removes the context's items from top-k lists and from
`π_β`. A `state` (tastes `[U, dim]`) may replace `step` for a history-free context.
Nothing of shape users × items is ever built: every method works on user blocks × item chunks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch

from recalign.configlib import field
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
        "bias per standard deviation of log popularity (popularity_bias)"
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
    log_propensity: bool = field(False, "write π_β(a|s) of each logged row into the table's propensity column")


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


class Simulator:
    """The simulated world and its logs (built in the constructor; see the module docstring).

    Attributes (n = logged rows, in the `Interactions` row order):
        interactions: the logged table.
        r_min, r_max: the true reward scale.
        item_vec [N, dim] float32, item_cluster [N], cluster_vec [K, dim], popularity [N] (sums
        to 1), pop_z [N] (standardised log popularity), quality [N].
        initial_taste, test_taste (before each user's last interaction), final_taste [n_users, dim].
        seq_len [n_users], offsets [n_users + 1]: user u's rows are offsets[u]:offsets[u+1].
        logged_true_reward [n] float64: r* of each logged row in the taste before it.
        logged_propensity [n] float64: π_β(a_t | s_t) of each logged row (restricted to unseen
        items when repeats = false).
    """

    def __init__(self, cfg: SimConfig) -> None:
        _check(cfg)
        self.cfg = cfg
        self.r_min = float(cfg.r_min)
        self.r_max = float(cfg.r_max)
        w = np.array([cfg.logging_popularity, cfg.logging_taste, cfg.logging_uniform], dtype=np.float64)
        self._w_pop, self._w_taste, self._w_unif = (w / w.sum()).tolist()
        self._build_world()
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

    # ------------------------------------------------------------------ building blocks
    def reward_logit(self, taste: np.ndarray, items: np.ndarray) -> np.ndarray:
        """`affinity·<τ, v_a> + q_a` for tastes `[..., dim]` and items `[...]` (same leading shape)."""
        v = self.item_vec[items]
        return self.cfg.affinity * (taste * v).sum(axis=-1) + self.quality[items]

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
        n = int(offsets[-1])
        items = np.empty(n, dtype=np.int64)
        rstar = np.empty(n, dtype=np.float64)
        prop = np.empty(n, dtype=np.float64)
        self.test_taste = np.empty_like(self.initial_taste)
        self.final_taste = np.empty_like(self.initial_taste)
        for b, start in enumerate(range(0, nu, _USER_BLOCK)):
            stop = min(nu, start + _USER_BLOCK)
            self._simulate_block(np.random.default_rng([cfg.seed, 2, b]), start, stop, seq_len, offsets,
                                 items, rstar, prop)
        self.seq_len, self.offsets = seq_len, offsets
        self.logged_true_reward, self.logged_propensity = rstar, prop

        user = np.repeat(np.arange(nu, dtype=np.int64), seq_len)
        rng_t = np.random.default_rng([cfg.seed, 3])
        gaps = 1 + np.floor(rng_t.exponential(cfg.mean_gap_seconds, size=n)).astype(np.int64)
        ts = np.cumsum(gaps)
        ts -= np.repeat(ts[offsets[:-1]] - gaps[offsets[:-1]], seq_len)  # restart the clock per user
        ts += np.repeat(_EPOCH + rng_t.integers(0, 365 * 86400, size=nu), seq_len)
        del gaps
        reward = (rstar + self._noise(items, rstar)).astype(np.float32)
        meta = {"simulator": dataclasses.asdict(cfg), "r_min": self.r_min, "r_max": self.r_max}
        inter = Interactions.from_raw(
            user, items, ts, reward, prop.astype(np.float32).clip(np.finfo(np.float32).tiny, 1.0)
            if cfg.log_propensity else None, source="sim", item_ids=np.arange(cfg.n_items), meta=meta,
        )
        # Rows were generated in (user, time) order with strictly increasing times, so the table's
        # sort is the identity and the arrays above stay aligned with its rows.
        if not (np.array_equal(inter.item, items) and np.array_equal(inter.user, user)):
            raise AssertionError("simulator rows are not in the table's (user, timestamp) order")
        self.interactions = inter

    def _simulate_block(self, rng, start, stop, seq_len, offsets, items, rstar, prop) -> None:
        lens = seq_len[start:stop]
        taste = self.initial_taste[start:stop].copy()
        base = offsets[start:stop]
        width = int(lens.max())
        no_repeats = not self.cfg.repeats
        if no_repeats:  # the consumed items, their clusters and pop_a / pop(k(a))
            hist = np.empty((stop - start, width), dtype=np.int64)
            hist_cl = np.zeros((stop - start, width), dtype=np.int64)
            hist_within = np.zeros((stop - start, width))
            seen_static = np.zeros(stop - start)  # Σ over consumed items of w_pop·pop_a + w_unif/N
        unif = self._w_unif / self.cfg.n_items
        for t in range(width):
            act = np.flatnonzero(lens > t)
            tau = taste[act]
            w, groups = self._cluster_weights(tau)
            z = groups.sum(axis=1)
            a = self._draw(w, groups, rng.random((3, act.size)))
            if no_repeats and t > 0:
                h = hist[act, :t]
                pending = np.flatnonzero((h == a[:, None]).any(axis=1))
                for _ in range(_MAX_REJECTION_ROUNDS):
                    if pending.size == 0:
                        break
                    cand = self._draw(w[pending], groups[pending], rng.random((3, pending.size)))
                    ok = ~(h[pending] == cand[:, None]).any(axis=1)
                    a[pending[ok]] = cand[ok]
                    pending = pending[~ok]
                if pending.size:
                    a[pending] = self._draw_exact(tau[pending], h[pending], rng.random(pending.size))
            cl = self.item_cluster[a]
            p = (self._w_pop * self.popularity[a] + unif
                 + self._w_taste * w[np.arange(act.size), cl] / z * self._within[a])
            if no_repeats:
                if t > 0:
                    taste_part = (np.take_along_axis(w, hist_cl[act, :t], axis=1) * hist_within[act, :t]).sum(axis=1)
                    p /= 1.0 - seen_static[act] - self._w_taste * taste_part / z
                hist[act, t], hist_cl[act, t], hist_within[act, t] = a, cl, self._within[a]
                seen_static[act] += self._w_pop * self.popularity[a] + unif
            rows = base[act] + t
            items[rows] = a
            prop[rows] = p
            rstar[rows] = self._to_reward(self.reward_logit(tau, a))
            last = lens[act] == t + 1
            self.test_taste[start + act[last]] = tau[last]
            taste[act] = self.step_taste(tau, a)
        self.final_taste[start:stop] = taste

    def _draw_exact(self, taste: np.ndarray, hist: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Exact draws from π_β restricted to unseen items, by a chunked inverse CDF (rare path)."""
        seen = _Seen(np.repeat(np.arange(len(hist)), hist.shape[1]), hist.ravel(), len(hist), self.cfg.n_items)
        totals = np.zeros(len(taste))
        for _, _, p in self._pi_chunks(taste, seen):
            totals += p.sum(axis=1)
        target = u * totals
        out = np.full(len(taste), self.cfg.n_items - 1, dtype=np.int64)
        done = np.zeros(len(taste), dtype=bool)
        acc = np.zeros(len(taste))
        for s, _, p in self._pi_chunks(taste, seen):
            cum = acc[:, None] + np.cumsum(p, axis=1)
            hit = ~done & (cum[:, -1] > target)
            j = (cum[hit] <= target[hit, None]).sum(axis=1)
            out[hit] = s + np.minimum(j, p.shape[1] - 1)
            done |= hit
            acc = cum[:, -1]
        return out

    def _pi_chunks(self, taste: np.ndarray, seen: _Seen | None) -> Iterator[tuple[int, int, np.ndarray]]:
        """Unrestricted π_β over item chunks (seen items zeroed when `seen` is given): (s, e, [U, C])."""
        pk = self.cluster_probs(taste)
        for s, e in self._item_chunks(len(taste)):
            p = self._pi_items(pk, np.arange(s, e))
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
        """Taste of each user after their first `step` logged interactions ([U, dim] float32),
        replayed from the initial taste (step = seq_len − 1 gives `test_taste` exactly)."""
        users = self._users(users)
        steps = self._steps(users, step)
        taste = self.initial_taste[users].copy()
        for t in range(int(steps.max(initial=0))):
            act = np.flatnonzero(steps > t)
            taste[act] = self.step_taste(taste[act], self.interactions.item[self.offsets[users[act]] + t])
        return taste

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
        if exclude_seen:
            it = self.interactions.item
            rows = np.repeat(np.arange(users.size), steps)
            first = np.repeat(self.offsets[users] - (np.cumsum(steps) - steps), steps)
            seen = _Seen(rows, it[first + np.arange(rows.size)], users.size, self.cfg.n_items)
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
        return self._to_reward(self.reward_logit(tau, items))

    def policy_value(self, users, topk_items, *, step=None, state=None) -> np.ndarray:
        """Mean true reward of each user's recommended list `topk_items` [U, k] → [U]."""
        return self.true_reward(users, np.asarray(topk_items).reshape(len(users), -1), step=step, state=state).mean(axis=1)

    def oracle_topk(self, users, k: int, *, step=None, state=None, exclude_seen=None) -> np.ndarray:
        """The k items of highest r* per user, best first: [U, k] int64 (chunked running top-k)."""
        users, taste, seen = self._context(users, step, state, exclude_seen)
        self._check_k(k, seen)
        return self._topk(taste, seen, k, lambda tau: lambda s, e: self._logit_chunk(tau, s, e))

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
                p *= self._chunk_reward(taste[sl], s, e)
                out[sl] += p.sum(axis=1) / z
        return out

    def logging_probs(self, users, items=None, *, step=None, state=None, exclude_seen=None) -> np.ndarray:
        """π_β(a|s) of `items` [U, K] (or of the whole catalog, [U, n_items]: small catalogs only).

        With exclude_seen (default: not repeats) it is the policy that generated the logs:
        π_β restricted to the context's unseen items and renormalised."""
        users, taste, seen = self._context(users, step, state, exclude_seen)
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

    def logging_value(self, users, k: int, *, step=None, state=None, exclude_seen=None) -> LoggingValue:
        """True value of π_β per user: E_{a∼π_β}[r*] and the mean r* of π_β's top-k items."""
        users, taste, seen = self._context(users, step, state, exclude_seen)
        self._check_k(k, seen)
        expected = np.zeros(users.size)
        for b in range(0, users.size, _EVAL_USER_BLOCK):
            sl = slice(b, b + _EVAL_USER_BLOCK)
            sb = None if seen is None else seen.block(b, b + _EVAL_USER_BLOCK)
            tot = np.zeros(len(taste[sl]))
            for s, e, p in self._pi_chunks(taste[sl], sb):
                tot += p.sum(axis=1)
                p *= self._chunk_reward(taste[sl], s, e)
                expected[sl] += p.sum(axis=1)
            expected[sl] /= tot

        def pi_scores(tau):
            pk = self.cluster_probs(tau)
            return lambda s, e: self._pi_items(pk, np.arange(s, e))

        top = self._topk(taste, seen, k, pi_scores)
        return LoggingValue(expected, self._to_reward(self.reward_logit(taste[:, None, :], top)).mean(axis=1))

    # ------------------------------------------------------------------ chunked helpers
    def _logit_chunk(self, taste: np.ndarray, s: int, e: int) -> np.ndarray:
        x = (np.float32(self.cfg.affinity) * taste) @ self.item_vec[s:e].T
        x += self.quality[s:e]
        return x

    def _check_k(self, k: int, seen) -> None:
        room = self.cfg.n_items - (0 if seen is None else seen.max_len())
        if not 1 <= k <= room:
            raise InputError(f"k must lie in [1, {room}] (catalog minus seen items); got {k}")

    def _chunk_reward(self, taste: np.ndarray, s: int, e: int) -> np.ndarray:
        """r* of items [s, e) for tastes `[U, dim]`: `[U, e − s]` float32 (chunk-sized work only)."""
        span = np.float32(self.r_max - self.r_min)
        x = self._logit_chunk(taste, s, e)
        np.negative(x, out=x)
        with np.errstate(over="ignore"):  # exp overflow → inf → reward r_min, as it should
            np.exp(x, out=x)
        x += np.float32(1)
        np.divide(span, x, out=x)
        x += np.float32(self.r_min)
        return x

    def _topk(self, taste, seen, k, make_score) -> np.ndarray:
        """Running top-k over item chunks of the scores `make_score(tau_block)(s, e)`, best first."""
        out = np.empty((len(taste), k), dtype=np.int64)
        for b in range(0, len(taste), _EVAL_USER_BLOCK):
            tau = taste[b: b + _EVAL_USER_BLOCK]
            sb = None if seen is None else seen.block(b, b + _EVAL_USER_BLOCK)
            score = make_score(tau)
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
