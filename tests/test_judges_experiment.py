"""The judges experiment: its targets on hand-made summaries, the judge figures' aggregation
by hand, arms of one recipe grouped by judge, and its registry entry (no training)."""

from __future__ import annotations

import pytest

from core.config import build_config
from core.experiments import orchestrator
from core.experiments.aggregation import build_summary, judge_rows, judge_summary
from core.experiments.claim_targets import (
    judges_targets,
    target_exact_most,
    target_inverted_unlearns,
    target_random_learns,
    target_shortcut_learnt,
)
from core.experiments.registry import find


def summary_of(accuracy: dict[str, tuple[float, float]],
               gaps: dict[str, tuple[float, float]] | None = None) -> dict:
    """Only what the targets read: held-out accuracy (start, end) per arm and the training
    gap judged − true (start, end)."""
    def ends(s: float, e: float) -> dict:
        return {"start": {"mean": s}, "end": {"mean": e}}

    return {"aggregates": {arm: {"accuracy": ends(*v)} for arm, v in accuracy.items()},
            "judges": {arm: {"gap": ends(*v)} for arm, v in (gaps or {}).items()}}


CLAIMED = {"exact": (0.26, 0.42), "random": (0.26, 0.33), "shortcut": (0.26, 0.27),
           "inverted": (0.26, 0.15)}
WIDENING = {"shortcut": (0.50, 0.62)}


def test_the_claimed_pattern_holds_every_target():
    assert [t.status for t in judges_targets(summary_of(CLAIMED, WIDENING))] == [
        "PASS", "PASS", "PASS", "PASS", "report"]


def test_each_target_fails_on_its_own():
    s = summary_of({**CLAIMED, "random": (0.26, 0.45)}, WIDENING)  # random beats exact
    assert [c.passed for c in target_exact_most(s).checks] == [False, True, True]
    # + 0.02 is below the + 0.03 bar
    assert target_random_learns(summary_of({**CLAIMED, "random": (0.26, 0.28)})).status == \
        "FAIL"
    # 0.29 is within 0.05 of random's 0.33; and a gap that narrows
    res = target_shortcut_learnt(summary_of({**CLAIMED, "shortcut": (0.26, 0.29)},
                                            {"shortcut": (0.5, 0.4)}))
    assert [c.passed for c in res.checks] == [False, False]
    res = target_inverted_unlearns(summary_of({**CLAIMED, "inverted": (0.26, 0.26)}))
    assert res.status == "FAIL"
    assert target_exact_most(summary_of({"exact": (0.2, 0.3)})).status == "not run"


def test_judge_rows_and_summary_by_hand(monkeypatch):
    monkeypatch.setattr("core.experiments.aggregation.JUDGE_WINDOW", 2)
    train = [{"step": s, "judge/judged_accuracy": j, "judge/true_accuracy": t,
              "judge/agreement": a, "judge/youden_j": 0.5, "judge/tpr": 1.0, "judge/fpr": 0.5}
             for s, j, t, a in ((1, 0.6, 0.2, 0.6), (2, 0.8, 0.4, 0.6), (3, 0.9, 0.3, 0.4),
                                (4, 1.0, 0.4, 0.4))] + [{"step": 4, "loss": 1.0}]
    rows = judge_rows(train)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    other = [{**r, "judged_accuracy": r["judged_accuracy"] - 0.2} for r in rows]
    out = judge_summary([{"train_judge": rows}, {"train_judge": other}])
    # Run 1: judged 0.7 -> 0.95, true 0.3 -> 0.35; run 2: judged 0.5 -> 0.75.
    assert out["judged_accuracy"]["start"]["mean"] == pytest.approx(0.6)
    assert out["judged_accuracy"]["end"]["mean"] == pytest.approx(0.85)
    assert out["gap"]["start"]["mean"] == pytest.approx(0.3)  # (0.4 + 0.2) / 2
    assert out["gap"]["end"]["mean"] == pytest.approx(0.5)  # (0.6 + 0.4) / 2
    assert out["agreement"]["end"]["mean"] == pytest.approx(0.4)
    assert out["curve"]["step"] == [1, 2, 3, 4]
    assert out["curve"]["judged_accuracy"][0] == pytest.approx(0.5)


def test_arms_of_one_recipe_are_grouped_by_their_judge():
    evals = [{"step": 0, "accuracy": 0.2}, {"step": 10, "accuracy": 0.4}]
    runs = [{"id": f"r{i}", "recipe": "binary", "judge": arm, "seed": 0, "status": "finished",
             "error": None, "evals": evals, "train_judge": []}
            for i, arm in enumerate(("exact", "random"))]
    s = build_summary(runs, task="mix", seeds=[0], recipes=["exact", "random"], settings={},
                      wall_seconds=1.0, experiment="judges", question="?",
                      targets=lambda s: [], arm_key="judge")
    assert set(s["aggregates"]) == {"exact", "random"}
    assert [(r["recipe"], r["judge"]) for r in s["runs"]] == [("binary", "exact"),
                                                             ("binary", "random")]


def test_the_registry_entry():
    spec = find("judges")
    assert spec.arms == ("exact", "random", "shortcut", "inverted")
    assert spec.recipes == ("binary",) and spec.arm_key == "judge"
    configs = {v.arm: build_config(**{**spec.base_values(), **v.settings, "task": spec.task})
               for v in spec.variants}
    assert configs["exact"].judge == "exact" and configs["shortcut"].judge == "shortcut-judge"
    assert configs["shortcut"].judge_fn_rate == 0.0
    # The random judge has no false negatives (TPR 1, like the shortcut judge); the inverted
    # one has J = TPR - FPR < 0.
    assert configs["random"].judge_fn_rate == 0.0 and 0 < configs["random"].judge_fp_rate < 1
    inverted = configs["inverted"]
    assert (1 - inverted.judge_fn_rate) - inverted.judge_fp_rate < 0


def test_a_flag_the_arms_set_themselves_is_refused(tmp_path):
    with pytest.raises(ValueError, match="sets judge per arm"):
        orchestrator.run_experiment("judges", seeds=[0], runs_dir=tmp_path,
                                    overrides={"judge": "exact"})


def test_the_report_shows_the_judges_table_and_a_judged_vs_true_chart_per_arm():
    from core.experiments.report import render_report

    evals = [{"step": 0, "accuracy": 0.2}, {"step": 10, "accuracy": 0.4}]
    train = [{"step": s, "judge/judged_accuracy": 0.9, "judge/true_accuracy": 0.3,
              "judge/agreement": 0.4, "judge/youden_j": 0.2, "judge/tpr": 1.0,
              "judge/fpr": 0.8} for s in (1, 2)]
    runs = [{"id": f"r{i}", "recipe": "binary", "judge": arm, "seed": 0, "status": "finished",
             "error": None, "evals": evals, "train_judge": judge_rows(train)}
            for i, arm in enumerate(("random", "shortcut"))]
    spec = find("judges")
    s = build_summary(runs, task="mix", seeds=[0], recipes=["random", "shortcut"],
                      settings={}, wall_seconds=1.0, experiment="judges", question="?",
                      targets=spec.targets, arm_key="judge")
    s["variants"] = {v.arm: v.settings for v in spec.variants}
    html = render_report(s, spec.title, spec.sections)
    assert "Judges: verdict beside truth" in html and "judge_fp_rate = 0.67" in html
    assert html.count("judged vs true accuracy (training)") == 2
    assert "binary · judge shortcut" in html  # the runs table names each run's judge
