"""The consistency experiment's measuring phase: once its runs have ended, the start model and
each run's end model answer the same held-out questions many times at several temperatures
(core.engine.consistency, in a background process the runner starts), and the results become
the summary's `table`.

Torch-free: it starts the process and reads its JSON. Seeds enter twice: each seed trains its
own runs, and the repetitions of seed s sample with seeds 1000 s + 0 .. 99, so the start
model (the same weights for every seed) is measured once per seed with other draws.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from core.experiments.aggregation import mean_sd

QUESTIONS = 64
REPETITIONS = 100
TEMPERATURES = (0.0, 0.25, 0.5, 0.75, 1.0)
RESULT_FILE = "consistency.json"  # in the experiment's folder, or a run's for its own check
LOG_FILE = "consistency.log"
DEADLINE_SECONDS = 3_600.0  # a measurement still going after this long is stopped
POLL_SECONDS = 2.0
START = "start"  # the table's model name for the starting policy
METRICS = ("repeatability", "omega", "alpha", "single_draw_r", "accuracy", "ece")
TABLE_COLUMNS = ("model", "recipe", "seed", "temperature", *METRICS)
# The check the Run page starts for one run: smaller, so it answers within a minute or two.
RUN_CHECK_QUESTIONS = 32
RUN_CHECK_REPETITIONS = 20


@dataclass(frozen=True)
class Planned:
    when: str  # "start" or "end"
    run_dir: Path
    recipe: str
    seed: int


def plan_targets(runs: Sequence[dict[str, Any]], root: Path) -> list[Planned]:
    """Per seed: the start policy (read from that seed's first finished run) and the end of
    every finished run, in the runs' order."""
    done = [r for r in runs if r.get("status") == "finished" and r.get("id")]
    out: list[Planned] = []
    for seed in dict.fromkeys(r["seed"] for r in done):
        mine = [r for r in done if r["seed"] == seed]
        out.append(Planned("start", root / mine[0]["id"], START, seed))
        out += [Planned("end", root / r["id"], r["recipe"], seed) for r in mine]
    return out


def wait_for(proc: Any, out: Path, total: int, stream: TextIO,
             deadline: float = DEADLINE_SECONDS) -> str | None:
    """Wait for the measuring process, printing each model as it is done; None when it
    ended well, else why not (it is stopped at the deadline)."""
    t0, seen = time.monotonic(), 0
    while proc.poll() is None:
        if time.monotonic() - t0 > deadline:
            proc.terminate()
            with contextlib.suppress(Exception):
                proc.wait(timeout=30)
            return f"stopped after {deadline:.0f} s"
        done = len(read_result(out).get("models", []))
        if done > seen:
            seen = done
            stream.write(f"consistency: {done}/{total} models measured, "
                         f"{time.monotonic() - t0:.0f} s\n")
            stream.flush()
        time.sleep(POLL_SECONDS)
    return None if proc.returncode == 0 else f"the measuring process exited {proc.returncode}"


def read_result(path: Path) -> dict[str, Any]:
    """The measurement's JSON, or {} while there is none (or it cannot be read)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """summary.json's `table`: one row per model and temperature."""
    return [{"model": m["model"], "recipe": START if m["model"] == START else m["recipe"],
             "seed": m["seed"], "temperature": row["temperature"],
             **{k: row.get(k) for k in METRICS}}
            for m in result.get("models", []) for row in m["rows"]]


def table_means(table: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sd over seeds per (recipe, temperature): {recipe, temperature, n, METRIC:
    {mean, sd, n}} in first-seen order."""
    keys = list(dict.fromkeys((r["recipe"], r["temperature"]) for r in table))
    out = []
    for recipe, t in keys:
        rows = [r for r in table if r["recipe"] == recipe and r["temperature"] == t]
        out.append({"recipe": recipe, "temperature": t, "n": len(rows),
                    **{k: mean_sd([r[k] for r in rows]) for k in METRICS}})
    return out


def determinism(result: dict[str, Any]) -> dict[str, Any]:
    """Whether greedy outputs stayed the same across generation batch sizes, per model."""
    per_model = {m["model"] if m["model"] != START else f"start (seed {m['seed']})":
                 m["determinism"] for m in result.get("models", [])}
    return {"identical": bool(per_model) and all(d["identical"] for d in per_model.values()),
            "models": per_model}


def measure_runs(summary: dict[str, Any], root: Path, out: Path,
                 stream: TextIO) -> dict[str, Any]:
    """Measure the experiment's models in a background process and return what the summary
    gains: `table`, `table_means`, `batch_determinism` and `consistency` (timing, plan)."""
    from core.runtime.runner import start_consistency

    planned = plan_targets(summary.get("runs", []), root)
    if not planned:
        return {"table": [], "table_means": [], "batch_determinism": {},
                "consistency": {"error": "no finished runs to measure"}}
    result_path = out / RESULT_FILE
    stream.write(f"consistency: {len(planned)} models x {QUESTIONS} questions x "
                 f"{REPETITIONS} repetitions x {len(TEMPERATURES)} temperatures, 1 thread, "
                 f"beside the training queue; log in {out / LOG_FILE}\n")
    t0 = time.monotonic()
    proc = start_consistency([(p.when, p.run_dir) for p in planned], result_path, QUESTIONS,
                             REPETITIONS, TEMPERATURES, out / LOG_FILE)
    error = wait_for(proc, result_path, len(planned), stream)
    result = read_result(result_path)
    table = table_rows(result)
    return {"table": table, "table_means": table_means(table),
            "batch_determinism": determinism(result),
            "consistency": {"error": error, "plan": result.get("plan"),
                            "wall_seconds": round(time.monotonic() - t0, 1),
                            "cpu_seconds": result.get("cpu_seconds"),
                            "repetition_seed": result.get("repetition_seed"),
                            "threads": result.get("threads")}}
