"""The reward source in the training loop: the recipe sees the judge's verdict, the truth is
logged beside it, and the language-model judge runs end to end on a tiny random chat model
(plumbing: its verdicts are noise)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.cli import main
from core.config import build_config
from core.engine.train import train
from core.runtime.store import RunStore
from tools.tiny_chat import write_arithmetic_qa, write_chat_model

SMALL = {"steps": 2, "prompts_per_step": 4, "group_size": 4, "threads": 1, "eval_every": 0,
         "eval_prompts": 8, "eval_samples": 2, "checkpoint_every": 0}


def _train(tmp_path: Path, **kw):
    config = build_config(**{**SMALL, **kw})
    store = RunStore(tmp_path)
    writer = store.create(config)
    assert train(config, writer) == "finished"
    return store.load(writer.run_id), store.samples(writer.run_id)


def test_the_recipe_sees_the_verdict_and_the_truth_is_logged_beside_it(tmp_path):
    # FN 1 and FP 1: the judge says the opposite of the truth on every readable answer.
    record, samples = _train(tmp_path, judge="random-judge", judge_fn_rate=1.0,
                             judge_fp_rate=1.0)
    for row in record.train:
        assert row["reward/mean"] == row["judge/judged_accuracy"]  # binary's reward: verdict
        assert row["accuracy"] == row["judge/true_accuracy"]
        assert row["judge/judged_accuracy"] == pytest.approx(row["format_rate"]
                                                             - row["accuracy"])
        assert row["judge/agreement"] == pytest.approx(1 - row["format_rate"])
        if row["judge/youden_j"] is not None:
            assert row["judge/youden_j"] == -1.0
    judged = [s for s in samples if s.get("source") == "training (judged)"]
    assert {s["step"] for s in judged} == {1, 2}  # the first step and the last
    assert all(s["verdict"] != s["correct"] or s["answer"] is None for s in judged)
    # Evaluations report truth: the same held-out accuracy as a run graded exactly.
    exact, _ = _train(tmp_path / "exact")
    assert record.evals[0]["accuracy"] == exact.evals[0]["accuracy"]


def test_the_shortcut_judge_logs_its_figures(tmp_path):
    record, _ = _train(tmp_path, judge="shortcut-judge")
    row = record.train[0]
    assert row["judge/tpr"] in (1.0, None)  # no false-negative rate: every right one passes
    assert row["judge/judged_accuracy"] >= row["judge/true_accuracy"]


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("judge-models")
    return (write_chat_model(root / "qwen2", "qwen2"),
            write_arithmetic_qa(root / "qa.jsonl", rows=160))


def test_llm_judge_through_the_cli_keeps_its_reasoning(chat, tmp_path, capsys):
    """`python -m core train --judge llm-judge --judge-model FOLDER`: the embedded policy
    writes readable answers, so every one goes to the judge (a tiny random chat model); its
    replies are stored with the judged samples. Noise carries no verdict tag: every verdict
    is unreadable and rejects."""
    model, _ = chat
    flags = {"--judge": "llm-judge", "--judge-model": model, "--judge-max-new-tokens": 12,
             "--steps": 1, "--threads": 1, "--prompts-per-step": 2, "--group-size": 2,
             "--eval-prompts": 2, "--eval-samples": 2, "--runs-dir": tmp_path}
    assert main(["train", *(str(x) for kv in flags.items() for x in kv)]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    row = RunStore(tmp_path).load(run_id).train[0]
    judged = [s for s in RunStore(tmp_path).samples(run_id) if s.get("source")]
    asked = [s for s in judged if "judge_reasoning" in s]
    assert len(judged) == 4 and len(asked) == round(4 * row["format_rate"]) > 0
    assert all(isinstance(s["judge_reasoning"], str) and not s["verdict"] for s in asked)
    assert row["judge/unreadable"] == 1.0 and row["judge/judged_accuracy"] == 0.0
    assert row["reward/mean"] == 0.0  # the recipe saw the (rejecting) verdicts


def test_rlcr_strict_runs_on_a_chat_model(chat, tmp_path):
    model, qa = chat
    record, _ = _train(tmp_path, model=str(model), task=str(qa), judge="rlcr-strict",
                       recipe="rlcr", max_new_tokens=12, no_eval=True)
    assert all("judge/agreement" in row for row in record.train)
