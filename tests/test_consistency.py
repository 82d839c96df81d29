"""Consistency is not reliability: repeatability, Cronbach's alpha and McDonald's omega against
hand-worked values and maintained implementations, per-row seeded sampling, the measuring
engine on the embedded model, the experiment's targets, table and report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pingouin
import pytest
import torch
from statsmodels.multivariate.factor import Factor

from core import metrics
from core.config import build_config
from core.engine import consistency as engine
from core.engine.modeling import load_policy
from core.engine.rollout import row_draw, sample
from core.experiments import consistency as cons
from core.experiments.claim_targets import consistency_targets
from core.experiments.orchestrator import write_outputs
from core.experiments.registry import EXPERIMENTS
from core.experiments.report import render_report


# --- the formulas --------------------------------------------------------------------------
def test_repeatability_hand_values() -> None:
    assert metrics.repeatability([["a", "a"], ["a", "b"], ["c", "c"], ["d", "e"]]) == 0.5
    assert metrics.repeatability([["x"] * 100]) == 1.0
    with pytest.raises(ValueError):
        metrics.repeatability([])


def test_alpha_and_omega_hand_worked() -> None:
    # 3 questions x 2 repetitions: item variances 1/3 each, total variance 1, so
    # alpha = 2/1 * (1 - 2/3) = 2/3. The two items correlate 1/2; one factor with equal
    # loadings sqrt(1/2): omega = (2 sqrt(.5))^2 / ((2 sqrt(.5))^2 + 2 * .5) = 2/3.
    x = [[1, 1], [0, 1], [0, 0]]
    assert metrics.cronbach_alpha(x) == pytest.approx(2 / 3)
    assert metrics.mcdonald_omega(x) == pytest.approx(2 / 3)
    assert metrics.mean_item_correlation(x) == pytest.approx(1 / 2)
    # three items: correlations 1/2 (x1, x2), 1/2 (x2, x3), -1/2 (x1, x3) average 1/6
    assert metrics.mean_item_correlation([[1, 1, 0], [0, 1, 1], [0, 0, 0]]) == \
        pytest.approx(1 / 6)
    # one output repeated (T = 0): every item the same column, both exactly 1
    same = np.repeat(np.array([[1.0], [0.0], [1.0], [0.0], [0.0]]), 100, axis=1)
    assert metrics.cronbach_alpha(same) == pytest.approx(1.0)
    assert metrics.mcdonald_omega(same) == pytest.approx(1.0)


def test_alpha_and_omega_are_none_where_undefined() -> None:
    # a repetition right on every question has no variance: undefined, not a number
    assert metrics.cronbach_alpha([[1, 1], [1, 0], [1, 1]]) is None
    assert metrics.mcdonald_omega([[1, 1], [1, 0], [1, 1]]) is None
    assert metrics.mcdonald_omega(np.ones((4, 3))) is None  # every answer right
    assert metrics.mean_item_correlation(np.ones((4, 3))) is None
    assert metrics.cronbach_alpha([[1], [0]]) is None  # one item
    assert metrics.cronbach_alpha([[1, 0]]) is None  # one subject
    with pytest.raises(ValueError):
        metrics.cronbach_alpha([1, 0, 1])


def _binary_scores(subjects: int, items: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.1, 0.9, subjects)  # each question its own chance of being right
    return (rng.uniform(size=(subjects, items)) < p[:, None]).astype(float)


@pytest.mark.parametrize(("subjects", "items", "seed"), [(60, 8, 0), (64, 100, 1), (30, 5, 2)])
def test_alpha_and_omega_match_maintained_implementations(subjects: int, items: int,
                                                          seed: int) -> None:
    """alpha against pingouin; omega against statsmodels' iterated principal-axis one-factor
    fit (the same least-squares fixed point), from its loadings."""
    x = _binary_scores(subjects, items, seed)
    assert metrics.cronbach_alpha(x) == pytest.approx(
        pingouin.cronbach_alpha(pd.DataFrame(x))[0], abs=1e-9)
    loadings = Factor(x, n_factor=1, method="pa").fit().loadings[:, 0]
    reference = loadings.sum() ** 2 / (loadings.sum() ** 2 + (1 - loadings**2).sum())
    assert metrics.mcdonald_omega(x) == pytest.approx(reference, abs=1e-6)


# --- per-row seeded sampling -----------------------------------------------------------------
def test_row_draw_samples_the_softmax_and_ignores_its_batch() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])  # [1, V]
    gens = [torch.Generator().manual_seed(i) for i in range(20_000)]
    draws = torch.cat([row_draw(logits, 0.5, [g]) for g in gens])
    freq = torch.bincount(draws, minlength=4).double() / len(gens)
    expected = torch.softmax(logits[0].double() / 0.5, -1)
    assert torch.allclose(freq, expected, atol=0.01), (freq, expected)
    # the same generators, batched or alone, give the same draws
    many = logits.repeat(8, 1)
    batched = row_draw(many, 1.0, [torch.Generator().manual_seed(i) for i in range(8)])
    alone = [int(row_draw(logits, 1.0, [torch.Generator().manual_seed(i)])) for i in range(8)]
    assert batched.tolist() == alone


@pytest.fixture(scope="module")
def embedded():
    cfg = build_config(preset="smoke", recipe="rlcr", seed=0)
    return cfg, load_policy(cfg)


def test_a_repetition_is_the_same_draw_batched_with_others_or_alone(embedded) -> None:
    cfg, lm = embedded
    from core.data.task_data import task_for

    questions = task_for(cfg).eval_set(3)
    model = lm.sampling_model()
    q, r = len(questions), 4
    together = sample(model, lm.tokenizer, lm.prompt_format, questions, r, 1.0,
                      cfg.max_new_tokens, engine.row_generators(5, q, r)).texts
    gens = engine.row_generators(5, q, r)
    for i in range(q):  # question i alone, each repetition alone
        for j in range(r):
            alone = sample(model, lm.tokenizer, lm.prompt_format, [questions[i]], 1, 1.0,
                           cfg.max_new_tokens, [gens[i * r + j]]).texts
            assert alone == [together[i * r + j]]
    assert len(set(together)) > 1  # the repetitions do differ at T = 1


def test_measure_one_on_the_embedded_model(embedded) -> None:
    cfg, lm = embedded
    plan = engine.Plan(questions=6, repetitions=5, temperatures=(0.0, 1.0))
    rows, determinism = engine.measure_one(lm.sampling_model(), lm.tokenizer, lm.prompt_format,
                                           cfg, plan)
    cold, hot = rows
    assert cold["temperature"] == 0.0 and cold["repeatability"] == 1.0
    assert cold["omega"] in (None, pytest.approx(1.0))  # None only if no variance at all
    assert 0 <= hot["accuracy"] <= 1 and hot["repeatability"] < 1
    assert set(determinism["differing_questions"]) == {"6", "1", "8", "5 repetitions"}
    assert determinism["questions"] == 6


# --- the experiment: targets, table, report ----------------------------------------------------
def row(model: str, recipe: str, seed: int, t: float, rep: float, omega: float | None,
        acc: float) -> dict:
    return {"model": model, "recipe": recipe, "seed": seed, "temperature": t,
            "repeatability": rep, "omega": omega, "alpha": omega, "accuracy": acc, "ece": 0.3}


def test_targets_hold_on_the_claimed_pattern_and_fail_each_way() -> None:
    table = [row("start", "start", 0, 0.0, 1.0, 1.0, 0.45), row("start", "start", 0, 1.0, 0.0,
                                                                0.9, 0.35),
             row("r1", "rlcr", 0, 0.0, 1.0, 1.0, 0.58), row("r1", "rlcr", 0, 1.0, 0.0, 0.95, 0.5)]
    summary = {"table": table, "batch_determinism": {"identical": True, "models": {}}}
    assert [t.status for t in consistency_targets(summary)] == ["PASS", "PASS", "report"]
    accurate = [*table[:2], row("r1", "rlcr", 0, 0.0, 1.0, 1.0, 0.75), table[3]]
    t0 = consistency_targets({"table": accurate})[0]
    assert t0.status == "FAIL" and [c.passed for c in t0.checks] == [True, False]
    unrepeated = [row("start", "start", 0, 0.0, 0.98, 1.0, 0.45), table[1]]
    assert consistency_targets({"table": unrepeated})[0].status == "FAIL"
    undefined = [row("start", "start", 0, 0.0, 1.0, None, 0.45), table[1]]
    assert [t.status for t in consistency_targets({"table": undefined})][:2] == ["FAIL", "FAIL"]
    flat = [table[0], row("start", "start", 0, 1.0, 0.0, 1.0, 0.35)]
    assert consistency_targets({"table": flat})[1].status == "FAIL"
    assert [t.status for t in consistency_targets({})] == ["not run", "not run", "report"]


def measured(seed: int, run: str, recipe: str, omega_hot: float) -> dict:
    return {"model": run, "run": "x", "recipe": recipe, "seed": seed,
            "determinism": {"questions": 4, "differing_questions": {"4": 0, "1": 0},
                            "identical": True},
            "rows": [{"temperature": 0.0, "repeatability": 1.0, "omega": 1.0, "alpha": 1.0,
                      "accuracy": 0.5, "ece": 0.4},
                     {"temperature": 1.0, "repeatability": 0.0, "omega": omega_hot,
                      "alpha": omega_hot, "accuracy": 0.4, "ece": 0.3}]}


def test_plan_table_means_and_determinism(tmp_path: Path) -> None:
    runs = [{"id": "b0", "recipe": "binary", "seed": 0, "status": "finished"},
            {"id": "r0", "recipe": "rlcr", "seed": 0, "status": "failed"},
            {"id": "b1", "recipe": "binary", "seed": 1, "status": "finished"}]
    planned = cons.plan_targets(runs, tmp_path)
    assert [(p.when, p.run_dir.name, p.recipe, p.seed) for p in planned] == [
        ("start", "b0", "start", 0), ("end", "b0", "binary", 0),
        ("start", "b1", "start", 1), ("end", "b1", "binary", 1)]
    result = {"models": [measured(0, "start", "binary", 0.8), measured(0, "b0", "binary", 0.9),
                         measured(1, "start", "binary", 0.6)]}
    table = cons.table_rows(result)
    assert [(r["model"], r["recipe"], r["temperature"]) for r in table][:3] == [
        ("start", "start", 0.0), ("start", "start", 1.0), ("b0", "binary", 0.0)]
    means = {(m["recipe"], m["temperature"]): m for m in cons.table_means(table)}
    assert means[("start", 1.0)]["omega"]["mean"] == pytest.approx(0.7)
    assert means[("start", 1.0)]["omega"]["sd"] == pytest.approx(np.std([0.8, 0.6], ddof=1))
    assert means[("binary", 1.0)]["n"] == 1
    found = cons.determinism(result)
    assert found["identical"] and set(found["models"]) == {"start (seed 0)", "b0",
                                                           "start (seed 1)"}


def test_outputs_carry_the_table_in_csv_and_the_report_draws_it(tmp_path: Path) -> None:
    spec = EXPERIMENTS["consistency"]
    result = {"models": [measured(0, "start", "binary", 0.8), measured(0, "b0", "binary", 0.9)]}
    table = cons.table_rows(result)
    summary = {"experiment": "consistency", "task": "add", "question": spec.question,
               "recipes": ["binary", "rlcr"], "seeds": [0], "runs": [], "aggregates": {},
               "wall_seconds": 12.0, "settings": {"steps": 1}, "claim": spec.claim,
               "source": spec.source, "table": table, "table_means": cons.table_means(table),
               "batch_determinism": cons.determinism(result),
               "consistency": {"plan": {"questions": 4, "repetitions": 2}, "wall_seconds": 3,
                               "cpu_seconds": 2, "threads": 1, "repetition_seed": "1000 s + r"}}
    summary["targets"] = [t.to_dict() for t in spec.targets(summary)]
    paths = write_outputs(summary, tmp_path, spec)
    with open(paths["summary.csv"]) as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == cons.TABLE_COLUMNS and len(rows) == 4
    assert json.loads(paths["summary.json"].read_text())["table"][0]["model"] == "start"
    page = paths["report.html"].read_text()
    assert "McDonald" in page and "Consistency against temperature" in page
    assert "identical for every model" in page
    html = render_report({**summary, "table_means": [], "batch_determinism": {}},
                         spec.title, spec.sections)
    assert "not measured" in html
    older = [{k: v for k, v in m.items() if k != "single_draw_r"} for m in summary["table_means"]]
    assert "Consistency against temperature" in render_report(
        {**summary, "table_means": older}, spec.title, spec.sections)


class FakeProcess:
    def __init__(self, polls_until_done: int | None, returncode: int = 0) -> None:
        self.left, self.returncode, self.terminated = polls_until_done, returncode, False

    def poll(self) -> int | None:
        if self.left is None:
            return None
        self.left -= 1
        return self.returncode if self.left < 0 else None

    def terminate(self) -> None:
        self.terminated = True

    def wait(self, timeout: float | None = None) -> int:
        return self.returncode


def test_measure_runs_starts_one_process_and_reads_its_table(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    import io

    from core.runtime import runner

    started = []

    def fake_start(targets, out, questions, repetitions, temperatures, log, threads=1):
        started.append((targets, questions, repetitions, temperatures))
        out.write_text(json.dumps({"done": True, "cpu_seconds": 5.0, "threads": 1,
                                   "plan": {"questions": questions},
                                   "models": [measured(0, "start", "binary", 0.8),
                                              measured(0, "b0", "binary", 0.9)]}))
        return FakeProcess(1)

    monkeypatch.setattr(runner, "start_consistency", fake_start)
    monkeypatch.setattr(cons, "POLL_SECONDS", 0.0)
    runs = [{"id": "b0", "recipe": "binary", "seed": 0, "status": "finished"}]
    gained = cons.measure_runs({"runs": runs}, tmp_path, tmp_path, io.StringIO())
    (targets, questions, repetitions, temperatures), = started
    assert [(w, p.name) for w, p in targets] == [("start", "b0"), ("end", "b0")]
    assert (questions, repetitions, temperatures) == (64, 100, (0.0, 0.25, 0.5, 0.75, 1.0))
    assert len(gained["table"]) == 4 and gained["consistency"]["error"] is None
    assert gained["batch_determinism"]["identical"]
    assert cons.measure_runs({"runs": []}, tmp_path, tmp_path,
                             io.StringIO())["consistency"]["error"]


def test_a_measurement_past_its_deadline_is_stopped(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr(cons, "POLL_SECONDS", 0.0)
    hung = FakeProcess(None)
    assert cons.wait_for(hung, tmp_path / "none.json", 3, io.StringIO(), deadline=0.0) \
        == "stopped after 0 s"
    assert hung.terminated
    assert cons.wait_for(FakeProcess(0, returncode=1), tmp_path / "x", 3, io.StringIO()) \
        == "the measuring process exited 1"
