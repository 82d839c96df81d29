"""Runs started together against the same runs one after the other (whole-command wall time).

Run by hand: `.venv/bin/python -m benchmarks.runs_at_once [--counts 2,3,4] [--pairs 4]
[--spinners K] [--steps N] [--cap C] [--launch terminal|app] [--json FILE]`. A trial starts
n quick-preset binary runs (seeds 0..n-1; `--steps` shortens them, evaluation still every
20 steps and at the end) in a fresh runs folder and times until the last one ends:
"together" starts all n at once through the run queue (n above the cap queues: still
started together), "sequence" starts each when the one before has ended. `--launch
terminal` (default) starts each as a `python -m core train` command in the benchmark's own
session, as a person at a terminal does; `--launch app` through `runner.launch`, the path
of the app, experiments and sweeps (a background process in its own session, forked from a
warm server; one untimed run first starts the server).

The two are timed as pairs whose order alternates (together then sequence, then sequence
then together, ... : ABBA), so a load that drifts during the benchmark weighs on both
sides alike; each pair gives together ÷ sequence for the wall and the CPU seconds, and the
medians over the pairs are the figures to quote. Beside the wall time: the CPU seconds the
runs used (threads spinning against each other burn CPU without progress; on a machine
shared with other work this is the steadier figure) and the load average.

`--spinners K` makes "under load" a stated condition rather than whatever others run: K
pure-Python busy loops (one core each) run for the whole benchmark, started and killed
by it, the first trial 60 s after them (so that code which read the load average, the lab
before 2026-11-30, saw them). Each is its own session, as another user's job would be:
with the kernel's autogroup scheduling (`/proc/sys/kernel/sched_autogroup_enabled`,
printed) the cores are shared between sessions first, then between the threads inside each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")  # what starting a run gives: its process, or its run id
RUN_DEADLINE_S = 1800  # one trial; a hung run fails the benchmark instead of waiting forever
SETTLE_S = 60  # seconds the spinners run before the first trial
SPIN = "while True: pass"  # one core's worth of pure-Python work, no I/O, no threads


@dataclass(frozen=True)
class Trial:
    n: int
    how: str  # "together" or "sequence"
    wall_s: float
    cpu_s: float  # user + system seconds of all n runs (app launches: their steps only)
    load_at_start: float
    load_at_end: float
    step_s_median_per_run: list[float]
    cores_per_step_per_run: list[float]  # median over a run's steps of its CPU ÷ wall
    threads_per_run: list[list[int]]  # the thread counts each run's steps used

    @property
    def cores_used(self) -> float:
        """CPU ÷ wall: the share of the machine the runs got (equal CPU and a smaller share
        is a slower wall time that wasted no work)."""
        return self.cpu_s / self.wall_s


@dataclass(frozen=True)
class Pair:
    together: Trial
    sequence: Trial
    first: str  # which of the two ran first

    @property
    def wall_ratio(self) -> float:
        """together ÷ sequence: above 1, starting the runs together was slower."""
        return self.together.wall_s / self.sequence.wall_s

    @property
    def cpu_ratio(self) -> float:
        return self.together.cpu_s / self.sequence.cpu_s


def abba(pairs: int) -> list[tuple[str, str]]:
    """The order of each pair: together first in pairs 0, 3, 4, 7, 8, ... and sequence
    first in pairs 1, 2, 5, 6, ... (ABBA ABBA ...), so each side runs first as often as the
    other over every two pairs and a steady drift in the load cancels over four trials."""
    ab, ba = ("together", "sequence"), ("sequence", "together")
    return [ab if i % 4 in (0, 3) else ba for i in range(pairs)]


def _command(seed: int, runs: str, steps: int | None) -> list[str]:
    return [sys.executable, "-m", "core", "train", "--preset", "quick", "--recipe", "binary",
            "--seed", str(seed), "--runs-dir", runs,
            *(["--steps", str(steps)] if steps else [])]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # ended and waited-for children
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class RunSteps:
    """What the runs in a folder logged per step (train/seconds, cpu_seconds, threads)."""
    step_s: list[float]  # each run's median step seconds
    cores: list[float]  # each run's median CPU ÷ wall per step
    threads: list[list[int]]  # each run's distinct thread counts
    cpu_s: float  # the steps' CPU seconds, all runs


def _steps(runs: str) -> RunSteps:
    per_run = []  # (median step seconds, median cores, thread counts, CPU seconds) per run
    for metrics in Path(runs).glob("*/metrics.jsonl"):
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if "train/seconds" in r]
        if rows:
            per_run.append((
                statistics.median(r["train/seconds"] for r in rows),
                statistics.median(r.get("train/cpu_seconds", 0.0) / max(r["train/seconds"], 1e-9)
                                  for r in rows),
                sorted({int(r.get("train/threads", 0)) for r in rows}),
                sum(r.get("train/cpu_seconds", 0.0) for r in rows)))
    per_run.sort(key=lambda run: run[0])
    return RunSteps([round(run[0], 3) for run in per_run], [round(run[1], 2) for run in per_run],
                    [run[2] for run in per_run], sum(run[3] for run in per_run))


def _timed(n: int, how: str, start: Callable[[int], T], finish: Callable[[list[T]], None]
           ) -> float:
    """Wall seconds of starting runs 0..n-1 with `start` and waiting on them with `finish`:
    all started, then waited for (together), or each waited for before the next (sequence)."""
    t0 = time.perf_counter()
    if how == "together":
        finish([start(seed) for seed in range(n)])
    else:
        for seed in range(n):
            finish([start(seed)])
    return time.perf_counter() - t0


def _terminal_trial(n: int, how: str, env: dict[str, str], runs: str, steps: int | None
                    ) -> float:
    """Wall seconds of n `python -m core train` commands, together or in sequence."""
    deadline = time.perf_counter() + RUN_DEADLINE_S

    def start(seed: int) -> subprocess.Popen:
        return subprocess.Popen(_command(seed, runs, steps), cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def finish(procs: list[subprocess.Popen]) -> None:
        for proc in procs:
            returncode = proc.wait(timeout=max(1.0, deadline - time.perf_counter()))
            if returncode != 0:
                raise RuntimeError(f"a run exited with {returncode}")

    return _timed(n, how, start, finish)


def _app_launch(seed: int, runs: str, steps: int | None, no_eval: bool = False) -> str:
    from core.config import build_config
    from core.runtime.runner import launch

    config = build_config("quick", recipe="binary", seed=seed, steps=steps, no_eval=no_eval)
    return launch(config, runs, warm_wait=True)


def _wait_ended(runs: str, run_ids: list[str], deadline: float) -> None:
    from core.runtime.store import ACTIVE, RunStore

    store = RunStore(runs)
    while True:
        status = [store.load(r, metrics=False).status for r in run_ids]
        if not any(s in ACTIVE for s in status):
            if any(s != "finished" for s in status):
                raise RuntimeError(f"a run ended {status}")
            return
        if time.perf_counter() > deadline:
            raise RuntimeError("a run did not end in time")
        time.sleep(0.1)


def _app_trial(n: int, how: str, runs: str, steps: int | None) -> float:
    """Wall seconds of n runs started by `runner.launch`, together or in sequence."""
    deadline = time.perf_counter() + RUN_DEADLINE_S
    return _timed(n, how, lambda seed: _app_launch(seed, runs, steps),
                  lambda ids: _wait_ended(runs, ids, deadline))


def trial(n: int, how: str, cap: int | None, steps: int | None, launch: str = "terminal"
          ) -> Trial:
    env = dict(os.environ)
    env.pop("CALIBRATION_LAB_MAX_RUNS", None)
    if cap is not None:
        env["CALIBRATION_LAB_MAX_RUNS"] = str(cap)
    env["PYTHONPATH"] = str(ROOT)
    load, cpu = os.getloadavg()[0], _children_cpu()
    with tempfile.TemporaryDirectory(prefix="bench-at-once-") as runs:
        if launch == "terminal":
            wall = _terminal_trial(n, how, env, runs, steps)
            cpu = _children_cpu() - cpu
        else:
            with _environ(env):
                wall = _app_trial(n, how, runs, steps)
        logged = _steps(runs)
    return Trial(n, how, round(wall, 2), round(cpu if launch == "terminal" else logged.cpu_s, 2),
                 round(load, 2), round(os.getloadavg()[0], 2), logged.step_s, logged.cores,
                 logged.threads)


@contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """This process's environment set to `env` for the block (runner.launch reads it)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def app_launches() -> Iterator[None]:
    """Warm starts on, from a private server folder; one untimed run starts the server,
    which is ended on the way out."""
    from core.runtime import warm

    folder = Path(tempfile.mkdtemp(prefix="bench-at-once-warm-"))  # mode 0700
    env = dict(os.environ)
    env.pop(warm.WARM_ENV, None)
    env[warm.WARM_DIR_ENV] = str(folder)
    try:
        with _environ(env):
            with tempfile.TemporaryDirectory(prefix="bench-at-once-") as runs:
                _wait_ended(runs, [_app_launch(0, runs, 1, no_eval=True)],
                            time.perf_counter() + RUN_DEADLINE_S)
            print(f"app launches: warm server in {folder}", flush=True)
            yield
    finally:
        for pid in warm.server_pids(folder):
            os.kill(pid, signal.SIGTERM)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def spinners(k: int) -> Iterator[list[subprocess.Popen]]:
    """K busy loops for the length of the block, each in its own session; killed on the way
    out, however the block ends."""
    procs = [subprocess.Popen([sys.executable, "-c", SPIN], start_new_session=True,
                              stdin=subprocess.DEVNULL) for _ in range(k)]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
        for proc in procs:
            proc.wait(timeout=10)


