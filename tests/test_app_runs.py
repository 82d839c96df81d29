"""Runs page: list, filter, tag, export, and delete only after a confirmation."""

from __future__ import annotations

import io
import os
import zipfile

import pytest
from app_helpers import IDS, ok, page, set_status, texts, use_store

from core import api


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    return use_store(tmp_path, monkeypatch)


def test_lists_every_run_with_its_status(runs_dir):
    at = ok(page("runs"))
    table = at.dataframe[0].value
    assert sorted(table["run"]) == IDS
    assert set(table["status"]) == {"finished"}
    at.text_input(key="runs_text").set_value("rlcr").run()
    assert list(at.dataframe[0].value["run"]) == [IDS[1]]


def test_tags_are_saved_in_the_run_folder(runs_dir):
    at = page("runs", {"run": IDS[1]})
    assert at.selectbox(key="runs_pick").value == IDS[1]
    at.text_input(key=f"runs_tags_{IDS[1]}").set_value("compare-fixture, keep , keep").run()
    at.button(key="runs_save_tags").click().run()
    ok(at)
    assert api.load_run(IDS[1]).tags == ["compare-fixture", "keep"]


def test_delete_needs_a_confirmation(runs_dir):
    at = page("runs", {"run": IDS[0]})
    at.button(key="runs_delete").click().run()
    assert "cannot be undone" in at.warning[0].value
    assert (runs_dir / IDS[0]).is_dir()
    at.button(key="runs_delete_no").click().run()
    assert (runs_dir / IDS[0]).is_dir()
    at.button(key="runs_delete").click().run()
    at.button(key="runs_delete_yes").click().run()
    ok(at)
    assert not (runs_dir / IDS[0]).exists()
    assert IDS[0] not in list(at.dataframe[0].value["run"])


def test_a_running_run_cannot_be_deleted_but_can_be_stopped(runs_dir, monkeypatch):
    set_status(runs_dir, IDS[2], status="running", pid=os.getpid())
    stopped = []
    monkeypatch.setattr(api, "stop", lambda run_id, **_: stopped.append(run_id) or True)
    at = page("runs", {"run": IDS[2]})
    assert "stop it first" in texts(at)
    assert not [b for b in at.button if b.key == "runs_delete"]
    at.button(key="runs_stop").click().run()
    ok(at)
    assert stopped == [IDS[2]]
    with pytest.raises(ValueError, match="stop it first"):
        api.delete(IDS[2])


def test_export_is_a_zip_of_the_run_folder(runs_dir):
    at = ok(page("runs"))
    assert at.get("download_button")
    data = api.export_zip(IDS[1])
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    for f in ("config.json", "status.json", "metrics.jsonl", "samples.jsonl"):
        assert f"{IDS[1]}/{f}" in names


def test_export_leaves_out_links_and_hidden_files(runs_dir, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host file")
    (runs_dir / IDS[1] / "leak.txt").symlink_to(secret)
    (runs_dir / IDS[1] / ".lock").write_text("")
    names = zipfile.ZipFile(io.BytesIO(api.export_zip(IDS[1]))).namelist()
    assert f"{IDS[1]}/config.json" in names
    assert not [n for n in names if n.endswith(("leak.txt", ".lock"))]


def test_damaged_folder_is_listed_as_damaged(runs_dir):
    (runs_dir / IDS[3] / "config.json").unlink()
    at = ok(page("runs", {"run": IDS[3]}))
    table = at.dataframe[0].value
    assert table.set_index("run").loc[IDS[3], "status"] == "damaged"
    assert "damaged" in at.warning[0].value


def test_open_goes_to_the_run_page(runs_dir):
    at = page("runs", {"run": IDS[1]})
    at.button(key="runs_open").click().run()
    ok(at)
    assert "rlcr" in at.title[0].value
    assert at.session_state["run_id"] == IDS[1]
