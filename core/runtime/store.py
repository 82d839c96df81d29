"""The run store: one folder per run, written by one process, read by any.

Why JSONL files and not SQLite: every run has exactly one writer (its training process),
so SQLite's locking buys nothing and would make the UI's readers contend with the writer.
Append-only JSONL lines are flushed and fsynced per step: a crash loses at most the line
being written, which the reader skips. `status.json` is replaced atomically. A run folder
is plain text that can be zipped, diffed and read without the lab.

Layout of `runs/<id>/`: config.json, status.json, metrics.jsonl (namespaced flat keys,
`train/...` and `eval/...`, one row per step or evaluation), samples.jsonl, log.txt,
checkpoint.pt (core.engine.checkpoint), adapter.pt (the final LoRA weights, which another
run's `init_from` starts from) and .lock (taken only around hand-overs of status.json).

Who writes status.json: the training process while it lives. Before it starts, the process
that made the folder; after it is gone, the launcher's reaper or a resume, both under the
run's .lock and only after checking which process the file names.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import RunConfig
from core.files import write_atomically
from core.runtime.failures import ErrorKind

RUNS_DIR_ENV = "CALIBRATION_LAB_RUNS"
# Tags live beside status.json, not in it: the training process rewrites status.json from
# its own copy and would drop a tag the app wrote there.
TAGS_FILE = "tags.json"
STATUSES = ("queued", "running", "finished", "failed", "stopped")
ACTIVE = ("queued", "running")  # a live process owns the run; it is not over
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # used with fullmatch
LOCK_FILE = ".lock"
ADAPTER_FILE = "adapter.pt"  # the final LoRA weights: what `init_from` starts from
ENDED_UNREPORTED = "the training process ended without reporting"
# A stop asked of a run on another machine (status.json's `backend` says where it trains):
# there is no local process to signal, so the request is a file its writer looks for.
REMOTE_STOP_FILE = "stop.request"


def default_runs_dir() -> Path:
    """$CALIBRATION_LAB_RUNS, else ./runs, as an absolute path (see RunStore)."""
    return Path(os.environ.get(RUNS_DIR_ENV, "runs")).absolute()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """_atomic_write for bytes (a checkpoint received from another machine)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def run_lock(path: Path) -> Iterator[None]:
    """The run folder's lock, held for a moment while status.json changes hands."""
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}/{k}", v, out)
    else:
        out[prefix] = value


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete line; a torn last line (a writer killed mid-write) is skipped."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) from /proc; None elsewhere."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # after "pid (comm) ", which may hold spaces
    return fields[0], int(fields[19])


