"""Runs on a Ray cluster, recorded in the run store of the machine that launched them.

Ray Core, not Ray Tune: a sweep here is a fixed grid whose every run must be an ordinary run
in the lab's store (same folder, same rows, same resume guarantee); Tune's search algorithms
and schedulers (early stopping of trials) would replace the lab's records with Tune's own
trial folders and results, and a grid needs neither. Each run is one Ray task holding the
CPUs its `threads` setting asks for (at least 1); Ray's resource accounting, not the head's
slot queue, decides where and when it trains. A task, not an actor: Ray reuses a finished
task's worker process for the next run (Python, torch and the project already imported),
while every actor is a fresh process. The task's calls that wait on the sink (its checkpoint,
whether to stop) wait in a helper thread: a task blocked in `ray.get` on its main thread
lends its CPU out meanwhile, and Ray then starts more runs than there are CPUs (measured: 4
at once on 2 CPUs; from a helper thread, 2).

No shared filesystem is assumed. On the launching machine one `RunSink` actor (pinned to
that node) is the writer of the sweep's run folders: a remote run trains into a scratch
folder on its own node through a `RemoteWriter`, which forwards every row (metrics, samples,
log lines, status changes, checkpoint bytes) to the sink as it writes it, so the app on the
launching machine shows the run live. Calls from one caller to an actor run in the order they
were made, so the record on the head is the remote one, row for row.

A node that dies: Ray runs the task again on a live node (`max_retries`, for system failures
only; the run's own errors are recorded by the run). The new attempt asks the sink for the
last checkpoint the head holds and continues from it as the same run; restoring truncates the
rows logged after that checkpoint on the head as it does locally, and rows still arriving from
an older attempt are dropped (each call carries its attempt number) and an older attempt still
alive is told to stop, so every step and evaluation is in the record once. A stop (`python -m
core stop`, the app) leaves a request file in the run folder that the sink reports to the run
at its next step; a run still waiting for CPUs is cancelled at once.

`ray` is imported here only, inside functions: `core` works without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import RunConfig
from core.paths import REPO_ROOT
from core.runtime.store import (
    ACTIVE,
    REMOTE_STOP_FILE,
    RunStore,
    RunWriter,
    atomic_write_bytes,
)

RAY_ADDRESS_ENV = "RAY_ADDRESS"
BACKEND = "ray"  # status.json's `backend` for runs launched here
MAX_RETRIES = 3  # attempts after a node or worker dies, each from the last checkpoint
CHECKPOINT_FILE = "checkpoint.pt"  # core.engine.checkpoint's name; that module loads torch
# What the working_dir shipped to the nodes leaves out (Ray also honours .gitignore).
SHIPPED_EXCLUDES = ["/.git", "/.venv", "/runs", "/benchmarks", "/tests", "*.pt"]


def ray_available() -> bool:
    """Whether the ray package is installed (the app shows the backend only then)."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None


