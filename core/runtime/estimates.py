"""How long a run will take, from measured costs, with a range that says how sure it is.

A run's wall time is modelled as

    startup + steps x inner_epochs x prompts_per_step x G x train_sample
            + evaluations x (eval_fixed + eval_prompts x (eval_samples + 1) x eval_sample)

(a training step costs about the same per sample at any batch size; an evaluation has a fixed
part: the greedy pass, set-up). The costs come from the costs file that
`benchmarks/costs.py` writes (`data/costs.json`: the CPU seconds of single-threaded runs of
the embedded model on the machine described there, each cost's lowest and highest
measurement; CPU time, unlike wall time, hardly changes when other work shares the machine).
A run with N threads takes between 1/N of that and all of it, so the estimate is that range.
Once this store has finished runs of the same model, their own step and evaluation times
(wall time, as they ran here) replace the per-sample costs.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.config import EMBEDDED_MODEL, ConfigError, RunConfig
from core.paths import COSTS_FILE
from core.runtime.slots import cores
from core.runtime.store import RunRecord

COST_KEYS = ("startup", "train_sample", "eval_fixed", "eval_sample")  # seconds, see above
Metrics = tuple[list[dict[str, Any]], list[dict[str, Any]]]  # (train rows, eval entries)


@dataclass(frozen=True)
class Costs:
    low: dict[str, float]  # the lowest measurement of each cost, seconds
    high: dict[str, float]  # the highest
    basis: str  # where they come from, in words
    single_thread: bool = False  # CPU seconds of one thread: more threads may divide them


@dataclass(frozen=True)
class Estimate:
    seconds: float  # the middle of the range
    low: float
    high: float
    basis: str  # in words: where the figure comes from


def measured_costs() -> Costs | None:
    """The costs file's figures (see `benchmarks/costs.py`); None when it is missing or
    unreadable (then no estimate is made until runs finish here)."""
    try:
        data = json.loads(COSTS_FILE.read_text())
        return Costs({k: float(data["low"][k]) for k in COST_KEYS},
                     {k: float(data["high"][k]) for k in COST_KEYS},
                     f"measured on {data['machine']} ({data['measured']})", single_thread=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_seconds(config: RunConfig, costs: dict[str, float]) -> float:
    """The model above, for one set of costs."""
    samples = config.steps * config.inner_epochs * config.prompts_per_step * config.group_size
    return (costs["startup"] + samples * costs["train_sample"]
            + config.n_evals * (costs["eval_fixed"]
                                 + eval_samples(config.to_dict()) * costs["eval_sample"]))


def eval_samples(c: dict[str, Any]) -> int:
    """Completions one evaluation draws: n sampled plus one greedy per prompt."""
    return int(c.get("eval_prompts", 1)) * (int(c.get("eval_samples", 1)) + 1)


def learned_costs(runs: list[RunRecord], model: str, metrics_of: Callable[[str], Metrics],
                  base: Costs, limit: int = 8) -> tuple[Costs, int]:
    """Per-sample train and eval seconds from recent finished runs of the same model (their
    lowest and highest); startup and the evaluation's fixed part stay `base`'s."""
    train: list[float] = []
    evals: list[float] = []
    used = 0
    for r in runs:
        if used >= limit:
            break
        if r.status != "finished" or r.config.get("model") != model:
            continue
        try:
            tr, ev = metrics_of(r.id)
        except Exception:  # an unreadable run teaches nothing; the others still count
            continue
        per_step = int(r.config.get("prompts_per_step", 1)) * int(r.config.get("group_size", 1))
        secs = [t["seconds"] for t in tr if isinstance(t.get("seconds"), int | float)]
        if secs:
            train.append(statistics.median(secs) / max(1, per_step))
        esecs = [e["seconds"] for e in ev if isinstance(e.get("seconds"), int | float)]
        if esecs:
            fixed = base.low["eval_fixed"]
            evals.append(max(0.0, statistics.median(esecs) - fixed)
                         / max(1, eval_samples(r.config)))
        used += 1
    if not used:
        return base, 0
    low, high = dict(base.low), dict(base.high)
    for key, values in (("train_sample", train), ("eval_sample", evals)):
        if values:
            low[key], high[key] = min(values), max(values)
    return Costs(low, high, f"learned from {used} finished run{'s' * (used > 1)} of this "
                 "model here", base.single_thread and not train), used


def estimate(config: RunConfig, runs: list[RunRecord],
             metrics_of: Callable[[str], Metrics]) -> Estimate | None:
    """Wall time of a run alone on this machine, as a range; None without a costs file."""
    base = measured_costs()
    if base is None:
        return None
    costs, used = learned_costs(runs, config.model, metrics_of, base)
    low, high = run_seconds(config, costs.low), run_seconds(config, costs.high)
    basis = costs.basis
    if costs.single_thread:
        threads = min(config.threads or cores(), cores())
        low /= threads
        if threads > 1:
            basis += f"; on {threads} threads, 1/{threads} to all of one thread's time"
    if not used and config.model != EMBEDDED_MODEL:
        basis += "; for the embedded model: a larger model takes much longer"
    return Estimate((low + high) / 2, low, high, basis)


def estimate_group(one: Estimate | None, n: int) -> Estimate | None:
    """`n` such runs launched together. On a CPU they share the same cores, so together they
    take about as long as one after the other (the queue decides how many train at once)."""
    if one is None:
        return None
    return Estimate(one.seconds * n, one.low * n, one.high * n,
                    one.basis + f"; {n} runs share the CPU, about {n}x one run")


def eta(record: RunRecord) -> float | None:
    """Seconds left for a running run, from its own step and evaluation times so far."""
    if record.status != "running":
        return None
    c = record.config
    steps = int(c.get("steps", record.total_steps) or 0)
    secs = [t["seconds"] for t in record.train if isinstance(t.get("seconds"), int | float)]
    esecs = [e["seconds"] for e in record.evals if isinstance(e.get("seconds"), int | float)]
    if not secs:
        return None  # only the step-0 evaluation so far: no step time to go on
    per_step = statistics.median(secs)
    per_eval = statistics.median(esecs) if esecs else 0.0
    try:
        total_evals = RunConfig.from_dict(c).n_evals
    except (ConfigError, TypeError, ValueError):
        total_evals = len(record.evals)
    return (max(0, steps - record.step) * per_step
            + max(0, total_evals - len(record.evals)) * per_eval)


# A language-model judge writes one reply per readable completion of every training step.
# Measured: a model of Qwen2.5-0.5B's shapes (494 M parameters) generated 48 tokens/s over 16
# rows on this 2-core CPU (benchmarks/RESULTS.md, "Full-size check"); decoding time is taken
# to grow with the judge's parameters from there.
JUDGE_CPU_TOKENS_PER_SECOND = 48.0
JUDGE_REFERENCE_PARAMS = 494e6


def judge_seconds_per_step(config: RunConfig, judge_params: int) -> float:
    """CPU seconds a language-model judge adds to a training step at most: every completion
    judged, every reply at full length (judge_max_new_tokens)."""
    tokens = config.prompts_per_step * config.group_size * config.judge_max_new_tokens
    return tokens / (JUDGE_CPU_TOKENS_PER_SECOND * JUDGE_REFERENCE_PARAMS / judge_params)

