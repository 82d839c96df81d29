"""Shared timing helpers for the hand-run benchmarks (not part of the lab)."""

from __future__ import annotations

import cProfile
import io
import pstats
import tempfile
import time
from collections.abc import Callable
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


def print_profile(work: Callable[[], object], top: int = 25) -> None:
    """cProfile's top functions by own time for one call of `work`."""
    prof = cProfile.Profile()
    prof.enable()
    work()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    print(out.getvalue())
