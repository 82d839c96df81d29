"""Shared timing helpers for the hand-run benchmarks (not part of the lab)."""

from __future__ import annotations

import tempfile
import time
from typing import Any

from core.config import RunConfig
from core.engine.modeling import LoadedModel
from core.runtime.store import RunStore


def train_step_seconds(config: RunConfig, loaded: LoadedModel | None = None) -> list[float]:
    """Wall seconds of each step of `core.engine.train.train` (sampling through optimiser step and
    logging), from a real run folder in a temporary directory."""
    from core.engine.train import train

    with tempfile.TemporaryDirectory(prefix="bench-runs-") as root:
        writer = RunStore(root).create(config)
        stamps = [time.perf_counter()]
        record_status = writer.update_status

        def update_status(**fields: Any) -> None:
            if fields.keys() == {"step"}:  # the loop's end-of-step call
                stamps.append(time.perf_counter())
            record_status(**fields)

        writer.update_status = update_status  # type: ignore[method-assign]
        train(config, writer, loaded=loaded)
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
