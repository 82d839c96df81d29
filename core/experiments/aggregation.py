"""An experiment's summary: a pure function of its runs' records (no processes, no files).

`build_summary` turns runs given as dicts (id, recipe, seed, status, error, evals) into what
the report shows: per-recipe mean and sd over seeds at start and end, curves over training,
pooled calibration tables, and the experiment's target checks. `summary_rows` flattens the
aggregates into summary.csv's rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.config import FIELDS, RunConfig
from core.metrics import SIGNALS, raw_half, recalibrated


# --- metrics read from one evaluation ------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    key: str  # name in summary.json / summary.csv
    label: str  # name in the report
    path: tuple[str, ...]  # where it sits in an eval entry
    table: str = "main"  # the report's table that shows it: "main" or "recalibration"


SIGNAL_WORDS = {"verbalized": "verbalized", "answer_prob": "answer-prob",
                "consistency": "consistency"}  # core.metrics.SIGNALS in the report's words


def recalibration_metrics() -> list[Metric]:
    """Per signal, ECE and AUROC of the raw signal on the measuring half of the held-out
    prompts and of the same signal after post-hoc recalibration (core.recalibration)."""
    return [Metric(f"{entry}/{field}", f"{SIGNAL_WORDS[sig]} {label} ({how})",
                   ("calibration", entry, field), "recalibration")
            for sig in SIGNALS
            for entry, how in ((raw_half(sig), "raw, measuring half"),
                               (recalibrated(sig), "post-hoc"))
            for field, label in (("ece", "ECE ↓"), ("auroc", "AUROC"))]


def metrics_for(k_max: int) -> list[Metric]:
    """The metrics the experiment aggregates; Pass@k at the largest k evaluated."""
    return [
        Metric("accuracy", "accuracy (sampled)", ("accuracy",)),
        Metric("greedy_accuracy", "greedy accuracy (T = 0)", ("greedy_accuracy",)),
        Metric("pass@1", "Pass@1", ("pass_at_k", "1")),
        Metric(f"pass@{k_max}", f"Pass@{k_max}", ("pass_at_k", str(k_max))),
        Metric("entropy", "token entropy, nats", ("entropy",)),
        Metric("distinct_answers", "distinct answers per prompt", ("distinct_answers",)),
        Metric("format_rate", "format rate", ("format_rate",)),
        Metric("verbalized/ece", "verbalized ECE ↓", ("calibration", "verbalized", "ece")),
        Metric("verbalized/brier", "verbalized Brier ↓", ("calibration", "verbalized", "brier")),
        Metric("verbalized/auroc", "verbalized AUROC", ("calibration", "verbalized", "auroc")),
        Metric("answer_prob/ece", "answer-prob ECE ↓", ("calibration", "answer_prob", "ece")),
        Metric("answer_prob/overconfidence", "answer-prob overconfidence",
               ("calibration", "answer_prob", "overconfidence")),
        *recalibration_metrics(),
    ]


def metric_value(ev: dict[str, Any] | None, path: Sequence[str]) -> float | None:
    """The number at `path` in an eval entry, or None where absent or not a number."""
    v: Any = ev
    for part in path:
        v = v.get(part) if isinstance(v, dict) else None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def largest_k(evals: Sequence[dict[str, Any]]) -> int | None:
    """The largest k with a Pass@k value in these eval entries."""
    ks = [int(k) for e in evals for k in (e.get("pass_at_k") or {}) if str(k).isdigit()]
    return max(ks) if ks else None


def mean_sd(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean and sample sd (ddof 1; None below two values) of the values that exist."""
    xs = [v for v in values if v is not None]
    if not xs:
        return {"mean": None, "sd": None, "n": 0}
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return {"mean": m, "sd": sd, "n": len(xs)}


def pool_calibration(cals: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One signal's reliability table and histograms pooled over runs (counts add; bin
    confidence and accuracy are count-weighted means); ECE is the mean of the runs' ECEs."""
    cals = [c for c in cals if isinstance(c, dict)]
    out: dict[str, Any] = {"ece": mean_sd([metric_value(c, ("ece",)) for c in cals])["mean"]}
    for hist in ("hist_correct", "hist_incorrect"):
        rows = [list(c.get(hist) or []) for c in cals]
        width = max((len(r) for r in rows), default=0)
        out[hist] = [sum(r[i] for r in rows if i < len(r)) for i in range(width)]
    bins: list[dict[str, Any]] = []
    for c in cals:
        for i, b in enumerate(c.get("reliability") or []):
            if i == len(bins):
                bins.append({"lo": b.get("lo"), "hi": b.get("hi"), "count": 0, "_c": 0.0,
                             "_a": 0.0})
            n = b.get("count") or 0
            if n and b.get("confidence") is not None and b.get("accuracy") is not None:
                bins[i]["count"] += n
                bins[i]["_c"] += n * b["confidence"]
                bins[i]["_a"] += n * b["accuracy"]
    out["reliability"] = [{"lo": b["lo"], "hi": b["hi"], "count": b["count"],
                           "confidence": b["_c"] / b["count"] if b["count"] else None,
                           "accuracy": b["_a"] / b["count"] if b["count"] else None}
                          for b in bins]
    return out


# --- the summary ----------------------------------------------------------------------------
def summary_k_max(finished: Sequence[dict[str, Any]], settings: dict[str, Any]) -> int:
    """The largest k every finished run's Pass@k reaches; the settings' own largest k when
    none has finished yet."""
    known = [k for k in (largest_k(r["evals"]) for r in finished) if k is not None]
    if known:
        return min(known)
    return max(RunConfig.from_dict({k: v for k, v in settings.items() if k in FIELDS}).ks)


