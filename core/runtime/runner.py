"""Starting, stopping and continuing runs: checked before any folder exists, then trained here
or in a background process that first waits for a slot (core.runtime.slots).

This module does not import torch at module level, so the app can launch runs through it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from core.config import RunConfig
from core.data.task_data import task_for
from core.models.model_source import check_hub_reachable, check_model
from core.paths import REPO_ROOT
from core.runtime import slots, warm
from core.runtime.failures import ErrorKind, failure_kind, failure_message
from core.runtime.store import (
    ACTIVE,
    ADAPTER_FILE,
    ENDED_UNREPORTED,
    REMOTE_STOP_FILE,
    RunStore,
    RunWriter,
    process_start,
    run_lock,
)

STOP_GRACE_SECONDS = 3.0  # a stop that the loop has not honoured by then is forced


class ResumeError(ValueError):
    """A run that cannot continue; the message says why."""


def preflight(config: RunConfig, runs_dir: Path | str | None = None) -> None:
    """Everything that can be checked without loading weights; raises with a clear message.
    `runs_dir` is the store the run will live in, where `init_from` is looked up."""
    source = check_model(config.model)
    task_for(config)  # a file or dataset task checks every row here
    check_init_from(config, RunStore(runs_dir))
    slots.max_runs()  # a broken cap setting fails here, not in the background
    check_hub_reachable(source)  # last: the only check that may wait on the network


def check_init_from(config: RunConfig, store: RunStore) -> None:
    """The run `init_from` names must exist in `store`, have finished on the same model and
    have saved its final adapter; ValueError says which of these is not so."""
    if not config.init_from:
        return
    path = store.path(config.init_from)
    if not path.is_dir():
        raise ValueError(f"init_from: no run {config.init_from!r} in {store.root}")
    record = store.load(config.init_from, metrics=False)
    if record.status != "finished":
        raise ValueError(f"init_from: run {config.init_from} is {record.status}; only a "
                         "finished run has a final policy to start from")
    if record.config.get("model") != config.model:
        raise ValueError(f"init_from: run {config.init_from} trained "
                         f"{record.config.get('model')!r}, not {config.model!r}")
    if not (path / ADAPTER_FILE).is_file():
        raise ValueError(f"init_from: run {config.init_from} has no {ADAPTER_FILE} (it ran "
                         "0 steps, or before final adapters were kept)")


class StopGuard:
    """SIGTERM/SIGINT ask the loop to stop after its step; if it has not ended within
    STOP_GRACE_SECONDS (a long evaluation, a model still loading) the run is recorded as
    stopped and the process exits at once. Metrics are fsynced per row and checkpoints are
    replaced atomically, so a forced exit loses only the unfinished step."""

    def __init__(self, writer: RunWriter, grace: float = STOP_GRACE_SECONDS,
                 exit_now: object = os._exit) -> None:
        self.writer, self.grace, self._exit = writer, grace, exit_now
        self.requested = threading.Event()
        self._ended = threading.Lock()  # held by whoever records the end
        self._previous: dict[int, object] = {}
        self._timer: threading.Timer | None = None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():  # where signals land
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if self._timer is not None:
            self._timer.cancel()

    def _on_signal(self, *_: object) -> None:
        self.request()

    def request(self) -> None:
        """Stop after the current step, or by force once the grace period is over."""
        if not self.requested.is_set():
            self.requested.set()
            self._timer = threading.Timer(self.grace, self.force)
            self._timer.daemon = True  # never keeps a finished process alive
            self._timer.start()

    def force(self) -> None:
        if not self._ended.acquire(blocking=False):
            return  # the run ended by itself in time
        self.writer.update_status(status="stopped", ended_at=time.time(),
                                  stop="forced after the grace period")
        self._exit(0)

    def end(self, **fields: object) -> bool:
        """Record how the run ended, unless a forced stop already did."""
        if not self._ended.acquire(blocking=False):
            return False
        self.writer.update_status(**fields, ended_at=time.time())
        return True


def execute(config: RunConfig, writer: RunWriter) -> str:
    """Wait for a slot, train in this process and record how it ended; SIGTERM/SIGINT stop it
    (while queued too). Any exception fails the run with its reason; the trace goes to the
    run's log.txt."""
    guard = StopGuard(writer)
    guard.install()
    slot = None
    try:
        root, cap = writer.path.parent, slots.max_runs(config)
        slot = slots.wait_for_slot(RunStore(root), writer.run_id, cap, guard.requested.is_set)
        if slot is None:
            status = "stopped"
        else:
            slots.pin_to_gpu(slot, config)
            writer.update_status(status="running", slot=slot.index, running_at=time.time())
            from core.engine.train import train  # torch loads here, once the run may train

            def threads() -> int:  # a set count wins; else a share of the cores
                return config.threads or slots.threads_for(slots.training_now(root, cap), cap)

            status = train(config, writer, should_stop=guard.requested.is_set, threads=threads)
        guard.end(status=status)
    except Exception as e:  # the run's record must say why it ended, whatever the cause
        writer.log_text(traceback.format_exc())
        status = "failed"
        guard.end(status=status, error=failure_message(e, config), error_kind=failure_kind(e))
    finally:
        guard.uninstall()
        if slot is not None:
            slot.release()
    return status


