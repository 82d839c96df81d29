"""The same sweep on the local backend and on a two-node Ray cluster on this machine.

    python -m benchmarks.sweep_backends [--preset quick] [--seeds 0,1,2] [--steps N]
        [--eval-every E] [--out DIR]

Grid: lr 5e-4, 1e-3, 2e-3 x recipes binary, rlcr x the seeds. Local: the runner's slot queue
(one slot per core, threads = cores ÷ slots). Ray: `ray.cluster_utils.Cluster`, a head and
a worker node with cores ÷ 2 CPUs each, every run one actor with 1 CPU (same concurrency and
threads as local). Prints wall time, the process tree's CPU seconds where countable, the
per-run training seconds, and whether the two backends' end metrics agree run for run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

from core.experiments.sweep import plan_sweep, run_sweep

GRID = {"lr": [5e-4, 1e-3, 2e-3], "recipe": ["binary", "rlcr"]}


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="quick")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", type=Path, default=Path("runs/bench-sweep"))
    p.add_argument("--only", choices=("local", "ray"), default=None)
    p.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    p.add_argument("--eval-every", type=int, default=None)
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    plan = plan_sweep(GRID, seeds, args.preset, {"threads": 1, "steps": args.steps,
                                                 "eval_every": args.eval_every})
    cores = os.cpu_count() or 1
    results = {}
    for backend in ("local", "ray"):
        if args.only and backend != args.only:
            continue
        out = args.out / backend
        load = os.getloadavg()[0]
        cpu0, t0 = _children_cpu(), time.monotonic()
        if backend == "local":
            result = run_sweep(plan, "local", runs_dir=out / "runs", out=out, tag="bench")
        else:
            from ray.cluster_utils import Cluster

            node = {"num_cpus": max(1, cores // 2), "include_dashboard": False}
            cluster = Cluster(initialize_head=True, head_node_args=node)
            cluster.add_node(**node)
            cluster.wait_for_nodes()
            try:
                result = run_sweep(plan, "ray", ray_address=cluster.address,
                                   runs_dir=out / "runs", out=out, tag="bench")
            finally:
                cluster.shutdown()
        wall = time.monotonic() - t0
        runs = result.summary["runs"]
        results[backend] = {
            "wall_s": round(wall, 1), "children_cpu_s": round(_children_cpu() - cpu0, 1),
            "load_at_start": round(load, 1), "load_at_end": round(os.getloadavg()[0], 1),
            "finished": sum(r["status"] == "finished" for r in runs), "runs": len(runs),
            "end": [r["end"] for r in runs], "out": str(out)}
        print(json.dumps({k: v for k, v in results[backend].items() if k != "end"}),
              flush=True)
    if len(results) == 2:
        same = results["local"]["end"] == results["ray"]["end"]
        print(f"end metrics identical run for run: {same}; Ray wall / local wall = "
              f"{results['ray']['wall_s'] / results['local']['wall_s']:.3f}")


if __name__ == "__main__":
    main()
