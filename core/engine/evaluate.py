"""Evaluation on the fixed held-out set (docs/science.md, "Metrics").

n samples per prompt at the eval temperature, plus one greedy answer per prompt, then
accuracy, Pass@k, format rate, length, the spread of the samples (mean per-token entropy of
the policy, distinct answers per prompt) and calibration for each confidence signal.
Sampling is seeded by (run seed, step) inside a forked RNG, so evaluating more or less
often never changes the training trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from core import metrics, recalibration
from core.config import EVAL_ROWS_PER_GENERATE, RunConfig
from core.data.formats import PromptFormat
from core.data.tasks import Example, Task
from core.engine.rollout import answer_probability, grade, sample_in_slices


@dataclass
class EvalResult:
    metrics: dict[str, Any]  # nested, JSON-ready; logged under eval/
    samples: list[dict[str, Any]]  # kept completions for the browser


@dataclass
class _Samples:
    correct: np.ndarray  # [P * n]
    verbalized: np.ndarray  # [P * n] NaN where missing
    answer_prob: np.ndarray  # [P * n] NaN where no answer
    well_formed: np.ndarray  # [P * n] bool
    length: np.ndarray  # [P * n] completion tokens
    entropy: np.ndarray  # [P * n] sum of per-token entropies (nats) over the completion
    truncation_rate: float  # share cut at max_new_tokens before ending
    answers: list[str | None]
    texts: list[str]


def _draw(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat,
          task: Task, examples: list[Example], n: int, temperature: float | None,
          max_new_tokens: int, max_rows: int = 0) -> _Samples:
    rollout = sample_in_slices(model, tokenizer, fmt, examples, n, temperature, max_new_tokens,
                               max_rows or EVAL_ROWS_PER_GENERATE)
    graded = grade(rollout, fmt, task, tokenizer)
    return _Samples(
        graded.correct.cpu().numpy(), graded.confidence.double().cpu().numpy().round(6),
        answer_probability(rollout.logprobs, graded.answer_mask).float().cpu().numpy(),
        graded.well_formed.cpu().numpy(), rollout.completion_mask.sum(-1).cpu().numpy(),
        rollout.entropy.sum(-1).float().cpu().numpy(), rollout.truncation_rate, graded.answers,
        rollout.texts)


def evaluate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat,
             task: Task, examples: list[Example], config: RunConfig, step: int) -> EvalResult:
    n = config.eval_samples
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(config.seed * 1_000_003 + step)
        s = _draw(model, tokenizer, fmt, task, examples, n, config.eval_temperature,
                  config.max_new_tokens, config.generation_batch_size)
        greedy = _draw(model, tokenizer, fmt, task, examples, 1, None, config.max_new_tokens,
                       config.generation_batch_size)
    per_prompt = s.correct.reshape(len(examples), n)  # [P, n]
    answers = [s.answers[p * n:(p + 1) * n] for p in range(len(examples))]
    consistency = np.array([np.nan if c is None else c
                            for row in metrics.consistency(answers) for c in row], dtype=float)
    signals = {"verbalized": s.verbalized, "answer_prob": s.answer_prob,
               "consistency": consistency}
    measure = recalibration.measuring_mask([e.question for e in examples], n)  # [P * n]
    result = {
        "accuracy": float(s.correct.mean()),
        "greedy_accuracy": float(greedy.correct.mean()),
        "pass_at_k": {str(k): v for k, v in metrics.mean_pass_at_k(
            per_prompt.sum(1).astype(int), n, config.ks).items()},
        "format_rate": float(s.well_formed.mean()),
        "mean_length": float(s.length.mean()),
        "entropy": metrics.mean_token_entropy(s.entropy, s.length),
        "distinct_answers": metrics.distinct_answers(answers),
        "truncation_rate": s.truncation_rate,
        "calibration": {name: metrics.calibration_summary(conf, s.correct).to_dict()
                        for name, conf in signals.items()}
        | recalibration.summaries(signals, s.correct, measure),
    }
    return EvalResult(result, _kept_samples(examples, s, signals, n, config.keep_samples, fmt))


def _kept_samples(examples: list[Example], s: _Samples, signals: dict[str, np.ndarray], n: int,
                  keep: int, fmt: PromptFormat) -> list[dict[str, Any]]:
    """First sample of every prompt, then the second, ... until `keep` rows."""
    order = [p * n + j for j in range(n) for p in range(len(examples))][:keep]

    def num(x: float) -> float | None:
        return None if np.isnan(x) else round(float(x), 4)

    return [{"prompt": fmt.prompt(examples[i // n]), "completion": s.texts[i],
             "answer": s.answers[i], "target": examples[i // n].answer,
             "correct": bool(s.correct[i]),
             **{f"confidence/{k}": num(v[i]) for k, v in signals.items()}} for i in order]
