"""Wall time of `python -m core train --preset quick --recipe binary --seed 0`.

Run by hand: `.venv/bin/python benchmarks/quick_preset.py [--repeats N] [--recipe R]`.
It times the whole command (interpreter start, model load, 100 steps, 6 evaluations) in a
fresh runs folder and prints one line per repeat plus the median.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--recipe", default="binary")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}")
    times = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as runs:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "core", "train", "--preset", "quick",
                            "--recipe", args.recipe, "--seed", "0", "--runs-dir", runs],
                           cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
        print(f"repeat {i}: {times[-1]:.1f} s")
    print(f"quick preset ({args.recipe}, seed 0): median {statistics.median(times):.1f} s wall")


if __name__ == "__main__":
    main()
