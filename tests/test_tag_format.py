"""RLCR's tag format: the system prompt, the last-occurrence parser, confidence rules."""

from __future__ import annotations

import pytest

from core.data.formats import SYSTEM_DIRECT, SYSTEM_REASONING, TagFormat, read_confidence
from core.data.tasks import Example

TAGS = TagFormat()


def test_prompt_is_system_plus_question_through_the_renderer():
    seen = []

    def render(messages):
        seen.append(messages)
        return "RENDERED"

    fmt = TagFormat(render=render)
    assert fmt.prompt(Example("What is 2+2?", "4")) == "RENDERED"
    (messages,) = seen
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"] == "What is 2+2?"
    for tag in ("<think>", "<answer>", "<confidence>"):
        assert tag in messages[0]["content"]


def test_reasoning_off_drops_the_think_block():
    assert "<think>" in SYSTEM_REASONING and "<think>" not in SYSTEM_DIRECT
    assert TagFormat(reasoning=False).system_prompt == SYSTEM_DIRECT
    assert TagFormat(reasoning=False).target(Example("q", "4"), 9).startswith("<answer>")


def test_target_parses_back():
    text = TAGS.target(Example("q", "168"), 7)
    p = TAGS.parse(text)
    assert (p.answer, p.confidence, p.well_formed) == ("168", 0.75, True)


def test_well_formed_with_spans():
    text = "<think>2+2 is 4</think><answer> 4 </answer><confidence>0.9</confidence>"
    p = TAGS.parse(text)
    assert (p.answer, p.confidence, p.well_formed) == ("4", 0.9, True)
    assert text[slice(*p.answer_span)] == "4"  # whitespace inside the tags is not the answer
    assert text[slice(*p.confidence_span)] == "0.9"


def test_the_last_occurrence_of_each_tag_counts():
    text = ("<answer>3</answer><confidence>0.2</confidence> wait, I made a mistake. "
            "<answer>4</answer><confidence>0.8</confidence>")
    p = TAGS.parse(text)
    assert (p.answer, p.confidence) == ("4", 0.8)
    assert p.answer_span[0] > text.index("mistake")
    assert text[slice(*p.confidence_span)] == "0.8"


def test_an_unclosed_opening_tag_before_the_last_answer_is_not_part_of_it():
    p = TAGS.parse("<answer>1 <answer>2</answer><confidence>1</confidence>")
    assert p.answer == "2"


@pytest.mark.parametrize(("stated", "q"), [
    ("0.85", 0.85), ("1", 1.0), ("0", 0.0), (".5", 0.5), ("85%", 0.85), ("100 %", 1.0),
    (" 0.3 ", 0.3),
    ("85", None),  # out of [0, 1] without a % sign
    ("1.2", None), ("-0.1", None), ("150%", None), ("high", None), ("0.8 or 0.9", None),
    ("", None),
])
def test_confidence_values(stated, q):
    assert read_confidence(stated) == (pytest.approx(q) if q is not None else None)


@pytest.mark.parametrize("text", [
    "<answer>4</answer>",  # no confidence
    "<answer>4</answer><confidence>1.5</confidence>",  # out of range
    "<answer>4</answer><confidence>very sure</confidence>",
    "<answer>4</answer><confidence>0.5",  # unclosed
    "4 with confidence 0.9",  # no tags at all
    "<answer></answer><confidence>0.5</confidence>",  # empty answer
])
def test_format_failures(text):
    p = TAGS.parse(text)
    assert not p.well_formed
    assert p.confidence_span is None or p.confidence is not None


def test_out_of_range_confidence_keeps_the_answer_but_fails_the_format():
    p = TAGS.parse("<answer>4</answer><confidence>2</confidence>")
    assert p.answer == "4" and p.answer_span == (8, 9)
    assert p.confidence is None and p.confidence_span is None
    assert not p.well_formed
