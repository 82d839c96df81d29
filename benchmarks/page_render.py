"""Server time to render each page of the app on a store of 50 runs.

Run by hand: `.venv/bin/python benchmarks/page_render.py [--runs 50] [--repeats 5]`.
It builds a synthetic store by copying the recorded runs in tests/fixtures/recorded_runs (renamed,
tagged in comparison groups of four), then times Streamlit's AppTest: one warm-up render of
each page (imports, first parse of the run files), then `repeats` renders; it prints the
median and the slowest of those, and the cold first render. The budget is 1 s a page.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "recorded_runs"
PAGES = ("home", "launch", "run", "compare", "runs")
BUDGET_S = 1.0


def make_store(root: Path, n: int) -> None:
    """n runs copied from the fixture, ids by start time, tagged classic-<k> in fours."""
    sources = sorted(p for p in FIXTURE.iterdir() if p.is_dir())
    t0 = time.time() - n * 3600
    for i in range(n):
        src = sources[i % len(sources)]
        recipe = json.loads((src / "config.json").read_text())["recipe"]
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(t0 + i * 3600))
        dest = root / f"{stamp}-{recipe}-s{i // 4}-{i:04x}"
        shutil.copytree(src, dest)
        status = json.loads((dest / "status.json").read_text())
        status.update(started_at=t0 + i * 3600, updated_at=t0 + i * 3600 + 30)
        (dest / "status.json").write_text(json.dumps(status))
        (dest / "tags.json").write_text(json.dumps([f"classic-{i // 4:03d}"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from streamlit.testing.v1 import AppTest

    from core import api

    api._device = api.DeviceInfo(True)  # the real probe is a subprocess; not page time
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}; store of {args.runs} runs; AppTest server time")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        root.mkdir()
        make_store(root, args.runs)
        os.environ["CALIBRATION_LAB_RUNS"] = str(root)
        for name in PAGES:
            at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
            at.run()
            if name != "home":
                at.switch_page(f"pages/{name}.py")
            t = time.perf_counter()
            at.run()
            cold = time.perf_counter() - t
            assert not at.exception, [e.value for e in at.exception]
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                at.run()
                times.append(time.perf_counter() - t)
            worst = max(worst, max(times))
            print(f"{name:<8} median {statistics.median(times):.3f} s  slowest "
                  f"{max(times):.3f} s  (first render {cold:.3f} s)")
    verdict = "within" if worst <= BUDGET_S else "OVER"
    print(f"slowest warm render {worst:.3f} s: {verdict} the {BUDGET_S:.0f} s budget")


if __name__ == "__main__":
    main()
