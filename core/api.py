"""The app's one door into the engine: light (never imports torch), store-backed, forgiving.

Pages import this module, `core.config`, `core.recipe_info` and `core.runs.store`, nothing else
from core. Everything here reads or writes the run folders on disk, so closing the browser
or restarting the app loses nothing: a restarted app finds every run again.
"""

from __future__ import annotations

import io
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import EMBEDDED_MODEL, ConfigError, RunConfig, build_config
from core.models.model_catalog import CATALOG, CATALOG_BY_ID, MemoryEstimate, fmt_gb, fmt_params
from core.runs import workshop
from core.runs.store import (
    ACTIVE,
    RunRecord,
    RunStore,
    default_runs_dir,
    read_jsonl,
    run_lock,
    split_metrics,
)
from core.runs.workshop import WorkshopError

CLASSIC_RECIPES = ("binary", "rlcr", "psr", "nsr")
CLASSIC_PREFIX = "classic-"
CLASSIC_PRESET = "quick"
SIGNALS = ("verbalized", "answer_prob", "consistency")
SIGNAL_LABELS = {"verbalized": "verbalized (stated q)", "answer_prob": "answer probability",
                 "consistency": "consistency (agreement of n samples)"}


# --- where runs live ---------------------------------------------------------------------

def runs_dir() -> Path:
    """The run store folder: $CALIBRATION_LAB_RUNS or ./runs (read on every call)."""
    return default_runs_dir()


def store(root: Path | str | None = None) -> RunStore:
    return RunStore(root if root is not None else runs_dir())


def _damaged(run_id: str, why: str) -> RunRecord:
    return RunRecord(run_id, "damaged", {}, why, 0, 0, None, None)


def _load(s: RunStore, run_id: str, metrics: bool) -> RunRecord:
    """store.load that never raises for a broken folder: it comes back as 'damaged'."""
    try:
        record = s.load(run_id, metrics=False)
    except KeyError:
        raise
    except Exception as e:  # any unreadable shape is a damaged run, never a traceback
        return _damaged(run_id, f"unreadable run folder ({type(e).__name__}: {e})")
    if metrics and record.status != "damaged":
        try:
            record.train, record.evals = _metrics(s.path(run_id) / "metrics.jsonl")
        except Exception as e:
            record.status = "damaged"
            record.error = f"metrics.jsonl is unreadable ({type(e).__name__}: {e})"
    return record


# Parsed metrics, keyed by the file's identity: a live run re-reads only when it grew.
_METRICS_CACHE: dict[str, tuple[tuple[int, int], tuple[list, list]]] = {}
_CACHE_LOCK = threading.Lock()


