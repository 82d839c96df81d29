"""Run-time estimates: the model against hand-worked values, the measured costs file kept in
step with the estimator, ranges, learning from finished runs."""

from __future__ import annotations

import json

import pytest

from core.config import RunConfig, build_config
from core.paths import COSTS_FILE
from core.runtime import estimates
from core.runtime.store import RunRecord

COSTS = {"startup": 5.0, "train_sample": 0.001, "eval_fixed": 0.5, "eval_sample": 0.0002}


def test_run_seconds_by_hand():
    # quick: 100 steps x 16 prompts x G 8 = 12,800 samples; 6 evaluations of 128 x (16 + 1)
    # = 2,176 completions: 5 + 12.8 + 6 x (0.5 + 0.4352) = 23.4112 s
    assert estimates.run_seconds(build_config("quick"), COSTS) == pytest.approx(23.4112)
    # no evaluation: startup and training only; inner epochs repeat the training
    c = RunConfig(steps=10, prompts_per_step=2, group_size=4, inner_epochs=2, no_eval=True)
    assert estimates.run_seconds(c, COSTS) == pytest.approx(5 + 160 * 0.001)


def test_the_costs_file_is_in_step_with_the_estimator():
    """benchmarks/costs.py writes it; the estimator reads exactly these keys."""
    data = json.loads(COSTS_FILE.read_text())
    for side in ("low", "high"):
        assert set(data[side]) == set(estimates.COST_KEYS)
    assert all(0 <= data["low"][k] <= data["high"][k] for k in estimates.COST_KEYS)
    assert all(data["low"][k] > 0 for k in ("startup", "train_sample", "eval_sample"))
    assert data["machine"] and data["measured"]
    costs = estimates.measured_costs()
    assert costs.basis == f"measured on {data['machine']} ({data['measured']})"


def test_an_estimate_is_a_range_from_the_lowest_to_the_highest_costs(monkeypatch):
    monkeypatch.setattr(estimates, "measured_costs", lambda: estimates.Costs(
        COSTS, {k: 2 * v for k, v in COSTS.items()}, "measured on a test machine"))
    est = estimates.estimate(build_config("quick"), [], lambda run_id: ([], []))
    assert (est.low, est.high) == pytest.approx((23.4112, 46.8224))
    assert est.seconds == pytest.approx((est.low + est.high) / 2)
    assert est.basis == "measured on a test machine"
    group = estimates.estimate_group(est, 4)
    assert (group.low, group.high) == pytest.approx((4 * est.low, 4 * est.high))
    assert "4 runs share the CPU" in group.basis
    other = estimates.estimate(build_config("quick", model="/some/model"), [], lambda i: ([], []))
    assert "a larger model takes much longer" in other.basis


def test_single_thread_cpu_costs_span_one_to_all_threads(monkeypatch):
    monkeypatch.setattr(estimates, "measured_costs", lambda: estimates.Costs(
        COSTS, COSTS, "measured on a test machine", single_thread=True))
    monkeypatch.setattr(estimates, "cores", lambda: 2)
    est = estimates.estimate(build_config("quick"), [], lambda run_id: ([], []))  # threads 0
    assert (est.low, est.high) == pytest.approx((23.4112 / 2, 23.4112))
    assert "on 2 threads, 1/2 to all of one thread's time" in est.basis
    one = estimates.estimate(build_config("quick", threads=1), [], lambda run_id: ([], []))
    assert (one.low, one.high) == pytest.approx((23.4112, 23.4112))


def test_finished_runs_of_the_same_model_replace_the_per_sample_costs():
    base = estimates.Costs(COSTS, COSTS, "measured")

    def run(run_id: str, model: str = "embedded", status: str = "finished") -> RunRecord:
        config = {"model": model, "prompts_per_step": 2, "group_size": 4, "eval_prompts": 10,
                  "eval_samples": 4}
        return RunRecord(run_id, status, config, None, 1, 1, None, None)

    metrics = {"a": ([{"seconds": 0.8}, {"seconds": 0.8}], [{"seconds": 1.5}]),
               "b": ([{"seconds": 1.6}], [{"seconds": 3.0}])}
    runs = [run("a"), run("b"), run("c", status="failed"), run("d", model="other")]
    costs, used = estimates.learned_costs(runs, "embedded", metrics.__getitem__, base)
    assert used == 2 and costs.basis == "learned from 2 finished runs of this model here"
    # per sample: 0.8 / 8 = 0.1 and 1.6 / 8 = 0.2; evaluation: (1.5 - 0.5) / 50 = 0.02 and
    # (3.0 - 0.5) / 50 = 0.05 (10 prompts x (4 + 1) completions)
    assert (costs.low["train_sample"], costs.high["train_sample"]) == pytest.approx((0.1, 0.2))
    assert (costs.low["eval_sample"], costs.high["eval_sample"]) == pytest.approx((0.02, 0.05))
    assert costs.low["startup"] == COSTS["startup"]  # not learned: from the costs file
    assert not costs.single_thread  # learned step times are wall times as the runs ran
    assert estimates.learned_costs([], "embedded", metrics.__getitem__, base) == (base, 0)


def test_without_a_readable_costs_file_there_is_no_estimate(tmp_path, monkeypatch):
    monkeypatch.setattr(estimates, "COSTS_FILE", tmp_path / "missing.json")
    assert estimates.measured_costs() is None
    assert estimates.estimate(build_config("quick"), [], lambda run_id: ([], [])) is None
    assert estimates.estimate_group(None, 4) is None
    (tmp_path / "missing.json").write_text('{"low": {}}')  # damaged: keys missing
    assert estimates.measured_costs() is None


def test_a_language_model_judge_costs_by_hand():
    from core.config import build_config
    from core.runtime.estimates import judge_seconds_per_step

    c = build_config(prompts_per_step=16, group_size=8, judge_max_new_tokens=256)
    # 16 x 8 replies x 256 tokens at 48 tokens/s for a 494 M model: 682.67 s; half the size,
    # half the time.
    assert judge_seconds_per_step(c, 494_000_000) == pytest.approx(16 * 8 * 256 / 48)
    assert judge_seconds_per_step(c, 247_000_000) == pytest.approx(16 * 8 * 256 / 96)
