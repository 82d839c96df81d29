"""How many remote rows per second the launching machine's store takes (the Ray backend's
ceiling: one RunSink actor writes every remote run's rows, each call fsynced).

    python -m benchmarks.sink_throughput [--calls 2000]

1. RunSink.append called directly (the disk's fsync cost alone), one metrics row per call.
2. The same calls through a RunSink actor on a local Ray, fire-and-forget from the driver
   then one flush, as remote runs make them (the RPC's cost added).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from core.config import build_config
from core.runtime.ray_backend import RunSink
from core.runtime.store import RunStore

ROW = {"step": 1, "train/loss": 0.5, "train/reward/mean": 0.25, "train/accuracy": 0.3,
       "train/seconds": 0.3}


def _fresh(root: str) -> str:
    return RunStore(root).create(build_config("smoke")).run_id


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=2000)
    args = p.parse_args()
    out = {"load_at_start": round(os.getloadavg()[0], 1)}
    with tempfile.TemporaryDirectory() as root:
        run_id = _fresh(root)
        sink = RunSink(root)
        sink.open(run_id)
        attempt, _, _ = sink.begin(run_id, "here")
        t0 = time.perf_counter()
        for _ in range(args.calls):
            sink.append(run_id, attempt, "metrics.jsonl", [ROW])
        out["direct_calls_per_s"] = round(args.calls / (time.perf_counter() - t0))

        import ray

        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        try:
            actor = ray.remote(num_cpus=0)(RunSink).remote(root)
            run_id = _fresh(root)
            ray.get(actor.open.remote(run_id))
            attempt, _, _ = ray.get(actor.begin.remote(run_id, "here"))
            t0 = time.perf_counter()
            for _ in range(args.calls):
                actor.append.remote(run_id, attempt, "metrics.jsonl", [ROW])
            ray.get(actor.flush.remote())
            out["ray_actor_calls_per_s"] = round(args.calls / (time.perf_counter() - t0))
        finally:
            ray.shutdown()
    out["load_at_end"] = round(os.getloadavg()[0], 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
