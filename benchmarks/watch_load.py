"""The Streamlit server's CPU while a room watches live runs: 1, 10, 30 sessions.

Run by hand: `.venv/bin/python -m benchmarks.watch_load [--sessions 1,10,30] [--app DIR]`.

It starts the real app (`streamlit run DIR/app.py`, file watcher off, as `make workshop`
does) on a fresh run store, with live runs that grow like training runs: a replay process
per run, through the real writer (`RunWriter`: claim, one metrics row per step, an
evaluation with kept completions every EVAL_EVERY steps, status.json per step), whose
rows are a recorded run's, one step every STEP_SECONDS. Then N protocol-level sessions:
each speaks Streamlit's own websocket protocol (the BackMsg/ForwardMsg protobufs the
browser sends and receives), opens the Run page of one live run (sessions alternate
between the runs) and, like the browser, re-runs the page's live fragment each time the
server's auto-rerun interval elapses (a tick is skipped while the previous one is still
running), reporting the large messages it already holds as the browser does. No browser:
thirty chromium pages would cost the 2-core host more than the server under test.

It reports the server process's CPU seconds (user + system, from /proc via psutil, so
other load on a shared machine does not count) per 10 s of wall time, measured over
WINDOW seconds after a warm-up, and the fragment updates each session received per 10 s,
to show the sessions were really served. `--app DIR` points at another checkout (e.g. an
older commit from `git archive`) to measure before and after on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "tests" / "fixtures" / "recorded_runs" / "20250101-000001-rlcr-s0-f1x7"
STEP_SECONDS = 1.0  # about a quick-preset step of the embedded model on 2 cores
EVAL_EVERY = 10
HISTORY_STEPS = 60  # steps a run already has when the sessions arrive (7 evaluations)
WARMUP, WINDOW = 15.0, 30.0
START_DEADLINE = 120.0

REPLAY = """
import json, sys, time
from pathlib import Path
from core.config import RunConfig
from core.runtime.store import RunStore
recorded, root, steps, eval_every, history, pause = sys.argv[1:7]
recorded, steps, eval_every = Path(recorded), int(steps), int(eval_every)
rows = [json.loads(line) for line in (recorded / "metrics.jsonl").read_text().splitlines()]
train = [r for r in rows if any(k.startswith("train/") for k in r)]
evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
samples = [json.loads(s) for s in (recorded / "samples.jsonl").read_text().splitlines()]
config = json.loads((recorded / "config.json").read_text())
config.update(steps=steps, eval_every=eval_every)
writer = RunStore(root).create(RunConfig.from_dict(config))
writer.claim()
writer.update_status(status="running", running_at=time.time())
print(writer.run_id, flush=True)
def body(row):
    return {k: v for k, v in row.items() if k not in ("step", "time")}
