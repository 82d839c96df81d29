"""The first estimate against the clock: what a fresh store's Launch and Home pages promise,
and how long the runs then take.

Run by hand: `.venv/bin/python -m benchmarks.estimate_vs_clock [--skip-comparison]`.

1. The quick preset: `core.api.estimate` on an empty store (what the Launch page shows for
   the quick preset), then the whole command `python -m core train --preset quick` in that
   store: wall seconds and CPU seconds (user + system of the finished child).
2. The quick comparison: `core.api.estimate_comparison` on an empty store (Home's figure),
   then `core.api.launch_comparison` (what Home's button calls: four background runs through
   the queue) and the time until all four have ended, and their CPU seconds.

Prints one line per figure with the 1-minute load average before and after: on a shared
machine, quote it beside the figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core import api
from core.config import build_config
from core.paths import REPO_ROOT
from core.runtime.store import ACTIVE, RUNS_DIR_ENV

DEADLINE_SECONDS = 3 * 3600  # a hang, not a slow machine


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def show(label: str, est: api.estimates.Estimate | None, wall: float, cpu: float,
         load: tuple[float, float]) -> None:
    promised = "none" if est is None else (f"{est.seconds:.0f} s ({est.low:.0f}-{est.high:.0f} "
                                           f"s; {est.basis})")
    print(f"{label}: estimate {promised}; took {wall:.1f} s wall, {cpu:.1f} s CPU; "
          f"load average {load[0]:.1f} -> {load[1]:.1f}")


def quick_preset(root: Path) -> None:
    est = api.estimate(build_config("quick"), root=root)
    load0, cpu0, t0 = os.getloadavg()[0], children_cpu(), time.perf_counter()
    subprocess.run([sys.executable, "-m", "core", "train", "--preset", "quick", "--recipe",
                    "binary", "--seed", "0", "--runs-dir", str(root)], cwd=REPO_ROOT,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    show("quick preset (Launch page)", est, time.perf_counter() - t0, children_cpu() - cpu0,
         (load0, os.getloadavg()[0]))


def comparison(root: Path) -> None:
    os.environ[RUNS_DIR_ENV] = str(root)
    est = api.estimate_comparison(root=root)
    load0, cpu0, t0 = os.getloadavg()[0], children_cpu(), time.perf_counter()
    _, ids = api.launch_comparison(root=root)
    while any(r.status in ACTIVE for r in api.list_runs(root)):
        if time.perf_counter() - t0 > DEADLINE_SECONDS:
            raise SystemExit("the comparison did not end within the deadline")
        time.sleep(1.0)
    wall = time.perf_counter() - t0
    time.sleep(2.0)  # the reaper threads collect the children, so their CPU time counts
    records = [api.load_run(i, root) for i in ids]
    statuses = sorted({r.status for r in records})
    # The children are reaped by threads of this process, so RUSAGE_CHILDREN holds them.
    show(f"quick comparison (Home), runs {statuses}", est, wall, children_cpu() - cpu0,
         (load0, os.getloadavg()[0]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-comparison", action="store_true")
    ap.add_argument("--skip-quick", action="store_true")
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPU cores")
    if not args.skip_quick:
        with tempfile.TemporaryDirectory() as runs:
            quick_preset(Path(runs) / "runs")
    if not args.skip_comparison:
        with tempfile.TemporaryDirectory() as runs:
            comparison(Path(runs) / "runs")


if __name__ == "__main__":
    main()
