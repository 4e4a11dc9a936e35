"""`recalign sweep`: one config field over a grid of values, methods × values × seeds.

    recalign sweep --data sim --param posttrain.lam --values 0.1,0.3,1,3 --methods exp_sft --seeds 3 --out DIR
    recalign sweep --data sim --param sim.noise_scale --values 0,1,2 --methods sft,exp_sft,ppo --out DIR

Any field can be swept. What is shared follows from what the field changes:

- `posttrain.*` changes only post-training, so each seed pretrains π0 (and trains the reward
  model) once; every (method, value) post-trains from it, beside the `fixed` methods (default
  `sft`, the baseline of every delta) run once at the base config.
- any other field (`sim.*`, `data.*`, `model.*`, `train.*`, `eval.*`) may change the data or π0,
  so each (value, seed) is a full comparison of its own: data, π0, reward model, every method;
  the baseline is the `sft` of the same value.

Seed `i` adds `i` to `sim.seed` and `train.seed`, so on the simulator every seed is a new world.
The primary metric is the simulator's true value, else NDCG@10 on the high-reward targets.

By default every run is read at its end (its final policy, after `posttrain.epochs`). With
`--select RULE` (`practical`, or `oracle` on the simulator; `selection.py`) every run is
checkpointed `--checkpoints` times (plus step 0 and the end) and read at its checkpoint selected
on validation by that rule, as the contest does (one grid point: only the step is chosen);
`results.json`'s `select` holds the rule and the selected step of every run and seed. With
judges, they then score each run's selected checkpoint (the top-10 lists its checkpoint file
saved), not its final policy.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recalign import configlib
from recalign.config import RunConfig
from recalign.data.prepared import Prepared, fingerprint, prepare
from recalign.errors import InputError
from recalign.experiments.compare import Variant, compare_methods
from recalign.experiments.report import read_trace
from recalign.experiments.selection import RULES, apply_selection, checkpoint_every, rules_for
from recalign.experiments.summary import label_summary
from recalign.posttrain.registry import COMMON_KNOBS, get_method
from recalign.stages.judge import train_judges

CHECKPOINTS = 4  # with --select: checkpoints after step 0 in every run


def _log(msg: str) -> None:
    print(f"recalign: {msg}", file=sys.stderr, flush=True)


def seeded(cfg: RunConfig, i: int) -> RunConfig:
    """Seed `i` of an experiment: `sim.seed + i` (a new world) and `train.seed + i`."""
    return dataclasses.replace(cfg, sim=dataclasses.replace(cfg.sim, seed=cfg.sim.seed + i),
                               train=dataclasses.replace(cfg.train, seed=cfg.train.seed + i))


def with_value(cfg: RunConfig, param: str, value: str) -> RunConfig:
    return configlib.update(cfg, configlib.parse_overrides([f"{param}={value}"]))


def variant_label(method: str, param: str, value: str) -> str:
    return f"{method}[{param.split('.')[-1]}={value}]"


def primary_metric(cfg: RunConfig) -> str:
    return "true_value" if cfg.data.name == "sim" else "high/ndcg@10"


def trace_settings(method: str, cfg: RunConfig, trace: tuple[str, ...]) -> list[str]:
    return ["posttrain.trace_every=" + str(max(1, cfg.posttrain.trace_every or 10))] if method in trace else []


class JudgeCache:
    """Judges of every family of `eval.judge_families` (`k` each, `stages/judge.py`), trained once per
    distinct dataset (by fingerprint) under `root`, reused across seeds."""

    def __init__(self, root: Path, k: int, log: Callable[[str], None]):
        self.root, self.k, self.log, self.cache = root, k, log, {}

    def get(self, cfg: RunConfig, data: Prepared) -> list | None:
        if self.k <= 0:
            return None
        key = fingerprint(data.inter)
        if key not in self.cache:
            self.log(f"judges: {self.k} of each family ({', '.join(cfg.eval.judge_families)}) on every interaction "
                     f"of {cfg.data.name}, each family validated out of fold (trained now, or loaded where a folder "
                     "finished before)")
            jcfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, judges=self.k))
            self.cache[key] = train_judges(jcfg, data, self.root / f"judges-{key}")
        return self.cache[key]


def shares_pretraining(param: str) -> bool:
    """A `posttrain.*` field changes only post-training: one π0 and reward model serve every value."""
    return param.startswith("posttrain.")


def check_sweep(cfg: RunConfig, param: str, values: list[str], methods: list[str] = ()) -> None:
    """Fail fast on a bad key or value, or a `posttrain.*` key a swept method does not read (its
    runs would not differ), before any training."""
    if not values:
        raise InputError("sweep needs at least one value")
    for v in values:
        with_value(cfg, param, v)
    name = param.split(".", 1)[1] if shares_pretraining(param) else None
    for m in methods if name else ():
        knobs = get_method(m, cfg.posttrain).knobs
        if name not in COMMON_KNOBS + knobs:
            raise InputError(f"sweep: {m} does not read {param}, so its runs would not differ; sweep it over a key "
                             f"it reads ({', '.join('posttrain.' + k for k in knobs) or 'none of its own'}) or "
                             f"leave it out of --methods")


def _probe(cfg: RunConfig, data: Prepared, checkpoints: int) -> list[str]:
    """The `--set` pair that checkpoints a run of `cfg` `checkpoints` times (none when 0)."""
    return [f"posttrain.checkpoint_every={checkpoint_every(cfg, data.seq.n_windows, checkpoints)}"] if checkpoints else []


def _compare(cfg: RunConfig, out: Path, variants: dict[str, Variant], data: Prepared, judges: list | None,
             select: str | None, log: Callable[[str], None], pretrained: Path | None = None) -> dict[str, Any]:
    """`compare_methods`, then with `select` every post-trained run read at its selected
    checkpoint, the judges (if any) scoring that checkpoint's top-10 lists."""
    res = compare_methods(cfg, out, variants, data=data, judges=judges, log=log, pretrained=pretrained)
    return apply_selection(res, select, judges, data, cfg.eval) if select else res


