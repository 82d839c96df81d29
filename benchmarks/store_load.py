"""Load on the run store and the queue: many live runs at once, readers hammering them.

Run by hand: `.venv/bin/python benchmarks/store_load.py [--runs 32] [--cap 2] [--readers 2]`.
Each run is a real process going through the real queue and writer (`RunWriter.claim`,
`slots.wait_for_slot`, one metrics row per "step", an evaluation row and samples every
fifth, status.json per step) but with the training replaced by a 20 ms sleep per step, so
the figures are the store's and the queue's, not the model's. Reader processes meanwhile
read random runs through the app's path (`api.load_run`, `api.list_runs`) and the uncached
`RunStore.load`, checking every read. It prints: runs held at once (queued + running),
the most that trained at once (from the runs' own clocks) against the cap, whether they
started in queue order, reads per second sustained with read errors, and rows lost.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core import api  # noqa: E402
from core.config import build_config  # noqa: E402
from core.runtime import slots  # noqa: E402 - after the path set-up
from core.runtime.store import ACTIVE, RunStore  # noqa: E402

WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from core.runtime import slots
    from core.runtime.store import RunStore, RunWriter
    path, steps = Path(sys.argv[1]), int(sys.argv[2])
    writer = RunWriter(path)
    writer.claim()
    slot = slots.wait_for_slot(RunStore(path.parent), path.name, slots.max_runs())
    writer.update_status(status="running", running_at=time.time(), slot=slot.index)
    for step in range(1, steps + 1):
        time.sleep(0.02)  # the training step this benchmark leaves out
        writer.log(step, {"train/loss": 1 / step, "train/reward/mean": 0.5,
                          "train/accuracy": 0.5, "train/seconds": 0.02})
        if step % 5 == 0:
            writer.log(step, {"eval/accuracy": 0.5, "eval/pass_at_k": {"1": 0.5},
                              "eval/calibration": {"verbalized": {"ece": 0.1,
                              "hist_correct": [1] * 10, "hist_incorrect": [1] * 10}}})
            writer.log_samples(step, [{"prompt": "1+1", "completion": "2;C9"}] * 8)
        writer.update_status(step=step)
    writer.update_status(status="finished", ended_at=time.time(), rows=steps + steps // 5)
""")


def reader(root: str, seconds: float, out: mp.Queue) -> None:
    """Read random runs until time is up; report (reads, errors)."""
    os.environ["CALIBRATION_LAB_RUNS"] = root
    store = RunStore(root)
    reads = errors = 0
    deadline = time.monotonic() + seconds
    rng = random.Random(os.getpid())
    while time.monotonic() < deadline:
        try:
            ids = store.ids()
            if reads % 50 == 0:
                api.list_runs()
            run_id = rng.choice(ids)
            record = api.load_run(run_id) if reads % 2 else store.load(run_id)
            steps = [t["step"] for t in record.train]
            if record.status == "damaged" or steps != list(range(1, len(steps) + 1)):
                errors += 1
        except Exception:
            errors += 1
        reads += 1
    out.put((reads, errors))


def most_at_once(statuses: list[dict]) -> int:
    edges = sorted([(s["running_at"], 1) for s in statuses]
                   + [(s["ended_at"], -1) for s in statuses])
    now = best = 0
    for _, d in edges:
        now += d
        best = max(best, now)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=32)
    parser.add_argument("--cap", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40, help="steps per run")
    parser.add_argument("--readers", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp()) / "runs"
    os.environ["CALIBRATION_LAB_RUNS"] = str(root)
    os.environ[slots.MAX_RUNS_ENV] = str(args.cap)
    store = RunStore(root)
    config = build_config("smoke", steps=args.steps)
    t0 = time.monotonic()
    procs = []
    for _ in range(args.runs):  # queued in this order
        writer = store.create(config)
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, str(writer.path),
                                       str(args.steps)], cwd=ROOT))
        writer.hand_over(procs[-1].pid)
    held = sum(r.status in ACTIVE for r in store.list())
    expected = args.runs / args.cap * args.steps * 0.025 + 2
    out: mp.Queue = mp.Queue()
    readers = [mp.Process(target=reader, args=(str(root), expected, out))
               for _ in range(args.readers)]
    for r in readers:
        r.start()
    codes = [p.wait() for p in procs]
    wall = time.monotonic() - t0
    results = [out.get() for _ in readers]
    for r in readers:
        r.join()
    statuses = [json.loads((root / i / "status.json").read_text()) for i in sorted(
        store.ids(), key=lambda i: json.loads((root / i / "status.json").read_text())
        ["queued_at"])]
    lost = 0
    for run_id in store.ids():
        status = json.loads((root / run_id / "status.json").read_text())
        rows = (root / run_id / "metrics.jsonl").read_text().splitlines()
        lost += status["rows"] - len([json.loads(line) for line in rows])
    starts = [s["running_at"] for s in statuses]
    reads = sum(r for r, _ in results)
    print(f"runs held at once: {held} (cap {args.cap}); all finished: "
          f"{all(c == 0 for c in codes) and all(s['status'] == 'finished' for s in statuses)}"
          f" in {wall:.1f} s")
    ends = sorted(s["ended_at"] for s in statuses)
    gaps = sorted(b - a for a, b in zip(ends, starts[args.cap:], strict=False))
    print(f"most training at once: {most_at_once(statuses)}; started in queue order: "
          f"{starts == sorted(starts)}; a freed slot was taken after {gaps[len(gaps) // 2]:.2f}"
          f" s (median), {gaps[-1]:.2f} s (slowest)")
    print(f"reads: {reads} by {args.readers} readers in {expected:.1f} s = "
          f"{reads / expected:.0f}/s sustained; read errors: {sum(e for _, e in results)}")
    print(f"rows written: {sum(s['rows'] for s in statuses)}; rows lost: {lost}")


if __name__ == "__main__":
    main()
