"""Running a named experiment: its runs go through the same runner and queue as the app's.

`run_experiment` builds one config per (recipe, seed) from the experiment's shared settings,
checks them all before anything starts, launches them as ordinary background runs
(`core.runtime.runner.launch`: the slot queue caps how many train at once, across the app, the
CLI and every experiment, and a process that dies is marked failed by the runner's reaper),
waits while printing progress, then reads the runs back and writes to its output folder:
`summary.json` (see `core.experiments.aggregation`), `summary.csv` (one row per recipe and
metric) and `report.html` (self-contained, opens offline).

Ctrl-C or SIGTERM stops the experiment's runs after their current step (the runs not yet
launched are listed as not started) and still writes the outputs. The runs are ordinary runs:
the app lists them, and each can be inspected, continued or deleted like any other.
"""

from __future__ import annotations

import contextlib
import csv
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from core.config import RunConfig, build_config
from core.experiments.aggregation import CSV_COLUMNS, build_summary, judge_rows, summary_rows
from core.experiments.registry import Experiment, find
from core.runtime.store import ACTIVE, RunStore

POLL_SECONDS = 2.0
ENDED_OK = ("finished", "stopped")
STOP_WAIT_SECONDS = 60.0  # after a stop, how long to wait for the runs to record their end


@dataclass(frozen=True)
class Job:
    index: int
    recipe: str  # the arm: a recipe, or a chained arm's name
    seed: int
    config: dict[str, Any]
    after: int | None = None  # a chained arm: the job whose finished run it starts from


@dataclass
class Outcome:
    """How one job ended, as read from its run's status.json."""
    recipe: str
    seed: int
    id: str | None = None
    status: str = "not started"
    error: str | None = None
    step: int = 0


def _clock(seconds: float) -> str:
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60:02d}:{s % 60:02d}"


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

    def update(self, outcomes: Sequence[Outcome], final: bool = False) -> None:
        count = {s: sum(o.status == s for o in outcomes)
                 for s in ("queued", "running", "finished", "stopped")}
        failed = sum(o.status in ("failed", "damaged") for o in outcomes)
        now = time.monotonic()
        line = (f"{self.label}: {sum(o.step for o in outcomes)}/{self.total} steps, "
                f"{count['running']} running, "
                + (f"{count['queued']} queued, " if count["queued"] else "")
                + f"{count['finished']} done, {failed} failed, "
                + (f"{count['stopped']} stopped, " if count["stopped"] else "")
                + f"{_clock(now - self.t0)} elapsed")
        key = (count["queued"], count["running"], count["finished"], failed, count["stopped"])
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


def _read(store: RunStore, o: Outcome) -> None:
    """Refresh an outcome from its run's status.json (a vanished folder is a failure)."""
    try:
        record = store.load(o.id, metrics=False)
    except KeyError:
        o.status, o.error = "failed", "run folder vanished"
        return
    o.status, o.error, o.step = record.status, record.error, record.step


def run_jobs(jobs: Sequence[Job], store: RunStore, workers: int, label: str,
             stream: TextIO = sys.stderr,
             launch: Callable[[RunConfig, Path], str] | None = None,
             ) -> tuple[list[Outcome], bool]:
    """Launch every job through the runner, keeping at most `workers` of them queued or
    training at once (the shared slot queue caps the machine as a whole), and wait for them
    all. A failed run never stops the others. Returns the outcomes in job order and whether
    the user interrupted (Ctrl-C or SIGTERM stops the live runs after their current step).
    `launch` starts one run and returns its id (default: the runner's, on this machine)."""
    from core.runtime.runner import launch as launch_here
    from core.runtime.runner import stop

    launch = launch or launch_here

    outcomes = [Outcome(j.recipe, j.seed) for j in jobs]
    pending = list(jobs)
    live: list[int] = []
    bar = _Progress(stream, label, sum(int(j.config["steps"]) for j in jobs))
    interrupted = False

    def reap() -> None:
        for index in list(live):
            o = outcomes[index]
            _read(store, o)
            if o.status not in ACTIVE:
                live.remove(index)
                bar.message(f"  {o.id}  {o.recipe} seed {o.seed}: {o.status}"
                            + (f" ({o.error})" if o.error and o.status not in ENDED_OK else ""))

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    # SIGTERM stops the experiment like Ctrl-C does, so no run is left training alone.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, interrupt) if in_main else None
    def waiting(job: Job) -> bool:
        """A chained job whose starting run has not ended yet."""
        return job.after is not None and (outcomes[job.after].status in ACTIVE
                                          or any(j.index == job.after for j in pending))

    try:
        while pending or live:
            for job in [j for j in pending if not waiting(j)]:
                if len(live) >= workers:
                    break
                pending.remove(job)
                o = outcomes[job.index]
                config = dict(job.config)
                if job.after is not None:
                    parent = outcomes[job.after]
                    if parent.status != "finished":
                        o.error = f"its starting run ({parent.recipe} seed {parent.seed}) " \
                                  f"ended {parent.status}"
                        bar.message(f"  {job.recipe} seed {job.seed}: not started ({o.error})")
                        continue
                    config["init_from"] = parent.id
                try:
                    o.id = launch(RunConfig.from_dict(config), store.root)
                except (OSError, ValueError) as e:  # checked up front, so rare: a full disk
                    o.status, o.error = "failed", f"could not start: {e}"
                    bar.message(f"  {o.recipe} seed {o.seed}: failed ({o.error})")
                    continue
                o.status = "queued"
                live.append(job.index)
            reap()
            if live or pending:
                bar.update(outcomes)
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM
        interrupted = True
        bar.message("interrupted: stopping the experiment's runs after their current step")
        for index in live:
            with contextlib.suppress(KeyError, ProcessLookupError):  # it ended meanwhile
                stop(outcomes[index].id, store.root)
        for job in pending:
            outcomes[job.index].error = "the experiment was interrupted"
            bar.message(f"  {job.recipe} seed {job.seed}: not started")
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while live and time.monotonic() < deadline:
            reap()
            if live:
                time.sleep(0.2)
        for index in live:  # still recording its end: list it as it last read
            bar.message(f"  {outcomes[index].id}: still {outcomes[index].status} after "
                        f"{STOP_WAIT_SECONDS:.0f} s; see its log.txt")
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    bar.update(outcomes, final=True)
    return outcomes, interrupted


