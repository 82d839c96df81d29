"""Tests for core.data.tasks (split, sampling, grading) and core.data.formats (prompt, target,
parse)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from core.data.formats import COMPACT, CONFIDENCE_LEVELS, Parsed, level_to_confidence
from core.data.tasks import TASKS, ArithmeticTask, Example, get_task, is_held_out

QUESTION = re.compile(r"^(\d+)([+-])(\d+)$")


def evaluate(question: str) -> int:
    m = QUESTION.match(question)
    assert m, question
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    return a + b if op == "+" else a - b


# ------------------------------------------------------------------ train/eval split


@pytest.mark.parametrize("name", sorted(TASKS))
def test_train_and_eval_never_overlap(name):
    task = TASKS[name]
    held_out = {ex.question for ex in task.eval_set(200)}
    assert all(is_held_out(q) for q in held_out)
    rng = np.random.default_rng(0)
    train = [ex for _ in range(20) for ex in task.train_batch(rng, 100)]  # 2000 draws
    assert len(train) == 2000
    train_questions = {ex.question for ex in train}
    assert not train_questions & held_out
    assert not any(is_held_out(q) for q in train_questions)


def test_is_held_out_is_a_stable_one_in_eight_split():
    # stable: the same text always falls on the same side
    assert is_held_out("123+45") == is_held_out("123+45")
    questions = [f"{a}+{b}" for a in range(10, 60) for b in range(10, 60)]  # 2500
    share = sum(map(is_held_out, questions)) / len(questions)
    assert 0.08 < share < 0.17  # about 1 in 8, on both sides of the split


@pytest.mark.parametrize("name", sorted(TASKS))
def test_eval_set_is_fixed_sized_and_unique(name):
    task = TASKS[name]
    first = task.eval_set(64)
    assert len(first) == 64
    assert len({ex.question for ex in first}) == 64
    assert task.eval_set(64) == first  # the same set every time, whatever the seed
    assert task.eval_set(16) == first[:16]  # a smaller set is a prefix of a larger one


def test_eval_set_too_large_for_a_tiny_task_raises():
    tiny = ArithmeticTask("tiny", ops=("+",), digits=(1,))  # only 100 questions exist
    with pytest.raises(ValueError, match="fewer than"):
        tiny.eval_set(100)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_train_batch_depends_on_the_seed(name):
    task = TASKS[name]
    a = task.train_batch(np.random.default_rng(1), 32)
    b = task.train_batch(np.random.default_rng(1), 32)
    c = task.train_batch(np.random.default_rng(2), 32)
    assert a == b
    assert a != c
    assert len(a) == 32


@pytest.mark.parametrize("name", sorted(TASKS))
def test_examples_are_correct_and_within_the_task_digits(name):
    task = TASKS[name]
    examples = task.train_batch(np.random.default_rng(5), 300) + task.eval_set(100)
    ops_seen = set()
    for ex in examples:
        assert evaluate(ex.question) == int(ex.answer), ex
        a, op, b = QUESTION.match(ex.question).groups()
        ops_seen.add(op)
        assert op in task.ops
        for operand in (a, b):
            assert len(operand) in task.digits, ex
            assert operand == str(int(operand))  # no leading zeros
    assert ops_seen == set(task.ops)


def test_get_task():
    assert get_task("add") is TASKS["add"]
    assert get_task("mix") is TASKS["mix"]
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        get_task("nope")


# ------------------------------------------------------------------------ grading


@pytest.mark.parametrize(("predicted", "right"), [
    ("12", True),
    ("012", True),  # exact integer match, not string match
    ("13", False),
    ("-12", False),
    ("1.2", False),
    ("", False),
    ("abc", False),
    (None, False),
])
def test_grading_is_exact_integer_match(predicted, right):
    assert TASKS["add"].is_correct(predicted, Example("5+7", "12")) is right


def test_grading_negative_answers():
    ex = Example("12-345", "-333")
    assert TASKS["mix"].is_correct("-333", ex)
    assert not TASKS["mix"].is_correct("333", ex)


# ------------------------------------------------------------------------ formats


def test_prompt_and_target():
    ex = Example("123+45", "168")
    assert COMPACT.prompt(ex) == "123+45="
    assert COMPACT.target(ex, 7) == "168;C7"
    assert COMPACT.target(Example("1-3", "-2"), 0) == "-2;C0"


@pytest.mark.parametrize("level", range(CONFIDENCE_LEVELS))
def test_confidence_levels_sit_at_bin_centres(level):
    q = level_to_confidence(level)
    assert q == pytest.approx((level + 0.5) / 10)
    assert int(q * 10) == level  # inside the level-th of ten equal-width bins


def test_target_parses_back():
    ex = Example("123+45", "168")
    for level in range(CONFIDENCE_LEVELS):
        parsed = COMPACT.parse(COMPACT.target(ex, level))
        assert parsed.answer == "168"
        assert parsed.confidence == pytest.approx(level_to_confidence(level))


def test_parse_well_formed():
    p = COMPACT.parse("168;C7")
    assert p == Parsed("168", 0.75, (0, 3), (5, 6))
    assert p.well_formed
    assert "168;C7"[slice(*p.answer_span)] == "168"
    assert "168;C7"[slice(*p.confidence_span)] == "7"


def test_parse_negative_and_lowest_confidence():
    p = COMPACT.parse("-42;C0")
    assert p.answer == "-42"
    assert p.confidence == pytest.approx(0.05)
    assert p.answer_span == (0, 3)
    assert p.well_formed


@pytest.mark.parametrize(("text", "answer", "span"), [
    ("168", "168", (0, 3)),  # answer but no confidence
    ("168;C", "168", (0, 3)),  # confidence digit missing
    ("168;C77", "168", (0, 3)),  # one digit only
    ("168;CX", "168", (0, 3)),
    ("-5;", "-5", (0, 2)),
])
def test_parse_answer_without_confidence_is_not_well_formed(text, answer, span):
    p = COMPACT.parse(text)
    assert p.answer == answer
    assert p.answer_span == span
    assert p.confidence is None
    assert p.confidence_span is None
    assert not p.well_formed


@pytest.mark.parametrize("text", ["abc", "", ";C7", "C7", "-"])
def test_parse_garbage_gives_nothing(text):
    p = COMPACT.parse(text)
    assert p.answer is None
    assert p.confidence is None
    assert p.answer_span is None
    assert not p.well_formed
