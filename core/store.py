"""The run store: one folder per run, written by one process, read by any.

Why JSONL files and not SQLite: every run has exactly one writer (its training process),
so SQLite's locking buys nothing and would make the UI's readers contend with the writer.
Append-only JSONL lines are flushed and fsynced per step: a crash loses at most the line
being written, which the reader skips. `status.json` is replaced atomically. A run folder
is plain text that can be zipped, diffed and read without the lab.

Layout of `runs/<id>/`: config.json, status.json, metrics.jsonl (namespaced flat keys,
`train/...` and `eval/...`, one row per step or evaluation), samples.jsonl, log.txt.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import RunConfig

RUNS_DIR_ENV = "CALIBRATION_LAB_RUNS"
# Tags live beside status.json, not in it: the training process rewrites status.json from
# its own copy and would drop a tag the app wrote there.
TAGS_FILE = "tags.json"
STATUSES = ("running", "finished", "failed", "stopped")
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # used with fullmatch


def default_runs_dir() -> Path:
    return Path(os.environ.get(RUNS_DIR_ENV, "runs"))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunWriter:
    """The one writer of a run's files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._status = json.loads((path / "status.json").read_text())

    @property
    def run_id(self) -> str:
        return self.path.name

    def _append(self, name: str, rows: list[dict[str, Any]]) -> None:
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
        self._append("metrics.jsonl", [row])

    def log_samples(self, step: int, samples: list[dict[str, Any]]) -> None:
        self._append("samples.jsonl", [{"step": step, **s} for s in samples])

    def update_status(self, **fields: Any) -> None:
        self._status.update(fields, updated_at=time.time())
        _atomic_write(self.path / "status.json", json.dumps(self._status, indent=2))

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

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "config": self.config,
                "error": self.error, "step": self.step, "total_steps": self.total_steps,
                "started_at": self.started_at, "updated_at": self.updated_at,
                "tags": self.tags, "train": self.train, "evals": self.evals}


class RunStore:
    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_runs_dir()

    def new_id(self, config: RunConfig) -> str:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return f"{stamp}-{config.recipe}-s{config.seed}-{secrets.token_hex(2)}"

    def create(self, config: RunConfig) -> RunWriter:
        """A run folder with config.json and status.json, made whole or not at all."""
        self.root.mkdir(parents=True, exist_ok=True)
        run_id = self.new_id(config)
        tmp = self.root / f".tmp-{run_id}"
        tmp.mkdir()
        (tmp / "config.json").write_text(config.to_json())
        status = {"status": "running", "pid": os.getpid(), "step": 0,
                  "total_steps": config.steps, "started_at": time.time(),
                  "updated_at": time.time(), "error": None}
        (tmp / "status.json").write_text(json.dumps(status, indent=2))
        final = self.root / run_id
        os.rename(tmp, final)
        return RunWriter(final)

    def path(self, run_id: str) -> Path:
        if not SAFE_ID.fullmatch(run_id):
            raise KeyError(f"{run_id!r} is not a valid run id")
        return self.root / run_id

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        # A folder with neither file is not a run (e.g. runs/experiments/ of reports).
        return sorted((p.name for p in self.root.iterdir()
                       if p.is_dir() and SAFE_ID.fullmatch(p.name)
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
            if state == "running" and not pid_alive(status.get("pid")):
                state, error = "failed", error or "the training process ended without reporting"
            record = RunRecord(run_id, state, config, error, int(status.get("step", 0)),
                               int(status.get("total_steps", 0)), status.get("started_at"),
                               status.get("updated_at"), self._tags(path), status.get("pid"))
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
        _atomic_write(path / TAGS_FILE, json.dumps(tags))

    def list(self) -> list[RunRecord]:
        return [self.load(i, metrics=False) for i in self.ids()]

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
