"""Checkpoints and resumes in this process (fast): a continued run follows the same
trajectory as an uninterrupted one, stops save where they stopped, and broken or unsuitable
runs are refused in words. The background-process versions are in test_faults.py."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import torch

from core import cli
from core.config import build_config
from core.engine.checkpoint import CHECKPOINT_FILE, CheckpointError
from core.engine.train import train
from core.runtime.runner import ResumeError, StopGuard, exit_reason, reopen
from core.runtime.store import RunStore, RunWriter

SMALL = {"threads": 1, "eval_prompts": 8, "eval_samples": 2, "prompts_per_step": 2,
         "group_size": 4, "steps": 5, "eval_every": 2, "checkpoint_every": 2}


class Crash(RuntimeError):
    pass


def crash_at(step: int):
    """A should_stop that raises at the start of `step`, like a process dying there."""
    calls = []

    def check() -> bool:
        calls.append(1)
        if len(calls) == step:
            raise Crash(f"died at step {step}")
        return False
    return check


def stop_at(step: int):
    calls = []
    return lambda: bool(calls.append(1)) or len(calls) == step


def without_timing(rows: list[dict]) -> list[dict]:
    """The rows less their clock readings (seconds, cpu_seconds), which no seed fixes."""
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rows]


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs")


def test_a_resumed_run_follows_the_uninterrupted_trajectory(store):
    config = build_config("smoke", **SMALL)
    reference = store.create(config)
    assert train(config, reference) == "finished"

    interrupted = store.create(config)
    with pytest.raises(Crash):
        train(config, interrupted, should_stop=crash_at(4))  # steps 1-3 done, checkpoint at 2
    logged = [json.loads(line)["step"] for line in
              (interrupted.path / "metrics.jsonl").read_text().splitlines()]
    assert logged == [0, 1, 2, 2, 3]  # step 3 was logged after the checkpoint
    saved = torch.load(interrupted.path / CHECKPOINT_FILE, weights_only=True)
    assert saved["step"] == 2
    assert {"lora", "optimizer", "numpy_rng", "rng"} <= set(saved)

    assert train(config, RunWriter(interrupted.path)) == "finished"
    a, b = store.load(reference.run_id), store.load(interrupted.run_id)
    assert [t["step"] for t in b.train] == [1, 2, 3, 4, 5]  # step 3 redone once, not twice
    assert [e["step"] for e in b.evals] == [0, 2, 4, 5]
    # The same prompts, samples, rewards, losses and evaluations: the same trajectory.
    assert without_timing(b.train) == without_timing(a.train)
    assert without_timing(b.evals) == without_timing(a.evals)


def test_a_stop_saves_where_it_stopped_and_the_cli_continues_it(store, capsys):
    config = build_config("smoke", **SMALL)
    writer = store.create(config)
    assert train(config, writer, should_stop=stop_at(4)) == "stopped"  # after step 3
    writer.update_status(status="stopped")
    assert store.load(writer.run_id).checkpoint_step == 3  # not 2: nothing is lost

    assert cli.main(["resume", writer.run_id, "--runs-dir", str(store.root)]) == 0
    assert capsys.readouterr().out.strip() == writer.run_id
    record = store.load(writer.run_id)
    assert (record.status, record.step) == ("finished", 5)
    assert [t["step"] for t in record.train] == [1, 2, 3, 4, 5]
    assert json.loads((writer.path / "status.json").read_text())["resumes"] == 1


def test_with_checkpoints_off_a_continued_run_starts_again_cleanly(store):
    config = build_config("smoke", **{**SMALL, "checkpoint_every": 0})
    writer = store.create(config)
    with pytest.raises(Crash):
        train(config, writer, should_stop=crash_at(3))
    assert not (writer.path / CHECKPOINT_FILE).exists()
    assert train(config, RunWriter(writer.path)) == "finished"
    record = store.load(writer.run_id)
    assert [t["step"] for t in record.train] == [1, 2, 3, 4, 5]
    assert [e["step"] for e in record.evals] == [0, 2, 4, 5]


def test_a_corrupt_checkpoint_is_refused_in_words(store):
    config = build_config("smoke", **SMALL)
    writer = store.create(config)
    (writer.path / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="delete it to start this run again"):
        train(config, writer)


@pytest.mark.parametrize(("status", "word"), [("finished", "finished"), ("queued", "queued"),
                                              ("running", "running")])
def test_only_stopped_or_failed_runs_continue(store, status, word):
    writer = store.create(build_config("smoke"))
    writer.update_status(status=status)  # our own pid: alive
    with pytest.raises(ResumeError, match=f"is {word}: only a stopped or failed run"):
        reopen(writer.run_id, store.root)


def test_a_damaged_run_cannot_continue(store):
    writer = store.create(build_config("smoke"))
    (writer.path / "config.json").write_text("{")
    with pytest.raises(ResumeError, match="damaged"):
        reopen(writer.run_id, store.root)


def test_a_stop_the_loop_does_not_honour_in_time_is_forced(store):
    writer = store.create(build_config("smoke"))
    exits: list[int] = []
    guard = StopGuard(writer, grace=0.05, exit_now=exits.append)
    guard.request()
    deadline = time.monotonic() + 5
    while not exits and time.monotonic() < deadline:
        time.sleep(0.01)
    assert exits == [0]
    status = json.loads((writer.path / "status.json").read_text())
    assert (status["status"], status["stop"]) == ("stopped", "forced after the grace period")
    assert not guard.end(status="finished")  # the forced end stands


def test_a_stop_honoured_in_time_is_not_forced(store):
    writer = store.create(build_config("smoke"))
    exits: list[int] = []
    guard = StopGuard(writer, grace=0.2, exit_now=exits.append)
    guard.request()
    assert guard.end(status="stopped")
    guard._timer.join(timeout=5)  # the grace timer has fired (and found the run ended)
    assert not guard._timer.is_alive() and exits == []
    guard.uninstall()


def test_signals_reach_the_guard_only_while_installed(store):
    writer = store.create(build_config("smoke"))
    guard = StopGuard(writer, grace=60)
    guard.install()
    try:
        signal.raise_signal(signal.SIGTERM)
        assert guard.requested.is_set()
    finally:
        guard.uninstall()
    assert signal.getsignal(signal.SIGTERM) != guard._on_signal


def test_exit_reasons_say_what_happened():
    assert "SIGKILL" in exit_reason(-9) and "OOM" in exit_reason(-9)
    assert "SIGSEGV" in exit_reason(-11)
    assert "exited with code 1" in exit_reason(1)
    assert all(r.startswith("the training process ended without reporting")
               for r in (exit_reason(-9), exit_reason(3)))
