"""Participant codes: stored hashed, one name each, revocable while the app runs; a wrong
code costs a growing delay per source; a participant cannot act on another's run by any
input the pages take; the host's page is the host's alone."""

from __future__ import annotations

import json
import os
import time

import pytest
from app_helpers import IDS, ok, page, set_status, texts, use_store

from core import api
from core.runtime import codes, workshop
from core.runtime.workshop import WorkshopError


class Clock:
    """time for core.api only: a sign-in's `now`, moved by the test, never slept."""

    def __init__(self) -> None:
        self.t = 1_000_000.0

    def time(self) -> float:
        return self.t

    def __getattr__(self, name: str):
        return getattr(time, name)


@pytest.fixture
def room(tmp_path, monkeypatch):
    """Workshop mode with codes: the host, alice and bob; alice owns IDS[1]."""
    monkeypatch.setenv(workshop.ENABLED_ENV, "1")
    monkeypatch.delenv(workshop.TOKEN_ENV, raising=False)
    root = use_store(tmp_path, monkeypatch)
    monkeypatch.setattr(codes, "THROTTLE", codes.Throttle())
    monkeypatch.setattr(workshop, "_PRESENCE", {})  # process-wide: other tests' sessions
    clock = Clock()
    monkeypatch.setattr(api, "time", clock)
    made = {c.name: plain for c, plain in workshop.add_codes(["host"], codes.HOST)}
    made |= {c.name: plain for c, plain in workshop.add_codes(["alice", "bob"])}
    set_status(root, IDS[1], owner="alice", status="stopped")
    return root, made, clock


def enter(at, code: str):
    at.text_input(key="gate_code").input(code)
    return at.button[0].click().run()


def force_click(at, key: str):
    """Click even a disabled button: AppTest refuses that through its public methods, a
    modified browser does not (it can send any widget's trigger over the websocket)."""
    at.button(key=key)._value = True
    return at.run()


