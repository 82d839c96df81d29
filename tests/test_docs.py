"""The science reference, docs/science.md, matches the code, and everything points to it,
never to a file outside the repository."""

from __future__ import annotations

import dataclasses
import json
import os
import re

from core import metrics
from core.cli import build_parser
from core.config import FIELDS
from core.data import judging
from core.data.tasks import TASKS
from core.engine import recipes, rollout
from core.experiments.claim_targets import JUDGE_ARMS
from core.paths import REPO_ROOT
from core.recipe_info import RECIPE_INFO

DOC = REPO_ROOT / "docs" / "science.md"
TEXT = DOC.read_text()
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "recorded_runs"
# The notes the lab's science began from live outside the repository; no file may point to
# them. Spelled in pieces so that this file does not match itself (nor a grep for them).
OUTSIDE = ("../" + "shared", "shared" + "/", "SCI" + "ENCE.md", "PIL" + "OT-NOTES")
SKIP_DIRS = {".git", ".venv", ".venv-trl", "runs", "artifacts", "__pycache__"}


def test_every_recipe_has_a_row_with_its_formula_and_source():
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([\w-]+)` \|.*$", TEXT, re.M)}
    assert set(rows) == set(RECIPE_INFO)
    assert all(row.count("|") == 5 and "et al." in row for row in rows.values())


def _logged_signals() -> set[str]:
    """The confidence signals a recorded run's step-0 evaluation logged."""
    run = sorted(FIXTURE.iterdir())[0]
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    return {k.split("/")[2] for k in row if k.startswith("eval/calibration/")}


def test_every_logged_confidence_signal_and_metric_is_described():
    signals = _logged_signals()
    assert len(signals) >= 3
    for name in signals:
        assert f"(`{name}`)" in TEXT or f"- **{name}**" in TEXT, name
    measured = {f.name for f in dataclasses.fields(metrics.CalibrationSummary)}
    for name in measured - {"count", "hist_correct", "hist_incorrect", "mean_confidence"}:
        assert f"`{name}`" in TEXT, name  # each metric names the function computing it


# The keys each evaluation entry holds, read from the source of the function that writes them.
EVAL_SOURCE = (REPO_ROOT / "core" / "engine" / "evaluate.py").read_text()
EVAL_KEYS = re.findall(r'^ {8}"(\w+)":', EVAL_SOURCE, re.M)


def test_every_name_the_doc_cites_exists_in_the_code():
    """A renamed function or setting breaks this test until the page follows."""
    known = (set(FIELDS) | set(RECIPE_INFO) | _logged_signals()
             | {n for mod in (metrics, recipes, rollout, judging) for n in dir(mod)}
             | set(TASKS) | set(EVAL_KEYS) | set(JUDGE_ARMS)
             | {"count", "learning_rate", "cosine", "classic", "quick", "mean_prob",
                "answer_prob"})
    cited = set(re.findall(r"`([a-z_][a-z0-9_]*)`", TEXT))
    assert cited and cited <= known, sorted(cited - known)
    assert "rows_to_score" in dir(recipes.Recipe)


def test_every_path_the_doc_cites_exists():
    paths = set(re.findall(r"`((?:core|data|benchmarks|tools|docs)/[\w./-]+)`", TEXT))
    assert paths
    assert all((REPO_ROOT / p.rstrip("/")).exists() for p in paths), paths


def test_the_readme_the_cli_and_the_model_card_point_to_it():
    assert "docs/science.md" in (REPO_ROOT / "README.md").read_text()
    assert "docs/science.md" in build_parser().description
    assert "docs/science.md" in FIELDS["recipe"].metadata["help"]  # --recipe and the app
    assert "docs/science.md" in (REPO_ROOT / "data/models/tiny-arith/README.md").read_text()


def test_the_claims_section_ends_the_page_with_one_subsection_per_claim():
    claims = TEXT.split("\n## Claims\n", 1)
    assert len(claims) == 2 and "\n## " not in claims[1]
    assert len(re.findall(r"^### ", claims[1], re.M)) >= 2


def test_nothing_in_the_repository_points_outside_it():
    hits = []
    for folder, dirs, files in os.walk(REPO_ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        for name in files:
            path = os.path.join(folder, name)
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            except (UnicodeDecodeError, OSError):
                continue  # binary: weights, images
            hits += [f"{path}: {o}" for o in OUTSIDE if o in text]
    assert not hits