# --- where runs train -----------------------------------------------------------------------
BACKENDS = ("local", "ray")


@dataclass
class Backend:
    """Where an experiment's or a sweep's runs train: `launch` starts one run and returns its
    id; `capacity` is how many may train at once; `close` lets go of the backend."""
    name: str
    launch: Callable[[RunConfig, Path], str]
    capacity: int
    close: Callable[[], None]


def open_backend(name: str, ray_address: str | None = None) -> Backend:
    """This machine (the runner and its shared slot queue), or a Ray cluster
    (`core.runtime.ray_backend`: Ray's resource accounting, rows streamed back here)."""
    if name == "local":
        from core.runtime.runner import launch
        from core.runtime.slots import max_runs

        return Backend(name, lambda cfg, root: launch(cfg, root), max_runs(), lambda: None)
    if name == "ray":
        from core.runtime.ray_backend import RayBackend, ray_available

        if not ray_available():
            raise ValueError("the ray backend needs the ray package: pip install -r "
                             "requirements-dev.txt (or pip install ray)")
        ray_backend = RayBackend(ray_address)
        return Backend(name, ray_backend.launch, ray_backend.cpus(), ray_backend.close)
    raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")


# --- the experiment ------------------------------------------------------------------------
@dataclass
class ExperimentResult:
    out: Path
    summary: dict[str, Any]
    interrupted: bool = False

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.summary["runs"] if r["status"] not in ENDED_OK]


