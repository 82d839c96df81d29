"""Fault tests: a training process killed mid-run, stop and continue, four runs
through a queue of two, 10 000 reads of a live run, a loss that turns NaN, and hostile run
ids and numbers. Real background training processes on the embedded model with tiny
settings; every wait is on a condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core import api, cli
from core.config import build_config
from core.runtime import slots
from core.runtime.runner import execute
from core.runtime.store import ACTIVE, RUNS_DIR_ENV, STATUSES, RunRecord, RunStore

ROOT = Path(__file__).resolve().parent.parent
TINY = {"threads": 1, "eval_prompts": 8, "eval_samples": 2, "prompts_per_step": 2,
        "group_size": 2, "max_new_tokens": 8}
RUN_TIMEOUT = 120.0


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty store with a cap of 2; every process a test leaves alive is killed after."""
    root = tmp_path / "runs"
    monkeypatch.setenv(RUNS_DIR_ENV, str(root))
    monkeypatch.setenv(slots.MAX_RUNS_ENV, "2")
    yield root
    for status_file in root.glob("*/status.json"):
        with contextlib.suppress(OSError, ValueError):
            status = json.loads(status_file.read_text())
            if status.get("status") in ACTIVE and status.get("pid") not in (None, os.getpid()):
                os.kill(status["pid"], signal.SIGKILL)