def table(at, column: str):
    """The page's dataframe with this column (AppTest does not expose dataframe keys)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def signed_in(code: str, name: str | None = None, query: dict | None = None):
    at = page(query=query)
    enter(at, code)
    if name:
        at.switch_page(f"pages/{name}.py")
        at.run()
    return ok(at)


def test_codes_are_stored_hashed_and_checked_whatever_their_spacing(room):
    root, made, _ = room
    stored = (root / codes.FOLDER / codes.CODES_FILE).read_text()
    assert not any(codes.normalize(p) in stored or p in stored for p in made.values())
    assert oct((root / codes.FOLDER / codes.CODES_FILE).stat().st_mode & 0o777) == "0o600"
    assert codes.check(made["bob"].lower().replace("-", " ")).name == "bob"
    assert codes.check("AAAA-BBBB-CCCC") is None and codes.check("") is None
    assert [c.id for c in codes.load().codes] == ["h01", "p01", "p02"]


def test_names_stay_unique_and_a_revoked_name_can_be_given_again(room):
    assert workshop.add_codes(["alice", "[x](y)"])[0][0].name == "alice 2"
    assert codes.load().by_id("p04").name == "xy"  # markdown cannot ride in on a name
    workshop.revoke_code("alice")
    assert workshop.add_codes(["alice"])[0][0].name == "alice"  # a lost code is replaced
    with pytest.raises(KeyError):
        workshop.revoke_code("nobody")


def test_the_delay_grows_by_hand_worked_values():
    assert [codes.delay_after(n) for n in range(1, 8)] == [0, 0, 1, 2, 4, 8, 16]
    assert codes.delay_after(40) == codes.MAX_DELAY


def test_guessing_slows_down_per_source_and_time_forgets(room):
    _, made, clock = room
    for _ in range(codes.FREE_TRIES - 1):
        with pytest.raises(WorkshopError, match=r"not a workshop code \(or it was revoked\)$"):
            api.sign_in_code("AAAA-AAAA-AAAA", "10.0.0.9")
    waits = []
    for _ in range(4):
        with pytest.raises(WorkshopError, match="next try is possible in") as e:
            api.sign_in_code("AAAA-AAAA-AAAA", "10.0.0.9")
        waits.append(int(str(e.value).rsplit(" in ", 1)[1].split()[0]))
        # Before the wait is over even the right code is refused: no guess gets checked.
        with pytest.raises(WorkshopError, match="too many wrong codes"):
            api.sign_in_code(made["bob"], "10.0.0.9")
        clock.t += waits[-1]
    assert waits == [1, 2, 4, 8]
    assert api.sign_in_code(made["bob"], "10.0.0.7").name == "bob"  # another source: no wait
    assert api.sign_in_code(made["bob"], "10.0.0.9").name == "bob"  # waited its turn
    clock.t += codes.FORGET_AFTER + 1
    with pytest.raises(WorkshopError, match=r"revoked\)$"):  # forgotten: free tries again
        api.sign_in_code("AAAA-AAAA-AAAA", "10.0.0.9")
    refused = [r for r in workshop.audit_tail() if r["event"] == "sign-in refused"]
    assert len(refused) == codes.FREE_TRIES + 4 and refused[0]["source"] == "10.0.0.9"


def test_the_gate_asks_for_a_code_alone_and_it_signs_in_under_its_name(room):
    _, made, _ = room
    at = page()
    assert [t.key for t in at.text_input] == ["gate_code"]  # no name to type, no token
    enter(at, "WRONG-CODE")
    assert "not a workshop code" in at.error[0].value
    assert not any(run_id in texts(at) for run_id in IDS)
    enter(at, made["alice"])
    ok(at)
    assert at.session_state["lab_user"] == "alice" and at.session_state["lab_code"] == "p01"
    assert "Signed in as **alice**" in texts(at)
    assert "Host" not in [link.label for link in at.get("page_link")]


def test_the_shared_token_no_longer_opens_the_lab_once_codes_exist(room, monkeypatch):
    monkeypatch.setenv(workshop.TOKEN_ENV, "correct-horse-battery-staple")
    assert not workshop.token_ok("correct-horse-battery-staple")
    at = ok(page(state={"lab_user": "mallory"}))  # a session from before the codes
    assert "workshop" in at.title[0].value and "lab_user" not in at.session_state


def test_a_revoked_code_loses_access_at_its_next_action(room, monkeypatch):
    _, made, _ = room
    resumed = []
    monkeypatch.setattr("core.runtime.runner.resume", lambda run_id, root: resumed.append(run_id))
    at = signed_in(made["alice"], "run", {"run": IDS[1]})
    assert not at.button(key="run_resume").disabled
    workshop.revoke_code("p01")  # from the host's page or the command line, app running
    at.button(key="run_resume").click().run()
    ok(at)
    assert resumed == []
    assert "lock" in at.title[0].value and "lab_user" not in at.session_state
    assert api.sign_in_code(made["bob"], "10.0.0.1").name == "bob"
    with pytest.raises(WorkshopError):
        api.sign_in_code(made["alice"], "10.0.0.1")
    events = [(r["event"], r.get("code")) for r in workshop.audit_tail()]
    assert ("code revoked", "p01") in events


def test_a_participant_cannot_change_another_persons_run_by_any_input(room, monkeypatch):
    """bob forces every button on alice's run, even the disabled ones (a modified browser can
    send any widget value): nothing reaches the run."""
    root, made, _ = room
    calls = []
    monkeypatch.setattr("core.runtime.runner.stop", lambda *a: calls.append(("stop", a)) or True)
    monkeypatch.setattr("core.runtime.runner.resume", lambda *a: calls.append(("resume", a)))
    set_status(root, IDS[1], owner="alice", status="running", pid=os.getpid())
    at = signed_in(made["bob"], "run", {"run": IDS[1]})
    assert at.button(key="run_stop").disabled
    force_click(at, "run_stop")
    at.switch_page("pages/runs.py").run()
    at.selectbox(key="runs_pick").set_value(IDS[1]).run()
    force_click(at, "runs_stop")
    at.text_input(key=f"runs_tags_{IDS[1]}").input("bob-was-here").run()
    force_click(at, "runs_save_tags")
    set_status(root, IDS[1], status="stopped", pid=None)
    at.switch_page("pages/run.py").run()
    force_click(at, "run_resume")
    at.switch_page("pages/runs.py").run()
    assert not [b for b in at.button if b.key and "delete" in b.key]  # not even offered
    ok(at)
    assert calls == []
    assert "bob-was-here" not in (root / IDS[1] / "status.json").read_text()
    assert (root / IDS[1]).is_dir()
    for action in (lambda: api.delete(IDS[1], user="bob"),
                   lambda: api.set_tags(IDS[1], ["x"], user="bob")):
        with pytest.raises(WorkshopError, match="only alice can"):
            action()
    set_status(root, IDS[1], status="running", pid=os.getpid())
    alice = signed_in(made["alice"], "run", {"run": IDS[1]})
    force_click(alice, "run_stop")  # the same input from the owner does reach the run
    assert [c[0] for c in calls] == ["stop"]


def test_the_host_page_is_the_hosts_alone(room):
    _, made, _ = room
    at = signed_in(made["bob"], "host")
    assert "host's code" in at.info[0].value and not at.dataframe
    at = signed_in(made["host"], "host")
    assert "Host" in [link.label for link in at.get("page_link")]
    assert table(at, "person")["person"].tolist().count("alice") == 1
    assert "host" in table(at, "address")["name"].tolist()


def test_the_host_sees_the_room_stops_any_run_and_revokes_and_adds_codes(room, monkeypatch):
    root, made, _ = room
    stopped = []
    monkeypatch.setattr("core.runtime.runner.stop", lambda run_id, r: stopped.append(run_id) or 1)
    set_status(root, IDS[1], owner="alice", status="queued", pid=os.getpid(), queued_at=1.0)
    bob = signed_in(made["bob"], "run", {"run": IDS[2]})
    at = signed_in(made["host"], "host")
    runs = table(at, "person")
    assert runs.loc[runs["run"] == IDS[1], ["person", "code", "queue place"]].values.tolist() \
        == [["alice", "p01", 1]]
    assert set(table(at, "address")["name"]) == {"host", "bob"}
    at.selectbox(key="host_stop_pick").set_value(IDS[1]).run()
    at.button(key="host_stop").click().run()
    assert stopped == [IDS[1]]
    at.selectbox(key="host_revoke_pick").set_value("p02").run()
    at.button(key="host_revoke").click().run()
    bob.run()  # bob's next action (here: the page's next refresh)
    assert "lab_user" not in bob.session_state
    at.text_area(key="host_add_names").input("carol\ndave").run()
    at.button(key="host_add").click().run()
    ok(at)
    sheet = at.code[0].value
    carol = sheet.split("carol")[1].split()[0]
    assert codes.check(carol).name == "carol" and "dave" in sheet
    trail = table(at, "event")
    assert {"stop", "code revoked", "codes added", "sign in"} <= set(trail["event"])
    assert json.loads((root / codes.FOLDER / codes.CODES_FILE).read_text())["codes"][-1][
        "name"] == "dave"


def test_the_command_line_makes_a_sheet_the_host_code_once_and_revokes(tmp_path, capsys):
    from core import cli

    names = tmp_path / "names.txt"
    names.write_text("Ada Lovelace\n\n[Alan](x)\n")
    root = str(tmp_path / "runs")
    assert cli.main(["workshop", "codes", "3", "--names", str(names), "--runs-dir", root]) == 0
    sheet = capsys.readouterr().out
    assert "The host's code" in sheet and "Ada Lovelace" in sheet and "Alanx" in sheet
    assert "Participant 3" in sheet
    ada = sheet.split("Ada Lovelace")[1].split()[0]
    assert codes.check(ada, root).id == "p01"
    assert cli.main(["workshop", "codes", "1", "--runs-dir", root]) == 0
    assert "host's code" not in capsys.readouterr().out  # made once
    assert cli.main(["workshop", "revoke", "Ada Lovelace", "--runs-dir", root]) == 0
    assert cli.main(["workshop", "list", "--runs-dir", root]) == 0
    listing = capsys.readouterr().out
    assert "p01\tparticipant\trevoked\tAda Lovelace" in listing and ada not in listing
    assert cli.main(["workshop", "revoke", "nobody", "--runs-dir", root]) == 2