for step in range(steps + 1):
    if step:
        writer.log(step, body(train[step % len(train)]))
    if step % eval_every == 0:
        writer.log(step, body(evals[(step // eval_every) % len(evals)]))
        writer.log_samples(step, [dict(s, step=step) for s in samples[:16]])
    writer.update_status(step=step)
    if step >= int(history):
        time.sleep(float(pause))
writer.update_status(status="finished", ended_at=time.time())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(app: Path, root: Path, port: int, options: list[str]) -> subprocess.Popen:
    env = {**os.environ, "CALIBRATION_LAB_RUNS": str(root), "PYTHONPATH": str(app)}
    env.pop("CALIBRATION_LAB_WORKSHOP", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(app / "app.py"), "--server.port",
         str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
         "--server.runOnSave", "false", *options], cwd=app, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + START_DEADLINE
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the app did not start") from None
            time.sleep(0.5)


def start_runs(root: Path, n: int, steps: int, pause: float
               ) -> tuple[list[subprocess.Popen], list[str]]:
    procs, ids = [], []
    for _ in range(n):
        p = subprocess.Popen([sys.executable, "-c", REPLAY, str(RECORDED), str(root),
                              str(steps), str(EVAL_EVERY), str(HISTORY_STEPS),
                              str(pause)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        ids.append(p.stdout.readline().strip())
        procs.append(p)
    return procs, ids


@dataclass
class Session:
    run_id: str
    updates: int = 0  # fragment reruns that finished
    charts: int = 0  # plotly charts received in them
    errors: list[str] = field(default_factory=list)


def rerun_msg(query: str, cached: set[str], fragment: str = "") -> bytes:
    msg = BackMsg()
    cs = msg.rerun_script
    cs.query_string, cs.page_name = query, "run"
    if fragment:
        cs.fragment_id, cs.is_auto_rerun = fragment, True
    cs.cached_message_hashes.extend(sorted(cached))
    return msg.SerializeToString()


async def watch(port: int, s: Session, until: float, counting: list[bool]) -> None:
    query = f"run={s.run_id}"
    cached: set[str] = set()
    fragment, interval, running = "", 0.0, True
    async with websockets.connect(f"ws://127.0.0.1:{port}/_stcore/stream",
                                  subprotocols=["streamlit"], max_size=None) as ws:
        await ws.send(rerun_msg(query, cached))
        next_tick = float("inf")
        while time.monotonic() < until:
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=max(0.05, min(
                    next_tick, until) - time.monotonic()))
            except TimeoutError:
                if time.monotonic() >= next_tick:
                    if not running and fragment:
                        running = True
                        await ws.send(rerun_msg(query, cached, fragment))
                    next_tick += interval
                continue
            msg = ForwardMsg()
            msg.ParseFromString(raw)
            kind = msg.WhichOneof("type")
            if msg.metadata.cacheable and msg.hash:
                cached.add(msg.hash)
            if kind == "auto_rerun":
                fragment, interval = msg.auto_rerun.fragment_id, msg.auto_rerun.interval
                next_tick = time.monotonic() + interval
            elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                if msg.delta.new_element.WhichOneof("type") == "plotly_chart" and counting[0]:
                    s.charts += 1
                if msg.delta.new_element.WhichOneof("type") == "exception":
                    s.errors.append(msg.delta.new_element.exception.message)
            elif kind == "script_finished":
                running = False
                if counting[0]:
                    s.updates += 1


async def measure(port: int, server: psutil.Process, ids: list[str], n: int,
                  window: float) -> dict:
    sessions = [Session(ids[i % len(ids)]) for i in range(n)]
    counting = [False]
    until = time.monotonic() + WARMUP + window
    tasks = [asyncio.create_task(watch(port, s, until, counting)) for s in sessions]
    await asyncio.sleep(WARMUP)
    counting[0] = True
    cpu0, wall0 = server.cpu_times(), time.monotonic()
    await asyncio.sleep(window)
    cpu1, wall1 = server.cpu_times(), time.monotonic()
    counting[0] = False
    await asyncio.gather(*tasks)
    per10 = 10.0 / (wall1 - wall0)
    cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) * per10
    return {"sessions": n, "server_cpu_s_per_10s": round(cpu, 2),
            "updates_per_session_per_10s": round(sum(s.updates for s in sessions)
                                                 / n * per10, 2),
            "charts_per_update": round(sum(s.charts for s in sessions)
                                       / max(1, sum(s.updates for s in sessions)), 2),
            "errors": sorted({e for s in sessions for e in s.errors})[:3],
            "load_avg_1min": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", default="1,10,30")
    parser.add_argument("--runs", type=int, default=2, help="live runs watched")
    parser.add_argument("--app", type=Path, default=ROOT, help="the checkout to serve")
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--window", type=float, default=WINDOW, help="seconds measured")
    parser.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                        help="a Streamlit option for the server, e.g. runner.postScriptGC=true")
    parser.add_argument("--step-seconds", type=float, default=STEP_SECONDS,
                        help="a live run's seconds per step (large: files that do not "
                             "change, to see a session's own cost)")
    args = parser.parse_args()
    counts = [int(n) for n in args.sessions.split(",")]
    steps = HISTORY_STEPS + int((WARMUP + args.window + 30) * len(counts)
                                / args.step_seconds) + 60
    root = Path(tempfile.mkdtemp(prefix="watch-load-"))
    port = free_port()
    runs, ids = start_runs(root, args.runs, steps, args.step_seconds)
    options = [part for o in args.set for part in (f"--{o.split('=', 1)[0]}",
                                                   o.split("=", 1)[1])]
    app = start_app(args.app.resolve(), root, port, options)
    try:
        server = psutil.Process(app.pid)
        for n in counts:
            row = asyncio.run(measure(port, server, ids, n, args.window))
            print(json.dumps({"app": args.label, **row}), flush=True)
    finally:
        for p in [app, *runs]:
            p.terminate()
            p.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
