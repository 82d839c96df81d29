"""Per-run costs of the finished runs in a run store, and what a grid would take from them.

    python -m benchmarks.sweep_costs RUNS_DIR [RUNS_DIR ...]

Prints, per store: median seconds per training step and per evaluation (from the runs' own
rows), median start-up (queued or running_at -> first row) and whole-run wall time, and
metrics/sample rows and sink calls per run. Then, on paper, the wall time of a grid on N
nodes x C cores from those costs: runs hold 1 core each, so ceil(runs / (N x C)) waves of
one run's time, and the rows per second the launching machine's sink must take.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

from core.runtime.store import RunStore, read_jsonl


def costs(root: Path) -> dict[str, float]:
    store = RunStore(root)
    steps, evals, startups, walls, rows, samples = [], [], [], [], [], []
    for r in store.list():
        if r.status != "finished":
            continue
        path = store.path(r.id)
        metrics = read_jsonl(path / "metrics.jsonl")
        status = json.loads((path / "status.json").read_text())
        steps += [m["train/seconds"] for m in metrics if "train/seconds" in m]
        evals += [m["eval/seconds"] for m in metrics if "eval/seconds" in m]
        began = status.get("running_at") or r.started_at
        if metrics and began:
            startups.append(metrics[0]["time"] - began)
            walls.append(status["ended_at"] - began)
        rows.append(len(metrics))
        samples.append(len(read_jsonl(path / "samples.jsonl")))
    return {"runs": len(walls), "step_s": statistics.median(steps),
            "eval_s": statistics.median(evals), "startup_s": statistics.median(startups),
            "run_wall_s": statistics.median(walls), "metric_rows": statistics.median(rows),
            "sample_rows": statistics.median(samples)}


def grid_seconds(runs: int, nodes: int, cores: int, run_s: float) -> float:
    return math.ceil(runs / (nodes * cores)) * run_s


def main() -> None:
    for arg in sys.argv[1:]:
        c = costs(Path(arg))
        print(arg, json.dumps({k: round(v, 3) for k, v in c.items()}))
    # A quick-preset run: 100 steps, 6 evaluations (steps 0, 20, ..., 100), start-up.
    quick = 100 * c["step_s"] + 6 * c["eval_s"] + c["startup_s"]
    print(f"quick-preset run, 1 core, from these costs: {quick:.0f} s; sink calls per run "
          "≈ 2 per step (metrics row, status) + 3 per evaluation (row, samples, status) "
          f"= {2 * 100 + 3 * 6}")
    for runs, name in ((18, "3 x 2 x 3"), (300, "6 x 5 x 10")):
        for nodes, cores in ((1, 2), (2, 8), (4, 16), (10, 32)):
            t = grid_seconds(runs, nodes, cores, quick)
            live = min(runs, nodes * cores)
            calls = live * (2 + 3 * 6 / 100) / c["step_s"]
            print(f"  {name} = {runs} runs on {nodes} x {cores} cores: {t / 60:.1f} min; "
                  f"sink ≈ {calls:.0f} calls/s while {live} run at once")


if __name__ == "__main__":
    main()
