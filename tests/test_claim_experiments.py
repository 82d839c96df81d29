"""The coverage and self-feedback experiments: their targets on hand-made summaries, the
aggregation they need, and chained arms in the orchestrator (fake runs, no training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.experiments import orchestrator
from core.experiments.aggregation import pass_curve, reward_monitor
from core.experiments.claim_targets import (
    CHAINED_ARM,
    calibration_targets,
    coverage_targets,
    self_feedback_targets,
    target_chained_calibration,
    target_entropy,
    target_format,
    target_nsr_keeps,
    target_posthoc_knowledge,
    target_posthoc_numbers,
    target_psr_narrows,
    target_rlsf_accuracy,
)
from core.experiments.registry import EXPERIMENTS, find
from core.runtime.store import RunStore


def summary_of(values: dict[str, dict[str, tuple[float, float]]], k: int = 64,
               runs: list[dict] | None = None) -> dict:
    """Only what the targets read: {arm: {metric: (start, end)}} as means over seeds."""
    return {"pass_k_max": k, "runs": runs or [], "aggregates": {
        arm: {m: {"start": {"mean": s}, "end": {"mean": e}} for m, (s, e) in ms.items()}
        for arm, ms in values.items()}}


PSR = {"pass@1": (0.70, 0.90), "pass@64": (0.98, 0.90), "entropy": (0.25, 0.10)}
NSR = {"pass@1": (0.70, 0.80), "pass@64": (0.98, 0.97), "entropy": (0.25, 0.22)}


def test_coverage_targets_hold_on_the_claimed_pattern() -> None:
    s = summary_of({"psr": PSR, "nsr": NSR})
    assert [t.status for t in coverage_targets(s)] == ["PASS", "PASS", "PASS", "report"]


def test_coverage_targets_fail_each_check_on_its_own() -> None:
    saturated = {**PSR, "pass@64": (1.0, 1.0)}  # Pass@64 cannot fall from 1
    res = target_psr_narrows(summary_of({"psr": saturated}))
    assert res.status == "FAIL" and [c.passed for c in res.checks] == [True, False]
    # nsr 0.97 vs psr 0.93 + 0.05: keeps its own start but is not 0.05 above psr
    res = target_nsr_keeps(summary_of({"psr": {**PSR, "pass@64": (0.98, 0.93)}, "nsr": NSR}))
    assert [c.passed for c in res.checks] == [True, False]
    # nsr 0.98 -> 0.955 loses more than 0.02
    res = target_nsr_keeps(summary_of({"psr": PSR, "nsr": {**NSR, "pass@64": (0.98, 0.955)}}))
    assert [c.passed for c in res.checks] == [False, True]
    # falls of 0.05 (psr) and 0.05 (nsr): not more
    same = target_entropy(summary_of({"psr": {**PSR, "entropy": (0.25, 0.20)},
                                      "nsr": {**NSR, "entropy": (0.25, 0.20)}}))
    assert same.status == "FAIL"
    assert target_entropy(summary_of({"psr": PSR})).status == "not run"


def run(arm: str, seed: int, min_format: float | None, status: str = "finished") -> dict:
    return {"recipe": arm, "seed": seed, "status": status, "min_format_rate": min_format}


def test_self_feedback_targets() -> None:
    values = {"binary": {"answer_prob/ece": (0.05, 0.09), "answer_prob/overconfidence":
                         (-0.02, 0.04)},
              "rlsf": {"accuracy": (0.30, 0.34)},
              CHAINED_ARM: {"answer_prob/ece": (0.09, 0.07), "accuracy": (0.40, 0.41)}}
    runs = [run("rlsf", 0, 0.95), run(CHAINED_ARM, 0, 0.91), run("binary", 0, 0.10)]
    s = summary_of(values, runs=runs)
    assert [t.status for t in self_feedback_targets(s)] == ["PASS", "PASS", "PASS"]
    assert "0.050 → 0.090" in target_chained_calibration(s).note  # the start it came from
    assert "(over-confident)" in target_chained_calibration(s).note
    # one rlsf evaluation below 0.90 fails the format target; binary's never counts
    bad = summary_of(values, runs=[run("rlsf", 0, 0.95), run(CHAINED_ARM, 1, 0.89)])
    assert [c.passed for c in target_format(bad).checks] == [True, False]
    assert target_rlsf_accuracy(summary_of({"rlsf": {"accuracy": (0.30, 0.32)}})).status \
        == "FAIL"  # + 0.02 < + 0.03
    worse = summary_of({**values, CHAINED_ARM: {"answer_prob/ece": (0.09, 0.10)}})
    assert target_chained_calibration(worse).status == "FAIL"
    assert target_format(summary_of({})).status == "not run"


def test_pass_curve_and_reward_monitor_hand_values() -> None:
    evals = [{"step": 0, "pass_at_k": {"1": 0.2, "2": 0.4}, "accuracy": 0.2},
             {"step": 0, "pass_at_k": {"1": 0.4, "2": 0.6, "4": 0.9}, "accuracy": 0.4}]
    assert pass_curve(evals) == pytest.approx({"1": 0.3, "2": 0.5})  # only shared k
    runs = [{"evals": [{"step": 0, "accuracy": 0.2}, {"step": 2, "accuracy": 0.3}],
             "train_reward": [(1, 0.5), (2, 0.7)]},
            {"evals": [{"step": 0, "accuracy": 0.4}, {"step": 2, "accuracy": 0.5}],
             "train_reward": [(1, 0.1), (2, 0.1)]}]
    m = reward_monitor(runs)
    assert m["step"] == [0, 2]
    assert m["reward"][0] is None  # no training row at or before step 0
    assert m["reward"][1] == pytest.approx((0.6 + 0.1) / 2)  # window (0, 2], per run, mean
    assert m["accuracy"] == pytest.approx([0.3, 0.4])


def test_registry_claims_and_the_calibration_alias() -> None:
    assert find("calibration") is EXPERIMENTS["classic"]
    cov = EXPERIMENTS["coverage"]
    assert cov.recipes == ("binary", "psr", "nsr", "w-reinforce") and cov.task == "add2"
    assert cov.settings["eval_samples"] == 64
    sf = EXPERIMENTS["self-feedback"]
    assert sf.arms == ("binary", "rlsf", CHAINED_ARM)
    assert sf.chain(CHAINED_ARM).after == "binary" and sf.chain(CHAINED_ARM).recipe == "rlsf"
    with pytest.raises(ValueError, match="unknown experiment"):
        find("nope")


def test_chained_arm_waits_for_its_run_and_starts_from_it(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The chained job is launched only after its parent finished, with init_from = the
    parent's run id; when the parent fails, the chained job is not started."""
    import core.runtime.runner as runner

    launched: list[tuple[str, str]] = []
    ends = {("binary", 0): "finished", ("binary", 1): "failed"}
    polls: dict[str, int] = {}

    def fake_launch(config, root=None, owner=None):
        run_id = f"r{len(launched)}"
        launched.append((run_id, config.init_from))
        return run_id

    def fake_read(store, o):  # each run is running for one poll, then ends
        polls[o.id] = polls.get(o.id, 0) + 1
        o.status = "running" if polls[o.id] < 2 else ends.get((o.recipe, o.seed), "finished")

    monkeypatch.setattr(runner, "launch", fake_launch)
    monkeypatch.setattr(orchestrator, "_read", fake_read)
    monkeypatch.setattr(orchestrator, "POLL_SECONDS", 0.0)
    jobs = [orchestrator.Job(0, "binary", 0, {"steps": 1, "recipe": "binary"}),
            orchestrator.Job(1, CHAINED_ARM, 0, {"steps": 1, "recipe": "rlsf"}, after=0),
            orchestrator.Job(2, "binary", 1, {"steps": 1, "recipe": "binary"}),
            orchestrator.Job(3, CHAINED_ARM, 1, {"steps": 1, "recipe": "rlsf"}, after=2)]
    monkeypatch.setattr(orchestrator.RunConfig, "from_dict",
                        classmethod(lambda cls, d: type("C", (), {"init_from": d.get(
                            "init_from", "")})()))
    outcomes, interrupted = orchestrator.run_jobs(jobs, RunStore(tmp_path), 4, "test")
    assert not interrupted
    parent0 = outcomes[0].id
    assert (outcomes[1].id, parent0) in [(i, f) for i, f in launched]  # started from seed 0's
    assert launched.index((parent0, "")) < launched.index((outcomes[1].id, parent0))
    assert outcomes[3].id is None and outcomes[3].status == "not started"
    assert "ended failed" in outcomes[3].error


