"""Named experiments: aggregation, the classic targets, the registry, and a tiny end-to-end
run through the shared runner and queue."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from core.config import PRESETS
from core.experiments.aggregation import build_summary, mean_sd, pool_calibration
from core.experiments.orchestrator import run_experiment
from core.experiments.registry import EXPERIMENTS
from core.experiments.report import SECTIONS, render_report
from core.experiments.targets import (
    classic_targets,
    target_answer_prob,
    target_binary,
    target_nsr,
    target_psr,
    target_rlcr,
    target_rlsf,
)
from core.runtime.slots import MAX_RUNS_ENV
from core.runtime.store import RunStore

ROOT = Path(__file__).resolve().parent.parent
TINY = {"steps": 2, "eval_every": 1, "eval_prompts": 16, "eval_samples": 4,
        "prompts_per_step": 4, "group_size": 4}
EXTERNAL_SCRIPT = re.compile(r"<script[^>]*\bsrc\s*=\s*['\"]?(https?:)?//", re.IGNORECASE)


# --- hand-made summaries for the target checks ----------------------------------------------
def summary_of(values: dict[str, dict[str, tuple[float, float]]], k: int = 16) -> dict:
    """A summary with only what the targets read: {recipe: {metric: (start, end)}}."""
    return {"pass_k_max": k, "aggregates": {
        recipe: {m: {"start": {"mean": s, "sd": None, "n": 3},
                     "end": {"mean": e, "sd": None, "n": 3}} for m, (s, e) in ms.items()}
        for recipe, ms in values.items()}}


BINARY_OK = {"accuracy": (0.50, 0.60), "verbalized/auroc": (0.70, 0.55),
             "verbalized/ece": (0.40, 0.30), "answer_prob/ece": (0.05, 0.12),
             "answer_prob/overconfidence": (0.01, 0.10)}


def test_target_binary_pass_and_fail() -> None:
    assert target_binary(summary_of({"binary": BINARY_OK})).status == "PASS"
    small_gain = {**BINARY_OK, "accuracy": (0.50, 0.53)}
    res = target_binary(summary_of({"binary": small_gain}))
    assert res.status == "FAIL"
    assert [c.passed for c in res.checks] == [False, True, True]
    assert "0.500 → 0.530" in res.checks[0].measured
    assert "that is not calibration" in res.note
    seeing = {**BINARY_OK, "verbalized/auroc": (0.7, 0.61), "verbalized/ece": (0.4, 0.09)}
    assert [c.passed for c in target_binary(summary_of({"binary": seeing})).checks] == \
        [True, False, False]


def test_target_rlcr_pass_and_fail() -> None:
    good = {"verbalized/ece": (0.4, 0.06), "accuracy": (0.5, 0.57),
            "verbalized/auroc": (0.6, 0.70)}
    assert target_rlcr(summary_of({"binary": BINARY_OK, "rlcr": good})).status == "PASS"
    # 0.5 x binary's 0.30 = 0.15 passes, but 0.10 > 0.08; accuracy 0.54 < 0.60 - 0.05.
    bad = {**good, "verbalized/ece": (0.4, 0.10), "accuracy": (0.5, 0.54)}
    res = target_rlcr(summary_of({"binary": BINARY_OK, "rlcr": bad}))
    assert res.status == "FAIL"
    assert [c.passed for c in res.checks] == [True, False, False, True]
    assert target_rlcr(summary_of({"rlcr": good})).status == "not run"


def test_target_psr_and_nsr_pass_and_fail() -> None:
    psr = {"pass@1": (0.5, 0.6), "pass@16": (0.9, 0.8)}
    nsr = {"pass@1": (0.5, 0.52), "pass@16": (0.9, 0.89)}
    s = summary_of({"psr": psr, "nsr": nsr})
    assert target_psr(s).status == "PASS"
    assert target_nsr(s).status == "PASS"
    flat = summary_of({"psr": {"pass@1": (0.5, 0.5), "pass@16": (0.9, 0.8)},
                       "nsr": {"pass@1": (0.5, 0.5), "pass@16": (0.9, 0.84)}})
    assert [c.passed for c in target_psr(flat).checks] == [False, True]
    # nsr lost 0.06 (> 0.02) and is only 0.04 above psr's end.
    assert [c.passed for c in target_nsr(flat).checks] == [False, False]
    assert target_nsr(summary_of({"nsr": nsr})).status == "not run"
    # the largest k comes from the summary
    s4 = summary_of({"psr": {"pass@1": (0.5, 0.6), "pass@4": (0.8, 0.7)}}, k=4)
    assert target_psr(s4).status == "PASS" and "Pass@4" in target_psr(s4).checks[1].label


def test_target_answer_prob_pass_and_fail() -> None:
    assert target_answer_prob(summary_of({"binary": BINARY_OK})).status == "PASS"
    bad = {**BINARY_OK, "answer_prob/ece": (0.15, 0.12)}
    res = target_answer_prob(summary_of({"binary": bad}))
    assert res.status == "FAIL" and [c.passed for c in res.checks] == [False, True, False]


def test_target_rlsf_reports_without_verdict() -> None:
    res = target_rlsf(summary_of({"rlsf": {"accuracy": (0.5, 0.55),
                                           "answer_prob/ece": (0.05, 0.09),
                                           "answer_prob/overconfidence": (0.0, 0.04)}}))
    assert res.status == "report" and all(c.passed is None for c in res.checks)
    assert "accuracy rose by 0.050" in res.note.lower()
    assert "answer-prob ECE rose by 0.040 (0.050 → 0.090, worse)" in res.note


def test_missing_recipes_are_not_run_and_missing_numbers_fail() -> None:
    assert [t.status for t in classic_targets(summary_of({}))] == ["not run"] * 6
    res = target_binary(summary_of({"binary": {"accuracy": (0.5, 0.6)}}))
    assert res.status == "FAIL" and res.checks[1].measured == "n/a"


# --- aggregation ------------------------------------------------------------------------------
def _eval(step: int, acc: float, ece: float, k16: float, hist: list[int]) -> dict[str, Any]:
    cal = {"ece": ece, "brier": 0.2, "auroc": 0.6, "overconfidence": 0.1,
           "reliability": [{"lo": 0.0, "hi": 0.5, "count": hist[0], "confidence": 0.25,
                            "accuracy": 0.2},
                           {"lo": 0.5, "hi": 1.0, "count": hist[1], "confidence": 0.75,
                            "accuracy": 0.7}],
           "hist_correct": hist, "hist_incorrect": [1, 1]}
    return {"step": step, "accuracy": acc, "greedy_accuracy": acc, "format_rate": 1.0,
            "pass_at_k": {"1": acc, "16": k16},
            "calibration": {"verbalized": cal, "answer_prob": cal}}


def test_build_summary_means_sds_curves_and_pooling() -> None:
    runs = [{"id": f"r{s}", "recipe": "binary", "seed": s, "status": "finished", "error": None,
             "evals": [_eval(0, 0.4, 0.3, 0.8, [1, 3]), _eval(10, 0.5 + 0.1 * s, 0.2, 0.9,
                                                            [2, 2])]}
            for s in (0, 1)]
    runs.append({"id": "r9", "recipe": "nsr", "seed": 0, "status": "failed", "error": "boom",
                 "evals": [_eval(0, 0.9, 0.9, 0.9, [9, 9])]})
    s = build_summary(runs, task="add", seeds=[0, 1], recipes=["binary", "nsr"],
                      settings={"steps": 10}, wall_seconds=12.34, experiment="classic",
                      question="?", targets=classic_targets)
    assert s["pass_k_max"] == 16 and s["wall_seconds"] == 12.3
    assert [r["id"] for r in s["runs"]] == ["r0", "r1", "r9"]
    assert list(s["aggregates"]) == ["binary"]  # the failed run is listed, not averaged
    acc = s["aggregates"]["binary"]["accuracy"]
    assert acc["start"] == {"mean": 0.4, "sd": 0.0, "n": 2}
    assert acc["end"]["mean"] == pytest.approx(0.55)
    assert acc["end"]["sd"] == pytest.approx(0.0707107, abs=1e-6)
    assert s["curves"]["binary"]["step"] == [0, 10]
    assert s["curves"]["binary"]["pass@16"] == [0.8, 0.9]
    end = s["calibration"]["binary"]["end"]["verbalized"]
    assert end["hist_correct"] == [4, 4] and end["hist_incorrect"] == [2, 2]
    assert end["reliability"][0]["count"] == 4
    assert s["targets"][0]["status"] == "PASS"  # +0.15 accuracy, AUROC 0.6, ECE 0.2
    html = render_report(s, "Classic experiment")
    assert "boom" in html and "r9" in html and not EXTERNAL_SCRIPT.search(html)


def test_mean_sd_and_pool_calibration_edges() -> None:
    assert mean_sd([None]) == {"mean": None, "sd": None, "n": 0}
    assert mean_sd([0.5, None]) == {"mean": 0.5, "sd": None, "n": 1}
    pooled = pool_calibration([
        {"ece": 0.1, "reliability": [{"lo": 0, "hi": 1, "count": 1, "confidence": 0.2,
                                      "accuracy": 1.0}], "hist_correct": [1]},
        {"ece": 0.3, "reliability": [{"lo": 0, "hi": 1, "count": 3, "confidence": 0.6,
                                      "accuracy": 0.0}], "hist_correct": [0, 2]}])
    assert pooled["ece"] == pytest.approx(0.2)
    assert pooled["hist_correct"] == [1, 2]
    assert pooled["reliability"][0]["confidence"] == pytest.approx(0.5)
    assert pooled["reliability"][0]["accuracy"] == pytest.approx(0.25)


def test_store_ignores_folders_that_are_not_runs(tmp_path: Path) -> None:
    (tmp_path / "experiments" / "classic-add-x").mkdir(parents=True)
    assert RunStore(tmp_path).ids() == []


# --- end to end -------------------------------------------------------------------------------
def _show(run_id: str, runs_dir: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "core", "show", run_id, "--json", "--runs-dir",
                          str(runs_dir)], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout)


def test_cli_experiment_end_to_end(tmp_path: Path) -> None:
    """Two recipes, one seed, two steps on the embedded model, through the CLI. The queue's
    cap is 1, so the two runs (both launched at once, --workers 2) train one after the
    other: the experiment's runs wait in the same queue as the app's."""
    runs_dir, out = tmp_path / "runs", tmp_path / "out"
    flags = [x for k, v in TINY.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    proc = subprocess.run(
        [sys.executable, "-m", "core", "experiment", "classic", "--recipes", "binary,nsr",
         "--seeds", "0", "--workers", "2", "--runs-dir", str(runs_dir), "--out", str(out),
         *flags], capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, MAX_RUNS_ENV: "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    assert "classic add: 4/4 steps, 0 running, 2 done, 0 failed" in proc.stderr
    status = [json.loads((runs_dir / r / "status.json").read_text())
              for r in RunStore(runs_dir).ids()]
    assert all(s["slot"] == 0 for s in status)  # each took the one slot in turn
    first, second = sorted(status, key=lambda s: s["running_at"])
    assert first["ended_at"] <= second["running_at"]

    html = (out / "report.html").read_text()
    assert not EXTERNAL_SCRIPT.search(html)
    assert html.count("plotly.js v") == 1  # inlined once, shared by every figure
    for text in ("The question", "Targets", "prompts_per_step", "not run",
                 "Start → end, mean ± sd over seeds", "Final reliability diagrams",
                 "nsr (start)", "binary (end)"):
        assert text in html

    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "add" and summary["seeds"] == [0]
    assert summary["settings"]["steps"] == 2 and summary["overrides"] == TINY
    assert summary["settings"]["eval_samples"] == 4 and summary["pass_k_max"] == 4
    assert summary["experiment_settings"] == PRESETS["classic"]
    assert {k: v for k, v in PRESETS["classic"].items() if k not in TINY}.items() <= \
        summary["settings"].items()
    assert summary["wall_seconds"] > 0
    assert [(r["recipe"], r["seed"]) for r in summary["runs"]] == [("binary", 0), ("nsr", 0)]
    assert all({"id", "recipe", "seed"} <= set(r) for r in summary["runs"])
    # (a)-(f), then post-hoc recalibration's two judged targets and its report
    assert [t["key"] for t in summary["targets"]][6:] == [
        "posthoc_numbers", "posthoc_knowledge", "posthoc_all"]
    assert "After post-hoc recalibration" in html and "binary + post-hoc" in html

    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert {(r["recipe"], r["metric"]) for r in rows} >= {("binary", "accuracy"),
                                                            ("nsr", "pass@4")}
    for run in summary["runs"]:
        shown = _show(run["id"], runs_dir)
        assert shown["status"] == run["status"] == "finished"
        assert shown["config"]["recipe"] == run["recipe"]
        assert shown["config"]["seed"] == run["seed"] and shown["config"]["threads"] >= 1
        start, end = shown["evals"][0], shown["evals"][-1]
        assert (start["step"], end["step"]) == (0, 2)
        expected = {"accuracy": (start["accuracy"], end["accuracy"]),
                    "verbalized/ece": (start["calibration"]["verbalized"]["ece"],
                                       end["calibration"]["verbalized"]["ece"]),
                    "pass@4": (start["pass_at_k"]["4"], end["pass_at_k"]["4"]),
                    **{f"verbalized_{e}/ece": (start["calibration"][f"verbalized_{e}"]["ece"],
                                               end["calibration"][f"verbalized_{e}"]["ece"])
                       for e in ("recalibrated", "raw_half")}}
        agg = summary["aggregates"][run["recipe"]]
        for metric, (s, e) in expected.items():
            assert (run["start"][metric], run["end"][metric]) == (s, e)
            # one seed: the mean over seeds is the run's own value, with no sd
            assert (agg[metric]["start"]["mean"], agg[metric]["end"]["mean"]) == (s, e)
            assert agg[metric]["end"]["sd"] is None
            row = next(r for r in rows if (r["recipe"], r["metric"]) == (run["recipe"], metric))
            assert float(row["start_mean"]) == pytest.approx(s)
            assert float(row["end_mean"]) == pytest.approx(e)
            assert row["n_seeds"] == "1" and row["end_sd"] == ""
        assert summary["curves"][run["recipe"]]["step"] == [0, 1, 2]
        assert summary["curves"][run["recipe"]]["accuracy"] == [
            ev["accuracy"] for ev in shown["evals"]]


def test_failed_runs_do_not_stop_the_experiment(tmp_path: Path) -> None:
    """A model that passes preflight (a whole, empty safetensors file; the compact-format
    marker) but cannot be loaded (no model type) fails in the worker: the run is recorded
    as failed and the outputs are still written."""
    model = tmp_path / "broken-model"
    model.mkdir()
    (model / "config.json").write_text('{"lab_prompt_format": "compact"}')
    (model / "model.safetensors").write_bytes((2).to_bytes(8, "little") + b"{}")
    with open(tmp_path / "progress.txt", "w") as progress:
        result = run_experiment("classic", task="add", seeds=[0], recipes=["nsr"],
                                workers=1, out=tmp_path / "out", runs_dir=tmp_path / "runs",
                                overrides={**TINY, "model": str(model), "steps": 1},
                                stream=progress)
    assert "0 done, 1 failed" in (tmp_path / "progress.txt").read_text()
    assert [r["status"] for r in result.failed] == ["failed"]
    assert result.summary["runs"][0]["error"]
    assert result.summary["aggregates"] == {}
    assert all(t["status"] == "not run" for t in result.summary["targets"])
    for name in ("report.html", "summary.csv", "summary.json"):
        assert (tmp_path / "out" / name).is_file()
    assert "failed" in (tmp_path / "out" / "report.html").read_text()
    assert RunStore(tmp_path / "runs").load(result.summary["runs"][0]["id"]).status == "failed"


def test_registry_classic_is_the_six_recipes_on_its_preset() -> None:
    classic = EXPERIMENTS["classic"]
    assert classic.recipes == ("binary", "rlcr", "psr", "nsr", "w-reinforce", "rlsf")
    assert classic.settings == PRESETS["classic"] and classic.seeds == (0, 1, 2)
    for e in EXPERIMENTS.values():  # every experiment names report sections that exist
        assert e.preset in PRESETS and set(e.sections or SECTIONS) <= set(SECTIONS)


def test_sigterm_stops_the_experiments_runs_and_still_writes_the_report(tmp_path: Path) -> None:
    """SIGTERM while the first run trains: that run is stopped through the runner, the run
    not yet launched (--workers 1) is listed as not started, and the outputs are written."""
    runs_dir, out = tmp_path / "runs", tmp_path / "out"
    flags = [x for k, v in {**TINY, "steps": 500, "eval_every": 0}.items()
             for x in (f"--{k.replace('_', '-')}", str(v))]
    proc = subprocess.Popen(
        [sys.executable, "-m", "core", "experiment", "classic", "--recipes", "binary,nsr",
         "--seeds", "0", "--workers", "1", "--runs-dir", str(runs_dir), "--out", str(out),
         *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:  # until the first run has trained a step
            ids = RunStore(runs_dir).ids() if runs_dir.is_dir() else []
            if ids and RunStore(runs_dir).load(ids[0], metrics=False).step >= 1:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the first run never trained a step")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert [(r["recipe"], r["status"]) for r in summary["runs"]] == [
        ("binary", "stopped"), ("nsr", "not started")]
    (run_id,) = RunStore(runs_dir).ids()
    assert RunStore(runs_dir).load(run_id, metrics=False).status == "stopped"
    assert (out / "report.html").is_file()
