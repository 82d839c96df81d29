"""The claims board on Home: each claim's literature statement, this machine's latest
verdict from its experiment's report, the one-click run, and the Report page."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from app_helpers import ok, page, texts, use_store

from core import api
from core.experiments import claims
from core.experiments.registry import EXPERIMENTS
from core.runtime import runner


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    return use_store(tmp_path, monkeypatch, copy=False)


def write_report(root: Path, folder: str, experiment: str, statuses: list[str],
                 age: float = 0.0, keys: list[str] | None = None) -> Path:
    path = root / "experiments" / folder
    path.mkdir(parents=True)
    targets = [{"key": (keys or [])[i] if keys else f"t{i}", "title": f"target {i}",
                "status": s} for i, s in enumerate(statuses)]
    (path / "summary.json").write_text(json.dumps({
        "experiment": experiment, "targets": targets, "seeds": [0, 1, 2],
        "created_at": "2026-11-29 12:00:00"}))
    (path / "report.html").write_text("<html><body><h1>the report</h1></body></html>")
    t = path.stat().st_mtime - age
    os.utime(path, (t, t))
    return path


def test_verdict_is_decided_by_judged_targets_only() -> None:
    assert claims.verdict([{"status": "PASS"}, {"status": "report"}]) == "held"
    assert claims.verdict([{"status": "PASS"}, {"status": "FAIL"}]) == "not held"
    assert claims.verdict([{"status": "not run"}, {"status": "report"}]) == "not run"


def test_latest_result_reads_the_newest_report_and_knows_aliases(tmp_path: Path) -> None:
    write_report(tmp_path, "coverage-add2-old", "coverage", ["PASS"], age=100)
    write_report(tmp_path, "coverage-add2-new", "coverage", ["PASS", "FAIL"])
    result = claims.latest_result("coverage", tmp_path)
    assert result.verdict == "not held" and result.folder.name == "coverage-add2-new"
    assert result.seeds == (0, 1, 2)
    write_report(tmp_path, "calibration-add-x", "classic", ["PASS"], keys=["binary"])
    assert claims.latest_result("classic", tmp_path, ("binary", "rlcr")).verdict == "held"
    assert claims.latest_result("self-feedback", tmp_path).verdict == "not run"


def test_board_lists_every_claim_with_its_statement_and_not_run(runs_dir: Path) -> None:
    at = ok(page())
    shown = texts(at)
    for claim in claims.claims():
        assert claim.title in shown and claim.statement[:40] in shown
    assert {c.experiment for c in claims.claims()} == {"classic", "coverage", "self-feedback",
                                                       "judges", "consistency"}
    assert shown.count("not run") >= 5


def test_board_shows_verdicts_links_and_a_running_experiment(runs_dir: Path) -> None:
    write_report(runs_dir, "classic-add-x", "classic", ["PASS", "PASS", "FAIL", "report"],
                 keys=["binary", "rlcr", "psr", "rlsf"])  # psr's is the coverage claim's
    write_report(runs_dir, "coverage-add2-x", "coverage", ["PASS", "FAIL", "PASS", "report"])
    running = runs_dir / "experiments" / "self-feedback-add-x"
    running.mkdir(parents=True)
    (running / claims.LAUNCH_LOG).write_text("self-feedback add: 0/900 steps\n")
    at = ok(page())
    shown = texts(at)
    assert ":green-badge[held]" in shown and "2 of 2 targets held" in shown
    assert ":red-badge[not held]" in shown and "2 of 3 targets held" in shown
    assert ":blue-badge[running]" in shown
    assert at.button(key="home_claim_run_self-feedback").disabled
    links = [e for e in at.get("page_link") if e.proto.label == "Open the report"]
    assert len(links) == 4  # the classic report serves two claims


def test_one_click_runs_the_experiments_own_settings_one_seed_or_three(
        runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[list[str]] = []

    class FakePopen:  # the background `python -m core experiment`, minus the process
        def __init__(self, args, **kwargs):
            started.append(list(args))
            assert kwargs["start_new_session"]

        def wait(self):
            return 0

    monkeypatch.setattr(runner.subprocess, "Popen", FakePopen)
    at = page()
    at.button(key="home_claim_run_coverage").click().run()
    ok(at)
    root = str(runs_dir.resolve())
    out = started[0][started[0].index("--out") + 1]
    assert started[0] == [sys.executable, "-m", "core", "experiment", "coverage", "--seeds", "0",
                          "--runs-dir", root, "--out", out]  # no setting flags: its own
    assert Path(out).parent == runs_dir.resolve() / "experiments"
    assert "Started" in texts(at)
    at.radio(key="home_claim_seeds_self-feedback").set_value("three seeds (0, 1, 2)").run()
    at.button(key="home_claim_run_self-feedback").click().run()
    ok(at)
    assert started[1][4:7] == ["self-feedback", "--seeds", "0,1,2"]
    assert set(EXPERIMENTS) >= {"coverage", "self-feedback"}


def test_report_page_shows_the_report_or_says_why_not(runs_dir: Path) -> None:
    write_report(runs_dir, "coverage-add2-x", "coverage", ["PASS"])
    at = ok(page("report", query={"folder": "coverage-add2-x"}))
    assert at.get("download_button")
    assert "the report" in str(at.get("iframe")[0].proto)
    at = ok(page("report", query={"folder": "../../etc"}))
    assert "No such experiment report" in texts(at)


def test_the_calibration_claim_is_decided_by_its_own_targets(tmp_path: Path) -> None:
    """The classic experiment also checks psr and nsr; those belong to the coverage claim."""
    path = tmp_path / "experiments" / "classic-add-x"
    path.mkdir(parents=True)
    keys = {"binary": "PASS", "rlcr": "PASS", "psr": "FAIL", "nsr": "FAIL",
            "answer_prob": "PASS", "rlsf": "report"}
    (path / "summary.json").write_text(json.dumps({"experiment": "classic", "targets": [
        {"key": k, "title": k, "status": v} for k, v in keys.items()]}))
    claim = next(c for c in claims.claims() if c.experiment == "classic")
    assert claims.latest_result("classic", tmp_path, claim.decides).verdict == "held"
    assert claims.latest_result("classic", tmp_path).verdict == "not held"


def test_the_post_hoc_claim_is_a_second_card_of_the_calibration_experiment(
        tmp_path: Path) -> None:
    """Post-hoc recalibration is tested on the calibration experiment's runs, by its own two
    targets; each card has its own widget key."""
    cards = claims.claims()
    assert len({c.key for c in cards}) == len(cards)
    posthoc = next(c for c in cards if c.key == "classic-posthoc")
    assert posthoc.experiment == "classic"
    assert set(posthoc.decides) == {"posthoc_numbers", "posthoc_knowledge"}
    path = tmp_path / "experiments" / "classic-add-x"
    path.mkdir(parents=True)
    keys = {"binary": "PASS", "rlcr": "FAIL", "posthoc_numbers": "PASS",
            "posthoc_knowledge": "PASS", "posthoc_all": "report"}
    (path / "summary.json").write_text(json.dumps({"experiment": "classic", "targets": [
        {"key": k, "title": k, "status": v} for k, v in keys.items()]}))
    assert claims.latest_result("classic", tmp_path, posthoc.decides).verdict == "held"
    assert claims.latest_result("classic", tmp_path).verdict == "not held"


def test_experiments_are_refused_in_workshop_mode(runs_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from core.runtime import workshop

    monkeypatch.setenv(workshop.ENABLED_ENV, "1")
    with pytest.raises(workshop.WorkshopError, match="workshop mode"):
        api.launch_claim("coverage", (0,))
    assert not (runs_dir / "experiments").exists()  # nothing was started
