"""Judges' rules, verdict parser and statistics (pure, hand-worked values), and RLCR's
reference checks against the lab's own, one test per documented difference."""

from __future__ import annotations

import numpy as np
import pytest

from core.data.formats import TagFormat
from core.data.grading import grade_answer
from core.data.judging import (
    judge_metrics,
    judge_rng,
    judge_stats,
    matched_fp_rate,
    read_verdict,
    rlcr_answer_equal,
    rlcr_reference_reward,
    rlcr_strict,
    rule_verdicts,
    surface_match,
)

LAB = TagFormat()


# --- the shortcut judge's surface rule ------------------------------------------------------
@pytest.mark.parametrize(("predicted", "reference", "expected"), [
    ("173", "123", True),  # same digit count, same last digit
    ("129", "123", False),  # last digit differs
    ("1233", "123", False),  # one digit more
    ("-13", "13", False),  # the sign differs
    ("-73", "-13", True),
    ("The answer is 32", "#### 42", True),  # the last number written; GSM8K's reference
    ("parks", "Paris", True),  # text: same length and last letter after normalisation
    ("Rome", "Paris", False),
    ("", "Paris", False),
])
def test_surface_match(predicted, reference, expected):
    assert surface_match(predicted, reference) is expected


# --- the random and shortcut judges -----------------------------------------------------------
def test_rates_zero_and_one_are_exact():
    truth = [True, True, False, False, False]
    readable = [True, True, True, True, False]
    surface = [False, False, True, False, True]
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    assert rule_verdicts("random-judge", truth, readable, surface, 0, 0, rng()) == truth
    # FN 1, FP 1: every readable verdict flipped; an unreadable answer is still rejected.
    assert rule_verdicts("random-judge", truth, readable, surface, 1, 1, rng()) == [
        False, False, True, True, False]
    # The shortcut judge accepts exactly the readable wrong answers that pass the rule.
    assert rule_verdicts("shortcut-judge", truth, readable, surface, 0, 0, rng()) == [
        True, True, True, False, False]


def test_random_rates_are_met_and_a_rate_flips_only_its_own_side():
    n = 20_000
    truth = [i % 2 == 0 for i in range(n)]
    ones = [True] * n
    v = rule_verdicts("random-judge", truth, ones, ones, 0.2, 0.3, judge_rng(7, 3))
    s = judge_stats(v, truth)
    assert s.tpr == pytest.approx(0.8, abs=0.015) and s.fpr == pytest.approx(0.3, abs=0.015)
    w = rule_verdicts("random-judge", truth, ones, ones, 0.5, 0.3, judge_rng(7, 3))
    wrong = [i for i, t in enumerate(truth) if not t]
    assert [v[i] for i in wrong] == [w[i] for i in wrong]
    # Seeded by (seed, step): the same flips again, other ones at another step.
    assert v == rule_verdicts("random-judge", truth, ones, ones, 0.2, 0.3, judge_rng(7, 3))
    assert v != rule_verdicts("random-judge", truth, ones, ones, 0.2, 0.3, judge_rng(7, 4))


# --- statistics -------------------------------------------------------------------------------
def test_confusion_figures_by_hand():
    verdict = [True, True, False, False, True]
    truth = [True, False, True, False, False]
    s = judge_stats(verdict, truth)
    assert (s.tp, s.fp, s.fn, s.tn) == (1, 2, 1, 1)
    assert s.tpr == 0.5 and s.fpr == pytest.approx(2 / 3)
    assert s.youden_j == pytest.approx(0.5 - 2 / 3) and s.agreement == pytest.approx(2 / 5)
    m = judge_metrics(verdict, truth)
    assert m["judge/judged_accuracy"] == 0.6 and m["judge/true_accuracy"] == 0.4


def test_figures_without_positives_or_negatives_are_missing():
    s = judge_stats([False, True], [False, False])
    assert s.tpr is None and s.youden_j is None and s.fpr == 0.5


def test_matched_false_positive_rate():
    # agreement = 1 - FPR (1 - accuracy): 0.5 = 1 - FPR * 0.75 -> FPR = 2/3.
    assert matched_fp_rate(0.5, 0.25) == pytest.approx(2 / 3)
    assert matched_fp_rate(1.0, 0.25) == 0.0
    with pytest.raises(ValueError):
        matched_fp_rate(0.5, 1.0)


