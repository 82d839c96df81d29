"""The launching machine's writer of remote runs (RunSink), called directly, without Ray: an
attempt's rows land in the run folder, a newer attempt makes the older one's rows stale and
tells it to stop, a checkpoint arrives before the status naming it, and a stop asked while
the run waits for CPUs ends it at once."""

from __future__ import annotations

import json
import os
from pathlib import Path

from core.config import build_config
from core.runtime.ray_backend import RunSink
from core.runtime.runner import stop
from core.runtime.store import REMOTE_STOP_FILE, RunStore, read_jsonl


def _run(tmp_path: Path) -> tuple[RunSink, RunStore, str]:
    store = RunStore(tmp_path)
    run_id = store.create(build_config("smoke")).run_id
    sink = RunSink(str(tmp_path))
    sink.open(run_id)
    return sink, store, run_id


def test_rows_of_a_stale_attempt_are_dropped_and_it_is_told_to_stop(tmp_path: Path) -> None:
    sink, store, run_id = _run(tmp_path)
    record = store.load(run_id, metrics=False)
    assert record.backend == "ray" and record.pid == os.getpid()  # the sink owns it now
    first, config, checkpoint = sink.begin(run_id, "node-a")
    assert (first, checkpoint) == (1, None) and config["recipe"] == "binary"
    sink.append(run_id, first, "metrics.jsonl", [{"step": 1, "train/loss": 0.5}])
    sink.status(run_id, first, {"checkpoint_step": 1, "step": 1}, checkpoint=b"weights@1")
    sink.append(run_id, first, "metrics.jsonl", [{"step": 2, "train/loss": 0.4}])
    # the node dies; a second attempt starts from the checkpoint and truncates after it
    second, _, checkpoint = sink.begin(run_id, "node-b")
    assert (second, checkpoint) == (2, b"weights@1")
    sink.truncate(run_id, second, 1)
    sink.append(run_id, first, "metrics.jsonl", [{"step": 2, "train/loss": 9.9}])  # late
    assert sink.should_stop(run_id, first) and not sink.should_stop(run_id, second)
    sink.append(run_id, second, "metrics.jsonl", [{"step": 2, "train/loss": 0.4}])
    sink.end(run_id, second, {"status": "finished"})
    rows = read_jsonl(store.path(run_id) / "metrics.jsonl")
    assert rows == [{"step": 1, "train/loss": 0.5}, {"step": 2, "train/loss": 0.4}]
    status = json.loads((store.path(run_id) / "status.json").read_text())
    assert status["status"] == "finished" and status["node"] == "node-b"
    assert status["attempt"] == 2 and status["checkpoint_step"] == 1
    # Ray reporting the first attempt gone afterwards changes nothing
    sink.end(run_id, None, {"status": "failed", "error": "late news"})
    assert store.load(run_id, metrics=False).status == "finished"


def test_a_stop_reaches_a_running_remote_run_through_its_folder(tmp_path: Path) -> None:
    sink, store, run_id = _run(tmp_path)
    attempt, _, _ = sink.begin(run_id, "node-a")
    assert not sink.should_stop(run_id, attempt)
    assert stop(run_id, tmp_path)  # no local process to signal: a request file
    assert (store.path(run_id) / REMOTE_STOP_FILE).exists()
    assert sink.should_stop(run_id, attempt)
    sink.end(run_id, attempt, {"status": "stopped"})
    assert store.load(run_id, metrics=False).status == "stopped"
    assert not (store.path(run_id) / REMOTE_STOP_FILE).exists()
    assert not stop(run_id, tmp_path)  # over: nothing to stop


def test_a_run_stopped_while_it_waits_for_cpus_ends_at_once(tmp_path: Path) -> None:
    sink, store, run_id = _run(tmp_path)
    assert not sink.stop_waiting(run_id)  # not asked
    assert store.queue() == []  # a remote run waits in Ray's queue, not this machine's
    stop(run_id, tmp_path)
    assert sink.stop_waiting(run_id)
    assert store.load(run_id, metrics=False).status == "stopped"
    assert sink.begin(run_id, "node-a") is None  # Ray starting it later finds it ended


def test_a_failed_remote_run_continues_here_from_the_checkpoint_it_shipped(
        tmp_path: Path) -> None:
    from core.runtime.runner import reopen

    sink, store, run_id = _run(tmp_path)
    attempt, _, _ = sink.begin(run_id, "node-a")
    sink.status(run_id, attempt, {"checkpoint_step": 2, "step": 3}, checkpoint=b"weights@2")
    sink.end(run_id, None, {"status": "failed", "error": "node lost"})
    writer, _ = reopen(run_id, tmp_path)
    record = store.load(run_id, metrics=False)
    assert record.backend is None and record.status == "queued"  # a local run from now on
    assert (writer.path / "checkpoint.pt").read_bytes() == b"weights@2"
    assert store.queue() == [run_id]
