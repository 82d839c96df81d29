"""Sweeps: a grid of settings x seeds, every combination an ordinary run.

`plan_sweep` builds and checks one RunConfig per (combination, seed) before anything starts:
a bad value, an unknown or duplicate field or an empty grid raises ConfigError naming the
field and value, and no run folder is made. `run_sweep` launches the plan through the same
path as a named experiment (`core.experiments.orchestrator.run_jobs`: launch, wait with
progress, Ctrl-C stops the runs), on this machine (`core.runtime.runner`, the shared slot queue)
or on a Ray cluster (`core.runtime.ray_backend`), tags every run with the sweep's tag so the
Runs and Compare pages find them, then writes `summary.json`, `summary.csv` and
`report.html` (`core.experiments.sweep_report`).

`build_sweep_summary` is a pure function of the runs' records, so the app's Sweep page draws
the same aggregates from runs that are still going.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from core.config import FIELDS, ConfigError, RunConfig, build_config
from core.experiments.aggregation import (
    mean_sd,
    metric_value,
    metrics_for,
    run_ends,
    summary_k_max,
)
from core.experiments.orchestrator import ExperimentResult, Job, open_backend, run_jobs
from core.runtime.store import RunStore

CONFIRM_ABOVE = 50  # a grid of more runs than this needs an explicit yes
# Fields a grid may not hold, and what to use instead.
NOT_SWEPT = {"seed": "give seeds with --seeds",
             "pass_k": "its values hold commas; set it once with --pass-k",
             "task_hash": "it is filled in at launch"}


@dataclass(frozen=True)
class SweepJob:
    index: int
    seed: int
    params: dict[str, Any]  # the swept fields' values for this run
    config: dict[str, Any]  # the whole RunConfig, as config.json will hold it


@dataclass(frozen=True)
class SweepPlan:
    grid: dict[str, list[Any]]  # field -> values, in the order given
    seeds: list[int]
    base: dict[str, Any]  # every setting the runs share (preset + fixed flags)
    jobs: list[SweepJob]

    @property
    def fields(self) -> list[str]:
        return list(self.grid)


def _show(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def check_grid(grid: dict[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """The grid with its names checked: known, sweepable fields, each with distinct values."""
    if not grid:
        raise ConfigError("the grid is empty: give at least one --grid FIELD=V1,V2")
    out: dict[str, list[Any]] = {}
    for name, values in grid.items():
        if name not in FIELDS:
            raise ConfigError(f"unknown field {name!r} in the grid: see python -m core train "
                              "--help for the settings")
        if name in NOT_SWEPT:
            raise ConfigError(f"{name} cannot be swept: {NOT_SWEPT[name]}")
        values = list(values)
        if not values:
            raise ConfigError(f"{name} has no values in the grid: give {name}=V1,V2")
        if len({json.dumps(v) for v in values}) != len(values):
            raise ConfigError(f"{name} repeats a value in the grid: {values}")
        out[name] = values
    return out


def plan_sweep(grid: dict[str, Sequence[Any]], seeds: Sequence[int],
               preset: str | None = None, fixed: dict[str, Any] | None = None) -> SweepPlan:
    """Every (combination, seed) as a checked RunConfig; raises ConfigError on the first that
    cannot work, naming its grid values. `fixed` settings apply to every run."""
    grid = check_grid(grid)
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    if not seeds:
        raise ConfigError("a sweep needs at least one seed")
    fixed = {k: v for k, v in (fixed or {}).items() if v is not None and k not in grid}
    if "seed" in fixed:
        raise ConfigError("give seeds with --seeds, not --seed")
    base = build_config(preset, **fixed).to_dict()  # the shared settings alone must work
    jobs: list[SweepJob] = []
    for combo in itertools.product(*grid.values()):
        params = dict(zip(grid, combo, strict=True))
        for seed in seeds:
            try:
                cfg = build_config(preset, **fixed, **params, seed=seed)
            except ConfigError as e:
                raise ConfigError(f"grid {_show(params)}: {e}") from None
            except (TypeError, ValueError) as e:  # a value the dataclass cannot even hold
                raise ConfigError(f"grid {_show(params)}: {e}") from None
            jobs.append(SweepJob(len(jobs), seed, params, cfg.to_dict()))
    return SweepPlan(grid, seeds, {k: v for k, v in base.items() if k != "seed"}, jobs)


def default_tag(plan: SweepPlan) -> str:
    return "sweep-" + "-".join(plan.fields) + "-" + time.strftime("%Y%m%d-%H%M%S")


# --- the summary: a pure function of the runs -----------------------------------------------
def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def build_sweep_summary(plan_grid: dict[str, list[Any]], seeds: Sequence[int],
                        runs: Sequence[dict[str, Any]], *, settings: dict[str, Any],
                        tag: str, backend: str, wall_seconds: float) -> dict[str, Any]:
    """Runs given as dicts with id, seed, params, status, error and evals. Per setting (one
    combination of the grid): mean and sd over its finished seeds of every end metric, and
    the mean curve over training. Unfinished runs are listed, never aggregated."""
    finished = [r for r in runs if r.get("status") == "finished" and r.get("evals")]
    k_max = summary_k_max(finished, settings)
    metrics = metrics_for(k_max)
    listed = [{**run_ends(r, metrics), "params": r["params"]} for r in runs]
    settings_out = []
    for combo in itertools.product(*plan_grid.values()):
        params = dict(zip(plan_grid, combo, strict=True))
        mine = [r for r in finished if _key(r["params"]) == _key(params)]
        rows = [x for x in listed if x["status"] == "finished" and x["end_step"] is not None
                and _key(x["params"]) == _key(params)]
        steps = sorted({e["step"] for r in mine for e in r["evals"]})
        by_step = {s: [e for r in mine for e in r["evals"] if e["step"] == s] for s in steps}
        settings_out.append({
            "params": params, "n": len(rows),
            "start": {m.key: mean_sd([x["start"][m.key] for x in rows]) for m in metrics},
            "end": {m.key: mean_sd([x["end"][m.key] for x in rows]) for m in metrics},
            "curves": {"step": steps} | {
                m.key: [mean_sd([metric_value(e, m.path) for e in by_step[s]])
                        for s in steps] for m in metrics}})
    return {"sweep": tag, "backend": backend, "task": settings.get("task"),
            "grid": plan_grid, "fields": list(plan_grid), "seeds": list(seeds),
            "settings": settings, "wall_seconds": round(wall_seconds, 1),
            "pass_k_max": k_max, "metrics": [{"key": m.key, "label": m.label} for m in metrics],
            "runs": listed, "by_setting": settings_out}


def summary_csv_rows(summary: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """summary.csv: one row per run, its params, seed, status and end metrics."""
    keys = [m["key"] for m in summary["metrics"]]
    columns = ["id", *summary["fields"], "seed", "status", "end_step", *keys]
    rows = [{"id": r["id"], **r["params"], "seed": r["seed"], "status": r["status"],
             "end_step": r["end_step"], **{k: r["end"].get(k) for k in keys}}
            for r in summary["runs"]]
    return columns, rows


def write_sweep_outputs(summary: dict[str, Any], out: Path) -> dict[str, Path]:
    from core.experiments.sweep_report import render_sweep_report

    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("summary.json", "summary.csv", "report.html")}
    paths["summary.json"].write_text(json.dumps(summary, indent=1, allow_nan=False))
    columns, rows = summary_csv_rows(summary)
    with open(paths["summary.csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    paths["report.html"].write_text(render_sweep_report(summary), encoding="utf-8")
    return paths


# --- running it -----------------------------------------------------------------------------
def run_sweep(plan: SweepPlan, backend: str = "local", *, ray_address: str | None = None,
              out: Path | str | None = None, runs_dir: Path | str | None = None,
              tag: str | None = None, workers: int | None = None,
              stream: TextIO = sys.stderr) -> ExperimentResult:
    """Train every job of `plan` on `backend` and write the outputs. Local runs share the
    machine's cores (threads = cores ÷ runs at once, unless threads is set); a Ray run holds
    as many CPUs as its threads setting (at least 1)."""
    from core.data.task_data import pin_task
    from core.runtime.runner import preflight
    from core.runtime.slots import max_runs, threads_per_run

    store = RunStore(Path(RunStore(runs_dir).root).resolve())
    tag = tag or default_tag(plan)
    workers = max(1, min(workers or len(plan.jobs), len(plan.jobs)))
    together = min(workers, max_runs()) if backend == "local" else workers
    if "threads" in plan.grid or plan.base.get("threads"):
        threads = None  # the user's setting
    else:  # local runs share this machine's cores; a Ray run holds 1 CPU of the cluster
        threads = threads_per_run(together) if backend == "local" else 1
    jobs = []
    checked: set[str] = set()
    for j in plan.jobs:  # every check before the backend starts or any folder exists
        cfg = RunConfig.from_dict(j.config)
        if threads is not None:
            cfg = cfg.replace(threads=threads)
        if cfg.model not in checked:  # one model check per model, not per run
            preflight(cfg)
            checked.add(cfg.model)
        cfg = pin_task(cfg, store.root)
        jobs.append(Job(j.index, cfg.recipe, j.seed, cfg.to_dict()))
    out = Path(out) if out is not None else store.root / "sweeps" / tag
    where = open_backend(backend, ray_address)

    def launch_tagged(cfg: RunConfig, root: Path) -> str:
        run_id = where.launch(cfg, root)
        store.set_tags(run_id, [tag])
        return run_id

    shape = " x ".join(f"{len(v)} {k}" for k, v in plan.grid.items())
    stream.write(f"sweep {tag}: {len(jobs)} runs ({shape} x {len(plan.seeds)} seeds) on the "
                 f"{backend} backend ({where.capacity} CPUs/slots), up to {workers} launched "
                 f"at once; runs in {store.root}, report in {out}\n")
    t0 = time.monotonic()
    try:
        outcomes, interrupted = run_jobs(jobs, store, workers, f"sweep {tag}", stream,
                                         launch=launch_tagged)
    finally:
        where.close()
    wall = time.monotonic() - t0
    runs = []
    for j, o in zip(plan.jobs, outcomes, strict=True):
        evals: list[dict[str, Any]] = []
        if o.id:
            try:
                evals = store.load(o.id).evals
            except KeyError:
                o.status, o.error = "failed", "run folder vanished"
        runs.append({"id": o.id, "seed": j.seed, "params": j.params, "status": o.status,
                     "error": o.error, "evals": evals})
    settings = {k: v for k, v in jobs[0].config.items() if k not in plan.grid and k != "seed"}
    summary = build_sweep_summary(plan.grid, plan.seeds, runs, settings=settings, tag=tag,
                                  backend=backend, wall_seconds=wall)
    summary["interrupted"] = interrupted
    summary["created_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    summary["runs_dir"] = str(store.root)
    write_sweep_outputs(summary, out)
    return ExperimentResult(out, summary, interrupted)


def estimate_seconds(config: dict[str, Any], runs: int, together: int,
                     seconds_per_step: float) -> float:
    """Wall time of `runs` runs of `config`, `together` at a time, from a measured
    seconds-per-step of one run (evaluations folded in): waves of runs x one run's time."""
    waves = math.ceil(runs / max(1, together))
    return waves * int(config.get("steps", 0)) * seconds_per_step
