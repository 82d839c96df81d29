"""Prompt formats: how a question becomes a prompt, and how a completion is parsed.

The embedded model speaks the compact format `Q=` -> `ANSWER;C<d>`, where the digit d is
its verbalized confidence on ten levels, q = (d + 0.5) / 10: each level sits at the centre
of one of the ten equal-width ECE bins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from core.tasks import Example


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
