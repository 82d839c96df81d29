"""Tasks: where questions come from and how answers are graded.

A task gives training batches (seeded, fresh each step) and one fixed held-out eval set.
Train and eval never overlap: each question falls on one side of a hash split.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Example:
    question: str  # e.g. "123+45"
    answer: str  # canonical answer, e.g. "168"


class Task(Protocol):
    name: str

    def train_batch(self, rng: np.random.Generator, size: int) -> list[Example]: ...

    def eval_set(self, size: int) -> list[Example]: ...

    def is_correct(self, predicted: str | None, example: Example) -> bool: ...


EVAL_SHARE = 8  # one question in 8 belongs to the held-out side
EVAL_SET_SEED = 20_251_128  # the eval set is fixed across runs and seeds


def is_held_out(question: str) -> bool:
    """The split: a stable hash of the question text, so no question is on both sides."""
    return zlib.crc32(question.encode()) % EVAL_SHARE == 0


@dataclass(frozen=True)
class ArithmeticTask:
    """Integer arithmetic graded by exact integer match.

    Difficulty knobs: the operations and the operand digit counts (each operand draws
    its digit count from `digits` with `digit_weights`, then a value uniformly with that
    many digits). Rarer lengths are learned less well, so the prompt shows difficulty.
    """

    name: str
    ops: tuple[str, ...] = ("+",)
    digits: tuple[int, ...] = (2, 3)
    digit_weights: tuple[float, ...] | None = None  # None: uniform

    def sample(self, rng: np.random.Generator) -> Example:
        a, b = (self._operand(rng) for _ in range(2))
        op = self.ops[int(rng.integers(len(self.ops)))]
        value = a + b if op == "+" else a - b if op == "-" else a * b
        return Example(f"{a}{op}{b}", str(value))

    def _operand(self, rng: np.random.Generator) -> int:
        if self.digit_weights is None:
            d = self.digits[int(rng.integers(len(self.digits)))]
        else:
            d = self.digits[int(rng.choice(len(self.digits), p=self.digit_weights))]
        return int(rng.integers(10 ** (d - 1) if d > 1 else 0, 10**d))

    def train_batch(self, rng: np.random.Generator, size: int) -> list[Example]:
        out: list[Example] = []
        while len(out) < size:
            ex = self.sample(rng)
            if not is_held_out(ex.question):
                out.append(ex)
        return out

    def eval_set(self, size: int) -> list[Example]:
        rng = np.random.default_rng(EVAL_SET_SEED)
        seen: dict[str, Example] = {}
        for _ in range(1000 * size):
            ex = self.sample(rng)
            if is_held_out(ex.question):
                seen.setdefault(ex.question, ex)
                if len(seen) == size:
                    return list(seen.values())
        raise ValueError(f"task {self.name!r} has fewer than {size} held-out questions")

    def is_correct(self, predicted: str | None, example: Example) -> bool:
        if predicted is None:
            return False
        try:
            return int(predicted) == int(example.answer)
        except ValueError:
            return False


TASKS: dict[str, ArithmeticTask] = {
    "add": ArithmeticTask("add", ops=("+",), digits=(2, 3, 4), digit_weights=(0.5, 0.3, 0.2)),
    "mix": ArithmeticTask("mix", ops=("+", "-"), digits=(2, 3, 4),
                          digit_weights=(0.5, 0.3, 0.2)),
    # Two-digit sums only: the embedded model already solves most of them (greedy 0.85,
    # Pass@64 1.0), so RL redistributes probability mass more than it teaches - the regime
    # in which reinforcing only correct samples is reported to narrow coverage.
    "add2": ArithmeticTask("add2", ops=("+",), digits=(2,)),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")
    return TASKS[name]
