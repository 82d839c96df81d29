"""Starting runs: checked before any folder exists, then trained here or in the background.

This module does not import torch at module level, so the app can launch runs through it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from core.config import RunConfig
from core.failures import failure_message
from core.model_source import check_hub_reachable, check_model
from core.store import RunStore, RunWriter
from core.tasks import task_for


def preflight(config: RunConfig) -> None:
    """Everything that can be checked without loading weights; raises with a clear message."""
    source = check_model(config.model)
    task_for(config)  # a file or dataset task checks every row here
    check_hub_reachable(source)  # last: the only check that may wait on the network


def execute(config: RunConfig, writer: RunWriter) -> str:
    """Train in this process and record how it ended; SIGTERM/SIGINT stop it cleanly."""
    from core.train import train  # torch loads here, not when the app imports this module

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        status = train(config, writer, should_stop=stop.is_set)
        writer.update_status(status=status, ended_at=time.time())
    except Exception as e:  # the run's record must say why it ended, whatever the cause
        writer.log_text(traceback.format_exc())
        status = "failed"
        writer.update_status(status=status, error=failure_message(e, config),
                             ended_at=time.time())
    return status


def launch(config: RunConfig, runs_dir: Path | str | None = None) -> str:
    """Check, create the run folder, and start training in a detached process."""
    preflight(config)
    store = RunStore(runs_dir)
    writer = store.create(config)
    # The child keeps its own copy of the log's descriptor; the app closes its one at once.
    with open(writer.path / "log.txt", "a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "core", "_execute", str(writer.path)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # closing the app or browser does not stop the run
            cwd=Path(__file__).resolve().parent.parent)
    writer.update_status(pid=proc.pid)
    # Reap the child when it exits, so a dead run is never mistaken for a live zombie.
    threading.Thread(target=proc.wait, daemon=True).start()
    return writer.run_id


def stop(run_id: str, runs_dir: Path | str | None = None) -> bool:
    """Ask a running run to stop after its current step. False if it was not running."""
    record = RunStore(runs_dir).load(run_id, metrics=False)
    if record.status != "running" or not record.pid:
        return False
    os.kill(record.pid, signal.SIGTERM)
    return True