def sweep_seed(cfg: RunConfig, param: str, values: list[str], methods: list[str], out: str | Path, seed: int, *,
               fixed: list[str], trace: tuple[str, ...] = (), log: Callable[[str], None] = _log,
               judge_cache: JudgeCache | None = None, select: str | None = None,
               checkpoints: int = CHECKPOINTS, pretrained: Path | None = None) -> dict[str, Any]:
    """Seed `seed` of a sweep (independent of the other seeds: parallel processes may run them).
    Returns `{"base": comparison}` for a `posttrain.*` field, else `{value: comparison}`. With
    `select` (a rule of `selection.RULES`), every run is checkpointed `checkpoints` times and its
    figures are those of its checkpoint selected on validation (`selection.apply_selection`; the
    judges of `judge_cache` score that checkpoint's top-10 lists).
    `pretrained` (a `posttrain.*` field only): the π0 run every policy starts from, instead of one
    pretrained under the seed's folder."""
    out = Path(out)
    scfg = seeded(cfg, seed)
    judge_cache = judge_cache or JudgeCache(out, 0, log)
    n = checkpoints if select else 0
    if shares_pretraining(param):
        data = prepare(scfg)
        variants: dict[str, Variant] = {m: (m, trace_settings(m, scfg, trace) + _probe(scfg, data, n)) for m in fixed}
        for m in methods:
            for v in values:
                variants[variant_label(m, param, v)] = (m, [f"{param}={v}"] + trace_settings(m, scfg, trace)
                                                        + _probe(with_value(scfg, param, v), data, n))
        log(f"{scfg.data.name} seed {seed}: {len(variants)} policies from one π0")
        return {"base": _compare(scfg, out / f"seed{seed}", variants, data, judge_cache.get(scfg, data), select, log,
                                 pretrained)}
    by_value = {}
    for v in values:
        vcfg = with_value(scfg, param, v)
        data = prepare(vcfg)
        log(f"{vcfg.data.name} seed {seed}, {param}={v}")
        variants = {m: (m, trace_settings(m, vcfg, trace) + _probe(vcfg, data, n)) for m in dict.fromkeys(fixed + methods)}
        by_value[v] = _compare(vcfg, out / f"seed{seed}" / f"{param}={v}", variants, data,
                               judge_cache.get(vcfg, data), select, log)
    return by_value


def fixed_methods(fixed: list[str] | None, baseline: str) -> list[str]:
    return list(dict.fromkeys([baseline] + list(fixed or [])))


def finish_sweep(per_seed: list[dict[str, Any]], cfg: RunConfig, param: str, values: list[str],
                 methods: list[str], fixed: list[str], baseline: str, trace: tuple[str, ...],
                 select: str | None = None) -> dict[str, Any]:
    shared = shares_pretraining(param)
    summary = summarise_sweep(per_seed, param, values, methods, fixed, baseline, shared, primary_metric(cfg))
    if select:
        summary["select"] = {"rule": select, "metric": RULES[select], "steps": selected_steps(per_seed)}
    return {"summary": summary, "per_seed": per_seed, "traces": collect_traces(per_seed, param, values, trace, shared)}