def process_start(pid: int) -> int | None:
    """When a process started (clock ticks since boot), to tell it from a later one that
    reuses its pid; None where /proc is not available."""
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def pid_alive(pid: int | None, start: int | None = None) -> bool:
    """Whether `pid` is a live process and, when `start` is known, the same one that was
    recorded: a zombie or a reused pid does not count."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc: os.kill is all we can ask
    state, started = stat
    return state not in "ZX" and (start is None or started == start)


def _alive(status: dict[str, Any]) -> bool:
    return pid_alive(status.get("pid"), status.get("pid_start"))


class RunWriter:
    """The one writer of a run's files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._status = json.loads((path / "status.json").read_text())
        self._lock = threading.Lock()  # the stop watchdog may write status from its thread

    def claim(self) -> None:
        """Make this process the run's owner: the one whose death means the run is over."""
        with run_lock(self.path), self._lock:
            self._status = json.loads((self.path / "status.json").read_text())
            self._write_status(pid=os.getpid(), pid_start=process_start(os.getpid()))

    def hand_over(self, pid: int) -> None:
        """The launcher passes the run to the process it started, unless that process has
        already claimed it (then the file is no longer the launcher's to write)."""
        with run_lock(self.path), self._lock:
            self._status = json.loads((self.path / "status.json").read_text())
            if self._status.get("pid") == os.getpid():
                self._write_status(pid=pid, pid_start=process_start(pid))

    @property
    def run_id(self) -> str:
        return self.path.name

    def append_rows(self, name: str, rows: list[dict[str, Any]]) -> None:
        with open(self.path / name, "a") as f:
            f.write("".join(json.dumps(r, allow_nan=False) + "\n" for r in rows))
            f.flush()
            os.fsync(f.fileno())

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """One row of namespaced metrics; nested dicts become `a/b/c` keys."""
        row: dict[str, Any] = {"step": step, "time": round(time.time(), 3)}
        for key, value in metrics.items():
            if not key.startswith(("train/", "eval/")):
                raise ValueError(f"metric key {key!r} needs a train/ or eval/ namespace")
            _flatten(key, value, row)
        self.append_rows("metrics.jsonl", [row])

    def log_samples(self, step: int, samples: list[dict[str, Any]]) -> None:
        if not samples:  # most training steps keep none
            return
        self.append_rows("samples.jsonl", [{"step": step, **s} for s in samples])

    def update_status(self, **fields: Any) -> None:
        with self._lock:
            self._write_status(**fields)

    def _write_status(self, **fields: Any) -> None:
        self._status.update(fields, updated_at=time.time())
        write_atomically(self.path / "status.json", json.dumps(self._status, indent=2))

    @property
    def status(self) -> dict[str, Any]:
        return dict(self._status)

    def truncate(self, keep_through: int) -> None:
        """Keep only the rows of steps <= keep_through (a resume redoes the rest), and drop
        torn lines, so appending goes on from a clean line."""
        for name in ("metrics.jsonl", "samples.jsonl"):
            path = self.path / name
            if not path.exists():
                continue
            kept = [json.dumps(r, allow_nan=False) + "\n" for r in read_jsonl(path)
                    if isinstance(r, dict) and isinstance(r.get("step"), int)
                    and r["step"] <= keep_through]
            write_atomically(path, "".join(kept))

    def log_text(self, text: str) -> None:
        with open(self.path / "log.txt", "a") as f:
            f.write(text.rstrip("\n") + "\n")


@dataclass
class RunRecord:
    id: str
    status: str
    config: dict[str, Any]
    error: str | None
    step: int
    total_steps: int
    started_at: float | None
    updated_at: float | None
    tags: list[str] = field(default_factory=list)
    pid: int | None = None
    train: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    queued_at: float | None = None  # its place in the queue (core.runtime.slots)
    owner: str | None = None  # who launched it, in workshop mode
    checkpoint_step: int | None = None  # where a resume continues from
    error_kind: str | None = None  # a core.runtime.failures.ErrorKind when it failed
    backend: str | None = None  # None: trains on this machine; "ray": on a Ray cluster

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "config": self.config,
                "error": self.error, "error_kind": self.error_kind, "step": self.step,
                "total_steps": self.total_steps,
                "started_at": self.started_at, "updated_at": self.updated_at,
                "queued_at": self.queued_at, "owner": self.owner,
                "checkpoint_step": self.checkpoint_step,
                "tags": self.tags, "train": self.train, "evals": self.evals}


