"""The app's own helpers in ui/: pickers in words, upload column guesses, durations, and
the confidence signals' labels."""

from __future__ import annotations

from core.metrics import SIGNALS
from core.runtime.estimates import Estimate
from ui import choices, common
from ui.task_source import guess_column


def test_model_choices_and_what_each_choice_means():
    models = choices.model_choices()
    assert list(models)[0] == choices.EMBEDDED_CHOICE
    assert list(models)[-1] == choices.OTHER_MODEL
    assert "494 M params · weights 1.0 GB in bf16" in models["Qwen/Qwen2.5-0.5B-Instruct"]
    assert "362 M params" in models["HuggingFaceTB/SmolLM2-360M-Instruct"]
    assert choices.model_for_choice(choices.EMBEDDED_CHOICE) == "embedded"
    assert choices.model_for_choice("Qwen/Qwen3-0.6B") == "Qwen/Qwen3-0.6B"
    assert choices.model_for_choice(choices.OTHER_MODEL, " /models/x ") == "/models/x"


def test_task_choices_describe_the_built_in_tasks():
    tasks = choices.task_choices()
    assert tasks["add"] == "add — 2-4 digit addition"
    assert tasks["mix"] == "mix — 2-4 digit addition and subtraction"


def test_column_guesses():
    assert guess_column(("id", "Problem", "solution"), "question") == "Problem"
    assert guess_column(("id", "Problem", "solution"), "answer") == "solution"
    assert guess_column(("input_text", "gold_answer"), "answer") == "gold_answer"
    assert guess_column(("a", "b"), "question") is None


def test_durations_and_estimates_in_words():
    assert common.fmt_duration(None) == "unknown"
    assert common.fmt_duration(float("inf")) == "unknown"
    assert common.fmt_duration(42.4) == "42 s"
    assert common.fmt_duration(125) == "2 min 05 s"
    assert common.fmt_duration(3 * 3600 + 120) == "3 h 02 min"
    est = Estimate(30.0, 25.0, 35.0, "measured on a test machine")
    assert common.fmt_estimate(est) == "about **30 s** (25 s–35 s; measured on a test machine)"
    assert common.fmt_estimate(Estimate(30.2, 30.0, 30.4, "b")) == "about **30 s** (30 s; b)"


def test_every_confidence_signal_has_its_words():
    assert tuple(common.SIGNAL_LABELS) == SIGNALS
    assert tuple(common.SHORT_SIGNAL) == SIGNALS
    assert common.short_signal("answer_prob_recalibrated") == "answer prob., post-hoc"
    assert common.short_signal("consistency") == "consistency"
    assert common.calibration_field("calibration/verbalized/ece", True) == \
        "calibration/verbalized_recalibrated/ece"
    assert common.calibration_field("calibration/verbalized/ece", False) == \
        "calibration/verbalized/ece"
    assert common.calibration_field("accuracy", True) == "accuracy"


def test_no_estimate_reads_as_unknown_with_what_to_do():
    assert "unknown" in common.fmt_estimate(None)
    assert "benchmarks/costs.py" in common.fmt_estimate(None)