# binary's verbalized signal after the map: ECE 0.40 -> 0.07, AUROC 0.56 -> 0.55; rlcr's raw
# ECE 0.06 and AUROC 0.78 on the same half.
POSTHOC = {"binary": {"verbalized_raw_half/ece": (0.55, 0.40),
                      "verbalized_recalibrated/ece": (0.05, 0.07),
                      "verbalized_raw_half/auroc": (0.58, 0.56),
                      "verbalized_recalibrated/auroc": (0.57, 0.55)},
           "rlcr": {"verbalized_raw_half/ece": (0.55, 0.06),
                    "verbalized_recalibrated/ece": (0.05, 0.04),
                    "verbalized_raw_half/auroc": (0.58, 0.78),
                    "verbalized_recalibrated/auroc": (0.57, 0.77)}}


def _with(arm: str, metric: str, end: float) -> dict:
    values = {a: dict(ms) for a, ms in POSTHOC.items()}
    values[arm][metric] = (values[arm][metric][0], end)
    return summary_of(values)


def test_posthoc_targets_hold_on_the_claimed_pattern() -> None:
    s = summary_of(POSTHOC)
    numbers, knowledge = target_posthoc_numbers(s), target_posthoc_knowledge(s)
    assert (numbers.status, knowledge.status) == ("PASS", "PASS")
    # 0.07 <= 0.5 x 0.40 and 0.07 <= 0.06 + 0.03; 0.55 <= 0.60 and 0.78 >= 0.55 + 0.05
    assert numbers.checks[1].measured == "0.070 vs 0.060 + 0.03 = 0.090"
    assert knowledge.checks[1].measured == "0.780 vs 0.550 + 0.05 = 0.600"
    report = calibration_targets(s)[-1]
    assert report.status == "report"
    assert report.checks[0].label == "binary, verbalized: raw → post-hoc"
    assert report.checks[0].measured == "ECE 0.400 → 0.070; AUROC 0.560 → 0.550"


