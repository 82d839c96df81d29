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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.runs.store import RunRecord, RunStore

MAX_RUNS_ENV = "CALIBRATION_LAB_MAX_RUNS"
SLOTS_DIR = ".slots"  # a dot folder: never taken for a run
POLL_SECONDS = 0.25


def max_runs() -> int:
    """How many runs may train at once: $CALIBRATION_LAB_MAX_RUNS, else one per CPU core."""
    raw = os.environ.get(MAX_RUNS_ENV, "").strip()
    if not raw:
        return os.cpu_count() or 1
    try:
        cap = int(raw)
    except ValueError:
        cap = 0
    if cap < 1:
        raise ValueError(f"{MAX_RUNS_ENV} must be a whole number >= 1 (runs training at once), "
                         f"got {raw!r}")
    return cap


def threads_per_run(together: int) -> int:
    """CPU threads for each run when `together` runs train at once: the cores shared out."""
    return max(1, (os.cpu_count() or 1) // max(1, together))


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
        cap = os.cpu_count() or 1  # the launch itself reports the broken setting
    waiting = sorted((r for r in runs if r.status == "queued"),
                     key=lambda r: (r.queued_at or 0.0, r.id))
    return QueueState(cap, sum(r.status == "running" for r in runs), [r.id for r in waiting])
