"""The run queue: at most N runs train at once; the others wait, first come first served.

No daemon. Every training process, before it loads a model, takes one of N slot locks
(`fcntl.flock` on `runs/.slots/slot-<i>.lock`), and only while it is first in line: the
oldest live run whose status is `queued`. The kernel drops a lock when its holder ends,
however it ends (an exception, SIGKILL, the OOM killer), so a slot is never leaked and no
clean-up is needed. Waiting processes have not imported torch yet: a long queue is cheap.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.config import RunConfig
from core.models.model_catalog import run_estimate
from core.runtime.store import RunRecord, RunStore

MAX_RUNS_ENV = "CALIBRATION_LAB_MAX_RUNS"
SLOTS_DIR = ".slots"  # a dot folder: never taken for a run
POLL_SECONDS = 0.25


def max_runs(config: RunConfig | None = None) -> int:
    """How many runs may train at once: $CALIBRATION_LAB_MAX_RUNS; else, for a run that will
    use CUDA GPUs, as many as their memory holds (`gpu_cap`); else one per CPU core."""
    raw = os.environ.get(MAX_RUNS_ENV, "").strip()
    if not raw:
        gpus = visible_gpus() if config is not None and config.device in ("auto", "cuda") else []
        cap = gpu_cap(gpus, config) if gpus else None
        return cap or cores()
    try:
        cap = int(raw)
    except ValueError:
        cap = 0
    if cap < 1:
        raise ValueError(f"{MAX_RUNS_ENV} must be a whole number >= 1 (runs training at once), "
                         f"got {raw!r}")
    return cap


def cores() -> int:
    """CPU cores this process may use (its affinity mask, which a container or taskset may
    narrow), not every core of the machine."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS has no affinity masks
        return os.cpu_count() or 1


# How many times an idle OpenMP thread checks for work before it sleeps (libgomp reads
# GOMP_SPINCOUNT once, as torch loads it). libgomp's default, 300,000, is fastest on free
# cores but under load a thread spins on a core its partner needs; sleeping at once
# (OMP_WAIT_POLICY=PASSIVE) pays a wake-up at every parallel op. Measured on 2 cores, a
# 2-thread step (benchmarks/RESULTS.md, "The OpenMP wait, 2026-11-30"): quiet 54 ms default,
# 54 ms at 10,000, 138 ms passive; beside two busy programs 821, 247 and 305 ms. One fixed
# count, so no rule follows the load (the 1-minute load average lags: it chose the passive
# wait just after runs ended, on free cores), and a warm server's key never flips with it.
OMP_SPIN_COUNT = "10000"
OMP_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")  # a person's own setting of the wait


def omp_settings() -> dict[str, str]:
    """The OpenMP variables the lab sets before torch loads: GOMP_SPINCOUNT, unless the
    environment already sets the wait (OMP_WAIT_POLICY or GOMP_SPINCOUNT win). Only libgomp
    (Linux builds of torch) reads it; other OpenMP runtimes keep their defaults."""
    if any(v in os.environ for v in OMP_WAIT_VARIABLES):
        return {}
    return {"GOMP_SPINCOUNT": OMP_SPIN_COUNT}


def omp_env() -> dict[str, str]:
    """This process's environment as a process that loads torch from it will have it (with
    `omp_settings`): for a warm server's key, or a benchmark's children."""
    return {**os.environ, **omp_settings()}


def threads_for(training: int, cap: int) -> int:
    """torch threads for one run while `training` runs (itself included) hold slots.

    The cores are shared out evenly: two runs on 2 cores with 2 threads each spin against
    each other and both train several times slower than one after the other
    (benchmarks/RESULTS.md, "Runs at once")."""
    return threads_per_run(min(training, cap))


