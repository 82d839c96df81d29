"""A relative runs folder means the launcher's folder, for the training process too."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time

from core import api
from core.config import build_config
from core.paths import REPO_ROOT
from core.runtime.runner import launch
from core.runtime.store import ACTIVE, RUNS_DIR_ENV, RunStore, default_runs_dir

RUN_TIMEOUT_S = 300.0  # one smoke step on a busy 2-core machine


def test_a_relative_store_is_made_absolute_from_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(RUNS_DIR_ENV, "my-runs")
    assert default_runs_dir() == tmp_path / "my-runs"
    assert RunStore().root == tmp_path / "my-runs"
    assert RunStore("other").root == tmp_path / "other"


def test_a_run_launched_from_another_folder_trains_where_the_app_looks(tmp_path, monkeypatch):
    """The app started outside the repository, with a relative CALIBRATION_LAB_RUNS: the
    training process starts in the repository root, yet writes into the app's folder."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert elsewhere != REPO_ROOT
    monkeypatch.setenv(RUNS_DIR_ENV, "runs")
    config = build_config("smoke", steps=1, no_eval=True, checkpoint_every=0, threads=1,
                          prompts_per_step=2, group_size=2)
    run_id = launch(config)
    status_file = elsewhere / "runs" / run_id / "status.json"
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while json.loads(status_file.read_text())["status"] in ACTIVE:
            assert time.monotonic() < deadline, "the run did not end in time"
            time.sleep(0.1)
        assert json.loads(status_file.read_text())["status"] == "finished"
        assert [r.id for r in api.list_runs()] == [run_id]  # the app finds it
        assert not (REPO_ROOT / "runs" / run_id).exists()
    finally:
        status = json.loads(status_file.read_text())
        if status["status"] in ACTIVE and status.get("pid") not in (None, os.getpid()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(status["pid"], signal.SIGKILL)
