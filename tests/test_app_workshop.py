"""Workshop mode: the token gates every page, names own runs, and the host's limits hold in
the API whatever the pages do."""

from __future__ import annotations

import os

import pytest
from app_helpers import IDS, ok, page, set_status, texts, use_store

from core import api
from core.config import build_config
from core.runtime import workshop
from core.runtime.workshop import WorkshopError

TOKEN = "correct-horse-battery-staple"
PAGES = [(None, None), ("launch", None), ("run", {"run": IDS[1]}), ("compare", None),
         ("runs", None)]


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(workshop.ENABLED_ENV, "1")
    monkeypatch.setenv(workshop.TOKEN_ENV, TOKEN)
    monkeypatch.setenv(workshop.RUNS_PER_USER_ENV, "1")
    return use_store(tmp_path, monkeypatch)


def sign_in(name: str | None, query: dict[str, str] | None = None, token: str = TOKEN):
    at = page(query=query)
    at.text_input(key="gate_name").input(name or "")
    at.text_input(key="gate_token").input(token)
    return at.button[0].click().run()


def nothing_of_the_lab(at) -> None:
    shown = texts(at)
    assert "workshop" in at.title[0].value and len(at.title) == 1
    assert not any(run_id in shown for run_id in IDS)
    assert not at.dataframe and not at.get("plotly_chart") and not at.get("page_link")


@pytest.mark.parametrize(("name", "query"), PAGES, ids=[p or "home" for p, _ in PAGES])
def test_every_page_shows_only_the_gate_until_the_token_is_given(runs_dir, name, query):
    at = ok(page(name, query))
    nothing_of_the_lab(at)


def test_a_wrong_token_is_refused_and_the_right_one_lets_a_name_in(runs_dir):
    at = ok(sign_in("bob", token="guess"))
    assert "not the workshop's access token" in at.error[0].value
    nothing_of_the_lab(at)
    at = ok(sign_in(" bob\x00 "))
    assert at.session_state["lab_user"] == "bob"
    assert "Signed in as **bob**" in texts(at)
    assert any("Recent runs" in h.value for h in at.subheader)
    at.switch_page("pages/run.py").run()
    ok(at)
    assert "monitoring" in at.title[0].value  # the session stays signed in across pages
    at.button(key="gate_sign_out").click().run()
    nothing_of_the_lab(ok(at))


def test_a_name_is_required_and_cannot_carry_markdown(runs_dir):
    at = ok(sign_in(""))
    assert "give your name" in at.error[0].value
    assert workshop.clean_name("[Zoë](http://x.test) <b>O'Neil</b>") == "Zoëhttpx.test bO'Neilb"


@pytest.mark.parametrize("token", ["", "short"])
def test_a_missing_or_short_token_keeps_the_lab_closed(runs_dir, monkeypatch, token):
    monkeypatch.setenv(workshop.TOKEN_ENV, token)
    for name, query in PAGES:
        at = ok(page(name, query))
        assert "not set up safely" in at.error[0].value
        assert not any(run_id in texts(at) for run_id in IDS)
    with pytest.raises(WorkshopError):
        api.sign_in(token, "bob")


def test_only_the_owner_may_change_a_run(runs_dir):
    set_status(runs_dir, IDS[1], owner="alice", status="stopped")
    assert api.stop(IDS[1], user="bob") is False
    for action in (lambda: api.resume(IDS[1], user="bob"), lambda: api.delete(IDS[1], user="bob"),
                   lambda: api.set_tags(IDS[1], ["mine"], user="bob")):
        with pytest.raises(WorkshopError, match="only alice can"):
            action()
    assert (runs_dir / IDS[1]).is_dir()
    at = ok(sign_in("bob", {"run": IDS[1]}))
    at.switch_page("pages/run.py").run()
    assert at.button(key="run_resume").disabled
    assert "only alice can change this run" in at.button(key="run_resume").help


def test_models_and_remote_code_the_host_did_not_allow_are_refused(runs_dir, monkeypatch):
    config, problems = api.check_config({"model": "/etc"})
    assert config is None
    assert problems == ["this workshop allows only these models: embedded"]  # no path probing
    monkeypatch.setenv(workshop.ALLOWED_MODELS_ENV, "Qwen/Qwen2.5-0.5B-Instruct")
    assert not workshop.config_problems({"model": "Qwen/Qwen2.5-0.5B-Instruct"})
    with pytest.raises(WorkshopError, match="trust_remote_code is not allowed"):
        workshop.check_launch({"model": "embedded", "trust_remote_code": True}, "bob", 0)


def test_the_per_person_limit_holds_and_the_quick_comparison_is_all_or_nothing(
        runs_dir, monkeypatch):
    launched = []
    monkeypatch.setattr("core.runtime.runner.launch",
                        lambda config, root, owner=None, **_: launched.append(owner) or IDS[0])
    with pytest.raises(WorkshopError, match="sign in"):
        api.launch(build_config("smoke"))
    assert api.launch(build_config("smoke"), user="bob") == IDS[0]
    set_status(runs_dir, IDS[0], owner="bob", status="queued", pid=os.getpid())
    with pytest.raises(WorkshopError, match="one person may have 1 at once"):
        api.launch(build_config("smoke"), user="bob")
    monkeypatch.setenv(workshop.RUNS_PER_USER_ENV, "4")
    with pytest.raises(WorkshopError, match="one person may have 4"):
        api.launch_comparison(user="bob")  # 1 live + 4 new > 4: none is started
    assert launched == ["bob"]
