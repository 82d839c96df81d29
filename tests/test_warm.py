"""Warm starts (core.runtime.warm): runs forked from a server that has the engine imported
finish, stop and crash exactly as fresh processes do, give the same metrics bit for bit,
and when no server can serve, a fresh process runs instead. Real processes on the embedded
model with tiny settings; every wait has a deadline. One server serves the whole module
(its environment is fixed here) and is ended after it."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_faults import TINY, wait_for  # the fault tests' run size and wait

from core.config import build_config
from core.runtime import runner, slots, warm
from core.runtime.store import ACTIVE, RunRecord, RunStore

NO_WARM = "no warm start"  # what a run's log.txt says when it started a fresh process


def end_servers(folder: Path) -> None:
    for pid in warm.server_pids(folder):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not warm.server_pids(folder), "the warm servers to exit", timeout=30)


@pytest.fixture(scope="module")
def server_dir() -> Iterator[Path]:
    """Warm starts on, in a short private folder (a socket's path is limited to 107 bytes),
    with the environment fixed for the module so every run asks the same server."""
    folder = Path(tempfile.mkdtemp(prefix="warm-"))
    fixed = {warm.WARM_ENV: "1", warm.WARM_DIR_ENV: str(folder), slots.MAX_RUNS_ENV: "2"}
    before = {k: os.environ.get(k) for k in fixed}
    os.environ.update(fixed)
    try:
        yield folder
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        end_servers(folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def store(server_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunStore]:
    monkeypatch.setenv(warm.WARM_ENV, "1")  # the shared fixture turned it off per test
    s = RunStore(tmp_path / "runs")
    yield s
    for record in s.list():  # a run a failed test left alive
        if record.status in ACTIVE and record.pid not in (None, os.getpid()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signal.SIGKILL)


def ended(s: RunStore, run_id: str) -> RunRecord | None:
    record = s.load(run_id)
    return record if record.status not in ACTIVE else None


def log(s: RunStore, run_id: str) -> str:
    return (s.path(run_id) / "log.txt").read_text()


def parent_of(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rfind(")") + 2:].split()[1])


def listening(folder: Path) -> bool:
    """A server in `folder` accepts connections (a killed one leaves its socket file)."""
    for address in folder.glob("*.sock"):
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(address))
            return True
    return False


def launch(s: RunStore, **settings: Any) -> str:
    return runner.launch(build_config("smoke", **{**TINY, **settings}), s.root)


def test_a_warm_run_is_the_servers_child_and_finishes(store, server_dir):
    run_id = launch(store, steps=30, eval_every=10)
    running = wait_for(lambda: (r := store.load(run_id)).status == "running" and r,
                       "the run to train")
    servers = warm.server_pids(server_dir)
    assert len(servers) == 1 and parent_of(running.pid) == servers[0]
    done = wait_for(lambda: ended(store, run_id), "the run to finish")
    assert (done.status, done.step) == ("finished", 30)
    assert NO_WARM not in log(store, run_id)


def test_warm_and_fresh_runs_log_the_same_metrics_bit_for_bit(store, monkeypatch):
    def metrics(run_id: str) -> list[dict[str, Any]]:
        wait_for(lambda: ended(store, run_id), "the run to finish")
        rows = [json.loads(line) for line in
                (store.path(run_id) / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "time" and not k.endswith("seconds")}
                for r in rows]

    settings = {"steps": 4, "eval_every": 2, "seed": 3}
    warm_id = launch(store, **settings)
    warm_rows = metrics(warm_id)
    monkeypatch.setenv(warm.WARM_ENV, "0")
    fresh_id = launch(store, **settings)
    fresh_rows = metrics(fresh_id)
    assert NO_WARM not in log(store, warm_id) and store.load(warm_id).status == "finished"
    assert store.load(fresh_id).status == "finished"
    assert len(warm_rows) == 7 and warm_rows == fresh_rows


def test_stop_ends_a_warm_run_after_its_step_and_it_continues_warm(store):
    run_id = launch(store, steps=24, eval_every=12, checkpoint_every=5)
    wait_for(lambda: store.load(run_id).step >= 2, "step 2")
    asked = time.monotonic()
    assert runner.stop(run_id, store.root)
    stopped = wait_for(lambda: ended(store, run_id), "the run to stop", timeout=10)
    assert stopped.status == "stopped" and time.monotonic() - asked < 5
    assert stopped.checkpoint_step == stopped.step >= 2

    runner.resume(run_id, store.root)
    done = wait_for(lambda: ended(store, run_id), "the continued run to finish")
    assert (done.status, done.step) == ("finished", 24)
    assert [t["step"] for t in done.train] == list(range(1, 25))  # each step once
    assert [e["step"] for e in done.evals] == [0, 12, 24]
    assert NO_WARM not in log(store, run_id)


def test_a_sigkilled_warm_run_is_recorded_failed_by_the_server(store):
    run_id = launch(store, steps=200, eval_every=100)
    running = wait_for(lambda: (r := store.load(run_id)).step >= 1 and r, "step 1")
    os.kill(running.pid, signal.SIGKILL)

    def recorded() -> dict[str, Any] | None:  # the file, not the reader's inference
        status = json.loads((store.path(run_id) / "status.json").read_text())
        return status if status["status"] == "failed" else None

    status = wait_for(recorded, "the server's record", timeout=15)
    assert "SIGKILL" in status["error"] and status["error_kind"] == "ended_unreported"


def test_a_dead_server_is_replaced_and_an_unusable_one_means_a_fresh_process(
        store, server_dir, monkeypatch):
    launch(store, steps=1, no_eval=True)  # a server is up (or already was)
    for pid in warm.server_pids(server_dir):
        os.kill(pid, signal.SIGKILL)  # leaves its socket file behind
    wait_for(lambda: not warm.server_pids(server_dir), "the server to die", timeout=10)
    replaced = launch(store, steps=1, no_eval=True)
    assert wait_for(lambda: ended(store, replaced), "the run").status == "finished"
    assert NO_WARM not in log(store, replaced) and len(warm.server_pids(server_dir)) == 1

    other = Path(tempfile.mkdtemp(prefix="warm-open-"))
    try:
        other.chmod(0o755)  # others could connect or plant a socket: never used
        monkeypatch.setenv(warm.WARM_DIR_ENV, str(other))
        fresh = launch(store, steps=1, no_eval=True)
        assert wait_for(lambda: ended(store, fresh), "the run").status == "finished"
        assert f"{NO_WARM} ({other} is not a folder only this user can enter)" in log(store,
                                                                                       fresh)
        assert not list(other.iterdir())
    finally:
        shutil.rmtree(other, ignore_errors=True)


def test_a_launch_that_may_not_wait_starts_fresh_and_leaves_a_server_for_the_next(
        store, server_dir, monkeypatch):
    for pid in warm.server_pids(server_dir):  # no server up: the app's first click
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not warm.server_pids(server_dir), "the server to exit", timeout=30)
    first = runner.launch(build_config("smoke", **{**TINY, "steps": 1, "no_eval": True}),
                          store.root, warm_wait=False)
    assert wait_for(lambda: ended(store, first), "the run").status == "finished"
    # the branch that never waits for the engine's import (waiting would say "did not start")
    assert f"{NO_WARM} (the warm server is starting" in log(store, first)
    wait_for(lambda: listening(server_dir), "the server started for later runs")
    later = runner.launch(build_config("smoke", **{**TINY, "steps": 1, "no_eval": True}),
                          store.root, warm_wait=False)
    assert wait_for(lambda: ended(store, later), "the run").status == "finished"
    assert NO_WARM not in log(store, later)


def test_a_server_refuses_to_fork_once_the_code_changed(tmp_path, monkeypatch):
    code = tmp_path / "core"
    code.mkdir()
    (code / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(warm, "CODE_DIR", code)
    started = warm.code_fingerprint()
    (code / "a.py").write_text("x = 2\n")
    assert warm.code_fingerprint() != started
    assert warm.server_key(started, {"A": "1"}) != warm.server_key(started, {"A": "2"})

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        theirs.sendall(json.dumps({"run_dir": str(tmp_path), "env": {}, "cwd": "/",
                                   "sent": time.monotonic()}).encode() + b"\n")
        forked = {}
        assert warm._serve_one(ours, ours, -1, started, lambda _: 0, forked)  # must exit
        assert not forked
        assert json.loads(warm._read_line(theirs)) == {
            "error": "core/ changed since this server started"}


def test_warm_starts_are_off_in_tests_unless_asked():
    assert os.environ[warm.WARM_ENV] == "0" and not warm.enabled()


def test_a_key_a_server_refused_goes_straight_to_a_fresh_process(tmp_path, monkeypatch):
    folder = tmp_path / "servers"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv(warm.WARM_ENV, "1")
    monkeypatch.setenv(warm.WARM_DIR_ENV, str(folder))
    key = warm.server_key(warm.code_fingerprint(), slots.omp_env())
    (folder / f"{key}.refused").write_text("CUDA was started as the engine loaded\n")
    writer = RunStore(tmp_path / "runs").create(build_config("smoke"))
    assert warm.fork_run(writer.path) is None
    assert f"{NO_WARM} (CUDA was started as the engine loaded)" in log(RunStore(
        tmp_path / "runs"), writer.run_id)
    assert sorted(p.name for p in folder.iterdir()) == [f"{key}.refused"]  # none started


def test_a_server_that_cannot_serve_means_a_fresh_process(tmp_path, monkeypatch):
    """The key's lock is held by a process that does not listen (a wedged server): the server
    started for the run exits at once and the run starts fresh, saying why."""
    folder = Path(tempfile.mkdtemp(prefix="warm-held-"))
    try:
        monkeypatch.setenv(warm.WARM_ENV, "1")
        monkeypatch.setenv(warm.WARM_DIR_ENV, str(folder))
        key = warm.server_key(warm.code_fingerprint(), slots.omp_env())
        held = os.open(folder / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(held, fcntl.LOCK_EX)
        writer = RunStore(tmp_path / "runs").create(build_config("smoke"))
        assert warm.fork_run(writer.path) is None
        os.close(held)
        said = (writer.path / "log.txt").read_text()
        assert f"{NO_WARM} (the warm server exited with code 0" in said
        assert "another server already serves this key" in (folder / f"{key}.log").read_text()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_server_with_no_run_for_its_idle_time_stops_serving(tmp_path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with listener:
        listener.bind(str(tmp_path / "s.sock"))
        listener.listen(1)
        forked: dict[int, Path] = {}
        serving = threading.Thread(target=warm._serve_until_done, daemon=True, args=(
            listener, -1, "code", lambda _: 0, 0.0, forked, lambda *_: None))
        serving.start()
        serving.join(timeout=10)  # no child and an idle time of 0: it returns at once
        assert not serving.is_alive() and not forked
