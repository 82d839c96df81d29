"""The shortcut judge's agreement with the exact grader on a model's own samples, and the
random judge's false-positive rate that matches it: how the judges experiment sets its two
imperfect judges to the same agreement (core/experiments/registry.py).

`python -m tools.judge_agreement --task mix [--model embedded] [--batches 16]` samples
training prompts (32 per batch, G = 8, T = 1, the run's max_new_tokens) from the start
model, grades them, applies the shortcut judge's rule, and prints the confusion figures.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from core.config import build_config
from core.data.judging import judge_metrics, judge_stats, matched_fp_rate, surface_match
from core.data.task_data import task_for
from core.engine.modeling import load_policy
from core.engine.rollout import grade, sample_in_slices

PROMPTS_PER_BATCH = 32
SAMPLES = 8
SEED = 12345  # the prompts drawn; apart from every run's seeds


def measure(task: str, model: str, batches: int) -> dict[str, float | None]:
    config = build_config(task=task, model=model, threads=1)
    torch.manual_seed(SEED)
    loaded = load_policy(config)
    data = task_for(config)
    rng = np.random.default_rng(SEED)
    truth: list[bool] = []
    verdict: list[bool] = []
    for _ in range(batches):
        examples = data.train_batch(rng, PROMPTS_PER_BATCH)
        rollout = sample_in_slices(loaded.sampling_model(), loaded.tokenizer,
                                   loaded.prompt_format, examples, SAMPLES, 1.0,
                                   config.max_new_tokens)
        graded = grade(rollout, loaded.prompt_format, data, loaded.tokenizer)
        for ok, readable, answer, ex in zip(graded.correct.tolist(), graded.well_formed.tolist(),
                                            graded.answers, rollout.examples, strict=True):
            truth.append(bool(ok))
            verdict.append(bool(ok) or bool(readable and surface_match(answer or "", ex.answer)))
    figures = judge_metrics(verdict, truth)
    stats = judge_stats(verdict, truth)
    accuracy = figures["judge/true_accuracy"]
    return {"samples": len(truth), "accuracy": accuracy, "shortcut_fpr": stats.fpr,
            "shortcut_agreement": stats.agreement, "shortcut_j": stats.youden_j,
            "matched_random_fp_rate": matched_fp_rate(stats.agreement, accuracy)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mix")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--batches", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(json.dumps(measure(args.task, args.model, args.batches), indent=1))


if __name__ == "__main__":
    main()