class RunStore:
    def __init__(self, root: Path | str | None = None) -> None:
        # Absolute from here on: a training process starts in the repository root, not in
        # the launcher's working directory, and must find the same folder.
        self.root = Path(root).absolute() if root is not None else default_runs_dir()

    def new_id(self, config: RunConfig) -> str:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return f"{stamp}-{config.recipe}-s{config.seed}-{secrets.token_hex(2)}"

    def create(self, config: RunConfig, owner: str | None = None) -> RunWriter:
        """A run folder with config.json and status.json, made whole or not at all, under an
        id no other run has: two launches in the same second never share a folder."""
        self.root.mkdir(parents=True, exist_ok=True)
        now = time.time()
        status = {"status": "queued", "pid": os.getpid(),
                  "pid_start": process_start(os.getpid()), "step": 0,
                  "total_steps": config.steps, "started_at": now, "queued_at": now,
                  "updated_at": now, "error": None, "owner": owner}
        for _ in range(100):
            run_id = self.new_id(config)
            tmp = self.root / f".tmp-{run_id}"
            try:
                tmp.mkdir()  # exclusive: a second creator of the same id gets FileExistsError
            except FileExistsError:
                continue
            (tmp / "config.json").write_text(config.to_json())
            (tmp / "status.json").write_text(json.dumps(status, indent=2))
            try:
                os.rename(tmp, self.root / run_id)  # fails if that run exists (non-empty)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
                continue
            return RunWriter(self.root / run_id)
        raise OSError(f"could not find a free run id in {self.root}")

    def path(self, run_id: str) -> Path:
        if not SAFE_ID.fullmatch(run_id):
            raise KeyError(f"{run_id!r} is not a valid run id")
        return self.root / run_id

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        # A folder with neither file is not a run (e.g. runs/experiments/ of reports).
        return sorted((p.name for p in self.root.iterdir()
                       if p.is_dir() and not p.is_symlink() and SAFE_ID.fullmatch(p.name)
                       and ((p / "status.json").exists() or (p / "config.json").exists())),
                      reverse=True)

    def load(self, run_id: str, metrics: bool = True) -> RunRecord:
        path = self.path(run_id)
        if not path.is_dir():
            raise KeyError(f"no run {run_id!r} in {self.root}")
        try:
            status = json.loads((path / "status.json").read_text())
            config = json.loads((path / "config.json").read_text())
            if not isinstance(status, dict) or not isinstance(config, dict):
                raise ValueError("status.json and config.json must hold JSON objects")
            state, error = str(status.get("status", "damaged")), status.get("error")
            kind = status.get("error_kind")
            if state not in STATUSES:
                raise ValueError(f"unknown status {state!r}")
            if state in ACTIVE and not _alive(status):  # killed, OOM, machine restarted
                state, error = "failed", error or ENDED_UNREPORTED
                kind = status.get("error_kind") or ErrorKind.ENDED_UNREPORTED
            ckpt = status.get("checkpoint_step")
            record = RunRecord(run_id, state, config, error, int(status.get("step", 0)),
                               int(status.get("total_steps", 0)), status.get("started_at"),
                               status.get("updated_at"), self._tags(path), status.get("pid"),
                               queued_at=status.get("queued_at"), owner=status.get("owner"),
                               checkpoint_step=int(ckpt) if ckpt is not None else None,
                               error_kind=kind, backend=status.get("backend"))
        except (OSError, ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
            return RunRecord(run_id, "damaged", {}, f"unreadable run folder: {e}", 0, 0,
                             None, None, self._tags(path))
        if metrics:
            record.train, record.evals = split_metrics(read_jsonl(path / "metrics.jsonl"))
        return record

    @staticmethod
    def _tags(path: Path) -> list[str]:
        try:
            tags = json.loads((path / TAGS_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return []
        return [str(t) for t in tags] if isinstance(tags, list) else []

    def set_tags(self, run_id: str, tags: list[str]) -> None:
        path = self.path(run_id)
        if not path.is_dir():
            raise KeyError(f"no run {run_id!r} in {self.root}")
        write_atomically(path / TAGS_FILE, json.dumps(tags))

    def list(self) -> list[RunRecord]:
        out = []
        for run_id in self.ids():
            with contextlib.suppress(KeyError):  # deleted between listing and reading
                out.append(self.load(run_id, metrics=False))
        return out

    def queue(self) -> list[str]:
        """Runs waiting for a slot, first in line first (oldest queued_at, then id). Reads
        status.json only: the waiting processes ask this often."""
        waiting = []
        for run_id in self.ids():
            try:
                status = json.loads((self.root / run_id / "status.json").read_text())
                # A remote run waits in its cluster's scheduler, not in this machine's line.
                if status.get("status") == "queued" and _alive(status) \
                        and not status.get("backend"):
                    waiting.append((float(status.get("queued_at") or 0.0), run_id))
            except (OSError, ValueError, TypeError, AttributeError):
                continue  # a damaged or vanished run is in no line
        return [run_id for _, run_id in sorted(waiting)]

    def samples(self, run_id: str) -> list[dict[str, Any]]:
        return read_jsonl(self.path(run_id) / "samples.jsonl")

    def delete(self, run_id: str) -> None:
        shutil.rmtree(self.path(run_id))


def split_metrics(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The one reader of metrics rows: train entries stay flat, eval entries nest."""
    train, evals = [], []
    for row in rows:
        t = {k[len("train/"):]: v for k, v in row.items() if k.startswith("train/")}
        e = {k[len("eval/"):]: v for k, v in row.items() if k.startswith("eval/")}
        if t:
            train.append({"step": row["step"], **t})
        if e:
            evals.append({"step": row["step"], **_unflatten(e)})
    return train, evals