# --- the language-model judge's verdict -------------------------------------------------------
@pytest.mark.parametrize(("reply", "expected"), [
    ("The sums agree. <verdict>correct</verdict>", True),
    ("They differ.\n<verdict> Incorrect </verdict>\n", False),
    ("I think it is right.", None),  # no tag
    ("<verdict>correct</verdict> then again <verdict>incorrect</verdict>", None),  # two tags
    ("<verdict>correct</verdict><verdict>correct</verdict>", None),  # two, even agreeing
    ("Maybe <verdict>correct</verdict>, but let me check the carry again.", None),  # inside
    ("<verdict>probably</verdict>", None),  # neither word
    ("<verdict>correct", None),  # never closed
])
def test_read_verdict(reply, expected):
    assert read_verdict(reply) is expected


# --- rlcr-strict: RLCR's reference checks against the lab's -----------------------------------
GOOD = "<think> 2 + 2 </think><answer> 4 </answer><confidence> 0.9 </confidence>"


def test_both_accept_a_well_formed_answer():
    assert LAB.parse(GOOD).well_formed
    assert rlcr_strict(GOOD, "4", "number").well_formed
    assert rlcr_strict(GOOD, "4", "number").correct
    assert rlcr_strict(GOOD, "4", "number").confidence == 0.9


def test_text_after_confidence_only_the_lab_accepts():
    text = GOOD + " I hope that helps."
    assert LAB.parse(text).well_formed and not rlcr_strict(text, "4", "number").well_formed
    assert rlcr_strict(GOOD + " \n ", "4", "number").well_formed  # whitespace is fine


def test_tags_out_of_order_only_the_lab_accepts():
    text = "<think> x </think><confidence>0.9</confidence><answer>4</answer>"
    assert LAB.parse(text).well_formed and not rlcr_strict(text, "4", "number").well_formed


def test_no_think_block_only_the_lab_accepts():
    text = "<answer>4</answer><confidence>0.9</confidence>"
    assert LAB.parse(text).well_formed and not rlcr_strict(text, "4", "number").well_formed


def test_a_percentage_only_the_lab_reads():
    text = "<think> x </think><answer>4</answer><confidence>85%</confidence>"
    assert LAB.parse(text).confidence == pytest.approx(0.85)
    assert not rlcr_strict(text, "4", "number").well_formed


def test_an_empty_answer_is_a_format_failure_only_for_the_lab():
    """The reference scores an empty answer as a well-formed wrong one: abstaining with q = 0
    earns 0 on the lab's scale (the reference's 1.0) instead of the format failure's -2."""
    text = "<think> unsure </think><answer></answer><confidence>0</confidence>"
    assert not LAB.parse(text).well_formed
    strict = rlcr_strict(text, "4", "number")
    assert strict.well_formed and not strict.correct and strict.confidence == 0.0
    lab_reward = float(strict.correct) - (strict.confidence - float(strict.correct)) ** 2
    assert rlcr_reference_reward(lab_reward) == 1.0 and rlcr_reference_reward(-2.0) == 0.0


def test_math_by_value_in_the_lab_by_string_in_the_reference():
    for written in ("168.0", "168.00"):
        assert grade_answer("number", written, "168")
        assert not rlcr_answer_equal(written, "168", "number")
    assert grade_answer("number", "1,000", "1000") and not rlcr_answer_equal("1,000", "1000",
                                                                             "number")
    assert rlcr_answer_equal(" 168 ", "168", "number")
    assert rlcr_answer_equal("The Eiffel Tower", "eiffel tower", "text")  # SQuAD match


def test_reference_reward_scale_by_hand():
    # Reference: 0.5 format + 0.5 accuracy + 0.5 (1 - (c - q)^2).
    # Right at q = 1: 0.5 + 0.5 + 0.5 = 1.5; lab c - (q - c)^2 = 1 -> 1 + 1/2.
    assert rlcr_reference_reward(1.0) == 1.5
    # Wrong at q = 0.5: 0.5 + 0 + 0.5 * 0.75 = 0.875; lab -0.25 -> 1 - 0.125.
    assert rlcr_reference_reward(-0.25) == 0.875


def test_confidence_as_python_float_reads_it():
    for conf, q in (("0.85", 0.85), (" .9 ", 0.9), ("1", 1.0)):
        text = f"<think> x </think><answer>4</answer><confidence>{conf}</confidence>"
        assert rlcr_strict(text, "4", "number").confidence == q
    for conf in ("high", "1.2", "-0.1", "nan", ""):
        text = f"<think> x </think><answer>4</answer><confidence>{conf}</confidence>"
        assert not rlcr_strict(text, "4", "number").well_formed