def run_ends(run: dict[str, Any], metrics: Sequence[Any]) -> dict[str, Any]:
    """One listed run's common fields: id, status, error, its first and last evaluation's
    steps and every metric's value there (None where it has no evaluation)."""
    evals = run.get("evals") or []
    start, end = (evals[0], evals[-1]) if evals else (None, None)
    return {"id": run.get("id"), "seed": run["seed"], "status": run.get("status"),
            "error": run.get("error"),
            "start_step": start.get("step") if start else None,
            "end_step": end.get("step") if end else None,
            "start": {m.key: metric_value(start, m.path) for m in metrics},
            "end": {m.key: metric_value(end, m.path) for m in metrics}}


def build_summary(runs: Sequence[dict[str, Any]], *, task: str, seeds: Sequence[int],
                  recipes: Sequence[str], settings: dict[str, Any], wall_seconds: float,
                  experiment: str, question: str,
                  targets: Callable[[dict[str, Any]], Sequence[Any]]) -> dict[str, Any]:
    """Everything the report shows, from runs given as dicts with id, recipe, seed, status,
    error and evals (the store's nested eval entries). Only finished runs with evaluations
    enter the aggregates (a stopped run ended early); the others are listed with their
    status. `targets` checks the finished summary (its results have `to_dict`)."""
    used = [r for r in runs if r.get("status") == "finished" and r.get("evals")]
    k_max = summary_k_max(used, settings)
    metrics = metrics_for(k_max)
    listed = []
    for r in runs:
        rates = [v for e in r.get("evals") or []
                 if (v := metric_value(e, ("format_rate",))) is not None]
        listed.append({**run_ends(r, metrics), "recipe": r["recipe"],
                       "min_format_rate": min(rates) if rates else None})
    aggregates: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    calibration: dict[str, Any] = {}
    for recipe in recipes:
        mine = [r for r in used if r["recipe"] == recipe]
        rows = [x for x in listed if x["recipe"] == recipe and x["status"] == "finished"
                and x["start_step"] is not None]
        if not mine:
            continue
        aggregates[recipe] = {
            m.key: {"start": mean_sd([x["start"][m.key] for x in rows]),
                    "end": mean_sd([x["end"][m.key] for x in rows])} for m in metrics}
        steps = sorted({e["step"] for r in mine for e in r["evals"]})
        by_step = {s: [e for r in mine for e in r["evals"] if e["step"] == s] for s in steps}
        curves[recipe] = {"step": steps} | {
            m.key: [mean_sd([metric_value(e, m.path) for e in by_step[s]])["mean"]
                    for s in steps] for m in metrics}
        calibration[recipe] = {
            when: {sig: pool_calibration([(r["evals"][i].get("calibration") or {}).get(sig)
                                          for r in mine]) for sig in SIGNALS}
            | {"step": mine[0]["evals"][i]["step"]}
            for when, i in (("start", 0), ("end", -1))}
    summary = {"experiment": experiment, "task": task, "question": question,
               "settings": settings, "seeds": list(seeds), "recipes": list(recipes),
               "wall_seconds": round(wall_seconds, 1), "pass_k_max": k_max,
               "metrics": [{"key": m.key, "label": m.label, "table": m.table}
                           for m in metrics],
               "runs": listed, "aggregates": aggregates, "curves": curves,
               "calibration": calibration,
               "pass_curve": {recipe: {when: pass_curve([r["evals"][i] for r in used
                                                         if r["recipe"] == recipe])
                                       for when, i in (("start", 0), ("end", -1))}
                              for recipe in aggregates},
               "monitor": {recipe: reward_monitor([r for r in used if r["recipe"] == recipe])
                           for recipe in recipes if any(r["recipe"] == recipe for r in used)}}
    summary["targets"] = [t.to_dict() for t in targets(summary)]
    return summary


def pass_curve(evals: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Pass@k for every k these eval entries share, mean over them (k as a string key)."""
    ks = set.intersection(*[set(e.get("pass_at_k") or {}) for e in evals]) if evals else set()
    return {k: mean_sd([metric_value(e, ("pass_at_k", k)) for e in evals])["mean"]
            for k in sorted(ks, key=int)}


def reward_monitor(runs: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """The training reward next to held-out accuracy, mean over runs, at each evaluation
    step: the reward is the mean of the training rows since the previous evaluation
    (`train_reward`: (step, reward) pairs). A label-free reward that climbs while accuracy
    falls is reward hacking, visible without labels only through the reward's side."""
    steps = sorted({e["step"] for r in runs for e in r.get("evals") or []})
    reward, accuracy = [], []
    for i, s in enumerate(steps):
        lo = steps[i - 1] if i else -1
        window = [mean_sd([v for t, v in r.get("train_reward") or [] if lo < t <= s])["mean"]
                  for r in runs]
        reward.append(mean_sd(window)["mean"])
        accuracy.append(mean_sd([metric_value(e, ("accuracy",)) for r in runs
                                 for e in r.get("evals") or [] if e["step"] == s])["mean"])
    return {"step": steps, "reward": reward, "accuracy": accuracy}


def summary_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """summary.csv's rows: one per recipe and metric, mean and sd at start and end."""
    rows = []
    for recipe, per_metric in summary["aggregates"].items():
        for key, agg in per_metric.items():
            s, e = agg["start"], agg["end"]
            change = (e["mean"] - s["mean"]) if None not in (s["mean"], e["mean"]) else None
            rows.append({"task": summary["task"], "recipe": recipe, "metric": key,
                         "n_seeds": e["n"], "start_mean": s["mean"], "start_sd": s["sd"],
                         "end_mean": e["mean"], "end_sd": e["sd"], "change": change})
    return rows


CSV_COLUMNS = ("task", "recipe", "metric", "n_seeds", "start_mean", "start_sd", "end_mean",
               "end_sd", "change")
