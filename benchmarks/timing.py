"""Shared timing helpers for the hand-run benchmarks (not part of the lab)."""

from __future__ import annotations

import time
from typing import Any

from core.config import RunConfig
from core.modeling import LoadedModel


class StepClock:
    """The writer interface `core.train.train` needs; it only notes when each step ends."""

    def __init__(self) -> None:
        self.stamps = [time.perf_counter()]

    def log(self, step: int, metrics: dict[str, Any]) -> None: ...

    def log_text(self, text: str) -> None: ...

    def log_samples(self, step: int, samples: list[dict[str, Any]]) -> None: ...

    def update_status(self, **fields: Any) -> None:
        self.stamps.append(time.perf_counter())

    @property
    def step_seconds(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)]


def train_step_seconds(config: RunConfig, loaded: LoadedModel | None = None) -> list[float]:
    """Wall seconds of each step of `core.train.train` (sampling through optimiser step)."""
    from core.train import train

    clock = StepClock()
    train(config, clock, loaded=loaded)  # type: ignore[arg-type]
    return clock.step_seconds
