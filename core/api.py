"""The app's one door into the engine: light (never imports torch), store-backed, forgiving.

Pages import this module, `core.config`, `core.recipe_info` and `core.charts`, nothing else
from core, for engine access. Everything here reads or writes the run folders on disk, so
closing the browser or restarting the app loses nothing: a restarted app finds every run
again. What is not the door lives next to what it describes: the queue's state in
`core.runtime.slots`, run-time estimates in `core.runtime.estimates`, the device probe in
`core.device`; widget labels and upload helpers in `ui/`.
"""

from __future__ import annotations

import io
import json
import math
import os
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import ConfigError, RunConfig, build_config
from core.device import DeviceInfo, probe_device
from core.experiments import claims as claims_mod
from core.experiments.registry import EXPERIMENTS
from core.models.model_catalog import CATALOG_BY_ID, MemoryEstimate
from core.runtime import codes, estimates, slots, workshop
from core.runtime.store import (
    ACTIVE,
    ADAPTER_FILE,
    SAFE_ID,
    RunRecord,
    RunStore,
    default_runs_dir,
    read_jsonl,
    run_lock,
    split_metrics,
)
from core.runtime.workshop import WorkshopError

# The Home page's one-click quick comparison: four of the calibration (classic) experiment's
# recipes at that experiment's own settings (its preset and task) and one seed, tagged as one
# group, so it shows what the experiment reports. (The command line's experiments run every
# recipe over three seeds: core.experiments.)
COMPARISON_RECIPES = ("binary", "rlcr", "psr", "nsr")
COMPARISON_PREFIX = "compare-"
COMPARISON_EXPERIMENT = "classic"


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
    from core.runtime.runner import launch as runner_launch  # torch-free; imported on first use

    s = store(root)
    s.root.mkdir(parents=True, exist_ok=True)
    # The store's lock makes the per-person count and the new folder one step: two tabs of
    # one person cannot both slip under the limit.
    with run_lock(s.root):
        workshop.check_launch(config.to_dict(), user, _active_runs(s, user))
        run_id = runner_launch(pin_task(config, s.root), s.root, owner=user, warm_wait=False)
    workshop.audit("launch", user, run=run_id)
    return run_id


def _owned(run_id: str, root: Path | str | None, user: str | None, action: str) -> RunStore:
    s = store(root)
    workshop.check_owner(_load(s, run_id, metrics=False).owner, user, action)
    return s


def stop(run_id: str, root: Path | str | None = None, user: str | None = None) -> bool:
    """Ask a queued or running run to stop; False if it was not live."""
    from core.runtime.runner import stop as runner_stop

    try:
        s = _owned(run_id, root, user, "stop")
        workshop.audit("stop", user, run=run_id)
        return runner_stop(run_id, s.root)
    except (KeyError, ProcessLookupError, PermissionError):
        return False


def resume(run_id: str, root: Path | str | None = None, user: str | None = None) -> str:
    """Continue a stopped or failed run, as the same run, from its last checkpoint (in the
    background, through the queue). Raises ResumeError (a ValueError) or WorkshopError."""
    from core.runtime.runner import resume as runner_resume

    s = _owned(run_id, root, user, "continue")
    with run_lock(s.root):
        workshop.check_launch(_load(s, run_id, metrics=False).config, user,
                              _active_runs(s, user))
        workshop.audit("continue", user, run=run_id)
        return runner_resume(run_id, s.root, warm_wait=False)


def can_resume(record: RunRecord) -> bool:
    return record.status in ("stopped", "failed") and bool(record.config)


def delete(run_id: str, root: Path | str | None = None, user: str | None = None) -> None:
    """Remove a run folder. A live run must be stopped first (ValueError)."""
    s = _owned(run_id, root, user, "delete")
    record = _load(s, run_id, metrics=False)
    if record.status in ACTIVE:
        raise ValueError(f"run {run_id} is still {record.status}: stop it first")
    s.delete(run_id)
    workshop.audit("delete", user, run=run_id)
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
    workshop.audit("tag", user, run=run_id, tags=cleaned)
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

def task_label(task: str) -> str:
    """A task as a person reads it: a built-in name, hf:ID, or a file's own name."""
    from core.data.task_data import display_name, is_file_task

    return display_name(task) if is_file_task(task) else task