def _autogroup() -> str:
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip()
    except OSError:
        return "unknown"


def _print_trial(t: Trial) -> None:
    print(f"n={t.n} {t.how:<9} {t.wall_s:7.1f} s wall {t.cpu_s:7.1f} s CPU"
          f" ({t.cores_used:.2f} cores)  load {t.load_at_start:5.2f} -> {t.load_at_end:5.2f}"
          f"  s/step per run {t.step_s_median_per_run}, cores per step"
          f" {t.cores_per_step_per_run}, threads {t.threads_per_run}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="2,3,4", help="runs per trial, comma-separated")
    ap.add_argument("--pairs", type=int, default=4,
                    help="together/sequence pairs per count, in ABBA order (default 4)")
    ap.add_argument("--spinners", type=int, default=0,
                    help="busy-loop processes kept running as a stated background load")
    ap.add_argument("--cap", type=int, default=None,
                    help="queue cap ($CALIBRATION_LAB_MAX_RUNS) for both sides (default: the "
                    "lab's, one run per core)")
    ap.add_argument("--steps", type=int, default=None,
                    help="steps per run (default: the quick preset's 100)")
    ap.add_argument("--launch", choices=["terminal", "app"], default="terminal",
                    help="start runs as `python -m core train` commands in this session "
                    "(terminal) or through runner.launch, as the app and experiments do (app)")
    ap.add_argument("--json", type=Path, default=None, help="also write every pair here")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores "
          f"({len(os.sched_getaffinity(0))} usable), python {platform.python_version()}, "
          f"kernel {platform.release()}, autogroup {_autogroup()}; quick preset, binary, "
          f"seeds 0..n-1, {args.steps or 'preset'} steps, cap {args.cap or 'default'}, "
          f"{args.spinners} spinners, launched from the {args.launch}", flush=True)
    results: list[dict] = []
    with spinners(args.spinners), ExitStack() as stack:
        if args.spinners:  # let the 1-minute load average show them before any run starts
            time.sleep(SETTLE_S)
        if args.launch == "app":
            stack.enter_context(app_launches())
        for n in (int(c) for c in args.counts.split(",")):
            pairs = []
            for order in abba(args.pairs):
                done = {how: trial(n, how, args.cap, args.steps, args.launch) for how in order}
                for how in order:
                    _print_trial(done[how])
                pair = Pair(done["together"], done["sequence"], first=order[0])
                pairs.append(pair)
                print(f"n={n} pair ({pair.first} first): together / sequence wall "
                      f"{pair.wall_ratio:.3f}, CPU {pair.cpu_ratio:.3f}", flush=True)
            wall = statistics.median(p.wall_ratio for p in pairs)
            cpu = statistics.median(p.cpu_ratio for p in pairs)
            print(f"n={n} MEDIAN over {len(pairs)} pairs: together / sequence wall {wall:.3f}"
                  f" (range {min(p.wall_ratio for p in pairs):.3f}-"
                  f"{max(p.wall_ratio for p in pairs):.3f}), CPU {cpu:.3f}", flush=True)
            results.append({"n": n, "median_wall_ratio": round(wall, 4),
                            "median_cpu_ratio": round(cpu, 4),
                            "pairs": [{**asdict(p), "wall_ratio": round(p.wall_ratio, 4),
                                       "cpu_ratio": round(p.cpu_ratio, 4)} for p in pairs]})
    if args.json:
        args.json.write_text(json.dumps({"spinners": args.spinners, "steps": args.steps,
                                         "cap": args.cap, "counts": results}, indent=1))


if __name__ == "__main__":
    main()