def wait_for(check: Callable[[], Any], what: str, timeout: float = RUN_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def load(run_id: str) -> RunRecord:
    record = api.load_run(run_id)
    assert record is not None
    return record


def ended(run_id: str) -> RunRecord | None:
    record = load(run_id)
    return record if record.status not in ACTIVE else None


def assert_each_step_once(root: Path, run_id: str, steps: int, eval_steps: list[int]) -> None:
    """The raw file, not just the reader: every train step and evaluation exactly once."""
    rows = [json.loads(line) for line in (root / run_id / "metrics.jsonl").read_text()
            .splitlines()]
    kinds = Counter((r["step"], "eval" if "eval/accuracy" in r else "train") for r in rows)
    assert all(n == 1 for n in kinds.values()), [k for k, n in kinds.items() if n > 1]
    assert sorted(s for s, k in kinds if k == "train") == list(range(1, steps + 1))
    assert sorted(s for s, k in kinds if k == "eval") == eval_steps
    record = load(run_id)
    assert (record.status, record.step) == ("finished", steps)


# --------------------------------------------------------------- crash, stop, continue


def test_sigkill_mid_run_fails_the_run_keeps_its_evaluations_and_it_can_continue(runs):
    config = build_config("smoke", **TINY, steps=10, eval_every=2, checkpoint_every=3)
    run_id = api.launch(config)
    before = wait_for(lambda: (r := load(run_id)).status == "running" and len(r.evals) >= 3
                      and r, "three evaluations")
    os.kill(before.pid, signal.SIGKILL)

    # A reader knows at once (the pid is dead); the launcher's reaper then records why.
    failed = wait_for(lambda: (r := load(run_id)).status == "failed" and "SIGKILL" in r.error
                      and r, "the reaper's reason", timeout=15)
    assert "OOM" in failed.error and failed.error_kind == "ended_unreported"
    assert json.loads((runs / run_id / "status.json").read_text())["status"] == "failed"
    assert failed.evals[:len(before.evals)] == before.evals  # nothing logged was lost
    assert [t["step"] for t in failed.train] == list(range(1, len(failed.train) + 1))
    assert [r.id for r in api.list_runs()] == [run_id]  # the store reads fine
    slot = slots.try_slot(runs, 1)  # the kernel released the dead process's slot
    assert slot is not None
    slot.release()

    # Continued here, through the CLI (the app's background path is the stop test's): one
    # process start-up fewer keeps this file fast.
    assert cli.main(["resume", run_id, "--runs-dir", str(runs)]) == 0
    assert_each_step_once(runs, run_id, 10, list(range(0, 11, 2)))
    assert "continuing from the checkpoint at step" in (runs / run_id / "log.txt").read_text()


def test_stop_then_continue_gives_every_step_once(runs):
    config = build_config("smoke", **TINY, steps=8, eval_every=4, checkpoint_every=3)
    run_id = api.launch(config)
    wait_for(lambda: load(run_id).step >= 5, "step 5")
    asked = time.monotonic()
    assert api.stop(run_id)
    stopped = wait_for(lambda: ended(run_id), "the run to stop", timeout=10)
    took = time.monotonic() - asked
    assert stopped.status == "stopped" and took < 5, (stopped.status, took)
    partial = [t["step"] for t in stopped.train]
    assert partial == list(range(1, stopped.step + 1)) and stopped.step >= 5  # kept
    assert stopped.checkpoint_step == stopped.step  # a stop saves where it stopped

    api.resume(run_id)
    wait_for(lambda: ended(run_id), "the continued run to finish")
    assert_each_step_once(runs, run_id, 8, [0, 4, 8])


# ----------------------------------------------------------------------- the queue


def test_four_runs_with_a_cap_of_two_all_finish_in_queue_order(runs):
    config = build_config("smoke", **TINY, steps=1, no_eval=True)
    ids = [api.launch(config) for _ in range(4)]
    most, saw_line = 0, False
    deadline = time.monotonic() + 4 * RUN_TIMEOUT
    while not all(ended(i) for i in ids):
        assert time.monotonic() < deadline, "timed out waiting for four tiny runs to end"
        state = api.queue_state()
        most = max(most, state.running)
        saw_line |= state.position(ids[3]) is not None
        assert state.running <= 2
        time.sleep(0.1)
    statuses = [json.loads((runs / i / "status.json").read_text()) for i in ids]
    assert [s["status"] for s in statuses] == ["finished"] * 4
    assert saw_line  # the last run waited in the line the app shows
    # From the runs' own clocks: never more than two between taking a slot and ending.
    edges = sorted([(s["running_at"], 1) for s in statuses] + [(s["ended_at"], -1)
                                                                for s in statuses])
    at_once = max(sum(d for _, d in edges[:i + 1]) for i in range(len(edges)))
    assert at_once == 2 and most <= 2
    starts = [s["running_at"] for s in statuses]  # launched in order, so started in order
    assert starts == sorted(starts)


def test_a_run_stopped_while_queued_never_trains(runs, monkeypatch):
    monkeypatch.setenv(slots.MAX_RUNS_ENV, "1")
    blocker = slots.try_slot(runs, 1)  # the only slot is busy
    try:
        run_id = api.launch(build_config("smoke", **TINY))
        wait_for(lambda: (r := load(run_id)).status == "queued" and r.pid != os.getpid(),
                 "the child to claim its queued run", timeout=30)
        assert api.queue_state().position(run_id) == 1
        assert api.stop(run_id)
        record = wait_for(lambda: ended(run_id), "the queued run to stop", timeout=10)
        assert (record.status, record.step, record.train) == ("stopped", 0, [])
    finally:
        blocker.release()


def test_two_sessions_launching_at_once_get_two_whole_runs(runs, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    # folders only, no training
    monkeypatch.setattr("core.runtime.runner._spawn", lambda writer, warm_wait=True: None)
    configs = [build_config("smoke", seed=i % 2) for i in range(16)]
    with ThreadPoolExecutor(2) as pool:  # two browser sessions, clicking at the same moment
        ids = list(pool.map(api.launch, configs))
    assert len(set(ids)) == 16
    for run_id, config in zip(ids, configs, strict=True):
        assert json.loads((runs / run_id / "config.json").read_text()) == config.to_dict()


def test_two_resumes_at_once_continue_the_run_once(runs, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from core.runtime.runner import ResumeError

    monkeypatch.setattr("core.runtime.runner._spawn", lambda writer, warm_wait=True: None)
    writer = RunStore(runs).create(build_config("smoke"))
    writer.update_status(status="stopped")

    def resume() -> str:
        try:
            return api.resume(writer.run_id)
        except ResumeError as e:
            return str(e)

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(lambda _: resume(), range(2)))
    assert outcomes[0] == writer.run_id
    assert "is queued: only a stopped or failed run can continue" in outcomes[1]
    assert json.loads((writer.path / "status.json").read_text())["resumes"] == 1


# ------------------------------------------------------------------ readers and writers

WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from core.runtime.store import RunWriter
    writer, stop = RunWriter(Path(sys.argv[1])), Path(sys.argv[2])
    writer.claim()
    writer.update_status(status="running")
    step = 0
    while not stop.exists() and step < 2000:
        step += 1
        writer.log(step, {"train/loss": 1 / step, "train/reward/mean": step % 7 / 7,
                          "train/accuracy": 0.5, "train/grad_norm": 1.0, "train/seconds": 0.01})
        if step % 10 == 0:
            writer.log(step, {"eval/accuracy": 0.5, "eval/pass_at_k": {"1": 0.5, "2": 0.7},
                              "eval/calibration": {"verbalized": {"ece": 0.1, "brier": 0.2,
                              "hist_correct": [1] * 10, "hist_incorrect": [2] * 10}}})
            writer.log_samples(step, [{"prompt": "1+1", "completion": "2;C9"}] * 4)
        writer.update_status(step=step)
        time.sleep(0.05)  # about a real tiny run's pace, so the file stays a real size
    writer.update_status(status="finished")
    print(step)
""")


def test_10000_reads_of_a_live_run_while_it_writes(runs):
    """Three in four through the app's path (api.load_run: status and config every time,
    metrics re-parsed whenever the file changed), one in four through the uncached store
    reader, which parses the whole file every time."""
    writer = RunStore(runs).create(build_config("smoke"))
    stop_file = runs.parent / "stop-writing"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(writer.path), str(stop_file)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    store = RunStore(runs)
    try:
        wait_for(lambda: load(writer.run_id).status == "running", "the writer", timeout=30)
        first = seen = len(load(writer.run_id).train)
        t0 = time.perf_counter()
        for i in range(10_000):
            record = store.load(writer.run_id) if i % 4 == 0 else api.load_run(writer.run_id)
            assert record is not None and record.status in STATUSES, record
            steps = [t["step"] for t in record.train]
            assert steps == list(range(1, len(steps) + 1))  # no gap, no duplicate, no torn row
            evals = [e["step"] for e in record.evals]  # the newest may be a moment behind
            assert evals == list(range(10, 10 * len(evals) + 1, 10))
            assert len(steps) // 10 - 1 <= len(evals) <= len(steps) // 10
            assert len(steps) >= seen  # never goes backwards
            seen = len(steps)
        rate = 10_000 / (time.perf_counter() - t0)
    finally:
        stop_file.touch()
        written = int(proc.communicate(timeout=30)[0])
    final = store.load(writer.run_id)
    assert written >= seen > first  # the reads watched the run grow
    assert [t["step"] for t in final.train] == list(range(1, written + 1))  # nothing lost
    assert final.status == "finished"
    print(f"\n10 000 reads at {rate:.0f}/s while steps {first}..{written} were written; "
          "lost 0")


# --------------------------------------------------------------------------- NaN loss


def test_a_nan_loss_fails_the_run_and_says_why(runs):
    from ui.common import plain_error

    # An absurd learning rate blows the LoRA weights up within the first step; the second
    # inner epoch then scores the batch with them and the loss is NaN.
    config = build_config("smoke", **TINY, lr=1e30, max_grad_norm=0.0, inner_epochs=2)
    writer = RunStore(runs).create(config)
    assert execute(config, writer) == "failed"
    record = load(writer.run_id)
    assert record.status == "failed"
    assert record.error.startswith("TrainingError: the loss became nan at step 1")
    assert record.error_kind == "unstable"
    assert "lower the learning rate" in record.error
    assert [e["step"] for e in record.evals] == [0]  # what came before is kept
    assert "Traceback" in (writer.path / "log.txt").read_text()  # the full trace, in the log
    words = plain_error(record)
    assert "Training became unstable" in words and "Traceback" not in words


# ----------------------------------------------------------------------- bad input

# The one list of hostile run ids: the store, the app's door and the command line each
# refuse every one of them.
HOSTILE_IDS = ["../x", "..", "/etc/passwd", "a/../../b", "x;rm -rf ~", "$(touch pwned)",
               "a\nb", ".lock", ".slots", ".hidden", "`id`", "run id", "~root", "", "x" * 300]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("bad", HOSTILE_IDS, ids=repr)
def test_hostile_run_ids_are_refused_and_touch_nothing(runs, bad):
    writer = RunStore(runs).create(build_config("smoke"))
    writer.update_status(status="finished")
    before = snapshot(runs.parent)
    store = RunStore(runs)
    for action in (store.path, store.load, store.delete):
        with pytest.raises(KeyError):
            action(bad)
    assert api.load_run(bad) is None
    assert api.stop(bad) is False
    for action in (api.resume, api.delete, api.export_zip,
                   lambda i: api.set_tags(i, ["x"])):
        with pytest.raises(KeyError):
            action(bad)
    assert snapshot(runs.parent) == before  # nothing made, changed or deleted, anywhere
    assert not (ROOT / "pwned").exists()


def test_hostile_tags_stay_text_in_tags_json(runs):
    writer = RunStore(runs).create(build_config("smoke"))
    writer.update_status(status="finished")
    before = snapshot(runs.parent)
    tags = api.set_tags(writer.run_id, ["../../etc/passwd", "a\x00b\nc", "$(rm -rf ~)", "/abs"])
    assert tags == ["../../etc/passwd", "ab c", "$(rm -rf ~)", "/abs"]
    after = snapshot(runs.parent)
    assert set(after) - set(before) == {f"runs/{writer.run_id}/tags.json"}
    assert load(writer.run_id).tags == tags


@pytest.mark.parametrize("command", ["show", "stop", "resume"])
def test_the_cli_refuses_hostile_run_ids_in_one_line(runs, command):
    for bad in ("../x", "/etc/passwd", "$(touch pwned)"):
        proc = subprocess.run([sys.executable, "-m", "core", command, bad, "--runs-dir",
                               str(runs)], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1
    assert not runs.exists() and not (ROOT / "pwned").exists()


NON_FINITE = [("lr", "nan"), ("temperature", "inf"), ("kl_beta", "-inf"),
              ("eval_temperature", "nan"), ("clip_eps", "inf")]


@pytest.mark.parametrize(("name", "value"), NON_FINITE)
def test_nan_and_inf_settings_get_one_clear_message_everywhere(runs, name, value):
    expected = f"{name} must be a finite number, got {float(value)!r}"
    # the app
    config, problems = api.check_config({name: float(value), "group_size": 1})
    assert config is None
    assert problems[0] == expected and len(problems) == 2  # and the other problem, once
    # the command line
    flag = "--" + name.replace("_", "-") + "=" + value  # `=`: argparse reads -inf as a flag
    proc = subprocess.run([sys.executable, "-m", "core", "train", flag, "--runs-dir", str(runs)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr == f"error: {expected}\n"
    if value.startswith("-"):  # without `=`, -inf reads as a flag: a one-line usage error
        proc = subprocess.run([sys.executable, "-m", "core", "train", flag.split("=")[0],
                               value, "--runs-dir", str(runs)], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
        assert proc.stderr.startswith("error: ") and "--help" in proc.stderr
    assert not runs.exists()  # no run folder for a config that cannot work


def test_a_config_json_edited_to_nan_cannot_continue_and_harms_nothing(runs):
    good = RunStore(runs).create(build_config("smoke"))
    good.update_status(status="finished")
    bad = RunStore(runs).create(build_config("smoke"))
    bad.update_status(status="stopped")
    (bad.path / "config.json").write_text((bad.path / "config.json").read_text()
                                          .replace('"lr": 0.001', '"lr": NaN'))
    before = snapshot(good.path)
    with pytest.raises(ValueError, match="lr must be a finite number, got nan"):
        api.resume(bad.run_id)
    assert load(bad.run_id).status == "stopped"
    assert snapshot(good.path) == before and load(good.run_id).status == "finished"
