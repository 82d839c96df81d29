"""Sweeps without training: grid parsing and checks (exit 2, one line, no folder), the
summary's per-setting means and sds against hand-worked values, the CSV and the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.cli import main, parse_grid
from core.config import ConfigError
from core.experiments.sweep import (
    build_sweep_summary,
    plan_sweep,
    summary_csv_rows,
    write_sweep_outputs,
)


@pytest.mark.parametrize(("args", "says"), [
    (["--grid", "nope=1,2"], "unknown field 'nope'"),
    (["--grid", "lr=1e-3,abc"], "lr=abc: argument --lr: invalid float value"),
    (["--grid", "lr=-1,1e-3"], "grid lr=-1.0: lr must be > 0"),
    (["--grid", "recipe=binary,zzz"], "grid recipe=zzz: unknown recipe"),
    ([], "the grid is empty"),
    (["--grid", "lr="], "lr has no values"),
    (["--grid", "lr=1e-3", "--grid", "lr=2e-3"], "--grid lr is given twice"),
    (["--grid", "lr=1e-3,0.001"], "lr repeats a value"),
    (["--grid", "reasoning=maybe"], "reasoning takes true or false"),
    (["--grid", "seed=1,2"], "seed cannot be swept"),
    (["--grid", "eval_samples=2,4", "--pass-k", "4"], "grid eval_samples=2: Pass@k needs"),
    (["--grid", "lr=1e-3,2e-3", "--seeds", "0,x"], "--seeds takes comma-separated"),
    (["--grid", "group_size=2,4,8,16,32,64", "--seeds", ",".join(map(str, range(9)))],
     "54 runs (more than 50): add --yes"),
])
def test_bad_grids_exit_2_with_one_line_and_no_folder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str) -> None:
    runs = tmp_path / "runs"
    code = main(["sweep", *args, "--runs-dir", str(runs), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert says in err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert not runs.exists() and not (tmp_path / "out").exists()


def test_grid_values_are_read_as_their_flags_read_them() -> None:
    grid = parse_grid(["lr=1e-3, 3e-3", "recipe=binary,rlcr", "scale-rewards=true,off",
                       "group_size=4"])
    assert grid == {"lr": [1e-3, 3e-3], "recipe": ["binary", "rlcr"],
                    "scale_rewards": [True, False], "group_size": [4]}
    with pytest.raises(ConfigError, match="invalid int value"):
        parse_grid(["group_size=4.5"])


def test_plan_is_every_combination_times_seeds_in_order() -> None:
    plan = plan_sweep({"lr": [1e-3, 3e-3], "recipe": ["binary", "rlcr"]}, [0, 1],
                      preset="smoke", fixed={"steps": 3})
    assert len(plan.jobs) == 8
    assert [(j.params["lr"], j.params["recipe"], j.seed) for j in plan.jobs[:3]] == [
        (1e-3, "binary", 0), (1e-3, "binary", 1), (1e-3, "rlcr", 0)]
    assert all(j.config["steps"] == 3 and j.config["group_size"] == 4 for j in plan.jobs)
    assert plan.jobs[5].config["lr"] == 3e-3 and plan.jobs[5].config["seed"] == 1


def _ev(step: int, acc: float, ece: float) -> dict[str, Any]:
    return {"step": step, "accuracy": acc, "greedy_accuracy": acc, "pass_at_k": {"1": acc},
            "calibration": {"verbalized": {"ece": ece, "auroc": 0.5, "brier": 0.2},
                            "answer_prob": {"ece": 0.1, "overconfidence": 0.0}}}


def _summary() -> dict[str, Any]:
    runs = [
        {"id": "a", "seed": 0, "params": {"lr": 0.1}, "status": "finished",
         "evals": [_ev(0, 0.2, 0.5), _ev(2, 0.4, 0.3)]},
        {"id": "b", "seed": 1, "params": {"lr": 0.1}, "status": "finished",
         "evals": [_ev(0, 0.2, 0.5), _ev(2, 0.6, 0.1)]},
        {"id": "c", "seed": 0, "params": {"lr": 1.0}, "status": "finished",
         "evals": [_ev(0, 0.2, 0.5), _ev(2, 0.1, 0.7)]},
        {"id": "d", "seed": 1, "params": {"lr": 1.0}, "status": "failed", "error": "boom",
         "evals": [_ev(0, 0.2, 0.5)]},
    ]
    return build_sweep_summary({"lr": [0.1, 1.0]}, [0, 1], runs,
                               settings={"task": "add", "eval_samples": 1}, tag="t",
                               backend="local", wall_seconds=12.34)


def test_summary_means_and_sds_per_setting_by_hand() -> None:
    s = _summary()
    low, high = s["by_setting"]
    assert low["params"] == {"lr": 0.1} and low["n"] == 2
    assert low["end"]["accuracy"]["mean"] == pytest.approx(0.5)
    # sample sd of 0.4 and 0.6: sqrt(((-0.1)^2 + 0.1^2) / 1) = 0.1414...
    assert low["end"]["accuracy"]["sd"] == pytest.approx(2 ** 0.5 / 10)
    assert low["end"]["verbalized/ece"]["mean"] == pytest.approx(0.2)
    assert low["curves"]["step"] == [0, 2]
    assert low["curves"]["accuracy"][1]["mean"] == pytest.approx(0.5)
    # the failed run is listed but never aggregated: one seed left, no sd
    assert high["n"] == 1 and high["end"]["accuracy"] == {"mean": 0.1, "sd": None, "n": 1}
    assert [r["status"] for r in s["runs"]] == ["finished"] * 3 + ["failed"]
    columns, rows = summary_csv_rows(s)
    assert columns[:5] == ["id", "lr", "seed", "status", "end_step"]
    assert rows[3]["id"] == "d" and rows[3]["lr"] == 1.0 and rows[3]["accuracy"] == 0.2


def test_outputs_are_written_and_the_report_plots_each_metric_against_the_field(
        tmp_path: Path) -> None:
    paths = write_sweep_outputs(_summary(), tmp_path / "out")
    report = paths["report.html"].read_text()
    assert "at the end vs lr" in report and report.count("plotly-graph-div") >= 6
    assert "accuracy (sampled) at the end vs lr" in report
    assert paths["summary.csv"].read_text().splitlines()[0].startswith("id,lr,seed,status")
