"""The classic experiment: every reward recipe x seeds on the embedded model, one report.

`run_classic` trains one run per (recipe, seed) in parallel worker processes, waits while
printing progress, then reads the runs back and writes to its output folder:
`summary.json` (runs, per-recipe mean and sd over seeds at start and end, curves, pooled
calibration tables, target checks), `summary.csv` (the aggregates, one row per recipe
and metric) and `report.html` (self-contained, opens offline).

Every recipe and both tasks use ONE set of settings, `EXPERIMENT_SETTINGS`; the targets
are fixed thresholds checked against the measured numbers, never tuned per recipe.
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing as mp
import os
import queue as queue_mod
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from core.config import EMBEDDED_MODEL, PRESETS, RunConfig, build_config

EXPERIMENT_SETTINGS: dict[str, Any] = {**PRESETS["classic"]}
CLASSIC_RECIPES = ("binary", "rlcr", "psr", "nsr", "w-reinforce", "rlsf")
DEFAULT_SEEDS = (0, 1, 2)
QUESTION = ("Can the standard recipe — log-likelihood training plus a binary right/wrong "
            "reward — give a model that knows what it knows: whose stated confidence matches "
            "its accuracy?")
POLL_SECONDS = 2.0
ENDED_OK = ("finished", "stopped")
SIGNALS = ("verbalized", "answer_prob")


# --- metrics read from one evaluation ------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    key: str  # name in summary.json / summary.csv
    label: str  # name in the report
    path: tuple[str, ...]  # where it sits in an eval entry


def metrics_for(k_max: int) -> list[Metric]:
    """The metrics the experiment aggregates; Pass@k at the largest k evaluated."""
    return [
        Metric("accuracy", "accuracy (sampled)", ("accuracy",)),
        Metric("greedy_accuracy", "greedy accuracy (T = 0)", ("greedy_accuracy",)),
        Metric("pass@1", "Pass@1", ("pass_at_k", "1")),
        Metric(f"pass@{k_max}", f"Pass@{k_max}", ("pass_at_k", str(k_max))),
        Metric("verbalized/ece", "verbalized ECE ↓", ("calibration", "verbalized", "ece")),
        Metric("verbalized/brier", "verbalized Brier ↓", ("calibration", "verbalized", "brier")),
        Metric("verbalized/auroc", "verbalized AUROC", ("calibration", "verbalized", "auroc")),
        Metric("answer_prob/ece", "answer-prob ECE ↓", ("calibration", "answer_prob", "ece")),
        Metric("answer_prob/overconfidence", "answer-prob overconfidence",
               ("calibration", "answer_prob", "overconfidence")),
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


# --- the summary: a pure function of the runs' records -------------------------------------
def build_summary(runs: Sequence[dict[str, Any]], *, task: str, seeds: Sequence[int],
                  recipes: Sequence[str], settings: dict[str, Any],
                  wall_seconds: float, experiment: str = "classic") -> dict[str, Any]:
    """Everything the report shows, from runs given as dicts with id, recipe, seed, status,
    error and evals (the store's nested eval entries). Only finished runs with evaluations
    enter the aggregates (a stopped run ended early); the others are listed with their
    status."""
    used = [r for r in runs if r.get("status") == "finished" and r.get("evals")]
    k_candidates = [largest_k(r["evals"]) for r in used]
    k_known = [k for k in k_candidates if k is not None]
    k_max = min(k_known) if k_known else max(RunConfig.from_dict(settings).ks)
    metrics = metrics_for(k_max)
    listed = []
    for r in runs:
        evals = r.get("evals") or []
        start, end = (evals[0], evals[-1]) if evals else (None, None)
        listed.append({"id": r.get("id"), "recipe": r["recipe"], "seed": r["seed"],
                       "status": r.get("status"), "error": r.get("error"),
                       "start_step": start.get("step") if start else None,
                       "end_step": end.get("step") if end else None,
                       "start": {m.key: metric_value(start, m.path) for m in metrics},
                       "end": {m.key: metric_value(end, m.path) for m in metrics}})
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
    summary = {"experiment": experiment, "task": task, "question": QUESTION,
               "settings": settings, "seeds": list(seeds), "recipes": list(recipes),
               "wall_seconds": round(wall_seconds, 1), "pass_k_max": k_max,
               "metrics": [{"key": m.key, "label": m.label} for m in metrics],
               "runs": listed, "aggregates": aggregates, "curves": curves,
               "calibration": calibration}
    summary["targets"] = [t.to_dict() for t in check_targets(summary)]
    return summary


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


# --- targets: fixed thresholds checked on the summary's means ------------------------------
@dataclass
class Check:
    label: str  # what is checked, with its threshold
    measured: str  # the numbers it was decided on
    passed: bool | None  # None: reported, not judged


@dataclass
class TargetResult:
    key: str
    title: str
    status: str  # "PASS", "FAIL", "not run" or "report"
    checks: list[Check] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mean_of(summary: dict[str, Any], recipe: str, metric: str, when: str) -> float | None:
    """A recipe's mean over seeds of `metric` at 'start' or 'end'; None if not measured."""
    agg = summary.get("aggregates", {}).get(recipe, {}).get(metric)
    return agg[when]["mean"] if agg else None


def _k(summary: dict[str, Any]) -> str:
    return f"pass@{summary['pass_k_max']}"


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _missing(summary: dict[str, Any], key: str, title: str, recipes: Sequence[str],
             note: str = "") -> TargetResult | None:
    absent = [r for r in recipes if r not in summary.get("aggregates", {})]
    if absent:
        return TargetResult(key, title, "not run", [], f"not run: no finished {', '.join(absent)}"
                            " runs" + (f". {note}" if note else ""))
    return None


def _verdict(key: str, title: str, checks: list[Check], note: str = "") -> TargetResult:
    """PASS only when every check passed; a check on a missing number fails."""
    return TargetResult(key, title, "PASS" if all(c.passed for c in checks) else "FAIL",
                        checks, note)


def _ge(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and a >= b - 1e-12


def _le(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and a <= b + 1e-12


def _lt(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and a < b


def target_binary(summary: dict[str, Any]) -> TargetResult:
    """(a) binary: accuracy rises, confidence stays blind (AUROC) and miscalibrated (ECE)."""
    title = "(a) binary reward raises accuracy but not calibration"
    note = ("Accuracy rising toward an overconfident start can shrink ECE by itself; that "
            "is not calibration.")
    if (res := _missing(summary, "binary", title, ["binary"], note)) is not None:
        return res
    a0, a1 = (mean_of(summary, "binary", "accuracy", w) for w in ("start", "end"))
    gain = a1 - a0 if None not in (a0, a1) else None
    auroc = mean_of(summary, "binary", "verbalized/auroc", "end")
    ece = mean_of(summary, "binary", "verbalized/ece", "end")
    return _verdict("binary", title, [
        Check("end − start accuracy ≥ 0.05",
               f"{_fmt(a0)} → {_fmt(a1)} (Δ {_fmt(gain)})", _ge(gain, 0.05)),
        Check("end verbalized AUROC ≤ 0.60", _fmt(auroc), _le(auroc, 0.60)),
        Check("end verbalized ECE ≥ 0.10", _fmt(ece), _ge(ece, 0.10)),
    ], note)


def target_rlcr(summary: dict[str, Any]) -> TargetResult:
    """(b) rlcr: calibrated (ECE) and discriminating (AUROC) without losing accuracy."""
    title = "(b) rlcr calibrates without costing accuracy"
    if (res := _missing(summary, "rlcr", title, ["rlcr", "binary"])) is not None:
        return res
    ece = mean_of(summary, "rlcr", "verbalized/ece", "end")
    b_ece = mean_of(summary, "binary", "verbalized/ece", "end")
    acc = mean_of(summary, "rlcr", "accuracy", "end")
    b_acc = mean_of(summary, "binary", "accuracy", "end")
    auroc = mean_of(summary, "rlcr", "verbalized/auroc", "end")
    half = 0.5 * b_ece if b_ece is not None else None
    floor = b_acc - 0.05 if b_acc is not None else None
    return _verdict("rlcr", title, [
        Check("end verbalized ECE ≤ 0.5 × binary's end ECE",
               f"{_fmt(ece)} vs 0.5 × {_fmt(b_ece)} = {_fmt(half)}", _le(ece, half)),
        Check("end verbalized ECE ≤ 0.08", _fmt(ece), _le(ece, 0.08)),
        Check("end accuracy ≥ binary's end accuracy − 0.05",
               f"{_fmt(acc)} vs {_fmt(b_acc)} − 0.05 = {_fmt(floor)}", _ge(acc, floor)),
        Check("end verbalized AUROC ≥ 0.65", _fmt(auroc), _ge(auroc, 0.65)),
    ])


def target_psr(summary: dict[str, Any]) -> TargetResult:
    """(c) psr sharpens: Pass@1 up, Pass@k at the largest k down."""
    title = "(c) psr raises Pass@1 and lowers Pass@k at large k"
    if (res := _missing(summary, "psr", title, ["psr"])) is not None:
        return res
    k = _k(summary)
    p0, p1 = (mean_of(summary, "psr", "pass@1", w) for w in ("start", "end"))
    k0, k1 = (mean_of(summary, "psr", k, w) for w in ("start", "end"))
    return _verdict("psr", title, [
        Check("Pass@1 end > start", f"{_fmt(p0)} → {_fmt(p1)}", _lt(p0, p1)),
        Check(f"{k.replace('pass', 'Pass')} end < start", f"{_fmt(k0)} → {_fmt(k1)}",
               _lt(k1, k0)),
    ])


def target_nsr(summary: dict[str, Any]) -> TargetResult:
    """(d) nsr keeps the spread: Pass@k holds, and beats psr's at the end."""
    title = "(d) nsr keeps Pass@k at large k, above psr"
    if (res := _missing(summary, "nsr", title, ["nsr", "psr"])) is not None:
        return res
    k = _k(summary)
    label = k.replace("pass", "Pass")
    k0, k1 = (mean_of(summary, "nsr", k, w) for w in ("start", "end"))
    psr1 = mean_of(summary, "psr", k, "end")
    return _verdict("nsr", title, [
        Check(f"{label} end ≥ start − 0.02", f"{_fmt(k0)} → {_fmt(k1)}",
               _ge(k1, k0 - 0.02) if k0 is not None else False),
        Check(f"end {label} ≥ psr's end {label} + 0.05",
               f"{_fmt(k1)} vs {_fmt(psr1)} + 0.05", _ge(k1, psr1 + 0.05)
               if psr1 is not None else False),
    ])


def target_answer_prob(summary: dict[str, Any]) -> TargetResult:
    """(e) answer probability: calibrated at the start, binary makes it overconfident."""
    title = "(e) answer probability starts calibrated; binary makes it overconfident"
    if (res := _missing(summary, "answer_prob", title, ["binary"])) is not None:
        return res
    e0, e1 = (mean_of(summary, "binary", "answer_prob/ece", w) for w in ("start", "end"))
    o0, o1 = (mean_of(summary, "binary", "answer_prob/overconfidence", w)
              for w in ("start", "end"))
    return _verdict("answer_prob", title, [
        Check("start answer-prob ECE ≤ 0.10 (binary's runs at step 0)", _fmt(e0),
               _le(e0, 0.10)),
        Check("binary: answer-prob overconfidence end > start", f"{_fmt(o0)} → {_fmt(o1)}",
               _lt(o0, o1)),
        Check("binary: answer-prob ECE end > start", f"{_fmt(e0)} → {_fmt(e1)}",
               _lt(e0, e1)),
    ])


def _change(name: str, a: float | None, b: float | None, up_is: str = "") -> str:
    """'name rose by d (a → b, worse)': the direction of a change in words."""
    if a is None or b is None:
        return f"{name}: not measured"
    if abs(b - a) < 0.005:
        return f"{name} held ({_fmt(a)} → {_fmt(b)})"
    judged = "" if not up_is else f", {up_is if b > a else _OPPOSITE[up_is]}"
    return (f"{name} {'rose' if b > a else 'fell'} by {abs(b - a):.3f} "
            f"({_fmt(a)} → {_fmt(b)}{judged})")


_OPPOSITE = {"worse": "better", "better": "worse"}


def target_rlsf(summary: dict[str, Any]) -> TargetResult:
    """(f) rlsf: accuracy and answer-prob calibration change, reported without a verdict."""
    title = "(f) rlsf (no labels): what happened to accuracy and answer-prob calibration"
    if (res := _missing(summary, "rlsf", title, ["rlsf"])) is not None:
        return res
    names = {"accuracy": ("accuracy", ""), "answer_prob/ece": ("answer-prob ECE", "worse"),
             "answer_prob/overconfidence": ("answer-prob overconfidence", "")}
    vals = {m: [mean_of(summary, "rlsf", m, w) for w in ("start", "end")] for m in names}
    checks = [Check(f"{names[m][0]} start → end", f"{_fmt(a)} → {_fmt(b)}", None)
              for m, (a, b) in vals.items()]
    note = "; ".join(_change(names[m][0], a, b, names[m][1]) for m, (a, b) in vals.items())
    return TargetResult("rlsf", title, "report", checks, note[:1].upper() + note[1:] + ".")


TARGETS: tuple[Callable[[dict[str, Any]], TargetResult], ...] = (
    target_binary, target_rlcr, target_psr, target_nsr, target_answer_prob, target_rlsf)


def check_targets(summary: dict[str, Any]) -> list[TargetResult]:
    """Every target, in order (a)-(f)."""
    return [t(summary) for t in TARGETS]


# --- running: worker processes and progress -------------------------------------------------
@dataclass(frozen=True)
class Job:
    index: int
    recipe: str
    seed: int
    config: dict[str, Any]


@dataclass
class Outcome:
    """How one job ended, as the main process saw it."""
    recipe: str
    seed: int
    id: str | None = None
    status: str = "queued"
    error: str | None = None


def _worker(job: Job, runs_dir: str, ids: Any) -> None:
    """Spawned worker: create the run, send its id, train in-process, exit 0 if it ended.

    A stop signal (SIGTERM, Ctrl-C) that arrives while torch is still importing is kept
    and honoured before training starts; after that `execute` handles it."""
    early_stop: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: early_stop.append(signum))
    from core.runs.store import RunStore

    config = RunConfig.from_dict(job.config)
    writer = RunStore(runs_dir).create(config)
    ids.put((job.index, writer.run_id))
    log = os.open(writer.path / "log.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)  # model-loading bars and warnings go to the run's log, not the terminal
    os.dup2(log, 2)
    import core.engine.train  # noqa: F401 - the slow import, before `execute` takes the signals
    from core.runs.runner import execute

    if early_stop:
        writer.update_status(status="stopped", ended_at=time.time())
        sys.exit(0)
    status = execute(config, writer)
    sys.exit(0 if status in ENDED_OK else 1)


def _clock(seconds: float) -> str:
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60:02d}:{s % 60:02d}"


def _read_step(runs_dir: Path, run_id: str | None) -> int:
    if not run_id:
        return 0
    try:
        return int(json.loads((runs_dir / run_id / "status.json").read_text()).get("step", 0))
    except (OSError, ValueError, json.JSONDecodeError):
        return 0


class _Progress:
    """One updating progress line: rewritten in place on a terminal; in a log, a new line
    when the run counts change or every LOG_EVERY seconds."""

    LOG_EVERY = 30.0

    def __init__(self, stream: TextIO, label: str, total_steps: int) -> None:
        self.stream, self.label, self.total = stream, label, total_steps
        self.tty = stream.isatty()
        self.t0 = time.monotonic()
        self.last: tuple[Any, ...] | None = None
        self.last_at = 0.0

    def update(self, steps: int, running: int, done: int, failed: int, stopped: int = 0,
               final: bool = False) -> None:
        now = time.monotonic()
        line = (f"{self.label}: {steps}/{self.total} steps, {running} running, {done} done, "
                f"{failed} failed, " + (f"{stopped} stopped, " if stopped else "")
                + f"{_clock(now - self.t0)} elapsed")
        key = (running, done, failed, stopped)
        if self.tty:
            self.stream.write("\r\033[K" + line + ("\n" if final else ""))
        elif final or key != self.last or now - self.last_at >= self.LOG_EVERY:
            self.stream.write(line + "\n")
            self.last, self.last_at = key, now
        self.stream.flush()

    def message(self, text: str) -> None:
        """A line of its own above the progress line."""
        self.stream.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.stream.flush()


def run_jobs(jobs: Sequence[Job], runs_dir: Path, workers: int, label: str,
             stream: TextIO = sys.stderr) -> tuple[list[Outcome], bool]:
    """Run every job in its own spawned process, at most `workers` at once, polling the runs'
    status.json for progress. A crashed or failed job never stops the others. Returns the
    outcomes in job order and whether the user interrupted (Ctrl-C stops runs cleanly)."""
    from core.runs.store import RunStore

    ctx = mp.get_context("spawn")
    ids = ctx.Queue()
    outcomes = [Outcome(j.recipe, j.seed) for j in jobs]
    pending = list(jobs)
    live: dict[int, Any] = {}
    bar = _Progress(stream, label, sum(int(j.config["steps"]) for j in jobs))
    interrupted = False

    def drain() -> None:
        while True:
            try:
                index, run_id = ids.get_nowait()
            except queue_mod.Empty:
                return
            outcomes[index].id = run_id

    def show(final: bool = False) -> None:
        count = {s: sum(o.status == s for o in outcomes) for s in ("finished", "stopped")}
        bar.update(sum(_read_step(runs_dir, o.id) for o in outcomes), len(live),
                   count["finished"], sum(o.status in ("failed", "damaged") for o in outcomes),
                   count["stopped"], final)

    def reap() -> None:
        drain()
        for index, proc in list(live.items()):
            if proc.is_alive():
                continue
            proc.join()
            drain()
            del live[index]
            o = outcomes[index]
            if o.id is None:
                o.status = "failed"
                o.error = f"worker exited with code {proc.exitcode} before creating its run"
            else:
                record = RunStore(runs_dir).load(o.id, metrics=False)
                o.status, o.error = record.status, record.error
                if o.status in ("queued", "running"):  # the worker is gone, whatever its file says
                    o.status, o.error = "failed", f"worker exited with code {proc.exitcode}"
            bar.message(f"  {o.id or '(no run)'}  {o.recipe} seed {o.seed}: {o.status}"
                        + (f" ({o.error})" if o.error and o.status not in ENDED_OK else ""))

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    # SIGTERM stops the experiment like Ctrl-C does, so no worker is left running alone.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, interrupt) if in_main else None
    try:
        while pending or live:
            while pending and len(live) < workers:
                job = pending.pop(0)
                proc = ctx.Process(target=_worker, args=(job, str(runs_dir), ids),
                                   name=f"exp-{job.recipe}-s{job.seed}")
                proc.start()
                live[job.index] = proc
                outcomes[job.index].status = "running"
            reap()
            if live:
                show()
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM
        interrupted = True
        bar.message("interrupted: stopping the running runs after their current step")
        for proc in live.values():
            if proc.is_alive():
                proc.terminate()  # SIGTERM: `execute` stops after the step and records it
        for job in pending:
            outcomes[job.index].status = "not started"
            outcomes[job.index].error = "the experiment was interrupted"
            bar.message(f"  {job.recipe} seed {job.seed}: not started")
        for proc in live.values():
            proc.join()
        reap()
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    show(final=True)
    ids.close()
    return outcomes, interrupted


# --- the experiment ------------------------------------------------------------------------
@dataclass
class ExperimentResult:
    out: Path
    summary: dict[str, Any]
    interrupted: bool = False

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.summary["runs"] if r["status"] not in ENDED_OK]


def experiment_config(task: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one set of settings shared by every run: EXPERIMENT_SETTINGS, then overrides."""
    values = {"model": EMBEDDED_MODEL, **EXPERIMENT_SETTINGS,
              **{k: v for k, v in (overrides or {}).items() if v is not None}, "task": task}
    return build_config(**values).to_dict()


def default_out(task: str, runs_root: Path) -> Path:
    """runs/experiments/classic-TASK-TIME, under the run store's folder."""
    return runs_root / "experiments" / f"classic-{task}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_classic(task: str = "add", seeds: Sequence[int] = DEFAULT_SEEDS,
                recipes: Sequence[str] = CLASSIC_RECIPES, workers: int | None = None,
                out: Path | str | None = None, runs_dir: Path | str | None = None,
                overrides: dict[str, Any] | None = None,
                stream: TextIO = sys.stderr) -> ExperimentResult:
    """Train every (recipe, seed) with the shared settings, then write the summary and report.

    `overrides` are RunConfig fields applied over EXPERIMENT_SETTINGS for every run (steps,
    eval sizes, model...). Raises ConfigError/ModelError before anything starts if the
    settings cannot work."""
    from core.runs.runner import preflight
    from core.runs.store import RunStore

    recipes, seeds = list(dict.fromkeys(recipes)), list(dict.fromkeys(int(s) for s in seeds))
    if not recipes or not seeds:
        raise ValueError("an experiment needs at least one recipe and one seed")
    cores = os.cpu_count() or 1
    n_jobs = len(recipes) * len(seeds)
    workers = max(1, min(workers or cores, n_jobs))
    base = experiment_config(task, overrides)
    base["threads"] = max(1, cores // workers)
    jobs = []
    for seed in seeds:  # every recipe's first seed before any second seed
        for recipe in recipes:
            cfg = build_config(**{**base, "recipe": recipe, "seed": seed})
            preflight(cfg)
            jobs.append(Job(len(jobs), recipe, seed, cfg.to_dict()))
    runs_root = RunStore(runs_dir).root
    out = Path(out) if out is not None else default_out(task, runs_root)
    out.mkdir(parents=True, exist_ok=True)
    label = f"classic {task}"
    stream.write(f"{label}: {n_jobs} runs ({', '.join(recipes)} x seeds "
                 f"{', '.join(map(str, seeds))}), {workers} workers x {base['threads']} "
                 f"threads, {base['steps']} steps each; runs in {runs_root}, report in {out}\n")
    t0 = time.monotonic()
    outcomes, interrupted = run_jobs(jobs, runs_root, workers, label, stream)
    wall = time.monotonic() - t0
    store = RunStore(runs_root)
    runs = []
    for o in outcomes:
        evals: list[dict[str, Any]] = []
        if o.id:
            try:
                evals = store.load(o.id).evals
            except KeyError:
                o.status, o.error = "failed", "run folder vanished"
        runs.append({"id": o.id, "recipe": o.recipe, "seed": o.seed, "status": o.status,
                     "error": o.error, "evals": evals})
    settings = {k: v for k, v in base.items() if k not in ("recipe", "seed")}
    summary = build_summary(runs, task=task, seeds=seeds, recipes=recipes, settings=settings,
                            wall_seconds=wall)
    summary["experiment_settings"] = dict(EXPERIMENT_SETTINGS)
    summary["overrides"] = {k: v for k, v in (overrides or {}).items() if v is not None}
    summary["interrupted"] = interrupted
    summary["created_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    summary["runs_dir"] = str(runs_root)
    write_outputs(summary, out)
    return ExperimentResult(out, summary, interrupted)


def write_outputs(summary: dict[str, Any], out: Path) -> dict[str, Path]:
    """summary.json, summary.csv and report.html in `out`; returns their paths."""
    from core.experiments.report import render_report

    paths = {name: out / name for name in ("summary.json", "summary.csv", "report.html")}
    paths["summary.json"].write_text(json.dumps(summary, indent=1, allow_nan=False))
    with open(paths["summary.csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        w.writerows(summary_rows(summary))
    paths["report.html"].write_text(render_report(summary), encoding="utf-8")
    return paths