def test_posthoc_targets_fail_each_check_on_its_own() -> None:
    far = target_posthoc_numbers(_with("binary", "verbalized_recalibrated/ece", 0.10))
    assert [c.passed for c in far.checks] == [True, False]  # 0.10 > 0.06 + 0.03
    barely = target_posthoc_numbers(_with("binary", "verbalized_raw_half/ece", 0.12))
    assert [c.passed for c in barely.checks] == [False, True]  # 0.07 > 0.5 x 0.12
    seeing = target_posthoc_knowledge(_with("binary", "verbalized_recalibrated/auroc", 0.62))
    assert [c.passed for c in seeing.checks] == [False, True]  # 0.78 >= 0.67 still
    close = target_posthoc_knowledge(_with("rlcr", "verbalized_raw_half/auroc", 0.59))
    assert [c.passed for c in close.checks] == [True, False]  # 0.59 < 0.55 + 0.05


def test_posthoc_targets_are_not_run_without_recalibrated_runs() -> None:
    old = summary_of({arm: {"verbalized/ece": (0.5, 0.4)} for arm in ("binary", "rlcr")})
    for target in (target_posthoc_numbers, target_posthoc_knowledge):
        res = target(old)
        assert res.status == "not run" and "logged no recalibrated signal" in res.note
    assert target_posthoc_numbers(summary_of({"binary": POSTHOC["binary"]})).status == "not run"
    assert [t.key for t in calibration_targets(old)][-3:] == [
        "posthoc_numbers", "posthoc_knowledge", "posthoc_all"]