def check_config(values: dict[str, Any], preset: str | None = None,
                 device: DeviceInfo | None = None) -> tuple[RunConfig | None, list[str]]:
    """A config from form values, or the problems, each in plain words (never raises)."""
    from core.data.task_data import TaskError, task_for
    from core.models.model_source import ModelError, check_model
    from core.runtime.runner import check_init_from

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
        check_init_from(config, store())
    except (KeyError, ValueError) as e:
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
    from core.models.model_catalog import run_estimate

    kind = config.device
    if kind == "auto":
        kind = device.auto if device is not None and device.known else "cpu"
    return run_estimate(config, kind)


# --- task files ----------------------------------------------------------------------------

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

def queue_state(runs: list[RunRecord] | None = None,
                root: Path | str | None = None) -> slots.QueueState:
    """How full the machine is: the cap, the runs training, and the waiting line."""
    return slots.queue_state(list_runs(root) if runs is None else runs)


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
    workshop.audit("sign in (shared token)", user)
    return user


def sign_in_code(code: str, source: str, now: float | None = None) -> codes.Code:
    """The live participant code that `code` is; WorkshopError otherwise. A source (the
    connection's address) that keeps giving wrong codes waits longer and longer between
    tries (core.runtime.codes.Throttle), whatever the code it tries next."""
    now = time.time() if now is None else now
    wait = codes.THROTTLE.wait(source, now)
    if wait > 0:
        raise WorkshopError(f"too many wrong codes from your address: try again in "
                            f"{math.ceil(wait)} s")
    found = codes.check(code)
    if found is None:
        delay = codes.THROTTLE.failed(source, now)
        workshop.audit("sign-in refused", None, source=source)
        raise WorkshopError("that is not a workshop code (or it was revoked)"
                            + (f"; the next try is possible in {math.ceil(delay)} s"
                               if delay else ""))
    workshop.audit("sign in", found.name, code=found.id, source=source)
    return found


# --- the quick comparison ----------------------------------------------------------------

def comparison_tag(now: float | None = None) -> str:
    return COMPARISON_PREFIX + time.strftime("%Y%m%d-%H%M%S", time.localtime(now))


def comparison_config(recipe: str = COMPARISON_RECIPES[0], **overrides: Any) -> RunConfig:
    """One run of the quick comparison: the calibration experiment's settings, seed 0."""
    spec = EXPERIMENTS[COMPARISON_EXPERIMENT]
    return build_config(**{**spec.base_values(), "task": spec.task, "recipe": recipe,
                           "seed": 0, **overrides})


def launch_comparison(root: Path | str | None = None, now: float | None = None,
                      user: str | None = None, **overrides: Any) -> tuple[str, list[str]]:
    """binary, rlcr, psr and nsr on the embedded model with the calibration experiment's
    settings (`comparison_config`), tagged as one group. CPU threads are shared out among the
    runs that train at once (the queue's cap)."""
    tag = comparison_tag(now)
    threads = slots.threads_per_run(min(len(COMPARISON_RECIPES), slots.max_runs()))
    configs = [comparison_config(recipe, threads=threads, **overrides)
               for recipe in COMPARISON_RECIPES]
    # All four or none: a person one run short of the workshop limit gets a clear no.
    workshop.check_launch(configs[0].to_dict(), user, _active_runs(store(root), user),
                          len(configs))
    ids = []
    for config in configs:
        run_id = launch(config, root, user)
        set_tags(run_id, [tag], root, user)
        ids.append(run_id)
    return tag, ids


def groups(runs: list[RunRecord], prefix: str = COMPARISON_PREFIX) -> dict[str, list[str]]:
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


def latest_comparison(runs: list[RunRecord]) -> tuple[str | None, list[str]]:
    g = groups(runs)
    if not g:
        return None, []
    tag = next(iter(g))
    return tag, g[tag]


# --- the claims board --------------------------------------------------------------------

CLAIM_SEED_CHOICES = {"one seed (0)": (0,), "three seeds (0, 1, 2)": (0, 1, 2)}


def claims() -> list[claims_mod.Claim]:
    return claims_mod.claims()


def claim_result(claim: claims_mod.Claim,
                 root: Path | str | None = None) -> claims_mod.ClaimResult:
    """This machine's latest report of the claim's experiment, or "not run"."""
    return claims_mod.latest_result(claim.experiment, store(root).root, claim.decides)