def selected_steps(per_seed: list[dict[str, Any]]) -> dict[str, list[int]]:
    """`{label (value/label for a non-posttrain field): [selected step of each seed]}`."""
    out: dict[str, list[int]] = {}
    for s in per_seed:
        for key, res in s.items():
            for label, sel in res.get("selected", {}).items():
                out.setdefault(label if key == "base" else f"{key}/{label}", []).append(sel["step"])
    return out


def check_select(cfg: RunConfig, select: str | None, checkpoints: int) -> None:
    """Fail fast on an unknown rule, the oracle rule on real data or fewer than one checkpoint."""
    if select is None:
        return
    if select not in rules_for(cfg.data.name == "sim"):
        raise InputError(f"--select {select}: valid rules here: {', '.join(rules_for(cfg.data.name == 'sim'))} "
                         "(oracle needs the simulator's true rewards)")
    if checkpoints < 1:
        raise InputError(f"--checkpoints must be at least 1, got {checkpoints}")


def run_sweep(cfg: RunConfig, param: str, values: list[str], methods: list[str], out: str | Path, *,
              seeds: int = 1, fixed: list[str] | None = None, baseline: str = "sft", judges: int = 0,
              trace: tuple[str, ...] = (), log: Callable[[str], None] = _log,
              judge_cache: JudgeCache | None = None, select: str | None = None,
              checkpoints: int = CHECKPOINTS) -> dict[str, Any]:
    """Run the sweep, seed after seed; returns `{"summary": JSON-able figures, "per_seed": raw
    per-seed results, "traces": ...}`. `select` (None: every run's final policy) reads each run
    at its checkpoint selected on validation by that rule (`sweep_seed`; `judges` then score the
    selected checkpoints); `summary["select"]` then names the rule and the selected steps.

    `summary["series"][method]` is a list over `values` of `label_summary` dicts (+ `value`);
    `summary["fixed"][label]` the fixed methods (shared sweeps). `trace` names methods whose
    training is traced (`posttrain.trace_every`, for the reward-hacking figure). Finished runs
    found under `out` are reused (an interrupted sweep continues)."""
    check_sweep(cfg, param, values, methods)
    check_select(cfg, select, checkpoints)
    fixed = fixed_methods(fixed, baseline)
    judge_cache = judge_cache or JudgeCache(Path(out), judges, log)
    per_seed = [sweep_seed(cfg, param, values, methods, out, i, fixed=fixed, trace=trace, log=log,
                           judge_cache=judge_cache, select=select, checkpoints=checkpoints) for i in range(seeds)]
    return finish_sweep(per_seed, cfg, param, values, methods, fixed, baseline, trace, select)


def collect_traces(per_seed: list[dict[str, Any]], param: str, values: list[str], trace: tuple[str, ...],
                   shared: bool) -> dict[str, list[list[dict[str, Any]]]]:
    """`{series name: [trace of each seed]}` of the traced runs (`trace.jsonl` of each run)."""
    out: dict[str, list[list[dict[str, Any]]]] = {}
    for m in trace:
        for v in values:
            label = variant_label(m, param, v) if shared else m
            runs = [(s["base"] if shared else s[v])["runs"].get(label) for s in per_seed]
            if all(runs):
                out[f"{m}, {param}={v}"] = [read_trace(r) for r in runs]
        runs = [s["base"]["runs"].get(m) for s in per_seed] if shared else []
        if runs and all(runs):
            out[m] = [read_trace(r) for r in runs]
    return out


def summarise_sweep(per_seed: list[dict[str, Any]], param: str, values: list[str], methods: list[str],
                    fixed: list[str], baseline: str, shared: bool, metric: str) -> dict[str, Any]:
    summary: dict[str, Any] = {"param": param, "values": values, "metric": metric, "baseline": baseline,
                               "shared_pretraining": shared, "seeds": len(per_seed), "series": {}, "fixed": {}}
    if shared:
        runs = [s["base"] for s in per_seed]
        for label in ["pretrained"] + fixed:
            summary["fixed"][label] = label_summary(runs, label, baseline)
        for m in methods:
            summary["series"][m] = [{"value": v, **label_summary(runs, variant_label(m, param, v), baseline)}
                                    for v in values]
    else:
        for m in ["pretrained"] + list(dict.fromkeys(fixed + methods)):
            summary["series"][m] = [{"value": v, **label_summary([s[v] for s in per_seed], m, baseline)}
                                    for v in values]
    return summary
