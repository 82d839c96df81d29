"""The Sweep page: run count and estimate before launch, one clear line for a bad value, Ray
offered only where it is installed, the launch call, and a recorded sweep's progress grid and
end-metric plot."""

from __future__ import annotations

import json

import pytest
from app_helpers import IDS, figure, ok, page, texts, use_store

from core import api


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    return use_store(tmp_path, monkeypatch)


def _record_sweep(root, tag="sweep-recipe-fixture") -> str:
    """The recorded binary and rlcr runs as a finished 1 x 2 sweep over recipe."""
    config = json.loads((root / IDS[0] / "config.json").read_text())
    folder = root / "sweeps" / tag
    folder.mkdir(parents=True)
    (folder / "plan.json").write_text(json.dumps({
        "grid": {"recipe": ["binary", "rlcr"]}, "seeds": [0],
        "base": {k: v for k, v in config.items() if k not in ("recipe", "seed")},
        "backend": "local"}))
    for run_id in IDS[:2]:  # binary, rlcr
        api.set_tags(run_id, [tag], root)
    return tag


def test_count_and_estimate_before_launch(runs_dir, monkeypatch):
    monkeypatch.setattr(api, "ray_status", lambda: (False, None))
    at = ok(page("sweep"))
    assert "**18 runs** (3 lr × 2 recipe × 3 seeds), about" in texts(at)
    assert at.radio(key="sweep_backend").options == ["this machine (the shared queue)"]


def test_ray_is_offered_when_installed_with_the_address(runs_dir, monkeypatch):
    monkeypatch.setattr(api, "ray_status", lambda: (True, "10.0.0.1:6379"))
    at = ok(page("sweep"))
    assert any("10.0.0.1:6379" in o for o in at.radio(key="sweep_backend").options)


def test_a_bad_value_is_one_clear_line_and_nothing_launches(runs_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(api, "launch_sweep", lambda *a, **k: calls.append(a) or "x")
    at = page("sweep")
    at.text_input(key="sweep_values1").set_value("1e-3, -2").run()
    ok(at)
    assert [e.value for e in at.error] == ["grid lr=-2.0, recipe=binary: lr must be > 0 "
                                          "(try 1e-3), got -2.0"]
    assert "sweep_launch" not in [b.key for b in at.button]
    assert not calls


def test_launch_passes_the_checked_plan(runs_dir, monkeypatch):
    calls = []
    tag = _record_sweep(runs_dir)
    monkeypatch.setattr(api, "launch_sweep",
                        lambda plan, backend, user=None: calls.append((plan, backend)) or tag)
    at = page("sweep")
    at.text_input(key="sweep_seeds").set_value("0, 1").run()
    at.button(key="sweep_launch").click().run()
    ok(at)
    plan, backend = calls[0]
    assert backend == "local" and len(plan.jobs) == 12 and plan.seeds == [0, 1]
    assert {j.params["lr"] for j in plan.jobs} == {5e-4, 1e-3, 2e-3}


def test_a_recorded_sweep_shows_its_grid_and_end_metric_plot(runs_dir):
    tag = _record_sweep(runs_dir)
    at = ok(page("sweep"))
    assert at.selectbox(key="sweep_tag").value == tag
    grid = figure(at, "One cell per run")
    assert [t["name"] for t in grid["data"]] == ["finished"]
    assert sorted(grid["data"][0]["x"]) == ["recipe=binary", "recipe=rlcr"]
    effect = figure(at, "at the end vs recipe")
    line = effect["data"][-1]
    assert line["x"] == ["binary", "rlcr"]
    end = [api.load_run(i).evals[-1]["accuracy"] for i in IDS[:2]]
    assert line["y"] == pytest.approx(end)