def start_command(args: list[str], log_path: Path) -> subprocess.Popen:
    """Start `python -m core ARGS` in its own session, its output appended to `log_path`:
    how an experiment or a sweep launched from the app runs (it outlives the app, and
    launches its runs through `launch` like everyone else). Reaped, so never a zombie."""
    with open(log_path, "a") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(  # an argument list: no shell
            [sys.executable, "-m", "core", *args], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO_ROOT)
    threading.Thread(target=proc.wait, daemon=True).start()
    return proc


def start_consistency(targets: list[tuple[str, Path]], out: Path, questions: int,
                      repetitions: int, temperatures: tuple[float, ...], log_path: Path,
                      threads: int = 1) -> subprocess.Popen:
    """Start a background consistency measurement (core.engine.consistency) of each
    ("start" or "end", run folder) in turn, writing `out`. It loads torch in its own process
    and takes no training slot: it runs beside the queue, on `threads` threads."""
    args = ["_consistency", "--out", str(out), "--questions", str(questions),
            "--repetitions", str(repetitions), "--threads", str(threads),
            "--temperatures", ",".join(str(t) for t in temperatures)]
    for when, run_dir in targets:
        args += ["--target", f"{when}:{run_dir}"]
    return start_command(args, log_path)


def _spawn(writer: RunWriter, warm_wait: bool = True) -> None:
    """Start `python -m core _execute DIR` for a run whose status.json says queued: forked
    from a warm server that has the engine imported (core.runtime.warm), which then owns and
    reaps it; else a fresh interpreter, reaped here. `warm_wait`: wait for a warm server
    that is still starting (warm.fork_run)."""
    if warm.fork_run(writer.path, wait=warm_wait) is not None:
        return  # handed over by the server, under the run's lock
    try:
        # The child keeps its own copy of the log's descriptor; this process closes its one.
        with open(writer.path / "log.txt", "a") as log:
            proc = subprocess.Popen(  # an argument list: no shell ever sees a run id
                [sys.executable, "-m", "core", "_execute", str(writer.path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # closing the app or browser does not stop the run
                cwd=REPO_ROOT)
    except OSError as e:
        writer.log_text(traceback.format_exc())
        writer.update_status(status="failed", error=f"could not start the training process: {e}",
                             error_kind=ErrorKind.NOT_STARTED)
        raise
    writer.hand_over(proc.pid)
    threading.Thread(target=_reap, args=(proc, writer.path), daemon=True).start()


def exit_reason(returncode: int) -> str:
    """Why a child ended without recording it, in words."""
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() \
            else f"signal {-returncode}"
        why = f"{ENDED_UNREPORTED}: killed by {name} (signal {-returncode})"
        if returncode == -signal.SIGKILL:
            why += ", e.g. out of memory (the OOM killer) or kill -9"
        return why
    return f"{ENDED_UNREPORTED}: it exited with code {returncode}; see log.txt"


def _reap(proc: subprocess.Popen, path: Path) -> None:
    """Wait for the child (so it is never left a zombie), then record_end."""
    record_end(path, proc.pid, proc.wait())


def record_end(path: Path, pid: int, returncode: int) -> None:
    """Called by the parent of a run's process once it has ended: if it died without
    recording its end, record it: failed with the reason its exit status gives, or stopped
    when a stop signal caught it before its handler was in place (a Stop right after
    Launch). The parent is this launcher for a fresh process, the warm server for a forked
    one."""
    try:
        with run_lock(path):
            writer = RunWriter(path)
            status = writer.status
            if status.get("status") in ACTIVE and status.get("pid") in (pid, os.getpid()):
                if returncode in (-signal.SIGTERM, -signal.SIGINT):
                    writer.update_status(status="stopped", ended_at=time.time())
                else:
                    writer.update_status(status="failed", error=exit_reason(returncode),
                                         error_kind=ErrorKind.ENDED_UNREPORTED,
                                         ended_at=time.time())
    except (OSError, ValueError):
        pass  # the folder was deleted or damaged meanwhile: nothing left to record


def launch(config: RunConfig, runs_dir: Path | str | None = None,
           owner: str | None = None, warm_wait: bool = True) -> str:
    """Check, create the run folder (status queued), and start its background process
    (`warm_wait`: see _spawn; the app passes False so a click returns at once)."""
    preflight(config, runs_dir)
    writer = RunStore(runs_dir).create(config, owner=owner)
    _spawn(writer, warm_wait)
    return writer.run_id


def stop(run_id: str, runs_dir: Path | str | None = None) -> bool:
    """Ask a queued or running run to stop (after its current step, or within
    STOP_GRACE_SECONDS). False if it was not live."""
    store = RunStore(runs_dir)
    record = store.load(run_id, metrics=False)
    if record.backend and record.status in ACTIVE:  # on another machine: its writer looks
        with run_lock(store.path(run_id)):
            (store.path(run_id) / REMOTE_STOP_FILE).touch()
        return True
    if record.status not in ACTIVE or not record.pid or record.pid == os.getpid():
        return False  # never signal ourselves: a run not yet handed over has our pid
    os.kill(record.pid, signal.SIGTERM)
    return True


def reopen(run_id: str, runs_dir: Path | str | None = None) -> tuple[RunWriter, RunConfig]:
    """Mark a stopped or failed run queued again, owned by this process, after checking it
    can continue. Under the run's lock, so two resumes at once start it only once."""
    store = RunStore(runs_dir)
    path = store.path(run_id)
    if not path.is_dir():
        raise KeyError(f"no run {run_id!r} in {store.root}")
    with run_lock(path):
        record = store.load(run_id, metrics=False)
        if record.status not in ("stopped", "failed"):
            raise ResumeError(f"run {run_id} is {record.status}: only a stopped or failed run "
                              "can continue")
        config = RunConfig.from_dict(record.config)  # config.json stays the source of truth
        preflight(config, store.root)
        writer = RunWriter(path)
        writer.update_status(status="queued", error=None, error_kind=None, pid=os.getpid(),
                             pid_start=process_start(os.getpid()), queued_at=time.time(),
                             ended_at=None, stop=None, backend=None,  # here, now
                             resumes=int(writer.status.get("resumes", 0)) + 1)
    return writer, config


def resume(run_id: str, runs_dir: Path | str | None = None, warm_wait: bool = True) -> str:
    """Continue a stopped or failed run in the background, from its last checkpoint."""
    writer, _ = reopen(run_id, runs_dir)
    _spawn(writer, warm_wait)
    return writer.run_id