def launch_claim(experiment: str, seeds: tuple[int, ...], root: Path | str | None = None,
                 now: float | None = None, user: str | None = None) -> Path:
    """Run a claim's experiment with its own settings in the background (the queue shares
    this machine with every other run); returns the report's folder. Refused in workshop
    mode: an experiment's runs belong to no one person."""
    if workshop.settings().enabled:
        raise WorkshopError("experiments are off in workshop mode: each person launches "
                            "their own runs")
    spec = EXPERIMENTS[experiment]
    return claims_mod.launch_experiment(spec, seeds, store(root).root,
                                        time.strftime("%Y%m%d-%H%M%S", time.localtime(now)))


def experiment_folder(name: str, root: Path | str | None = None) -> Path | None:
    """The experiment folder `name` under the store's experiments/, if it is one (a bare
    folder name: nothing outside that folder is ever read)."""
    if not SAFE_ID.fullmatch(name or ""):
        return None
    path = store(root).root / claims_mod.EXPERIMENTS_FOLDER / name
    return path if path.is_dir() else None


def runs_to_start_from(runs: list[RunRecord], model: str,
                       root: Path | str | None = None) -> list[RunRecord]:
    """Finished runs of `model` that kept their final adapter: what `init_from` may name."""
    s = store(root)
    return [r for r in runs if r.status == "finished" and r.config.get("model") == model
            and (s.path(r.id) / ADAPTER_FILE).is_file()]


def report_html(folder: Path | str) -> str | None:
    """The report page of an experiment folder, or None if it is not written yet."""
    path = Path(folder) / "report.html"
    return path.read_text(encoding="utf-8") if path.is_file() else None


# --- a run's own consistency check --------------------------------------------------------

CHECK_QUIET_SECONDS = 600.0  # a check whose log has not moved for this long has ended


@dataclass(frozen=True)
class ConsistencyCheck:
    """A run's consistency check (the consistency experiment's measure, smaller): its start
    and end policy answering the same questions many times at each temperature."""
    state: str  # "none", "running", "done" or "failed"
    means: list[dict[str, Any]]  # rows {recipe, temperature, METRIC: {mean, sd, n}}
    determinism: dict[str, Any]
    plan: dict[str, Any]


def consistency_check(run_id: str, root: Path | str | None = None,
                      now: float | None = None) -> ConsistencyCheck:
    """The state and result of `run_id`'s consistency check, read from its folder."""
    from core.experiments import consistency as cons

    path = store(root).path(run_id)
    result = cons.read_result(path / cons.RESULT_FILE)
    log = path / cons.LOG_FILE
    if result.get("done"):
        state = "done"
    elif not log.is_file():
        state = "none"
    else:
        quiet = (now or time.time()) - log.stat().st_mtime
        state = "running" if quiet < CHECK_QUIET_SECONDS else "failed"
    return ConsistencyCheck(state, cons.table_means(cons.table_rows(result)),
                            cons.determinism(result), result.get("plan") or {})


def start_consistency_check(run_id: str, root: Path | str | None = None,
                            user: str | None = None) -> None:
    """Measure the run's start and end policy in a background process (the runner starts it;
    it takes no training slot). Only a finished run with its final adapter; ValueError says
    why not."""
    from core.experiments import consistency as cons
    from core.runtime.runner import start_consistency

    s = _owned(run_id, root, user, "check")
    record = _load(s, run_id, metrics=False)
    path = s.path(run_id)
    if record.status != "finished" or not (path / ADAPTER_FILE).is_file():
        raise ValueError("only a finished run that kept its final adapter can be checked")
    if consistency_check(run_id, root).state == "running":
        raise ValueError("a consistency check of this run is already running")
    for name in (cons.RESULT_FILE, cons.LOG_FILE):
        (path / name).unlink(missing_ok=True)
    (path / cons.LOG_FILE).touch()  # "running" from now on, before the process writes
    start_consistency([("start", path), ("end", path)], path / cons.RESULT_FILE,
                      cons.RUN_CHECK_QUESTIONS, cons.RUN_CHECK_REPETITIONS, cons.TEMPERATURES,
                      path / cons.LOG_FILE)


# --- time --------------------------------------------------------------------------------

def estimate(config: RunConfig, runs: list[RunRecord] | None = None,
             root: Path | str | None = None) -> estimates.Estimate | None:
    """Wall time of a run alone on this machine, as a range with its basis; None without
    measured costs (the costs file) or finished runs to learn from."""
    s = store(root)
    return estimates.estimate(config, list_runs(root) if runs is None else runs,
                              lambda run_id: _metrics(s.path(run_id) / "metrics.jsonl"))


