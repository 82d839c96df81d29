"""Prompt formats: how a question becomes a prompt, and how a completion is parsed.

The embedded model speaks the compact format `Q=` -> `ANSWER;C<d>`, where the digit d is
its verbalized confidence on ten levels, q = (d + 0.5) / 10: each level sits at the centre
of one of the ten equal-width ECE bins.

Chat models speak RLCR's tag format (docs/science.md): the tokenizer's chat template wraps a
system prompt that asks for `<think>…</think><answer>…</answer><confidence>…</confidence>`
and the question; the last `<answer>` and the last `<confidence>` are read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from core.data.tasks import Example


@dataclass(frozen=True)
class Parsed:
    answer: str | None  # None: the answer could not be read
    confidence: float | None  # verbalized q in [0, 1]; None when missing
    answer_span: tuple[int, int] | None  # character span of the answer in the completion
    confidence_span: tuple[int, int] | None = None  # character span of the stated confidence

    @property
    def well_formed(self) -> bool:
        """A format failure is anything without both an answer and a confidence."""
        return self.answer is not None and self.confidence is not None


class PromptFormat(Protocol):
    name: str

    def prompt(self, example: Example) -> str: ...

    def target(self, example: Example, confidence_level: int) -> str: ...

    def parse(self, completion: str) -> Parsed: ...


CONFIDENCE_LEVELS = 10


def level_to_confidence(level: int) -> float:
    return (level + 0.5) / CONFIDENCE_LEVELS


@dataclass(frozen=True)
class CompactFormat:
    name: str = "compact"
    _pattern: re.Pattern = re.compile(r"(-?\d+);C(\d)")

    def prompt(self, example: Example) -> str:
        return f"{example.question}="

    def target(self, example: Example, confidence_level: int) -> str:
        return f"{example.answer};C{confidence_level}"

    def parse(self, completion: str) -> Parsed:
        m = self._pattern.fullmatch(completion)
        if m is None:
            # Keep a readable answer even when the confidence is missing or garbled.
            head = re.match(r"-?\d+", completion)
            return Parsed(head.group(0) if head else None, None,
                          (0, head.end()) if head else None)
        return Parsed(m.group(1), level_to_confidence(int(m.group(2))), m.span(1), m.span(2))


COMPACT = CompactFormat()


# --- the tag format (chat models) --------------------------------------------------------

# RLCR's prompt, less its <analysis> block (the lab's format has none: shorter completions
# for small models). Any other tag a model writes is ignored by the parser.
SYSTEM_REASONING = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The Assistant first thinks about the reasoning process in the mind, then "
    "gives the user the final answer, then states its confidence that the answer is "
    "correct. The reasoning is enclosed within <think> </think> tags, the final answer "
    "within <answer> </answer> tags, and the confidence, a number between 0 and 1, within "
    "<confidence> </confidence> tags, i.e., <think> reasoning process here </think>"
    "<answer> final answer here </answer><confidence> a number between 0 and 1 "
    "</confidence>.")
SYSTEM_DIRECT = (
    "A conversation between User and Assistant. The user asks a question; the Assistant "
    "answers at once, without showing any reasoning, then states its confidence that the "
    "answer is correct. The final answer is enclosed within <answer> </answer> tags and the "
    "confidence, a number between 0 and 1, within <confidence> </confidence> tags, i.e., "
    "<answer> final answer here </answer><confidence> a number between 0 and 1 "
    "</confidence>.")

# The last complete <tag>…</tag> whose content holds no second opening tag.
_ANSWER = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer>", re.S)
_CONFIDENCE = re.compile(r"<confidence>((?:(?!<confidence>).)*?)</confidence>", re.S)
_CONFIDENCE_VALUE = re.compile(r"([-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*(%?)")

Messages = list[dict[str, str]]
ChatRenderer = Callable[[Messages], str]  # the tokenizer's chat template, generation prompt on


def last_tag(pattern: re.Pattern, text: str) -> tuple[str, tuple[int, int]] | None:
    """The stripped content of the last match of `pattern` and its character span."""
    matches = list(pattern.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    inner = m.group(1)
    start = m.start(1) + len(inner) - len(inner.lstrip())
    end = m.end(1) - (len(inner) - len(inner.rstrip()))
    return (text[start:end], (start, end)) if end > start else None


def read_confidence(text: str) -> float | None:
    """A stated confidence in [0, 1]; a percentage (85%) is read as 0.85. Anything else,
    a number outside [0, 1] included, is None: a format failure."""
    m = _CONFIDENCE_VALUE.fullmatch(text.strip())
    if m is None:
        return None
    value = float(m.group(1)) / (100 if m.group(2) else 1)
    return value if 0.0 <= value <= 1.0 else None


def _plain_chat(messages: Messages) -> str:
    """A stand-in for a chat template (tests, and formats without a tokenizer)."""
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "


@dataclass(frozen=True)
class TagFormat:
    render: ChatRenderer = _plain_chat  # the model's chat template (core.engine.modeling builds it)
    reasoning: bool = True  # ask for a <think> block before the answer
    name: str = "tags"

    @property
    def system_prompt(self) -> str:
        return SYSTEM_REASONING if self.reasoning else SYSTEM_DIRECT

    def messages(self, example: Example) -> Messages:
        return [{"role": "system", "content": self.system_prompt},
                {"role": "user", "content": example.question}]

    def prompt(self, example: Example) -> str:
        return self.render(self.messages(example))

    def target(self, example: Example, confidence_level: int) -> str:
        think = "<think> </think>" if self.reasoning else ""
        q = level_to_confidence(confidence_level)
        return f"{think}<answer>{example.answer}</answer><confidence>{q:g}</confidence>"

    def parse(self, completion: str) -> Parsed:
        answer = last_tag(_ANSWER, completion)
        stated = last_tag(_CONFIDENCE, completion)
        q = read_confidence(stated[0]) if stated else None
        return Parsed(answer[0] if answer else None, q, answer[1] if answer else None,
                      stated[1] if stated and q is not None else None)