def _metrics(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return [], []
    stamp = (st.st_mtime_ns, st.st_size)
    key = str(path.resolve())
    with _CACHE_LOCK:
        hit = _METRICS_CACHE.get(key)
    if hit and hit[0] == stamp:
        return hit[1]
    rows = [r for r in read_jsonl(path) if isinstance(r, dict) and "step" in r]
    train, evals = split_metrics(rows)
    evals = [e for e in evals if isinstance(e.get("calibration", {}), dict)]
    with _CACHE_LOCK:
        if len(_METRICS_CACHE) > 256:
            _METRICS_CACHE.clear()
        _METRICS_CACHE[key] = (stamp, (train, evals))
    return train, evals


def list_runs(root: Path | str | None = None) -> list[RunRecord]:
    """Every run, newest first, without metrics; broken folders come back as 'damaged'."""
    s = store(root)
    out = []
    for run_id in s.ids():
        try:
            out.append(_load(s, run_id, metrics=False))
        except KeyError:  # deleted between listing and reading
            continue
    return out


def load_run(run_id: str, root: Path | str | None = None) -> RunRecord | None:
    """One run with its train and eval metrics; None if there is no such run."""
    try:
        return _load(store(root), run_id, metrics=True)
    except KeyError:
        return None


def load_samples(run_id: str, root: Path | str | None = None) -> list[dict[str, Any]]:
    """Kept completions (a few per evaluation); [] when none or unreadable."""
    try:
        rows = store(root).samples(run_id)
    except (KeyError, OSError):
        return []
    return [r for r in rows if isinstance(r, dict) and "step" in r]


# --- changing runs -----------------------------------------------------------------------
# `user` is the signed-in name in workshop mode (None otherwise): there it owns the runs it
# launches, and only it may stop, continue, tag or delete them.

def _active_runs(s: RunStore, user: str | None) -> int:
    return sum(r.owner == user and r.status in ACTIVE for r in s.list())


def launch(config: RunConfig, root: Path | str | None = None, user: str | None = None) -> str:
    """Start a background training process (it waits in the queue for a slot); returns the
    run id. Raises ModelError/ConfigError/TaskError, or WorkshopError for what workshop mode
    forbids. A task file is pinned first: copied beside the runs, hash recorded."""
    from core.data.task_data import pin_task
    from core.runs.runner import launch as runner_launch  # torch-free; imported on first use

    s = store(root)
    s.root.mkdir(parents=True, exist_ok=True)
    # The store's lock makes the per-person count and the new folder one step: two tabs of
    # one person cannot both slip under the limit.
    with run_lock(s.root):
        workshop.check_launch(config.to_dict(), user, _active_runs(s, user))
        return runner_launch(pin_task(config, s.root), s.root, owner=user)


def _owned(run_id: str, root: Path | str | None, user: str | None, action: str) -> RunStore:
    s = store(root)
    workshop.check_owner(_load(s, run_id, metrics=False).owner, user, action)
    return s


def stop(run_id: str, root: Path | str | None = None, user: str | None = None) -> bool:
    """Ask a queued or running run to stop; False if it was not live."""
    from core.runs.runner import stop as runner_stop

    try:
        s = _owned(run_id, root, user, "stop")
        return runner_stop(run_id, s.root)
    except (KeyError, ProcessLookupError, PermissionError):
        return False


def resume(run_id: str, root: Path | str | None = None, user: str | None = None) -> str:
    """Continue a stopped or failed run, as the same run, from its last checkpoint (in the
    background, through the queue). Raises ResumeError (a ValueError) or WorkshopError."""
    from core.runs.runner import resume as runner_resume

    s = _owned(run_id, root, user, "continue")
    with run_lock(s.root):
        workshop.check_launch(_load(s, run_id, metrics=False).config, user,
                              _active_runs(s, user))
        return runner_resume(run_id, s.root)


def can_resume(record: RunRecord) -> bool:
    return record.status in ("stopped", "failed") and bool(record.config)


def delete(run_id: str, root: Path | str | None = None, user: str | None = None) -> None:
    """Remove a run folder. A live run must be stopped first (ValueError)."""
    s = _owned(run_id, root, user, "delete")
    record = _load(s, run_id, metrics=False)
    if record.status in ACTIVE:
        raise ValueError(f"run {run_id} is still {record.status}: stop it first")
    s.delete(run_id)
    with _CACHE_LOCK:
        _METRICS_CACHE.pop(str((s.path(run_id) / "metrics.jsonl").resolve()), None)


def clean_tags(tags: list[str] | str) -> list[str]:
    """Tags from a list or a comma-separated string: stripped, deduplicated, in order."""
    if isinstance(tags, str):
        tags = tags.split(",")
    out: list[str] = []
    for t in tags:
        t = " ".join("".join(ch for ch in str(t) if ch.isprintable() or ch.isspace()).split())
        if t and t not in out:
            out.append(t[:64])
    return out


def set_tags(run_id: str, tags: list[str] | str, root: Path | str | None = None,
             user: str | None = None) -> list[str]:
    cleaned = clean_tags(tags)
    _owned(run_id, root, user, "tag").set_tags(run_id, cleaned)
    return cleaned


def add_tag(run_id: str, tag: str, root: Path | str | None = None,
            user: str | None = None) -> list[str]:
    record = _load(store(root), run_id, metrics=False)
    return set_tags(run_id, [*record.tags, tag], root, user)


def export_zip(run_id: str, root: Path | str | None = None) -> bytes:
    """The run folder as a zip (files under `<run_id>/`)."""
    path = store(root).path(run_id)
    if not path.is_dir():
        raise KeyError(f"no run {run_id!r}")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(path.rglob("*")):
            # Never a link (it could point anywhere on the host), a lock or a temporary file.
            if f.is_file() and not f.is_symlink() and not f.name.startswith("."):
                zf.write(f, f"{run_id}/{f.relative_to(path)}")
    return buf.getvalue()


# --- configs -----------------------------------------------------------------------------

def task_choices() -> dict[str, str]:
    """Task name -> what it asks, in words, read from the task definitions themselves."""
    from core.data.tasks import TASKS

    words = {"+": "addition", "-": "subtraction", "*": "multiplication"}
    out = {}
    for name, task in TASKS.items():
        ops = tuple(getattr(task, "ops", ()))
        digits = sorted(set(getattr(task, "digits", ())))
        what = " and ".join(words.get(o, o) for o in ops) or "questions"
        size = (f"{digits[0]}-{digits[-1]} digit " if len(digits) > 1
                else f"{digits[0]} digit " if digits else "")
        out[name] = f"{name} — {size}{what}"
    return out


def task_label(task: str) -> str:
    """A task as a person reads it: a built-in name, hf:ID, or a file's own name."""
    from core.data.task_data import display_name, is_file_task

    return display_name(task) if is_file_task(task) else task


def check_config(values: dict[str, Any], preset: str | None = None,
                 device: DeviceInfo | None = None) -> tuple[RunConfig | None, list[str]]:
    """A config from form values, or the problems, each in plain words (never raises)."""
    from core.data.task_data import TaskError, task_for
    from core.models.model_source import ModelError, check_model

    try:
        config = build_config(preset, **values)
    except ConfigError as e:
        return None, [p.strip() for p in str(e).split(";") if p.strip()]
    except (TypeError, ValueError) as e:
        return None, [str(e)]
    problems = workshop.config_problems(config.to_dict())
    if problems:  # before the model is looked up: no probing the host's folders
        return None, problems
    try:
        check_model(config.model)
    except ModelError as e:
        problems.append(str(e))
    try:
        task_for(config)
    except TaskError as e:
        problems += e.problems
    except (KeyError, ValueError) as e:
        problems.append(str(e.args[0]) if e.args else f"unknown task {config.task!r}")
    if config.device == "cuda" and device is not None and device.known and not device.cuda:
        problems.append("device cuda was chosen but no CUDA GPU was detected: choose auto or cpu")
    if config.device == "mps" and device is not None and device.known and not device.mps:
        problems.append("device mps was chosen but Apple's MPS was not detected: choose auto "
                        "or cpu")
    return (None, problems) if problems else (config, [])


# --- models ------------------------------------------------------------------------------

EMBEDDED_CHOICE = "embedded (tiny-arith)"
OTHER_MODEL = "other: folder or hub id"


def model_choices() -> dict[str, str]:
    """The Launch page's model picker: choice -> label with size and bf16 weight memory."""
    out = {EMBEDDED_CHOICE: "embedded (tiny-arith) · 1 M params · any CPU"}
    for m in CATALOG:
        out[m.hub_id] = (f"{m.hub_id} · {fmt_params(m.arch.params)} params · weights "
                         f"{fmt_gb(m.arch.params * 2)} in bf16")
    out[OTHER_MODEL] = OTHER_MODEL
    return out


def model_for_choice(choice: str, typed: str = "") -> str:
    """The RunConfig.model value of a picker choice (`typed` for 'other')."""
    if choice == EMBEDDED_CHOICE:
        return EMBEDDED_MODEL
    return typed.strip() if choice == OTHER_MODEL else choice


def model_status(name: str) -> str:
    """Where a model's files are, in words, and what happens at launch. Never raises."""
    from core.models.model_source import ModelError, hub_offline, resolve_model

    try:
        source = resolve_model(name)
    except ModelError as e:
        return str(e)
    note = CATALOG_BY_ID[name].note if name in CATALOG_BY_ID else ""
    if source.kind == "embedded":
        return "the lab's own tiny arithmetic model (compact format)"
    if source.kind == "local":
        where = f"local folder {source.location}"
    elif source.cached is not None:
        where = f"in the Hugging Face cache ({source.cached})"
    elif hub_offline():
        where = f"not cached, and offline: download it first (`hf download {name}`)"
    else:
        where = (f"not cached yet: the run downloads it first (internet needed; or run "
                 f"`hf download {name}` beforehand)")
    return f"{where}{' · ' + note if note else ''}"


def memory_estimate(config: RunConfig, device: DeviceInfo | None = None
                    ) -> MemoryEstimate | None:
    """Peak memory of a run, from the model's shapes; None when they are unknown (a hub
    model outside the curated list that is not cached yet, an unusual architecture)."""
    from core.models.model_catalog import estimate_memory, read_arch
    from core.models.model_source import ModelError, model_folder, resolve_model

    try:
        source = resolve_model(config.model)
    except ModelError:
        return None
    folder = model_folder(source)
    arch = read_arch(folder) if folder is not None else None
    if arch is None and config.model in CATALOG_BY_ID:
        arch = CATALOG_BY_ID[config.model].arch
    if arch is None:
        return None
    kind = config.device
    if kind == "auto":
        kind = device.auto if device is not None and device.known else "cpu"
    return estimate_memory(arch, config, kind, embedded=source.kind == "embedded")


# --- task files ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Upload:
    path: str | None  # the stored copy in <runs>/datasets; None when the file is unreadable
    columns: tuple[str, ...]
    rows: int
    problem: str | None = None


_UPLOADS: dict[tuple[str, str, str], Upload] = {}  # (runs dir, name, sha256) -> stored


def save_upload(name: str, data: bytes, root: Path | str | None = None) -> Upload:
    """Check an uploaded file (size, text, JSONL/CSV rows) and keep a copy in the run store,
    under its content hash; the columns feed the page's column mapping."""
    from core.data.task_data import TaskError, read_table, sha256, store_data

    key = (str(root if root is not None else runs_dir()), name, sha256(data))
    if key not in _UPLOADS:
        try:
            table = read_table(data, name)
        except TaskError as e:
            return Upload(None, (), 0, str(e))
        path = store_data(data, name, key[0])
        _UPLOADS[key] = Upload(str(path), table.columns, len(table.rows))
    return _UPLOADS[key]


COLUMN_HINTS = {"question": ("question", "problem", "prompt", "query", "input"),
                "answer": ("answer", "solution", "target", "label", "output", "gold")}


def guess_column(columns: tuple[str, ...] | list[str], role: str) -> str | None:
    """The column most likely to hold the question or answer (exact, then partial names)."""
    lower = {c.lower(): c for c in columns}
    for hint in COLUMN_HINTS[role]:
        if hint in lower:
            return lower[hint]
    for hint in COLUMN_HINTS[role]:
        for c in columns:
            if hint in c.lower():
                return c
    return None


def task_summary(config: RunConfig) -> str | None:
    """`N training / M held-out questions, graded by …` for a file or dataset task."""
    from core.data.task_data import TaskError, task_for
    from core.data.tasks import TASKS

    if config.task in TASKS:
        return None
    try:
        task = task_for(config)
    except (TaskError, ValueError):
        return None
    used = min(config.eval_prompts, len(task.held_out))
    return (f"{len(task.train)} training and {len(task.held_out)} held-out questions "
            f"(evaluation uses {used}); graded as {task.grader}")


# --- the queue ---------------------------------------------------------------------------

@dataclass(frozen=True)
class QueueState:
    cap: int  # runs that may train at once
    running: int
    line: list[str]  # queued run ids, first in line first

    def position(self, run_id: str) -> int | None:
        """1 for the next run to start; None if it is not waiting."""
        return self.line.index(run_id) + 1 if run_id in self.line else None


def queue_state(runs: list[RunRecord] | None = None,
                root: Path | str | None = None) -> QueueState:
    """How full the machine is: the cap, the runs training, and the waiting line."""
    from core.runs.slots import max_runs

    runs = list_runs(root) if runs is None else runs
    try:
        cap = max_runs()
    except ValueError:
        cap = os.cpu_count() or 1  # the launch itself reports the broken setting
    waiting = sorted((r for r in runs if r.status == "queued"),
                     key=lambda r: (r.queued_at or 0.0, r.id))
    return QueueState(cap, sum(r.status == "running" for r in runs), [r.id for r in waiting])


# --- workshop mode -------------------------------------------------------------------------

def workshop_settings() -> workshop.Workshop:
    return workshop.settings()


def sign_in(token: str, name: str) -> str:
    """The workshop user's name if the token is right; WorkshopError otherwise."""
    ws = workshop.settings()
    if ws.setup_problem:
        raise WorkshopError(ws.setup_problem)
    if not workshop.token_ok(token, ws):
        raise WorkshopError("that is not the workshop's access token")
    user = workshop.clean_name(name)
    if not user:
        raise WorkshopError("give your name: it labels your runs")
    return user


# --- the classic comparison --------------------------------------------------------------

def classic_tag(now: float | None = None) -> str:
    return CLASSIC_PREFIX + time.strftime("%Y%m%d-%H%M%S", time.localtime(now))


def launch_classic(root: Path | str | None = None, now: float | None = None,
                   user: str | None = None, **overrides: Any) -> tuple[str, list[str]]:
    """binary, rlcr, psr and nsr on the embedded model with the quick preset, tagged as one
    group. CPU threads are shared out among the runs that train at once (the queue's cap)."""
    from core.runs.slots import max_runs

    tag = classic_tag(now)
    together = min(len(CLASSIC_RECIPES), max_runs())
    threads = max(1, (os.cpu_count() or 1) // together)
    configs = [build_config(CLASSIC_PRESET, recipe=recipe, threads=threads, **overrides)
               for recipe in CLASSIC_RECIPES]
    # All four or none: a person one run short of the workshop limit gets a clear no.
    workshop.check_launch(configs[0].to_dict(), user, _active_runs(store(root), user),
                          len(configs))
    ids = []
    for config in configs:
        run_id = launch(config, root, user)
        set_tags(run_id, [tag], root, user)
        ids.append(run_id)
    return tag, ids


def groups(runs: list[RunRecord], prefix: str = CLASSIC_PREFIX) -> dict[str, list[str]]:
    """Tag -> run ids (oldest first) for tags with `prefix`; the group with the most
    recently started run comes first."""
    out: dict[str, list[str]] = {}
    newest: dict[str, tuple[float, str]] = {}
    for r in sorted(runs, key=lambda r: (r.started_at or 0.0, r.id)):  # launch order
        for t in r.tags:
            if t.startswith(prefix):
                out.setdefault(t, []).append(r.id)
                newest[t] = max(newest.get(t, (0.0, "")), (r.started_at or 0.0, r.id))
    return {t: out[t] for t in sorted(out, key=newest.__getitem__, reverse=True)}


def latest_classic(runs: list[RunRecord]) -> tuple[str | None, list[str]]:
    g = groups(runs)
    if not g:
        return None, []
    tag = next(iter(g))
    return tag, g[tag]


# --- time --------------------------------------------------------------------------------

# Costs of the embedded model on the 2-core development machine (CPU, shared with other
# work), used until this store has finished runs to learn from. A training step costs about
# the same per sample at any batch size; an evaluation has a fixed part (greedy pass, set-up).
DEFAULT_COSTS = {"startup": 8.0, "train_sample": 0.1, "eval_fixed": 1.5, "eval_sample": 0.016}


@dataclass(frozen=True)
class Estimate:
    seconds: float
    basis: str  # in words: where the figure comes from


def n_evals(config: RunConfig) -> int:
    """Evaluations a run makes: step 0, every eval_every steps, and the last step."""
    if config.no_eval:
        return 0
    if config.steps == 0:
        return 1
    middle = (config.steps - 1) // config.eval_every if config.eval_every else 0
    return 2 + middle


def _eval_samples(c: dict[str, Any]) -> int:
    """Completions one evaluation draws: n sampled plus one greedy per prompt."""
    return int(c.get("eval_prompts", 1)) * (int(c.get("eval_samples", 1)) + 1)


def learned_costs(runs: list[RunRecord], model: str, root: Path | str | None = None,
                  limit: int = 8) -> tuple[dict[str, float], int]:
    """Per-sample train and eval seconds from recent finished runs of the same model."""
    train, evals, used = [], [], 0
    s = store(root)
    for r in runs:
        if used >= limit:
            break
        if r.status != "finished" or r.config.get("model") != model:
            continue
        try:
            tr, ev = _metrics(s.path(r.id) / "metrics.jsonl")
        except Exception:
            continue
        per_step = int(r.config.get("prompts_per_step", 1)) * int(r.config.get("group_size", 1))
        secs = [t["seconds"] for t in tr if isinstance(t.get("seconds"), int | float)]
        if secs:
            train.append(statistics.median(secs) / max(1, per_step))
        esecs = [e["seconds"] for e in ev if isinstance(e.get("seconds"), int | float)]
        if esecs:
            variable = max(0.0, statistics.median(esecs) - DEFAULT_COSTS["eval_fixed"])
            evals.append(variable / max(1, _eval_samples(r.config)))
        used += 1
    costs = dict(DEFAULT_COSTS)
    if train:
        costs["train_sample"] = statistics.median(train)
    if evals:
        costs["eval_sample"] = statistics.median(evals)
    return costs, used


def estimate(config: RunConfig, runs: list[RunRecord] | None = None,
             root: Path | str | None = None) -> Estimate:
    """Rough wall time of a run alone on this machine."""
    runs = list_runs(root) if runs is None else runs
    costs, used = learned_costs(runs, config.model, root)
    secs = (costs["startup"]
            + config.steps * config.inner_epochs * config.prompts_per_step * config.group_size
            * costs["train_sample"]
            + n_evals(config) * (costs["eval_fixed"]
                                 + _eval_samples(config.to_dict()) * costs["eval_sample"]))
    if used:
        basis = f"learned from {used} finished run{'s' * (used > 1)} of this model here"
    elif config.model == "embedded":
        basis = "a rough guess for 2 CPU cores; it improves once runs finish"
    else:
        basis = "a rough guess: larger models take much longer"
    return Estimate(secs, basis)


def estimate_classic(runs: list[RunRecord] | None = None,
                     root: Path | str | None = None) -> Estimate:
    """The classic comparison's four runs at once, sharing this machine's cores."""
    one = estimate(build_config(CLASSIC_PRESET), runs, root)
    n = len(CLASSIC_RECIPES)
    return Estimate(one.seconds * n / min(n, os.cpu_count() or 1), one.basis)


def eta(record: RunRecord, now: float | None = None) -> float | None:
    """Seconds left for a running run, from its own step and evaluation times so far."""
    if record.status != "running":
        return None
    c = record.config
    steps = int(c.get("steps", record.total_steps) or 0)
    secs = [t["seconds"] for t in record.train if isinstance(t.get("seconds"), int | float)]
    esecs = [e["seconds"] for e in record.evals if isinstance(e.get("seconds"), int | float)]
    if not secs and not esecs:
        return None
    per_step = statistics.median(secs) if secs else DEFAULT_COSTS["train_sample"] * int(
        c.get("prompts_per_step", 1)) * int(c.get("group_size", 1))
    per_eval = statistics.median(esecs) if esecs else 0.0
    try:
        total_evals = n_evals(RunConfig.from_dict(c))
    except (ConfigError, TypeError, ValueError):
        total_evals = len(record.evals)
    left = (max(0, steps - record.step) * per_step
            + max(0, total_evals - len(record.evals)) * per_eval)
    return left


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


# --- the device, detected once in a subprocess (the app never imports torch) -------------

@dataclass(frozen=True)
class DeviceInfo:
    known: bool  # False while the probe is running or when it failed
    cuda: bool = False
    name: str = ""
    detail: str = ""
    pending: bool = False  # the probe has not answered yet
    mps: bool = False  # Apple's Metal backend

    @property
    def auto(self) -> str:
        return "cuda" if self.cuda else "mps" if self.mps else "cpu"

    def describe(self) -> str:
        if not self.known:
            return self.detail or "detecting…"
        if self.cuda:
            return f"CUDA GPU: {self.name}"
        if self.mps:
            return "Apple GPU (MPS)"
        return f"CPU only ({os.cpu_count()} cores)"


_PROBE = ("import json, torch; c = torch.cuda.is_available(); "
          "m = bool(getattr(torch.backends, 'mps', None) and torch.backends.mps.is_available()); "
          "print(json.dumps({'cuda': c, 'mps': m, "
          "'name': torch.cuda.get_device_name(0) if c else ''}))")
_device: DeviceInfo | None = None
_device_thread: threading.Thread | None = None
_device_lock = threading.Lock()


def _probe() -> None:
    global _device
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                             timeout=120, check=True).stdout
        d = json.loads(out.strip().splitlines()[-1])
        info = DeviceInfo(True, bool(d["cuda"]), str(d["name"]), mps=bool(d.get("mps")))
    except Exception as e:  # no torch, a broken CUDA install, a timeout: say so, go on
        info = DeviceInfo(False, detail=f"could not detect ({type(e).__name__}); auto decides "
                          "when the run starts")
    _device = info


def detected_device(wait: float = 0.0) -> DeviceInfo:
    """What `auto` will pick. The first call starts a background probe; until it answers
    this returns DeviceInfo(known=False). `wait` seconds to block for the answer."""
    global _device_thread
    if _device is not None:
        return _device
    with _device_lock:
        if _device_thread is None:
            _device_thread = threading.Thread(target=_probe, daemon=True, name="device-probe")
            _device_thread.start()
    if wait > 0:
        _device_thread.join(wait)
    return _device or DeviceInfo(False, pending=True)



# --- sweeps ------------------------------------------------------------------------------
# A sweep launched here runs as `python -m core sweep --plan FILE` in its own session (the
# same orchestrator as the command line; closing the browser does not stop it). Its folder,
# runs/sweeps/TAG/, holds plan.json at once and the outputs when it ends.
SWEEP_PREFIX = "sweep-"


def sweep_folder(tag: str, root: Path | str | None = None) -> Path:
    return store(root).root / "sweeps" / tag


def ray_status() -> tuple[bool, str | None]:
    """(whether the ray package is installed, $RAY_ADDRESS); never imports ray."""
    from core.runs.ray_backend import RAY_ADDRESS_ENV, ray_available

    return ray_available(), os.environ.get(RAY_ADDRESS_ENV) or None


def plan_sweep(items: list[str], seeds: list[int], preset: str | None,
               fixed: dict[str, Any] | None = None) -> Any:
    """The checked plan of a grid given as `FIELD=V1,V2` items (values read exactly as the
    command line reads them); raises ConfigError with the one-line reason."""
    from core.cli import parse_grid
    from core.experiments.sweep import plan_sweep as make_plan

    return make_plan(parse_grid(items), seeds, preset, fixed)


def estimate_sweep(plan: Any, backend: str, runs: list[RunRecord] | None = None,
                   root: Path | str | None = None) -> Estimate:
    """Wall time of a sweep: waves of runs at once (this machine's queue cap, or one run per
    core for a Ray started here) times one run's estimate."""
    from core.runs.slots import max_runs

    one = estimate(RunConfig.from_dict(plan.jobs[0].config), runs, root)
    cores = os.cpu_count() or 1
    together = min(len(plan.jobs), max_runs() if backend == "local" else cores)
    waves = math.ceil(len(plan.jobs) / together)
    # each run of a wave gets cores / together threads; a step scales roughly with that
    slowdown = max(1.0, together / cores * max(1, cores // together))
    return Estimate(waves * one.seconds * slowdown,
                    f"{waves} wave{'s' * (waves > 1)} of up to {together} runs; {one.basis}")


def launch_sweep(plan: Any, backend: str = "local", root: Path | str | None = None,
                 user: str | None = None) -> str:
    """Write the plan and start the sweep's own process; returns its tag."""
    from core.experiments.sweep import default_tag
    from core.paths import REPO_ROOT

    if workshop_settings().enabled:
        raise WorkshopError("sweeps are off in workshop mode: each person launches runs")
    s = store(root)
    tag = default_tag(plan)
    folder = sweep_folder(tag, s.root)
    folder.mkdir(parents=True, exist_ok=False)
    plan_file = folder / "plan.json"
    plan_file.write_text(json.dumps({"grid": plan.grid, "seeds": plan.seeds,
                                     "base": plan.base, "backend": backend}, indent=1))
    with open(folder / "log.txt", "a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "core", "sweep", "--plan", str(plan_file), "--backend",
             backend, "--tag", tag, "--out", str(folder), "--runs-dir", str(s.root), "--yes"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=REPO_ROOT)
    threading.Thread(target=proc.wait, daemon=True).start()  # never left a zombie
    return tag


def sweep_tags(root: Path | str | None = None) -> list[str]:
    """Sweeps in this store, newest first (each has a folder with plan.json)."""
    folder = store(root).root / "sweeps"
    if not folder.is_dir():
        return []
    return sorted((p.name for p in folder.iterdir() if (p / "plan.json").is_file()),
                  reverse=True)


@dataclass
class SweepView:
    tag: str
    plan: dict[str, Any]  # grid, seeds, base, backend
    summary: dict[str, Any]  # core.experiments.sweep.build_sweep_summary of the runs so far
    cells: list[tuple[str, int, str, str]]  # (setting, seed, state, hover) for charts.run_grid
    report: Path | None  # report.html once the sweep has ended
    active: bool


def sweep_view(tag: str, root: Path | str | None = None) -> SweepView:
    """A sweep's state from its plan and the runs tagged with it: one cell per planned run
    ('planned' until its run exists) and the summary of the finished ones so far."""
    import itertools

    from core.experiments.sweep import build_sweep_summary

    s = store(root)
    folder = sweep_folder(tag, s.root)
    plan = json.loads((folder / "plan.json").read_text())
    grid = plan["grid"]
    records = {}
    for r in list_runs(s.root):
        if tag in r.tags:
            key = (json.dumps({f: r.config.get(f) for f in grid}, sort_keys=True),
                   r.config.get("seed"))
            records[key] = r
    runs, cells = [], []
    for combo in itertools.product(*grid.values()):
        params = dict(zip(grid, combo, strict=True))
        name = ", ".join(f"{k}={v}" for k, v in params.items())
        for seed in plan["seeds"]:
            r = records.get((json.dumps(params, sort_keys=True), seed))
            state = r.status if r else "planned"
            evals = (load_run(r.id, s.root) or r).evals if r and state == "finished" else []
            runs.append({"id": r.id if r else None, "seed": seed, "params": params,
                         "status": state, "error": r.error if r else None, "evals": evals})
            cells.append((name, seed, state, f"{name}, seed {seed}: {state}"
                          + (f", step {r.step}/{r.total_steps}" if r else "")))
    settings = {k: v for k, v in plan["base"].items() if k not in grid}
    summary = build_sweep_summary(grid, plan["seeds"], runs, settings=settings, tag=tag,
                                  backend=plan.get("backend", "local"), wall_seconds=0.0)
    report = folder / "report.html"
    active = any(c[2] in ("planned", *ACTIVE) for c in cells) and not report.exists()
    return SweepView(tag, plan, summary, cells, report if report.exists() else None, active)


# --- seeds of the same settings (Compare) ------------------------------------------------
NOT_SETTINGS = ("seed", "threads", "task_hash")  # differ between seeds of one setting


@dataclass
class SeedGroup:
    name: str  # the settings that tell it from the other groups, e.g. "lr=0.001, recipe=rlcr"
    ids: list[str]
    recipe: str | None


def seed_groups(records: list[RunRecord]) -> list[SeedGroup]:
    """The runs grouped by their settings apart from the seed (and thread count), in order
    of first appearance; each group named by the settings that differ between groups."""
    by_key: dict[str, list[RunRecord]] = {}
    for r in records:
        key = json.dumps({k: v for k, v in r.config.items() if k not in NOT_SETTINGS},
                         sort_keys=True)
        by_key.setdefault(key, []).append(r)
    configs = [json.loads(k) for k in by_key]
    fields = sorted({f for c in configs for f in c})
    differing = [f for f in fields if len({json.dumps(c.get(f)) for c in configs}) > 1]
    return [SeedGroup(", ".join(f"{f}={c.get(f)}" for f in differing)
                      or str(c.get("recipe", "runs")), [r.id for r in rs], c.get("recipe"))
            for c, rs in zip(configs, by_key.values(), strict=True)]


def seed_band(records: list[RunRecord], source: str, key: str
              ) -> tuple[list[int], list[float | None], list[float | None]]:
    """(steps, mean, sd) of one metric over the runs (seeds) at each step any of them has;
    `source` is "eval" or "train", `key` a flat or `a/b` key as in the metric catalogue."""
    from core import charts
    from core.experiments.aggregation import mean_sd

    per_run = [dict(zip(*charts.column(r.evals if source == "eval" else r.train, key),
                        strict=True)) for r in records]
    steps = sorted({s for values in per_run for s in values})
    stats = [mean_sd([values.get(s) for values in per_run]) for s in steps]
    return steps, [m["mean"] for m in stats], [m["sd"] for m in stats]


def seed_table(rows: list[dict[str, Any]], groups: list[SeedGroup]) -> dict[str, dict[str, str]]:
    """Compare's start -> end rows (one per run and metric) as group -> metric -> cell
    `start mean ± sd → end mean ± sd (n)`, over each group's runs."""
    from core.experiments.aggregation import mean_sd

    def cell(values: list[Any]) -> str:
        m = mean_sd([v if isinstance(v, int | float) and not isinstance(v, bool) else None
                     for v in values])
        if m["mean"] is None:
            return "—"
        return f"{m['mean']:.3f}" + (f" ± {m['sd']:.3f}" if m["sd"] is not None else "")

    table: dict[str, dict[str, str]] = {}
    for g in groups:
        mine = [r for r in rows if r["run"] in g.ids]
        for metric in dict.fromkeys(r["metric"] for r in mine):
            of = [r for r in mine if r["metric"] == metric]
            table.setdefault(f"{g.name} (n = {len(g.ids)})", {})[metric] = (
                f"{cell([r['start'] for r in of])} → {cell([r['end'] for r in of])}")
    return table
