"""Shared set-up of the app tests: a private copy of the recorded runs and AppTest runners."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from core import device
from core.device import DeviceInfo
from core.runtime.store import RUNS_DIR_ENV

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
FIXTURE_RUNS = Path(__file__).resolve().parent / "fixtures" / "recorded_runs"
GROUP = "compare-fixture"
IDS = sorted(p.name for p in FIXTURE_RUNS.iterdir() if p.is_dir())  # binary, rlcr, psr, nsr
TIMEOUT = 90  # seconds per script run: a hang, not a slow or busy machine


def use_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copy: bool = True,
              cuda: bool = False) -> Path:
    """A writable copy of the recorded runs (or an empty folder) as the app's store, and a
    fixed detected device instead of the subprocess probe. Each test module wraps this in
    its own `runs_dir` fixture."""
    root = tmp_path / "runs"
    if copy:
        shutil.copytree(FIXTURE_RUNS, root)
    monkeypatch.setenv(RUNS_DIR_ENV, str(root))
    monkeypatch.setattr(device, "_device", DeviceInfo(True, cuda, "Test GPU" if cuda else ""))
    return root


def page(name: str | None = None, query: dict[str, str] | None = None,
         state: dict[str, Any] | None = None) -> AppTest:
    """Run the app, then switch to `pages/<name>.py` (Home when None) and run that page."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    for k, v in (state or {}).items():
        at.session_state[k] = v
    for k, v in (query or {}).items():
        at.query_params[k] = v
    if name:
        at.switch_page(f"pages/{name}.py")
    return at.run()


def ok(at: AppTest) -> AppTest:
    """No exception element anywhere (a raw traceback would show as one)."""
    assert not at.exception, [e.value for e in at.exception]
    return at


def figures(at: AppTest) -> list[dict[str, Any]]:
    """The Plotly figures on the page, as JSON dicts."""
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def figure(at: AppTest, title_part: str) -> dict[str, Any]:
    for f in figures(at):
        if title_part in f["layout"].get("title", {}).get("text", ""):
            return f
    raise AssertionError(f"no chart titled like {title_part!r}: "
                         f"{[f['layout'].get('title') for f in figures(at)]}")


def set_status(root: Path, run_id: str, **fields: Any) -> None:
    path = root / run_id / "status.json"
    status = json.loads(path.read_text())
    status.update(fields)
    path.write_text(json.dumps(status))


def texts(at: AppTest) -> str:
    """Every markdown, caption, info, warning and error text on the page, joined."""
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "title"):
        parts += [str(e.value) for e in at.get(kind)]
    return "\n".join(parts)


def add_posthoc(root: Path, run_id: str, ece: float = 0.0123, raw_ece: float = 0.4567) -> None:
    """Give a recorded run's evaluations the post-hoc recalibration entries runs log now: each
    signal's entry copied as `<signal>_recalibrated` (ECE `ece`, histograms reversed, so the
    view in use can be told apart) and as `<signal>_raw_half` (ECE `raw_ece`)."""
    path = root / run_id / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        extra: dict[str, Any] = {}
        for key, value in row.items():
            parts = key.split("/")
            if len(parts) != 4 or parts[:2] != ["eval", "calibration"]:
                continue
            post, half = (f"eval/calibration/{parts[2]}_{s}/{parts[3]}"
                          for s in ("recalibrated", "raw_half"))
            extra[post] = ece if parts[3] == "ece" else (
                value[::-1] if parts[3].startswith("hist_") else value)
            extra[half] = raw_ece if parts[3] == "ece" else value
        row.update(extra)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