class RunSink:
    """The launching machine's writer of remote runs' folders (a Ray actor, one per store).
    Every method takes the run id; writes carry the attempt and are dropped when stale."""

    def __init__(self, root: str) -> None:
        self.store = RunStore(root)
        self.writers: dict[str, RunWriter] = {}
        self.attempts: dict[str, int] = {}

    def pid(self) -> int:
        return os.getpid()

    def open(self, run_id: str) -> None:
        """Take the run over from the launcher: while this actor lives, the run is live."""
        writer = RunWriter(self.store.path(run_id))
        writer.claim()
        writer.update_status(backend=BACKEND)
        self.writers[run_id] = writer
        self.attempts[run_id] = 0

    def begin(self, run_id: str, node: str) -> tuple[int, dict[str, Any], bytes | None] | None:
        """A new attempt starts on `node`: its number, the config and the last checkpoint;
        None when the run has ended meanwhile (stopped while it waited for CPUs)."""
        writer = self.writers[run_id]
        if writer.status.get("status") not in ACTIVE:
            return None
        self.attempts[run_id] += 1
        path = writer.path / CHECKPOINT_FILE
        checkpoint = path.read_bytes() if path.exists() else None
        config = json.loads((writer.path / "config.json").read_text())
        writer.update_status(status="running", node=node, attempt=self.attempts[run_id],
                             running_at=time.time())
        return self.attempts[run_id], config, checkpoint

    def _current(self, run_id: str, attempt: int) -> RunWriter | None:
        return self.writers[run_id] if self.attempts.get(run_id) == attempt else None

    def append(self, run_id: str, attempt: int, name: str, rows: list[dict[str, Any]]) -> None:
        if (w := self._current(run_id, attempt)) is not None:
            w.append_rows(name, rows)

    def status(self, run_id: str, attempt: int, fields: dict[str, Any],
               checkpoint: bytes | None = None) -> None:
        if (w := self._current(run_id, attempt)) is not None:
            if checkpoint is not None:  # first the file, then the status that names it
                atomic_write_bytes(w.path / CHECKPOINT_FILE, checkpoint)
            w.update_status(**fields)

    def truncate(self, run_id: str, attempt: int, keep_through: int) -> None:
        if (w := self._current(run_id, attempt)) is not None:
            w.truncate(keep_through)

    def log_text(self, run_id: str, attempt: int, text: str) -> None:
        if (w := self._current(run_id, attempt)) is not None:
            w.log_text(text)

    def should_stop(self, run_id: str, attempt: int) -> bool:
        """A stop was asked, or a newer attempt has taken the run over."""
        return self.attempts.get(run_id) != attempt or \
            (self.store.path(run_id) / REMOTE_STOP_FILE).exists()

    def end(self, run_id: str, attempt: int | None, fields: dict[str, Any]) -> None:
        """Record how the run ended (attempt None: Ray reports the run itself gone)."""
        w = self.writers[run_id]
        if attempt is not None and self.attempts.get(run_id) != attempt:
            return
        if attempt is None and w.status.get("status") not in ACTIVE:
            return  # it recorded its own end
        w.update_status(**fields, ended_at=time.time())
        (w.path / REMOTE_STOP_FILE).unlink(missing_ok=True)

    def stop_waiting(self, run_id: str) -> bool:
        """A run still waiting for CPUs whose stop was asked: record it stopped now (its
        task, if Ray ever starts it, finds it ended). True if it was."""
        w = self.writers[run_id]
        if self.attempts[run_id] == 0 and w.status.get("status") == "queued" \
                and self.should_stop(run_id, 0):
            self.end(run_id, None, {"status": "stopped"})
            return True
        return False

    def flush(self) -> None:
        """Returns once every call made before it by the caller has been applied."""


class RemoteWriter(RunWriter):
    """A RunWriter on a worker node: writes its scratch folder (so the loop's checkpoints
    and resume work as they do locally) and forwards every write to the head's sink."""

    def __init__(self, path: Path, sink: Any, run_id: str, attempt: int) -> None:
        super().__init__(path)
        self.sink, self.remote_id, self.attempt = sink, run_id, attempt

    def append_rows(self, name: str, rows: list[dict[str, Any]]) -> None:
        super().append_rows(name, rows)
        self.sink.append.remote(self.remote_id, self.attempt, name, rows)

    def update_status(self, **fields: Any) -> None:
        super().update_status(**fields)
        checkpoint = None
        if fields.get("checkpoint_step"):  # the loop just saved checkpoint.pt: ship it
            checkpoint = (self.path / CHECKPOINT_FILE).read_bytes()
        self.sink.status.remote(self.remote_id, self.attempt, fields, checkpoint)

    def truncate(self, keep_through: int) -> None:
        super().truncate(keep_through)
        self.sink.truncate.remote(self.remote_id, self.attempt, keep_through)

    def log_text(self, text: str) -> None:
        super().log_text(text)
        self.sink.log_text.remote(self.remote_id, self.attempt, text)


def _wait_for(ref: Any) -> Any:
    """ray.get from a helper thread, so the task keeps its CPUs while it waits (see the
    module's docstring)."""
    import ray

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(ray.get, ref).result()


def train_remote(sink: Any, run_id: str) -> str:
    """One attempt at a run: fetch its config and last checkpoint from the sink, train in a
    scratch folder here, record the end through the sink."""
    import ray

    from core.runtime.failures import failure_message

    node = ray.get_runtime_context().get_node_id()
    started = _wait_for(sink.begin.remote(run_id, node))
    if started is None:
        return "stopped"
    attempt, config_dict, checkpoint = started
    scratch = Path(tempfile.mkdtemp(prefix=f"calibration-lab-{run_id}-"))
    config = RunConfig.from_dict(config_dict)
    try:
        (scratch / "config.json").write_text(config.to_json())
        (scratch / "status.json").write_text(json.dumps({"status": "running", "step": 0}))
        if checkpoint is not None:
            (scratch / CHECKPOINT_FILE).write_bytes(checkpoint)
        writer = RemoteWriter(scratch, sink, run_id, attempt)
        try:
            from core.engine.train import train  # torch loads on the worker only

            status = train(config, writer,
                           should_stop=lambda: _wait_for(sink.should_stop.remote(run_id, attempt)))
            fields: dict[str, Any] = {"status": status}
        except Exception as e:  # the record must say why it ended, whatever the cause
            writer.log_text(traceback.format_exc())
            status, fields = "failed", {"status": "failed", "error": failure_message(e, config)}
        _wait_for(sink.end.remote(run_id, attempt, fields))  # after every row sent before it
        return status
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass
class _Launched:
    sink: Any
    run_id: str
    path: Path  # the run's folder, on this machine