def threads_per_run(together: int) -> int:
    """CPU threads for each of `together` runs training at once: the cores shared out. A
    group of runs launched together (an experiment, the quick comparison) fixes this count
    for its whole length, so a seed's figures do not depend on what else was running."""
    return max(1, cores() // max(1, together))


GPU_MEMORY_USABLE = 0.9  # of each GPU's memory: the rest for the CUDA context and others


@dataclass(frozen=True)
class Gpu:
    index: str  # as CUDA_VISIBLE_DEVICES names it
    total_bytes: float


def visible_gpus() -> list[Gpu]:
    """The CUDA GPUs this process may use, from `nvidia-smi` (torch is not imported while a
    run waits, and initialising CUDA here would take GPU memory per waiting run); [] when
    there is none or no driver tool."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = [Gpu(i.strip(), float(mib) * 2**20) for i, mib in
            (line.split(",") for line in out.strip().splitlines() if "," in line)]
    allowed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if allowed is not None:
        order = [d.strip() for d in allowed.split(",") if d.strip()]
        by_index = {g.index: g for g in gpus}
        gpus = [by_index[d] for d in order if d in by_index]
    return gpus


def gpu_cap(gpus: list[Gpu], config: RunConfig) -> int | None:
    """Runs of this size that fit at once: each GPU holds floor(usable memory / the run's
    estimated peak), every GPU as many as the smallest (slots go to GPUs in turn,
    `gpu_for_slot`), at least one run. None when the run's size is unknown.

    The GPUs' whole memory counts, not the memory free at this moment: free memory already
    leaves out the lab's own runs in flight, so a cap from it would shrink as runs start.
    """
    estimate = run_estimate(config, "cuda")
    if estimate is None or not gpus:
        return None
    per_gpu = min(int(g.total_bytes * GPU_MEMORY_USABLE // estimate.total) for g in gpus)
    return max(1, per_gpu * len(gpus))


def gpu_for_slot(index: int, gpus: list[Gpu]) -> str:
    """The GPU that slot `index` trains on: slots take the GPUs in turn."""
    return gpus[index % len(gpus)].index


def pin_to_gpu(slot: Slot, config: RunConfig) -> None:
    """Before torch starts CUDA in this process: let it see only its slot's GPU, so runs
    spread over a machine's GPUs instead of all landing on the first."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return  # too late to choose (a run trained inside an app or test process)
    gpus = visible_gpus() if config.device in ("auto", "cuda") else []
    if len(gpus) > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_for_slot(slot.index, gpus)


@dataclass
class Slot:
    index: int
    fd: int

    def release(self) -> None:
        os.close(self.fd)  # closing the descriptor drops the lock


def try_slot(root: Path, cap: int) -> Slot | None:
    """A free slot among the first `cap`, locked for this process; None when all are taken."""
    folder = root / SLOTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(cap):
        fd = os.open(folder / f"slot-{index}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return Slot(index, fd)
    return None


def training_now(root: Path, cap: int) -> int:
    """How many of the first `cap` slots are held now, by any process (this one included).

    A free slot is locked and let go at once to find out: a waiting run that tries it in
    that instant just tries again at its next poll."""
    folder = root / SLOTS_DIR
    held = 0
    for index in range(cap):
        try:
            fd = os.open(folder / f"slot-{index}.lock", os.O_RDWR)
        except FileNotFoundError:
            continue  # never taken yet: free
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held += 1
        finally:
            os.close(fd)
    return held


def first_in_line(store: RunStore, run_id: str) -> bool:
    line = store.queue()
    return not line or line[0] == run_id


def wait_for_slot(store: RunStore, run_id: str, cap: int,
                  should_stop: Callable[[], bool] = lambda: False,
                  poll: float = POLL_SECONDS) -> Slot | None:
    """Block until this run may train; None if it was stopped while waiting.

    A free slot is tried first (a few cheap syscalls) and the line read only then, so a
    long queue costs little while every slot is busy. A run that is not first lets go of
    the slot at once, leaving it to the run ahead."""
    while not should_stop():
        slot = try_slot(store.root, cap)
        if slot is not None:
            if first_in_line(store, run_id):
                return slot
            slot.release()
        time.sleep(poll)
    return None


@dataclass(frozen=True)
class QueueState:
    cap: int  # runs that may train at once
    running: int
    line: list[str]  # queued run ids, first in line first

    def position(self, run_id: str) -> int | None:
        """1 for the next run to start; None if it is not waiting."""
        return self.line.index(run_id) + 1 if run_id in self.line else None


def queue_state(runs: list[RunRecord]) -> QueueState:
    """How full the machine is: the cap, the runs training, and the waiting line (in the
    order `wait_for_slot` serves it)."""
    try:
        cap = max_runs()
    except ValueError:
        cap = cores()  # the launch itself reports the broken setting
    waiting = sorted((r for r in runs if r.status == "queued"),
                     key=lambda r: (r.queued_at or 0.0, r.id))
    return QueueState(cap, sum(r.status == "running" for r in runs), [r.id for r in waiting])
