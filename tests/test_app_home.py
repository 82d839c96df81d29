"""Home: the question, the recipes with rendered formulas, the one-click quick comparison."""

from __future__ import annotations

import pytest
from app_helpers import IDS, ok, page, texts, use_store

from core import api
from core.config import RunConfig
from core.experiments.registry import EXPERIMENTS
from core.recipe_info import RECIPE_INFO
from core.runtime.store import RunStore


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    return use_store(tmp_path, monkeypatch)


def test_home_shows_question_recipes_and_recent_runs(runs_dir):
    at = ok(page())
    assert "Calibration Lab" in at.title[0].value
    assert "knows what it knows" in texts(at)
    assert "docs/science.md" in texts(at)  # the science reference, in the repository
    latex = [e.value for e in at.latex]
    assert len(latex) == len(RECIPE_INFO)
    assert any("(q - c)^2" in f for f in latex)  # rlcr's Brier term, rendered by st.latex
    links = [e.value for e in at.get("page_link")]
    assert sum(("finished" in lab) for lab in links) == len(IDS)


def test_home_on_an_empty_store_invites_a_first_run(tmp_path, monkeypatch):
    use_store(tmp_path, monkeypatch, copy=False)
    at = ok(page())
    assert "No runs yet" in texts(at)


def test_quick_comparison_launches_four_tagged_runs_and_opens_compare(runs_dir, monkeypatch):
    launched: list[RunConfig] = []

    def fake_launch(config, root=None, user=None):  # the runner, minus the training process
        launched.append(config)
        return RunStore(root or api.runs_dir()).create(config).run_id

    monkeypatch.setattr(api, "launch", fake_launch)
    at = page()
    at.button(key="home_compare").click().run()
    ok(at)
    assert [c.recipe for c in launched] == list(api.COMPARISON_RECIPES)
    experiment = EXPERIMENTS["classic"]  # the calibration experiment's own settings
    for c in launched:
        assert c.model == "embedded" and c.threads >= 1 and c.seed == 0
        assert c.task == experiment.task
        assert all(getattr(c, k) == v for k, v in experiment.settings.items())
    assert launched[0].steps == 300
    ids = at.session_state["compare_ids"]
    assert len(ids) == 4
    tags = {t for i in ids for t in api.load_run(i).tags}
    (tag,) = tags
    assert tag.startswith(api.COMPARISON_PREFIX)
    assert api.groups(api.list_runs())[tag] == ids  # one group, in launch order
    assert "Compare" in at.title[0].value
    assert sorted(at.session_state["compare_runs"]) == sorted(ids)


def test_quick_comparison_failure_is_shown_in_words(runs_dir, monkeypatch):
    def broken(config, root=None):
        raise OSError("No space left on device")

    monkeypatch.setattr(api, "launch", broken)
    at = page()
    at.button(key="home_compare").click().run()
    ok(at)
    assert "Could not start the comparison" in at.error[0].value
