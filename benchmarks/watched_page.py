"""What an open page costs: the app server's CPU with a page open in a real browser, and a
training run's step time while its Run page is watched and while it is not.

Run by hand: `.venv/bin/python -m benchmarks.watched_page [--watchers auto,none]
[--steps 40] [--measure 10]`. For each file-watcher setting the app is started as `make app`
starts it (from the repository root, so the watcher sees everything under it, `.venv`
included), with `--server.fileWatcherType` set explicitly; `blacklist` means `auto` with the
venv in `server.folderWatchBlacklist`. Debian's chromium, driven by playwright, opens Home
and then the Run page of a finished run; the server's CPU seconds are read from
/proc/PID/stat over `--measure` seconds with each open. Then two runs of `--steps` steps
(quick preset otherwise, no evaluation) train one after the other: the first with no page
open, the second with its Run page open (it refreshes every 2 s while the run is live); the
median of their logged `train/seconds` is printed. On a shared machine, print `uptime`
beside the figures: the step times depend on what else runs, the server's CPU much less.

Streamlit resolves symbolic links before deciding what to watch: a `.venv` that links to a
venv outside the checkout is not watched. Run this from a checkout with a real `.venv`
folder, as a fresh clone made by `make` has (e.g. `cp -al` of a venv into a copy).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "recorded_runs"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
START_TIMEOUT_S = 120
RUN_TIMEOUT_S = 900
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def app_server(watcher: str, runs: Path):
    """The app as `make app` starts it, on a free port, with the given file watcher."""
    port = free_port()
    flags = ["--server.fileWatcherType", "auto" if watcher == "blacklist" else watcher]
    if watcher == "blacklist":
        flags += ["--server.folderWatchBlacklist", json.dumps([str(ROOT / ".venv")])]
    env = dict(os.environ, CALIBRATION_LAB_RUNS=str(runs))
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false", *flags],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with contextlib.suppress(OSError), \
                    urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    break
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"the app did not start ({watcher})")
            time.sleep(0.3)
        yield url, server.pid
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


def open_and_measure(page, url: str, pid: int, seconds: float, settle: float = 3.0) -> float:
    """Open `url`, wait until Streamlit has drawn it, then the server's CPU over `seconds`."""
    page.goto(url)
    page.wait_for_selector("[data-testid=stMain] h1", timeout=START_TIMEOUT_S * 1000)
    page.wait_for_timeout(settle * 1000)
    before = cpu_seconds(pid)
    page.wait_for_timeout(seconds * 1000)
    return cpu_seconds(pid) - before


def train_one(runs: Path, steps: int, seed: int, threads: int, watch=None) -> float:
    """Launch a run through the runner (as the app does) and wait for it; the median of its
    logged step times. `watch(run_id)` is called once the run exists."""
    from core.config import build_config
    from core.runtime.runner import launch

    config = build_config("quick", steps=steps, no_eval=True, checkpoint_every=0, seed=seed,
                          threads=threads)
    run_id = launch(config, runs)
    if watch is not None:
        watch(run_id)
    status = runs / run_id / "status.json"
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while json.loads(status.read_text())["status"] in ("queued", "running"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} did not end in {RUN_TIMEOUT_S} s")
        time.sleep(0.5)
    rows = [json.loads(line) for line in (runs / run_id / "metrics.jsonl").read_text()
            .splitlines() if line.strip()]
    return statistics.median(r["train/seconds"] for r in rows if "train/seconds" in r)


def main() -> None:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--watchers", default="auto,none",
                    help="file-watcher settings to compare: auto, blacklist, none")
    ap.add_argument("--steps", type=int, default=40, help="steps of each timed run (0: none)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads of the timed runs (0: the lab's default share)")
    ap.add_argument("--measure", type=float, default=10.0, help="seconds of CPU measurement")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("needs Debian's chromium (apt-get install -y chromium)")
    print(f"{os.cpu_count()} cores; server CPU over {args.measure:.0f} s with a page open; "
          f"runs of {args.steps} steps (quick preset, no evaluation, threads "
          f"{args.threads or 'default'})", flush=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        for watcher in args.watchers.split(","):
            with tempfile.TemporaryDirectory(prefix="bench-watch-") as tmp:
                runs = Path(tmp) / "runs"
                shutil.copytree(FIXTURE, runs)
                finished = sorted(p.name for p in runs.iterdir())[1]
                with app_server(watcher, runs) as (url, pid):
                    page = browser.new_page(viewport={"width": 1400, "height": 900})
                    home = open_and_measure(page, url, pid, args.measure)
                    run_page = open_and_measure(page, f"{url}/run?run={finished}", pid,
                                                args.measure)
                    print(f"watcher {watcher:<9} server CPU in {args.measure:.0f} s: Home "
                          f"{home:.2f} s, Run page of a finished run {run_page:.2f} s  "
                          f"(load {os.getloadavg()[0]:.1f})", flush=True)
                    if args.steps:
                        page.goto("about:blank")
                        alone = train_one(runs, args.steps, 0, args.threads)
                        load = os.getloadavg()[0]
                        watched = train_one(runs, args.steps, 0, args.threads,
                                            watch=lambda run_id, page=page, url=url:
                                            page.goto(f"{url}/run?run={run_id}"))
                        print(f"watcher {watcher:<9} step time: unwatched {alone:.3f} s, "
                              f"Run page open {watched:.3f} s  (load {load:.1f} -> "
                              f"{os.getloadavg()[0]:.1f})", flush=True)
                    page.close()
        browser.close()


if __name__ == "__main__":
    main()
