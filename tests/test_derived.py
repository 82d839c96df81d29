"""The live pages' shared derivations: built once per change of a run's files, whatever
the number of sessions asking; rebuilt when a file changes or a live run's process dies."""

from __future__ import annotations

import subprocess
import sys

import pytest
from app_helpers import IDS, page, set_status, use_store

from core import charts
from core.runtime.store import process_start
from ui import derived


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    derived.clear()
    return use_store(tmp_path, monkeypatch)


def test_a_value_is_built_once_per_stamp_and_again_after_a_write(runs_dir):
    builds = []

    def build(record):
        builds.append(record.id)
        return charts.reward(record.train)

    for _ in range(30):  # thirty sessions, one refresh each
        record, key = derived.load_run(IDS[1])
        derived.shared((key, "reward"), lambda r=record: build(r))
    assert len(builds) == 1
    with open(runs_dir / IDS[1] / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "train/reward/mean": 0.5}\n')
    record, key2 = derived.load_run(IDS[1])
    assert key2 != key and record.train[-1]["step"] == 5
    derived.shared((key2, "reward"), lambda: build(record))
    assert len(builds) == 2


def test_a_live_run_whose_process_died_is_read_again_though_no_file_changed(runs_dir):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        set_status(runs_dir, IDS[1], status="running", pid=proc.pid,
                   pid_start=process_start(proc.pid))
        assert derived.load_run(IDS[1])[0].status == "running"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    record, _ = derived.load_run(IDS[1])  # killed: it never wrote a word
    assert record.status == "failed" and "ended without reporting" in record.error


def test_the_run_page_draws_the_same_with_a_warm_cache(runs_dir):
    first = page("run", {"run": IDS[1]})
    second = page("run", {"run": IDS[1]})
    assert [c.proto.spec for c in first.get("plotly_chart")] == \
        [c.proto.spec for c in second.get("plotly_chart")]
    assert len(first.get("plotly_chart")) == 6
