"""Start-up of a background run: a fresh process against one forked from a warm server.

Run by hand: `.venv/bin/python benchmarks/warm_start.py --code OLD_TREE --code NEW_TREE
[--repeats N] [--shape startup|quick]` (a tree: a checkout's root, e.g. from `git archive`).

Each repeat launches one run from each tree in turn (alternating, so a shared machine's load
falls on both alike), each from its own short-lived process through `runner.launch`, the
path the app, the experiments and sweeps take, in a fresh store:

- startup: the quick preset cut to 1 step, no evaluation, 1 thread. Recorded: how long
  `launch` took, the wall from `launch` to the first metrics row, and the CPU seconds (user +
  system, from /proc) the run's process had used when that row appeared;
- quick: the whole quick preset (100 steps, 6 evaluations, default threads): the wall from
  `launch` to the first metrics row and to the run's end;
- experiment: the wall of the whole `python -m core experiment classic --seeds 0 --steps 1
  --no-eval` command (the classic experiment's 6 arms, 1 step each, through the queue);
- queued: the memory (Rss, Pss, own pages) of 3 runs waiting in line while the benchmark
  holds the only slot, 20 s after their launch.

A tree with warm starts keeps one server (in a private folder, ended at the end) across the
repeats; its first launch, which starts the server, is printed apart and left out of the
medians. OMP_WAIT_POLICY is fixed to PASSIVE for both trees: trees from before 2026-11-30
chose it from the load, which other users move, and with it the server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {"startup": {"steps": 1, "no_eval": True, "threads": 1}, "quick": {}, "queued": {},
          "experiment": {}}
DEADLINE = 900.0


def cpu_seconds(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker(code: Path, shape: str) -> dict[str, float | None]:
    """Launch one run from the tree `code`; its start-up figures."""
    sys.path.insert(0, str(code))
    from core.config import build_config
    from core.runtime import runner
    from core.runtime.store import ACTIVE, RunStore

    assert Path(runner.__file__).is_relative_to(code), runner.__file__
    store = RunStore(tempfile.mkdtemp(prefix="warm-bench-"))
    config = build_config("quick", seed=0, **SHAPES[shape])
    t0 = time.perf_counter()
    run_id = runner.launch(config, store.root)
    launched = time.perf_counter() - t0
    path = store.path(run_id)
    pid = json.loads((path / "status.json").read_text())["pid"]
    first = cpu = None
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if first is None and (path / "metrics.jsonl").exists() \
                and (path / "metrics.jsonl").stat().st_size:
            cpu, first = cpu_seconds(pid), time.perf_counter() - t0
        record = store.load(run_id, metrics=False)
        if record.status not in ACTIVE:
            assert record.status == "finished", (record.status, record.error)
            break
        time.sleep(0.01)
    row = {"launch_s": launched, "first_row_s": first, "cpu_at_first_row_s": cpu,
           "end_s": time.perf_counter() - t0,
           "warm": "no warm start" not in (path / "log.txt").read_text()
           and (code / "core/runtime/warm.py").exists()}
    shutil.rmtree(store.root)
    return row


def memory_kib(pid: int) -> dict[str, int]:
    """Rss, Pss and the process's own pages (Private_Clean + Private_Dirty), in KiB."""
    rows = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        rows[name] = int(value.split()[0])
    return {"rss": rows["Rss"], "pss": rows["Pss"],
            "own": rows["Private_Clean"] + rows["Private_Dirty"]}


def queued_memory(code: Path, shape: str, runs: int = 3, settle: float = 20.0) -> dict[str, object]:
    """The memory of `runs` runs waiting in line (this process holds the only slot)."""
    os.environ["CALIBRATION_LAB_MAX_RUNS"] = "1"
    sys.path.insert(0, str(code))
    from core.config import build_config
    from core.runtime import runner, slots
    from core.runtime.store import ACTIVE, RunStore

    store = RunStore(tempfile.mkdtemp(prefix="warm-bench-"))
    slot = slots.try_slot(store.root, 1)
    ids = [runner.launch(build_config("quick", seed=s, **SHAPES["startup"]), store.root)
           for s in range(runs)]
    time.sleep(settle)  # each waiting process reaches its poll loop
    pids = [store.load(i, metrics=False).pid for i in ids]
    memory = [memory_kib(pid) for pid in pids]
    for run_id in ids:
        runner.stop(run_id, store.root)
    deadline = time.monotonic() + 60
    while any(store.load(i, metrics=False).status in ACTIVE for i in ids):
        assert time.monotonic() < deadline, "the waiting runs did not stop"
        time.sleep(0.1)
    slot.release()
    shutil.rmtree(store.root)
    return {"waiting_runs": memory}


def experiment(code: Path, shape: str) -> dict[str, float]:
    """The wall of a whole `python -m core experiment` command from the tree `code`."""
    folder = Path(tempfile.mkdtemp(prefix="warm-bench-"))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "core", "experiment", "classic", "--seeds", "0",
                    "--steps", "1", "--no-eval", "--runs-dir", str(folder / "runs"),
                    "--out", str(folder / "out")], cwd=code, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    row = {"experiment_s": time.perf_counter() - t0}
    shutil.rmtree(folder)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--code", type=Path, action="append", default=[])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--shape", choices=SHAPES, default="startup")
    ap.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        measure = {"queued": queued_memory, "experiment": experiment}.get(args.shape, worker)
        print(json.dumps(measure(args.worker.resolve(), args.shape)))
        return
    servers = Path(tempfile.mkdtemp(prefix="wb-"))
    env = {**os.environ, "CALIBRATION_LAB_WARM_DIR": str(servers), "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("CALIBRATION_LAB_WARM", None)
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start")
    results: dict[Path, list[dict]] = {c: [] for c in args.code}
    for i in range(args.repeats + 1):  # repeat 0 starts the warm server: reported apart
        for code in args.code:
            out = subprocess.run([sys.executable, __file__, "--worker", str(code.resolve()),
                                  "--shape", args.shape], env=env, check=True,
                                 capture_output=True, text=True, cwd=code).stdout
            row = json.loads(out.strip().splitlines()[-1])
            print(f"repeat {i} {code}: " + ", ".join(
                f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())
                + f" (load {os.getloadavg()[0]:.2f})", flush=True)
            if i:
                results[code].append(row)
    for code, rows in results.items():
        if args.shape == "queued":
            continue
        medians = {k: statistics.median(r[k] for r in rows) for k in rows[0]
                   if isinstance(rows[0][k], float)}
        print(f"median over {len(rows)} of {code}: "
              + ", ".join(f"{k} {v:.2f}" for k, v in medians.items()))
    for log in servers.glob("*.log"):
        print(f"server log: {log.read_text().strip()}")
    for lock in servers.glob("*.lock"):  # end the servers this benchmark started
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(lock.read_text()), signal.SIGTERM)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
