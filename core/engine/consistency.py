"""Repeated answers: each held-out question answered many times by one model, at several
temperatures, to tell consistency from reliability (docs/science.md, "Consistency is not
reliability").

For every temperature, each of Q questions is answered R times. Repetition r has its own
seed, `REPETITION_SEED_STRIDE * run seed + r`, and each (repetition, question) pair draws
from its own generator seeded by (that seed, question index), so the R repetitions batch
together yet each is the draw its seed alone would give (`core.engine.rollout.row_draw`).
T = 0 is greedy decoding. Per temperature: repeatability, Cronbach's alpha and McDonald's
omega over the [questions, repetitions] matrix of correctness scores (repetitions are the
items, questions the subjects), accuracy and verbalized ECE (core.metrics).

Also measured: whether greedy outputs stay the same when the number of rows generated
together changes (floating-point sums in another order can flip an argmax).

Runs in its own background process (`python -m core _consistency`, started through
`core.runtime.runner.start_command`), never inside the app.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core import metrics
from core.config import EVAL_ROWS_PER_GENERATE, RunConfig
from core.data.task_data import task_for
from core.engine.modeling import (
    load_pretrained,
    merge_run_policy,
    model_dtype,
    pick_device,
    prompt_format_for,
)
from core.engine.rollout import grade, sample_in_slices
from core.files import write_atomically
from core.models.model_source import check_model

REPETITION_SEED_STRIDE = 1_000  # seed s draws repetitions with seeds 1000 s + 0 .. R - 1
DETERMINISM_ROWS = (1, 8)  # rows per generate call compared with all questions at once


@dataclass(frozen=True)
class Plan:
    questions: int = 64
    repetitions: int = 100
    temperatures: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    max_rows: int = 0  # rows per generate call; 0: the evaluation's limit


@dataclass(frozen=True)
class Target:
    """Which policy of a run to measure: where it started ("start") or where it ended."""
    when: str  # "start" or "end"
    run_dir: Path

    @property
    def label(self) -> str:
        return "start" if self.when == "start" else self.run_dir.name


def row_generators(seed: int, questions: int, repetitions: int) -> list[torch.Generator]:
    """One CPU generator per row, rows question-major ([Q * R], as `sample` groups them):
    row (q, r) is seeded by (REPETITION_SEED_STRIDE * seed + r, q)."""
    out = []
    for q in range(questions):
        for r in range(repetitions):
            state = np.random.SeedSequence([REPETITION_SEED_STRIDE * seed + r, q])
            out.append(torch.Generator().manual_seed(int(state.generate_state(1)[0])))
    return out


def _policy(target: Target, config: RunConfig) -> tuple[Any, Any, Any]:
    """(model, tokenizer, prompt format) of the run's start or end policy, in eval mode."""
    source = check_model(config.model)
    device = pick_device(config.device)
    base, tokenizer = load_pretrained(source, config.model, model_dtype(device),
                                      config.trust_remote_code)
    fmt = prompt_format_for(base.config, tokenizer, config.reasoning)
    if target.when == "end":
        base = merge_run_policy(base, target.run_dir)
    elif config.init_from:  # a chained run starts where its parent run ended
        base = merge_run_policy(base, target.run_dir.parent / config.init_from)
    return base.to(device).eval(), tokenizer, fmt


def measure_one(model: Any, tokenizer: Any, fmt: Any, config: RunConfig, plan: Plan
                ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The per-temperature rows and the batch-size check for one loaded model."""
    task = task_for(config)
    questions = task.eval_set(plan.questions)
    q, r = len(questions), plan.repetitions
    max_rows = plan.max_rows or EVAL_ROWS_PER_GENERATE
    rows = []
    for temperature in plan.temperatures:
        t0 = time.process_time()
        rollout = sample_in_slices(model, tokenizer, fmt, questions, r,
                                   None if temperature == 0 else temperature,
                                   config.max_new_tokens, max_rows,
                                   row_generators(config.seed, q, r))
        graded = grade(rollout, fmt, task, tokenizer)
        correct = graded.correct.cpu().numpy().reshape(q, r)  # [Q, R]
        texts = [rollout.texts[i * r:(i + 1) * r] for i in range(q)]
        conf = graded.confidence.double().cpu().numpy()
        rows.append({
            "temperature": float(temperature),
            "repeatability": metrics.repeatability(texts),
            "omega": metrics.mcdonald_omega(correct),
            "alpha": metrics.cronbach_alpha(correct),
            "single_draw_r": metrics.mean_item_correlation(correct),
            "accuracy": float(correct.mean()),
            "ece": metrics.calibration_summary(conf, graded.correct.cpu().numpy()).ece,
            "format_rate": float(graded.well_formed.float().mean()),
            "distinct_outputs": float(np.mean([len(set(t)) for t in texts])),
            "cpu_seconds": round(time.process_time() - t0, 2),
        })
    return rows, batch_determinism(model, tokenizer, fmt, questions, config.max_new_tokens,
                                   plan)


def batch_determinism(model: Any, tokenizer: Any, fmt: Any, questions: list[Any],
                      max_new_tokens: int, plan: Plan) -> dict[str, Any]:
    """Greedy outputs of every question generated with different numbers of rows per call
    (all questions at once, then DETERMINISM_ROWS), and inside the R-repetition batch:
    how many questions' outputs differ from the all-at-once batch."""
    def greedy(samples: int, max_rows: int) -> list[str]:
        return sample_in_slices(model, tokenizer, fmt, questions, samples, None,
                                max_new_tokens, max_rows).texts

    reference = greedy(1, len(questions))
    compared = {str(len(questions)): 0}
    for rows in DETERMINISM_ROWS:
        compared[str(rows)] = sum(a != b for a, b in zip(reference, greedy(1, rows),
                                                         strict=True))
    r = plan.repetitions
    repeated = greedy(r, plan.max_rows or EVAL_ROWS_PER_GENERATE)
    compared[f"{r} repetitions"] = sum(
        any(t != reference[i] for t in repeated[i * r:(i + 1) * r]) for i in range(len(questions)))
    return {"questions": len(questions), "differing_questions": compared,
            "identical": all(v == 0 for v in compared.values())}


def measure(targets: list[Target], plan: Plan, out: Path, threads: int = 1) -> dict[str, Any]:
    """Measure every target in turn and write the result to `out` (JSON) after each, so a
    reader sees progress; returns it."""
    torch.set_num_threads(threads)
    t0, c0 = time.monotonic(), time.process_time()
    result: dict[str, Any] = {"plan": asdict(plan), "threads": threads, "models": [],
                              "repetition_seed": f"{REPETITION_SEED_STRIDE} x run seed + r",
                              "done": False}
    for target in targets:
        config = RunConfig.from_dict(json.loads((target.run_dir / "config.json").read_text()))
        model, tokenizer, fmt = _policy(target, config)
        with torch.inference_mode():
            rows, determinism = measure_one(model, tokenizer, fmt, config, plan)
        result["models"].append({"model": target.label, "run": target.run_dir.name,
                                 "recipe": config.recipe, "seed": config.seed,
                                 "rows": rows, "determinism": determinism})
        result["wall_seconds"] = round(time.monotonic() - t0, 1)
        result["cpu_seconds"] = round(time.process_time() - c0, 1)
        write_atomically(out, json.dumps(result, indent=1, allow_nan=False))
    result["done"] = True
    write_atomically(out, json.dumps(result, indent=1, allow_nan=False))
    return result
