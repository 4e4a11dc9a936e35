"""The post-training methods: one registry, one interface.

A method is an object the training loop calls as its objective, `method(model, batch) ->
(loss, diagnostics)`; the loop never knows which method it runs. Before training, the stage
calls `method.setup(ctx)` once with a `PostTrainContext` (configuration, data, the frozen
reference policy π_0, the reward model if the method needs one); `setup` precomputes whatever
depends on the whole training set (normalisers of the weights, their effective sample size,
cached reference log-probabilities) and returns those statistics for the run's `state.json`.

Adding a method = one module with a `Method` subclass decorated by `@register("name")`, plus its
module name in `BUILTIN_MODULES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from recalign.config import PostTrainConfig, RunConfig
from recalign.errors import InputError

if TYPE_CHECKING:
    from recalign.data.prepared import Prepared
    from recalign.data.sequences import SeqBatch
    from recalign.models.recommender import Recommender
    from recalign.models.reward_model import RewardModel

BUILTIN_MODULES = ("sft", "asft", "dpo", "ppo", "cql", "ips")
# `posttrain.*` keys every method reads (the stage and the loop read them for it)
COMMON_KNOBS = ("method", "epochs", "lr", "batch_size", "trace_every", "trace_users", "checkpoint_every")


@dataclass
class PostTrainContext:
    """What a method may use besides the policy and the batch.

    Attributes:
        cfg: the resolved run configuration (`cfg.posttrain` holds the method's knobs).
        data: the prepared dataset (table, split, training windows, simulator).
        reference: the frozen π_0 (eval mode, `requires_grad=False`, no optimizer), on `device`.
        reward_model: the learned reward model (eval mode, frozen) or None.
        device: where training runs; cached tensors live there.
    """

    cfg: RunConfig
    data: Prepared
    reference: Recommender | None = None
    reward_model: RewardModel | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def pt(self) -> PostTrainConfig:
        return self.cfg.posttrain


class Method:
    """Base class of a post-training method.

    Subclasses set the class attributes and implement `loss`, and `prepare` when they need
    training-set statistics. `needs_reward_model` may depend on the configuration (e.g. `dpo`
    with `pairs = logged` needs no reward model), so it is an instance attribute set from `pt`
    in `__init__`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # the `posttrain.*` keys the method reads besides those of every method (COMMON_KNOBS):
    # post-training refuses a `--set` of any other (it would be ignored)
    knobs: ClassVar[tuple[str, ...]] = ()
    needs_reward_model: bool = False
    # The loss compares π_θ with π_0 through a log-ratio: the stage then builds the policy with
    # dropout 0 (unless `model.dropout` is set explicitly), so that the ratio is 1 at the start
    # instead of dropout noise (as TRL's `disable_dropout=True` for DPO/PPO).
    disable_dropout: ClassVar[bool] = False
    # what `reward_transform = auto` (the default) means for this method: its own default
    default_transform: ClassVar[str] = "none"

    def __init__(self, pt: PostTrainConfig | None = None):
        self.pt = pt if pt is not None else PostTrainConfig()
        self.ctx: PostTrainContext | None = None
        self.stats: dict[str, Any] = {}
        self._sums: dict[str, Any] = {}
        self._calls = 0

    @property
    def reward_transform(self) -> str:
        """`posttrain.reward_transform` with `auto` resolved (`default_transform`)."""
        kind = self.pt.reward_transform
        return self.default_transform if kind == "auto" else kind

    # -------------------------------------------------------------- the interface
    def setup(self, ctx: PostTrainContext) -> dict[str, Any]:
        """Store the context and precompute training-set statistics; returns them (JSON-able)."""
        if self.needs_reward_model and ctx.reward_model is None:
            raise InputError(f"method {self.name!r} needs a reward model (--reward-model RUN, or let "
                             "posttrain train one)")
        self.ctx = ctx
        self.stats = self.prepare(ctx)
        return self.stats

    def __call__(self, model: Recommender, batch: SeqBatch) -> tuple[torch.Tensor, dict[str, Any]]:
        if self.ctx is None:
            raise RuntimeError(f"method {self.name!r}: call setup(ctx) before training")
        loss, diag = self.loss(model, batch)
        self._track(diag)
        return loss, diag

    # -------------------------------------------------------------- for subclasses
    def prepare(self, ctx: PostTrainContext) -> dict[str, Any]:
        """Training-set statistics and caches (default: none)."""
        return {}

    def loss(self, model: Recommender, batch: SeqBatch) -> tuple[torch.Tensor, dict[str, Any]]:
        raise NotImplementedError

    # -------------------------------------------------------------- running diagnostics
    def _track(self, diag: dict[str, Any]) -> None:
        """Accumulate the batch diagnostics (device tensors stay on device: no sync per step)."""
        self._calls += 1
        for k, v in diag.items():
            if torch.is_tensor(v):
                v = v.detach().double()
            elif not isinstance(v, (int, float)):
                continue
            self._sums[k] = self._sums.get(k, 0.0) + v

    def train_diagnostics(self) -> dict[str, float]:
        """Mean of every diagnostic over the batches seen so far."""
        n = max(1, self._calls)
        return {k: float(v) / n for k, v in self._sums.items()}


METHODS: dict[str, type[Method]] = {}


def register(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: `@register("exp_sft")` adds the method under that name."""

    def deco(cls: type[Method]) -> type[Method]:
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"method {name!r} is already registered ({METHODS[name].__qualname__})")
        cls.name = name
        METHODS[name] = cls
        return cls

    return deco


def _load_builtins() -> None:
    for mod in BUILTIN_MODULES:
        importlib.import_module(f"recalign.posttrain.{mod}")


def _order(name: str) -> tuple[int, int]:
    """Built-in methods in the order of `BUILTIN_MODULES` (then registration), others after."""
    mod = METHODS[name].__module__.rsplit(".", 1)[-1]
    rank = BUILTIN_MODULES.index(mod) if mod in BUILTIN_MODULES else len(BUILTIN_MODULES)
    return rank, list(METHODS).index(name)


def method_names() -> list[str]:
    """Every registered method name, built-ins first in the order of METHOD.md's table."""
    _load_builtins()
    return sorted(METHODS, key=_order)


def describe_methods() -> list[tuple[str, str, bool]]:
    """`(name, one-line description, needs a reward model with the default config)` per method."""
    _load_builtins()
    return [(n, METHODS[n].description, METHODS[n](PostTrainConfig()).needs_reward_model) for n in method_names()]


def get_method(name: str, pt: PostTrainConfig | None = None) -> Method:
    """A new method object of that name, configured by `pt` (default: the config defaults).

    Raises `InputError` listing the valid names when the name is unknown.
    """
    _load_builtins()
    cls = METHODS.get(name)
    if cls is None:
        raise InputError(f"unknown post-training method {name!r}; valid: {', '.join(method_names())}")
    return cls(pt)
