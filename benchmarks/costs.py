"""Measures the run-time estimator's costs on this machine and writes `data/costs.json`.

Run by hand: `.venv/bin/python -m benchmarks.costs [--repeats N] [--out PATH]`.

The estimator (`core.runtime.estimates`) models a run as startup + training samples x
train_sample + evaluations x (eval_fixed + evaluation completions x eval_sample). This
script runs whole `python -m core train` commands on the embedded model, single-threaded
(`--threads 1`), in a fresh store each, and takes each command's CPU seconds (user + system,
from the kernel's accounting of the finished child). CPU time, unlike wall time, hardly
changes when other work shares the machine, and a single-threaded run's wall time on an idle
machine is its CPU time. Four shapes, built on the quick preset, separate the costs:

- start-up only: no steps, no evaluation (interpreter, imports, model load, set-up);
- training only: 30 steps, no evaluation, once per recipe of the Home page's quick
  comparison (binary, rlcr, psr, nsr: psr and nsr score fewer rows);
- one large evaluation: 256 prompts x (32 + 1 greedy) completions;
- one small evaluation: 32 prompts x (4 + 1).

A first start-up run is thrown away: it pays for a cold file cache the others do not.

train_sample = (training - start-up) / (40 x prompts x G); the two evaluations less the
start-up give eval_fixed and eval_sample (the line through them). Each cost is written as the
lowest and the highest value over recipes and repeats; the estimate shows that range. The
file also records the 1-minute load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.config import build_config
from core.paths import COSTS_FILE, REPO_ROOT
from core.runtime.estimates import COST_KEYS, eval_samples

RECIPES = ("binary", "rlcr", "psr", "nsr")  # the quick comparison's
TRAIN_STEPS = 40
SHAPES = {  # name -> flags over `--preset quick --threads 1 --seed 0`
    "startup": {"steps": 0, "no_eval": True},
    "train": {"steps": TRAIN_STEPS, "no_eval": True},
    # two evaluation sizes far apart, so the difference stands well above start-up's noise
    "eval_big": {"steps": 0, "eval_prompts": 256, "eval_samples": 32},
    "eval_small": {"steps": 0, "eval_prompts": 32, "eval_samples": 4},
}


def cpu_seconds(values: dict[str, object], recipe: str = "binary") -> float:
    """User + system CPU seconds of one whole `python -m core train` command."""
    flags = []
    for k, v in values.items():
        flag = f"--{k.replace('_', '-')}"
        flags += [flag] if v is True else [flag, str(v)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as runs:
        subprocess.run([sys.executable, "-m", "core", "train", "--preset", "quick", "--threads",
                        "1", "--seed", "0", "--recipe", recipe, *flags, "--runs-dir", runs],
                       cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Three at least: the evaluation's fixed cost is a difference of whole commands, each
    # with a 5 s start-up whose own spread (0.2 s) a single repeat can put it below.
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=COSTS_FILE)
    args = ap.parse_args()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"
    print(f"machine: {machine}")
    load_before = os.getloadavg()[0]
    quick = build_config("quick")
    per_step = quick.prompts_per_step * quick.group_size
    n_big = eval_samples({**quick.to_dict(), **SHAPES["eval_big"]})
    n_small = eval_samples({**quick.to_dict(), **SHAPES["eval_small"]})
    values: dict[str, list[float]] = {k: [] for k in COST_KEYS}
    cpu_seconds(SHAPES["startup"])  # warm-up: imports and weights into the file cache
    for _ in range(args.repeats):
        startup = cpu_seconds(SHAPES["startup"])
        big = cpu_seconds(SHAPES["eval_big"]) - startup
        small = cpu_seconds(SHAPES["eval_small"]) - startup
        slope = max(0.0, (big - small) / (n_big - n_small))
        values["startup"].append(startup)
        values["eval_sample"].append(slope)
        values["eval_fixed"].append(max(0.0, small - slope * n_small))
        print(f"start-up {startup:.2f} s CPU; evaluation {big:.2f} s ({n_big} completions), "
              f"{small:.2f} s ({n_small})")
        for recipe in RECIPES:
            train = cpu_seconds(SHAPES["train"], recipe) - startup
            values["train_sample"].append(max(0.0, train) / (TRAIN_STEPS * per_step))
            print(f"  {recipe}: {TRAIN_STEPS} steps {train:.2f} s CPU")
    assert set(values) == set(COST_KEYS), "the estimator's costs changed: update this script"
    out = {"machine": machine, "measured": time.strftime("%Y-%m-%d"),
           "how": "benchmarks/costs.py: CPU seconds of single-threaded whole commands, "
                  "start-up, training per recipe and two evaluation sizes apart",
           "low": {k: round(min(v), 6) for k, v in values.items()},
           "high": {k: round(max(v), 6) for k, v in values.items()},
           "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)]}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
