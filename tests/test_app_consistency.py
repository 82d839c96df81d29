"""The Run page's consistency panel: it starts a background check through the runner (never
in the page), says while it runs, draws omega and accuracy against temperature side by side
once the result file is there, and says when a check ended without one."""

from __future__ import annotations

import json
import os
import time

import pytest
from app_helpers import IDS, figure, ok, page, texts, use_store

from core.experiments import consistency as cons
from core.runtime import runner
from core.runtime.store import ADAPTER_FILE

RLCR = IDS[1]


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    return use_store(tmp_path, monkeypatch)


def result(run_id: str) -> dict:
    rows = [{"temperature": t, "repeatability": 1.0 if t == 0 else 0.0,
             "omega": 1.0 if t == 0 else 0.95, "alpha": 1.0 if t == 0 else 0.94,
             "accuracy": 0.55 if t == 0 else 0.45, "ece": 0.1} for t in (0.0, 0.5, 1.0)]
    det = {"questions": 32, "differing_questions": {"32": 0, "1": 0}, "identical": True}
    return {"done": True, "plan": {"questions": 32, "repetitions": 20},
            "models": [{"model": "start", "run": run_id, "recipe": "rlcr", "seed": 0,
                        "rows": rows, "determinism": det},
                       {"model": run_id, "run": run_id, "recipe": "rlcr", "seed": 0,
                        "rows": rows, "determinism": det}]}


def test_the_button_starts_a_background_check_through_the_runner(runs_dir, monkeypatch):
    started = []
    monkeypatch.setattr(runner, "start_consistency",
                        lambda targets, out, *a, **k: started.append((targets, out, a)))
    (runs_dir / RLCR / ADAPTER_FILE).write_bytes(b"")  # a finished run keeps its adapter
    at = ok(page("run", {"run": RLCR}))
    assert "Consistency is not reliability" in [s.value for s in at.subheader]
    at.button(key="run_consistency_start").click().run()
    ok(at)
    (targets, out, args), = started
    assert [w for w, _ in targets] == ["start", "end"]
    assert all(p.name == RLCR for _, p in targets) and out == runs_dir / RLCR / cons.RESULT_FILE
    assert args[:3] == (cons.RUN_CHECK_QUESTIONS, cons.RUN_CHECK_REPETITIONS, cons.TEMPERATURES)
    assert "Checking" in texts(at)


def test_a_run_without_its_adapter_is_refused_in_words(runs_dir, monkeypatch):
    monkeypatch.setattr(runner, "start_consistency", lambda *a, **k: pytest.fail("started"))
    at = ok(page("run", {"run": RLCR}))
    at.button(key="run_consistency_start").click().run()
    assert "only a finished run that kept its final adapter" in texts(ok(at))


def test_the_panel_draws_the_result_side_by_side(runs_dir):
    (runs_dir / RLCR / cons.RESULT_FILE).write_text(json.dumps(result(RLCR)))
    (runs_dir / RLCR / cons.LOG_FILE).write_text("")
    at = ok(page("run", {"run": RLCR}))
    omega = figure(at, "McDonald")
    accuracy = figure(at, "Accuracy of the repetitions")
    assert omega["layout"]["xaxis"]["title"]["text"] == "temperature"
    lines = [t for t in omega["data"] if t.get("mode") == "lines+markers"]
    assert {t["name"] for t in lines} == {"start", "rlcr"}
    assert next(t for t in lines if t["name"] == "rlcr")["y"] == [1.0, 0.95, 0.95]
    assert next(t for t in accuracy["data"] if t.get("name") == "rlcr")["y"] == [0.55, 0.45,
                                                                                  0.45]
    assert "32 questions × 20 repetitions" in texts(at) and "identical" in texts(at)


def test_a_check_that_ended_without_a_result_says_so(runs_dir):
    log = runs_dir / RLCR / cons.LOG_FILE
    log.write_text("Traceback ...")
    old = time.time() - 3600
    os.utime(log, (old, old))
    at = ok(page("run", {"run": RLCR}))
    assert "ended without a result" in texts(at) and "Traceback" not in texts(at)
