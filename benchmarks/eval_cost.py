"""What one evaluation costs as n grows: CPU seconds at n = 16 and n = 64 (the issue's ratio).

Run by hand: `.venv/bin/python -m benchmarks.eval_cost [--ns 16 64] [--repeats 3]
[--profile]`. One evaluation is what `core.engine.train` runs: 128 held-out prompts x n
samples at T = 1 plus one greedy answer each, on the fresh policy of the classic experiment
(embedded model, seed 0, step 0), one torch thread. The figure is this process's CPU time
(the median of the repeats), which hardly moves when other jobs share the machine; wall
time is printed beside it. `--profile` prints cProfile's top functions for the largest n.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from benchmarks.timing import print_profile
from core.config import build_config
from core.data.task_data import task_for
from core.engine.evaluate import evaluate
from core.engine.modeling import load_policy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ns", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cpu: dict[int, float] = {}
    for n in args.ns:
        config = build_config("classic", recipe="binary", seed=0, threads=1, eval_samples=n)
        loaded = load_policy(config)
        task = task_for(config)
        eval_set = task.eval_set(config.eval_prompts)
        runs = []
        for _ in range(args.repeats):
            c, w = time.process_time(), time.perf_counter()
            evaluate(loaded.sampling_model(), loaded.tokenizer, loaded.prompt_format, task,
                     eval_set, config, 0)
            runs.append((time.process_time() - c, time.perf_counter() - w))
        cpu[n] = statistics.median(r[0] for r in runs)
        print(f"n = {n:3d}: {cpu[n]:.3f} CPU s (wall {statistics.median(r[1] for r in runs):.3f}"
              f" s), 1-min load {os.getloadavg()[0]:.1f}")
    low, high = min(cpu), max(cpu)
    print(f"n = {high} / n = {low}: {cpu[high] / cpu[low]:.2f}x")
    if args.profile:
        print_profile(lambda: evaluate(loaded.sampling_model(), loaded.tokenizer,
                                       loaded.prompt_format, task, eval_set, config, 0), 15)


if __name__ == "__main__":
    main()
