"""The named experiments `python -m core experiment NAME` runs: what each trains and checks.

An experiment is data: its recipes and seeds, the preset every run shares (flags override it
for all runs alike), the question it answers, the targets it checks on the summary, and the
report sections it shows. To add one, write its targets (a function of the summary, see
`core.experiments.targets`) and add an `Experiment` to `EXPERIMENTS`; the orchestrator
(`core.experiments.orchestrator`), the CLI's choices and --help, and the report follow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.config import EMBEDDED_MODEL, PRESETS
from core.experiments.targets import TargetResult, classic_targets


@dataclass(frozen=True)
class Experiment:
    name: str  # the CLI's name for it; also the output folder's prefix
    title: str  # the report's heading
    question: str  # what it answers, in one sentence
    recipes: tuple[str, ...]
    preset: str  # a core.config preset shared by every run
    targets: Callable[[dict[str, Any]], Sequence[TargetResult]]
    seeds: tuple[int, ...] = (0, 1, 2)
    task: str = "add"
    extra: dict[str, Any] = field(default_factory=dict)  # settings on top of the preset
    # Report sections in page order, names from core.experiments.report.SECTIONS; None: all.
    sections: tuple[str, ...] | None = None

    @property
    def settings(self) -> dict[str, Any]:
        """The settings every run shares before command-line overrides (recorded in the
        summary as `experiment_settings`)."""
        return {**PRESETS[self.preset], **self.extra}

    def base_values(self) -> dict[str, Any]:
        """RunConfig values shared by every run: the embedded model, then the settings."""
        return {"model": EMBEDDED_MODEL, **self.settings}


EXPERIMENTS: dict[str, Experiment] = {
    "classic": Experiment(
        name="classic",
        title="Classic experiment",
        question=("Can the standard recipe — log-likelihood training plus a binary right/wrong "
                  "reward — give a model that knows what it knows: whose stated confidence "
                  "matches its accuracy?"),
        recipes=("binary", "rlcr", "psr", "nsr", "w-reinforce", "rlsf"),
        preset="classic",
        targets=classic_targets,
    ),
}