def judge_estimate(config: RunConfig) -> tuple[int, float] | None:
    """A language-model judge's parameters and the seconds it adds to each training step on
    this CPU at most; None when its shapes are unknown (a hub model not cached yet)."""
    from core.models.model_catalog import model_arch

    arch = model_arch(config.judge_model) if config.judge_model.strip() else None
    if arch is None:
        return None
    return arch.params, estimates.judge_seconds_per_step(config, arch.params)


def estimate_comparison(runs: list[RunRecord] | None = None,
                        root: Path | str | None = None) -> estimates.Estimate | None:
    """The quick comparison's four runs, launched together on this machine."""
    return estimates.estimate_group(estimate(comparison_config(), runs, root),
                                    len(COMPARISON_RECIPES))


def eta(record: RunRecord) -> float | None:
    """Seconds left for a running run, from its own step and evaluation times so far."""
    return estimates.eta(record)


# --- the device --------------------------------------------------------------------------

def detected_device(wait: float = 0.0) -> DeviceInfo:
    """What `auto` will pick; DeviceInfo(known=False) until the background probe answers
    (`wait` seconds to block for it). The probe runs once, in a subprocess (core.device)."""
    return probe_device(wait)


# --- sweeps ------------------------------------------------------------------------------
# A sweep launched here runs as `python -m core sweep --plan FILE` in its own session (the
# same orchestrator as the command line; closing the browser does not stop it). Its folder,
# runs/sweeps/TAG/, holds plan.json at once and the outputs when it ends.
SWEEP_PREFIX = "sweep-"


def sweep_folder(tag: str, root: Path | str | None = None) -> Path:
    return store(root).root / "sweeps" / tag


def ray_status() -> tuple[bool, str | None]:
    """(whether the ray package is installed, $RAY_ADDRESS); never imports ray."""
    from core.runtime.ray_backend import RAY_ADDRESS_ENV, ray_available

    return ray_available(), os.environ.get(RAY_ADDRESS_ENV) or None


def plan_sweep(items: list[str], seeds: list[int], preset: str | None,
               fixed: dict[str, Any] | None = None) -> Any:
    """The checked plan of a grid given as `FIELD=V1,V2` items (values read exactly as the
    command line reads them); raises ConfigError with the one-line reason."""
    from core.cli import parse_grid
    from core.experiments.sweep import plan_sweep as make_plan

    return make_plan(parse_grid(items), seeds, preset, fixed)


def estimate_sweep(plan: Any, backend: str, runs: list[RunRecord] | None = None,
                   root: Path | str | None = None) -> estimates.Estimate:
    """Wall time of a sweep: waves of runs at once (this machine's queue cap, or one run per
    core for a Ray started here) times one run's estimate."""
    from core.runtime.slots import cores as usable_cores
    from core.runtime.slots import max_runs

    one = estimate(RunConfig.from_dict(plan.jobs[0].config), runs, root)
    cores = usable_cores()  # the cap's and the thread share's count, not every core
    together = min(len(plan.jobs), max_runs() if backend == "local" else cores)
    waves = math.ceil(len(plan.jobs) / together)
    # each run of a wave gets cores / together threads; a step scales roughly with that
    slowdown = max(1.0, together / cores * max(1, cores // together))
    scale = waves * slowdown
    return estimates.Estimate(one.seconds * scale, one.low * scale, one.high * scale,
                    f"{waves} wave{'s' * (waves > 1)} of up to {together} runs; {one.basis}")


def launch_sweep(plan: Any, backend: str = "local", root: Path | str | None = None,
                 user: str | None = None) -> str:
    """Write the plan and start the sweep's own process; returns its tag."""
    from core.experiments.sweep import default_tag

    if workshop_settings().enabled:
        raise WorkshopError("sweeps are off in workshop mode: each person launches runs")
    s = store(root)
    tag = default_tag(plan)
    folder = sweep_folder(tag, s.root)
    folder.mkdir(parents=True, exist_ok=False)
    plan_file = folder / "plan.json"
    plan_file.write_text(json.dumps({"grid": plan.grid, "seeds": plan.seeds,
                                     "base": plan.base, "backend": backend}, indent=1))
    from core.runtime.runner import start_command

    start_command(["sweep", "--plan", str(plan_file), "--backend", backend, "--tag", tag,
                   "--out", str(folder), "--runs-dir", str(s.root), "--yes"], folder / "log.txt")
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
