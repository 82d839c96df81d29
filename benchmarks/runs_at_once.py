"""Runs started together against the same runs one after the other (whole-command wall time).

Run by hand: `.venv/bin/python -m benchmarks.runs_at_once [--counts 1,2,4] [--caps 2,1]
[--before DIR] [--steps N]`. Each trial starts n `python -m core train --preset quick
--recipe binary --seed i` commands (seeds 0..n-1; `--steps` shortens them, evaluation still
every 20 steps and at the end) in a fresh runs folder and times until the last one ends:
all n at once through the run queue at each cap ($CALIBRATION_LAB_MAX_RUNS), and the same n
one after the other. `--before DIR` also times "together" with the code in DIR (e.g. an
older commit unpacked with `git archive COMMIT | tar -x -C DIR`), at the default cap,
back to back with this checkout's trials. Beside the wall time: the CPU seconds the runs
used (threads spinning against each other burn CPU without progress; on a machine shared
with other work this is the steadier figure) and the load average, which says how much of
a difference others' work can explain.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_DEADLINE_S = 1800  # one trial; a hung run fails the benchmark instead of waiting forever


def _command(seed: int, runs: str, steps: int | None) -> list[str]:
    return [sys.executable, "-m", "core", "train", "--preset", "quick", "--recipe", "binary",
            "--seed", str(seed), "--runs-dir", runs,
            *(["--steps", str(steps)] if steps else [])]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # ended and waited-for children
    return usage.ru_utime + usage.ru_stime


def _step_seconds(runs: str) -> list[float]:
    """The median train/seconds of each run in the folder."""
    out = []
    for metrics in Path(runs).glob("*/metrics.jsonl"):
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        steps = [r["train/seconds"] for r in rows if "train/seconds" in r]
        if steps:
            out.append(statistics.median(steps))
    return sorted(out)


def trial(code: Path, n: int, together: bool, cap: int | None, steps: int | None) -> dict:
    env = dict(os.environ)
    env.pop("CALIBRATION_LAB_MAX_RUNS", None)
    if cap is not None:
        env["CALIBRATION_LAB_MAX_RUNS"] = str(cap)
    env["PYTHONPATH"] = str(code)
    load, cpu = os.getloadavg()[0], _children_cpu()
    with tempfile.TemporaryDirectory(prefix="bench-at-once-") as runs:
        t0 = time.perf_counter()
        deadline = t0 + RUN_DEADLINE_S

        def start(seed: int) -> subprocess.Popen:
            return subprocess.Popen(_command(seed, runs, steps), cwd=code, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def finish(proc: subprocess.Popen) -> None:
            returncode = proc.wait(timeout=max(1.0, deadline - time.perf_counter()))
            if returncode != 0:
                raise RuntimeError(f"a run exited with {returncode} ({code})")

        if together:
            for proc in [start(seed) for seed in range(n)]:
                finish(proc)
        else:
            for seed in range(n):
                finish(start(seed))
        wall = time.perf_counter() - t0
        steps = _step_seconds(runs)
    return {"wall_s": round(wall, 1), "cpu_s": round(_children_cpu() - cpu, 1),
            "load_at_start": round(load, 2),
            "load_at_end": round(os.getloadavg()[0], 2),
            "step_s_median_per_run": [round(s, 3) for s in steps]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="1,2,4")
    ap.add_argument("--caps", default="2,1", help="queue caps to try for runs started together")
    ap.add_argument("--before", type=Path, default=None,
                    help="another checkout to time 'together' at its default cap, back to back")
    ap.add_argument("--steps", type=int, default=None,
                    help="steps per run (default: the quick preset's 100)")
    ap.add_argument("--no-sequence", action="store_true",
                    help="skip the one-after-the-other trials (sum single runs instead)")
    ap.add_argument("--json", type=Path, default=None, help="also write every trial here")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}; quick preset, binary, seeds 0..n-1, "
          f"{args.steps or 'preset'} steps")
    results = []

    def record(label: str, n: int, result: dict) -> None:
        results.append({"label": label, "n": n, **result})
        print(f"n={n} {label:<31} {result['wall_s']:7.1f} s wall {result['cpu_s']:7.1f} s CPU"
              f"  load {result['load_at_start']:.2f} -> {result['load_at_end']:.2f}"
              f"  s/step per run "
              f"{result['step_s_median_per_run']}", flush=True)

    for n in (int(c) for c in args.counts.split(",")):
        if n > 1 and not args.no_sequence:
            record("sequence", n, trial(ROOT, n, together=False, cap=None, steps=args.steps))
        if args.before is not None:
            record("together, before (default cap)", n,
                   trial(args.before.resolve(), n, together=True, cap=None,
                         steps=args.steps))
        for cap in (int(c) for c in args.caps.split(",")):
            if n == 1 and cap != int(args.caps.split(",")[0]):
                continue  # one run: the cap changes nothing
            record(f"together, cap {cap}", n,
                   trial(ROOT, n, together=True, cap=cap, steps=args.steps))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
