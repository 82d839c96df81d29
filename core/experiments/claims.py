"""The lab's claims: each a statement from the literature, the named experiment that tests
it, and what this machine measured the last time that experiment ran.

Torch-free: the app's claims board reads it through `core.api`. A claim's result is read
from the newest report of its experiment in the run store's `experiments/` folder
(`summary.json`, written by `core.experiments.orchestrator`); an experiment started from the
app runs in its own background process, the same `python -m core experiment` a person
types, so the app can close meanwhile.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.experiments.registry import ALIASES, EXPERIMENTS, Experiment

EXPERIMENTS_FOLDER = "experiments"  # under the run store, as the orchestrator writes it
LAUNCH_LOG = "experiment.log"  # the background experiment's own output


@dataclass(frozen=True)
class Claim:
    experiment: str  # the registry name that tests it
    title: str
    statement: str  # what the literature reports, with its figure
    source: str
    decides: tuple[str, ...] = ()  # the target keys that decide it; empty: every one
    name: str = ""  # a further claim of the same experiment: its own key (MoreClaim.key)

    @property
    def key(self) -> str:
        """Unique among the claims: the experiment's name, or a further claim's key."""
        return self.name or self.experiment


@dataclass(frozen=True)
class ClaimResult:
    """This machine's latest measurement of a claim."""
    verdict: str  # "held", "not held", "running" or "not run"
    folder: Path | None = None  # the report's folder
    created_at: str = ""
    seeds: tuple[int, ...] = ()
    targets: list[dict[str, Any]] = field(default_factory=list)  # title and status each

    @property
    def report(self) -> Path | None:
        return None if self.folder is None else self.folder / "report.html"


def claims() -> list[Claim]:
    """Every experiment that states a claim, in the registry's order, each followed by the
    further claims its runs test."""
    out = []
    for e in EXPERIMENTS.values():
        if e.claim:
            out.append(Claim(e.name, e.claim_title or e.title, e.claim, e.source, e.decides))
        out += [Claim(e.name, c.title, c.statement, c.source, c.decides, c.key)
                for c in e.more_claims]
    return out


def verdict(targets: Sequence[dict[str, Any]]) -> str:
    """held when every judged target passed, not held when one failed, not run when none
    was judged (reported-only targets never decide)."""
    judged = [t["status"] for t in targets if t.get("status") in ("PASS", "FAIL")]
    if not judged:
        return "not run"
    return "held" if all(s == "PASS" for s in judged) else "not held"


def _names(experiment: str) -> set[str]:
    return {experiment} | {a for a, n in ALIASES.items() if n == experiment}


def latest_result(experiment: str, runs_root: Path | str,
                  decides: Sequence[str] = ()) -> ClaimResult:
    """The newest report of `experiment` under `runs_root/experiments`: its verdict on the
    targets `decides` names (all when empty), or "running" when the newest folder was started
    from the app and has no summary yet."""
    folder = Path(runs_root) / EXPERIMENTS_FOLDER
    candidates = [p for p in folder.glob("*-*") if p.is_dir()
                  and any(p.name.startswith(n + "-") for n in _names(experiment))]
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        summary_file = path / "summary.json"
        if not summary_file.is_file():
            if (path / LAUNCH_LOG).is_file():
                return ClaimResult("running", path)
            continue
        try:
            summary = json.loads(summary_file.read_text())
        except (OSError, ValueError):
            continue
        if summary.get("experiment") not in _names(experiment):
            continue
        targets = [{"title": t.get("title", ""), "status": t.get("status", "")}
                   for t in summary.get("targets") or []
                   if not decides or t.get("key") in decides]
        return ClaimResult(verdict(targets), path, str(summary.get("created_at", "")),
                           tuple(summary.get("seeds") or ()), targets)
    return ClaimResult("not run")


def launch_experiment(spec: Experiment, seeds: Sequence[int], runs_root: Path | str,
                      stamp: str) -> Path:
    """Start `python -m core experiment` for `spec` in the background, with its own settings
    and the given seeds, writing into runs_root/experiments/NAME-TASK-STAMP; returns that
    folder. The process outlives the app; its output goes to experiment.log there."""
    root = Path(runs_root).resolve()
    out = root / EXPERIMENTS_FOLDER / f"{spec.name}-{spec.task}-{stamp}"
    out.mkdir(parents=True, exist_ok=False)
    from core.runtime.runner import start_command

    start_command(["experiment", spec.name, "--seeds", ",".join(str(int(s)) for s in seeds),
                   "--runs-dir", str(root), "--out", str(out)], out / LAUNCH_LOG)
    return out
