"""The reward source: the verdict a recipe sees in place of the exact grader's correctness.

`Judge` turns one step's graded rollout (the truth) into what the recipe reads, and says how
good the verdict was (`core.data.judging`: the rules, the verdict parser, the statistics).
The language-model judge is a second model, loaded once beside the policy and never trained.
Evaluations never call a judge: they report the truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from core.config import RunConfig
from core.data.formats import Messages
from core.data.judging import (
    JUDGE_SYSTEM,
    judge_metrics,
    judge_request,
    judge_rng,
    read_verdict,
    rlcr_strict,
    rule_verdicts,
    surface_match,
)
from core.data.tasks import Example, Task
from core.engine.modeling import chat_renderer, load_pretrained, model_dtype
from core.engine.rollout import Graded, Rollout, sample_in_slices
from core.models.model_source import ModelError, check_model

# Judged training completions kept for the browser, at the first step, every evaluation's
# step and the last.
JUDGED_SAMPLES_KEPT = 8


@dataclass
class Judged:
    graded: Graded  # what the recipe sees: the verdict as `correct` (rlcr-strict: its format)
    metrics: dict[str, float | None]  # train/judge/… values, the truth beside the verdict
    samples: list[dict[str, Any]] = field(default_factory=list)  # for the completion browser


@dataclass(frozen=True)
class _Rendered:
    """A prompt format whose examples already hold the rendered judge prompt."""
    name: str = "judge"

    def prompt(self, example: Example) -> str:
        return example.question


class LanguageModelJudge:
    """A chat model asked to reason and end with a verdict tag; greedy, so a reply is the
    same for the same completion."""

    def __init__(self, config: RunConfig, device: torch.device) -> None:
        source = check_model(config.judge_model)
        model, self.tokenizer = load_pretrained(source, config.judge_model, model_dtype(device),
                                                config.trust_remote_code)
        if not self.tokenizer.chat_template:
            raise ModelError(f"judge model {config.judge_model!r} has no chat template: the "
                             "judge is prompted as a chat model, so use an instruction-tuned one")
        self.model = model.to(device).eval().requires_grad_(False)
        self.render = chat_renderer(self.tokenizer, reasoning=True)
        self.max_new_tokens = config.judge_max_new_tokens
        self.max_rows = config.generation_batch_size

    def replies(self, examples: list[Example], completions: list[str]) -> list[str]:
        if not examples:
            return []
        prompts = [Example(self.render(self._messages(ex, c)), "")
                   for ex, c in zip(examples, completions, strict=True)]
        return sample_in_slices(self.model, self.tokenizer, _Rendered(), prompts, 1, None,
                                self.max_new_tokens, self.max_rows).texts

    @staticmethod
    def _messages(example: Example, completion: str) -> Messages:
        return [{"role": "system", "content": JUDGE_SYSTEM},
                {"role": "user", "content": judge_request(example.question, example.answer,
                                                          completion)}]


class Judge:
    def __init__(self, config: RunConfig, task: Task, device: torch.device) -> None:
        self.config, self.task = config, task
        self.grader = getattr(task, "grader", "number")  # built-in tasks: whole numbers
        self.llm = LanguageModelJudge(config, device) if config.judge == "llm-judge" else None

    def __call__(self, rollout: Rollout, graded: Graded, step: int) -> Judged:
        c = self.config
        truth = [bool(x) for x in graded.correct.tolist()]
        readable = [bool(x) for x in graded.well_formed.tolist()]
        answers = [a or "" for a in graded.answers]
        refs = [ex.answer for ex in rollout.examples]
        replies: list[str | None] = [None] * len(truth)
        unreadable = None
        if c.judge == "exact":
            verdict = truth
        elif c.judge in ("random-judge", "shortcut-judge"):
            surface = [surface_match(a, r) for a, r in zip(answers, refs, strict=True)]
            verdict = rule_verdicts(c.judge, truth, readable, surface, c.judge_fn_rate,
                                    c.judge_fp_rate, judge_rng(c.seed, step))
        elif c.judge == "rlcr-strict":
            strict = [rlcr_strict(t, r, self.grader) for t, r in zip(rollout.texts, refs,
                                                                       strict=True)]
            verdict = [s.correct for s in strict]
            device = graded.correct.device
            graded = replace(graded, well_formed=torch.tensor(
                [s.well_formed for s in strict], device=device), confidence=torch.tensor(
                [s.confidence if s.confidence is not None else float("nan") for s in strict],
                device=device))
        else:  # llm-judge: only readable answers are sent; the rest are rejected unasked
            asked = [i for i in range(len(truth)) if readable[i]]
            texts = self.llm.replies([rollout.examples[i] for i in asked],
                                     [rollout.texts[i] for i in asked])
            for i, text in zip(asked, texts, strict=True):
                replies[i] = text
            read = {i: read_verdict(t) for i, t in zip(asked, texts, strict=True)}
            verdict = [bool(read.get(i)) for i in range(len(truth))]
            unreadable = (sum(v is None for v in read.values()) / len(read)) if read else None
        metrics = judge_metrics(verdict, truth)
        if unreadable is not None or c.judge == "llm-judge":
            metrics["judge/unreadable"] = unreadable
        correct = torch.tensor(verdict, dtype=graded.correct.dtype, device=graded.correct.device)
        keeps = c.judge != "exact" and (step in (1, c.steps) or bool(
            c.eval_every and step % c.eval_every == 0))
        kept = [] if not keeps else [
            {"source": "training (judged)", "prompt": rollout.examples[i].question,
             "completion": rollout.texts[i], "answer": graded.answers[i],
             "target": refs[i], "correct": truth[i], "verdict": verdict[i],
             **({"judge_reasoning": replies[i]} if replies[i] is not None else {})}
            for i in range(min(JUDGED_SAMPLES_KEPT, len(truth)))]
        return Judged(replace(graded, correct=correct), metrics, kept)
