"""Graders, with hand-worked cases: GSM8K's ####, plain numbers, math fallback, SQuAD text."""

from __future__ import annotations

from fractions import Fraction

import pytest

from core.data import grading
from core.data.grading import (
    grade_answer,
    last_number,
    math_equal,
    normalize_text,
    number_equal,
    read_number,
)

GSM8K_SOLUTION = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
                  "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n"
                  "#### 72")


@pytest.mark.parametrize(("reference", "value"), [
    (GSM8K_SOLUTION, Fraction(72)),  # the text after ####, not the 24 or 48 before it
    ("#### 1,000", Fraction(1000)),
    ("72", Fraction(72)),
    ("-3.5", Fraction(-7, 2)),
    ("$12.50", Fraction(25, 2)),
    ("1/2", Fraction(1, 2)),
    (" 7. ", Fraction(7)),
    ("Paris", None),
    ("3 apples", None),  # the reference side is strict: one number, nothing else
    ("", None),
])
def test_read_number_reference_side(reference, value):
    assert read_number(reference) == value


@pytest.mark.parametrize(("prediction", "value"), [
    ("72", Fraction(72)),
    ("The answer is 72.", Fraction(72)),
    ("48/2 = 24, so 48 + 24 = 72", Fraction(72)),  # the last number
    ("#### 72", Fraction(72)),
    ("about 1,234 people", Fraction(1234)),
    ("no idea", None),
])
def test_last_number_prediction_side(prediction, value):
    assert last_number(prediction) == value


@pytest.mark.parametrize(("prediction", "reference", "right"), [
    ("72", GSM8K_SOLUTION, True),
    ("72.0", "72", True),
    ("72.5", "72", False),
    ("1000", "#### 1,000", True),
    ("It is 24 in May and 72 in total", "72", True),
    ("72 in total, 24 in May", "72", False),  # the last number counts
    ("0.5", "1/2", True),
    ("", "72", False),
    ("seventy-two", "72", False),
    ("72", "Paris", False),  # a non-numeric reference never matches
])
def test_number_equal(prediction, reference, right):
    assert number_equal(prediction, reference) is right


@pytest.mark.parametrize(("text", "normal"), [
    ("The Eiffel Tower!", "eiffel tower"),
    ("  an   Apple. ", "apple"),
    ("Theatre", "theatre"),  # 'the' only as a whole word
    ("U.S.A.", "usa"),
    ("1,000", "1000"),
    ("A", ""),
])
def test_squad_normalisation_by_hand(text, normal):
    assert normalize_text(text) == normal


@pytest.mark.parametrize(("prediction", "reference", "right"), [
    ("the Eiffel Tower", "Eiffel Tower", True),
    ("Eiffel tower.", "The Eiffel Tower", True),
    ("New York", "New York City", False),  # exact match, not overlap
    ("yes", "Yes", True),
    ("no", "yes", False),
])
def test_text_grader(prediction, reference, right):
    assert grade_answer("text", prediction, reference) is right


@pytest.mark.parametrize(("prediction", "reference", "right"), [
    ("\\frac{1}{2}", "0.5", True),
    ("$\\boxed{3}$", "3", True),
    ("\\dfrac{3}{4}", "\\frac{3}{4}", True),
    ("0.75", "\\frac{3}{4}", True),
    ("x+1", "x+1", True),
    ("5", "#### 5", True),
    ("4", "\\frac{9}{2}", False),
])
def test_math_numeric_fallback(monkeypatch, prediction, reference, right):
    """Without math-verify (an optional package) the numeric fallback decides."""
    import builtins

    real_import = builtins.__import__

    def no_math_verify(name, *args, **kwargs):
        if name == "math_verify":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_math_verify)
    assert math_equal(prediction, reference) is right


def test_missing_answer_is_wrong_and_unknown_grader_raises():
    assert not grade_answer("number", None, "1")
    assert not grade_answer("text", "   ", "a")
    with pytest.raises(ValueError, match="unknown grader"):
        grade_answer("fuzzy", "1", "1")
    assert set(grading.GRADERS) == {"number", "math", "text"}