class RayBackend:
    """Launches runs as Ray tasks from this process (the driver). `address`: a running
    cluster (default $RAY_ADDRESS); None and no $RAY_ADDRESS: a local Ray started here, with
    this machine's CPUs, and shut down by `close`. `run_options` go to every run's task
    (e.g. a scheduling strategy)."""

    def __init__(self, address: str | None = None,
                 run_options: dict[str, Any] | None = None) -> None:
        import ray

        self.ray = ray
        self.address = address or os.environ.get(RAY_ADDRESS_ENV) or None
        self.started_here = not ray.is_initialized()
        if self.started_here:
            runtime_env = {"working_dir": str(REPO_ROOT), "excludes": SHIPPED_EXCLUDES}
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "runtime_env": runtime_env}
            if self.address is None:
                kwargs["num_cpus"] = os.cpu_count() or 1
            ray.init(address=self.address, **kwargs)
        self.run_options = run_options or {}
        self.sinks: dict[str, Any] = {}
        self.pending: dict[Any, _Launched] = {}  # a run's task -> the run
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._closed = threading.Event()
        self._task = ray.remote(max_retries=MAX_RETRIES)(train_remote)

    def cpus(self) -> int:
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def _sink(self, root: Path) -> Any:
        """The store's sink, on this node: the one that can write `root`."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        key = str(root)
        if key not in self.sinks:
            here = self.ray.get_runtime_context().get_node_id()
            actor = self.ray.remote(num_cpus=0)(RunSink).options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False))
            self.sinks[key] = actor.remote(key)
        return self.sinks[key]

    def launch(self, config: RunConfig, root: Path | str | None = None) -> str:
        """Check, create the run folder here (queued), hand it to the sink and submit its
        task; the run holds max(1, threads) CPUs of the cluster."""
        from core.runtime.runner import preflight

        preflight(config)
        store = RunStore(root)
        root_path = store.root.resolve()
        writer = RunStore(root_path).create(config)
        sink = self._sink(root_path)
        self.ray.get(sink.open.remote(writer.run_id))
        ref = self._task.options(num_cpus=max(1, config.threads), **self.run_options) \
            .remote(sink, writer.run_id)
        with self._lock:
            self.pending[ref] = _Launched(sink, writer.run_id, writer.path)
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, daemon=True)
                self._watcher.start()
        return writer.run_id

    def _watch(self) -> None:
        """Record a run failed when Ray gives up on its task (its retries spent: the run never
        recorded its end), and end runs stopped while they wait for CPUs."""
        while not self._closed.is_set():
            with self._lock:
                refs = list(self.pending)
            if not refs:
                time.sleep(0.2)
                continue
            done, waiting = self.ray.wait(refs, num_returns=1, timeout=0.5)
            self._stop_waiting(waiting)
            for ref in done:
                with self._lock:
                    run = self.pending.pop(ref)
                try:
                    self.ray.get(ref)
                except Exception as e:  # WorkerCrashedError, NodeDiedError, cancelled...
                    self._fail(run, e)

    def _stop_waiting(self, refs: list[Any]) -> None:
        """A run stopped before Ray found it CPUs is recorded stopped and its task cancelled
        (waiting in Ray's queue, it has no step at which to notice)."""
        with self._lock:
            waiting = [(ref, self.pending[ref]) for ref in refs if ref in self.pending]
        for ref, run in waiting:
            if (run.path / REMOTE_STOP_FILE).exists() and \
                    self.ray.get(run.sink.stop_waiting.remote(run.run_id)):
                with self._lock:
                    self.pending.pop(ref, None)
                with contextlib.suppress(Exception):
                    self.ray.cancel(ref)

    def _fail(self, run: _Launched, e: Exception) -> None:
        error = f"the run ended on Ray without finishing: {type(e).__name__}: {e}"
        self.ray.get(run.sink.end.remote(run.run_id, None,
                                         {"status": "failed", "error": error[:500]}))

    def wait_recorded(self, timeout: float) -> bool:
        """Wait until every launched run has ended and been recorded; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self.pending:
                    return True
            time.sleep(0.1)
        return False

    def close(self) -> None:
        """Stop watching the runs and shut down the Ray this backend started (a cluster it
        joined keeps running)."""
        self._closed.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5.0)  # it wakes at least every half second
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()