def experiment_config(spec: Experiment, task: str,
                      overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one set of settings shared by every run: the experiment's, then overrides."""
    values = {**spec.base_values(),
              **{k: v for k, v in (overrides or {}).items() if v is not None}, "task": task}
    return build_config(**values).to_dict()


def default_out(name: str, task: str, runs_root: Path) -> Path:
    """runs/experiments/NAME-TASK-TIME, under the run store's folder."""
    return runs_root / "experiments" / f"{name}-{task}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_experiment(name: str, task: str | None = None, seeds: Sequence[int] | None = None,
                   recipes: Sequence[str] | None = None, workers: int | None = None,
                   out: Path | str | None = None, runs_dir: Path | str | None = None,
                   overrides: dict[str, Any] | None = None,
                   stream: TextIO = sys.stderr, backend: str = "local",
                   ray_address: str | None = None) -> ExperimentResult:
    """Train every (recipe, seed) of experiment `name` with its shared settings, then write
    the summary and report.

    `overrides` are RunConfig fields applied over the experiment's settings for every run
    (steps, eval sizes, model...). `workers` caps how many of its runs are queued or training
    at once (default: all of them; the shared queue's cap still applies). `backend`: "local"
    (this machine) or "ray" (a Ray cluster at `ray_address`, each run holding 1 CPU unless
    threads is set). Raises
    ConfigError/ModelError/ValueError before anything starts if the settings cannot work."""
    from core.data.task_data import pin_task
    from core.runtime.runner import preflight
    from core.runtime.slots import max_runs, threads_per_run

    spec = find(name)
    name = spec.name  # an alias runs, and is reported, as the experiment it names
    task = task or spec.task
    recipes = list(dict.fromkeys(recipes or spec.arms))
    for arm in recipes:
        chain = spec.chain(arm)
        if chain is not None and chain.after not in recipes:
            raise ValueError(f"the arm {arm!r} starts from the {chain.after!r} run: list "
                             f"{chain.after} too")
    per_arm = sorted({k for v in spec.variants for k in v.settings}
                     & {k for k, v in (overrides or {}).items() if v is not None})
    if per_arm:
        raise ValueError(f"the {name} experiment sets {', '.join(per_arm)} per arm: drop "
                         "that flag")
    seeds = list(dict.fromkeys(int(s) for s in (spec.seeds if seeds is None else seeds)))
    if not recipes or not seeds:
        raise ValueError("an experiment needs at least one recipe and one seed")
    n_jobs = len(recipes) * len(seeds)
    workers = max(1, min(workers or n_jobs, n_jobs))
    store = RunStore(Path(RunStore(runs_dir).root).resolve())
    together = min(workers, max_runs()) if backend == "local" else workers
    base = experiment_config(spec, task, overrides)
    base["threads"] = threads_per_run(together) if backend == "local" else 1
    jobs = []
    for seed in seeds:  # every recipe's first seed before any second seed
        first = len(jobs)
        for arm in recipes:
            chain, variant = spec.chain(arm), spec.variant(arm)
            recipe = chain.recipe if chain else spec.recipes[0] if variant else arm
            cfg = build_config(**{**base, **(variant.settings if variant else {}),
                                  "recipe": recipe, "seed": seed})
            preflight(cfg, store.root)  # a chained arm's init_from is checked at its launch
            cfg = pin_task(cfg, store.root)  # a task file is copied beside the runs
            after = first + recipes.index(chain.after) if chain else None
            jobs.append(Job(len(jobs), arm, seed, cfg.to_dict(), after))
    where = open_backend(backend, ray_address)  # a missing ray fails before any folder
    out = Path(out) if out is not None else default_out(name, task, store.root)
    out.mkdir(parents=True, exist_ok=True)
    label = f"{name} {task}"
    stream.write(f"{label}: {n_jobs} runs ({', '.join(recipes)} x seeds "
                 f"{', '.join(map(str, seeds))}), up to {together} training at once x "
                 f"{base['threads']} threads (queue cap {max_runs()}), {base['steps']} steps "
                 f"each; runs in {store.root}, report in {out}\n")
    t0 = time.monotonic()
    try:
        outcomes, interrupted = run_jobs(jobs, store, workers, label, stream,
                                         launch=where.launch)
    finally:
        where.close()
    wall = time.monotonic() - t0
    runs = []
    for o in outcomes:
        evals: list[dict[str, Any]] = []
        train: list[dict[str, Any]] = []
        if o.id:
            try:
                record = store.load(o.id)
                evals, train = record.evals, record.train
            except KeyError:
                o.status, o.error = "failed", "run folder vanished"
        arm = {spec.arm_key: o.recipe, "recipe": spec.recipes[0]} if spec.variants else {
            "recipe": o.recipe}
        runs.append({"id": o.id, **arm, "seed": o.seed, "status": o.status,
                     "error": o.error, "evals": evals,
                     "train_reward": [(t["step"], t["reward/mean"]) for t in train
                                      if isinstance(t.get("reward/mean"), int | float)],
                     "train_judge": judge_rows(train)})
    settings = {k: v for k, v in base.items() if k not in ("recipe", "seed")}
    summary = build_summary(runs, task=task, seeds=seeds, recipes=recipes, settings=settings,
                            wall_seconds=wall, experiment=name, question=spec.question,
                            targets=spec.targets, arm_key=spec.arm_key)
    summary["variants"] = {v.arm: v.settings for v in spec.variants if v.arm in recipes}
    summary["experiment_settings"] = spec.settings
    summary["claim"], summary["source"] = spec.claim, spec.source
    summary["chains"] = {c.arm: {"recipe": c.recipe, "after": c.after} for c in spec.chains
                         if c.arm in recipes}
    summary["overrides"] = {k: v for k, v in (overrides or {}).items() if v is not None}
    summary["interrupted"] = interrupted
    summary["created_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    summary["runs_dir"] = str(store.root)
    if spec.measure is not None and not interrupted:
        summary.update(spec.measure(summary, store.root, out, stream))
        summary["targets"] = [t.to_dict() for t in spec.targets(summary)]
        summary["wall_seconds"] = round(time.monotonic() - t0, 1)
    write_outputs(summary, out, spec)
    return ExperimentResult(out, summary, interrupted)


def write_outputs(summary: dict[str, Any], out: Path, spec: Experiment) -> dict[str, Path]:
    """summary.json, summary.csv and report.html in `out`; returns their paths."""
    from core.experiments.report import render_report

    paths = {name: out / name for name in ("summary.json", "summary.csv", "report.html")}
    paths["summary.json"].write_text(json.dumps(summary, indent=1, allow_nan=False))
    with open(paths["summary.csv"], "w", newline="") as f:
        # An experiment with its own table (one row per model and setting) writes that.
        w = csv.DictWriter(f, fieldnames=spec.table_columns or CSV_COLUMNS,
                           extrasaction="ignore")
        w.writeheader()
        w.writerows(summary.get("table", []) if spec.table_columns else summary_rows(summary))
    paths["report.html"].write_text(render_report(summary, spec.title, spec.sections),
                                    encoding="utf-8")
    return paths
