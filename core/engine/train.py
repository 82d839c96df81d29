"""The training loop: rollout -> reward -> advantage -> loss -> step -> evaluate -> log."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import numpy as np
import torch

from core.config import RunConfig, learning_rate
from core.data.task_data import task_for
from core.engine.checkpoint import Checkpointer, save_adapter
from core.engine.evaluate import evaluate
from core.engine.judges import Judge
from core.engine.modeling import LoadedModel, load_policy
from core.engine.recipes import RECIPES, RecipeBatch
from core.engine.rollout import (
    answer_probability,
    grade,
    sample_in_slices,
    sampler_gap,
    score_tokens,
    span_confidence,
    with_rows,
)
from core.runtime.store import ADAPTER_FILE, RunWriter


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss is no longer finite)."""


def train(config: RunConfig, writer: RunWriter,
          should_stop: Callable[[], bool] = lambda: False,
          loaded: LoadedModel | None = None,
          threads: Callable[[], int] | None = None) -> str:
    """Run `config` to the end, logging through `writer`; returns the final status.

    `loaded` lets a caller (a test) pass the policy in and inspect it afterwards. `threads`
    says how many torch threads to use now; it is asked before every step, so a run follows
    the runs training beside it (default: config.threads, or every core).
    """
    threads = threads or (lambda: config.threads or os.cpu_count() or 1)
    _set_threads(threads())
    start_from = writer.path.parent / config.init_from if config.init_from else None
    loaded = loaded or load_policy(config, start_from)
    model, tokenizer, fmt = loaded.model, loaded.tokenizer, loaded.prompt_format
    task = task_for(config)
    eval_set = task.eval_set(config.eval_prompts)
    recipe = RECIPES[config.recipe]
    judge = Judge(config, task, loaded.device)  # the reward's verdict; evaluations use truth
    use_disparity = recipe.needs_span_confidence and config.rlsf_signal == "disparity"
    rng = np.random.default_rng(config.seed)  # training prompts
    torch.manual_seed(config.seed)  # rollout sampling
    params = [p for p in model.parameters() if p.requires_grad]
    # One fused kernel for every LoRA tensor: a quarter of the per-tensor loop's time on the
    # CPU (56 tensors: 1.0 -> 0.25 ms a step), the same update to float rounding.
    fused = True if loaded.device.type in ("cpu", "cuda") else None
    optimizer = torch.optim.Adam(params, lr=config.lr, betas=(0.9, config.adam_beta2),
                                 fused=fused)
    writer.log_text(f"model {config.model} on {loaded.device}; {len(params)} LoRA tensors, "
                    f"{sum(p.numel() for p in params)} trainable parameters")
    if loaded.sampler_note:
        writer.log_text(f"merged sampling off: {loaded.sampler_note}")
    checkpoints = Checkpointer(writer, config, model, optimizer, rng)

    def run_eval(step: int) -> None:
        if config.no_eval:
            return
        t0 = time.perf_counter()
        result = evaluate(loaded.sampling_model(), tokenizer, fmt, task, eval_set, config, step)
        writer.log(step, {"eval/" + k: v for k, v in result.metrics.items()}
                   | {"eval/seconds": round(time.perf_counter() - t0, 3)})
        writer.log_samples(step, result.samples)

    start = checkpoints.restore()  # a resumed run continues after its checkpoint; else 0
    if start == 0:
        run_eval(0)
    for step in range(start + 1, config.steps + 1):
        if should_stop():
            checkpoints.save(step - 1)  # so a resume loses nothing
            return "stopped"
        _set_threads(threads())
        t0, cpu0 = time.perf_counter(), time.process_time()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        # 1. Rollout: G completions per training prompt, then read and grade them.
        examples = task.train_batch(rng, config.prompts_per_step)
        rollout = sample_in_slices(loaded.sampling_model(), tokenizer, fmt, examples,
                                   config.group_size, config.temperature,
                                   config.max_new_tokens, config.generation_batch_size)
        graded = grade(rollout, fmt, task, tokenizer)  # on the model's device, as all below
        judged = judge(rollout, graded, step)  # graded stays the truth; the recipe sees this
        seen = judged.graded
        batch = RecipeBatch(  # log-probs from sampling until the scoring pass replaces them
            logprobs=rollout.logprobs, old_logprobs=rollout.logprobs,
            mask=rollout.completion_mask.float(), correct=seen.correct,
            confidence=seen.confidence, well_formed=seen.well_formed,
            group_size=config.group_size, confidence_mask=graded.confidence_mask)
        if recipe.needs_reference(config):
            with torch.no_grad(), model.disable_adapter():
                batch.ref_logprobs = score_tokens(model, rollout).logprobs  # [B, T]
        # 2-5. Reward, advantage and loss live in the recipe; then the optimiser step. Rows
        # that carry no advantage are not scored (exactly the same update, less work).
        rows = recipe.rows_to_score(batch, config)  # [B] bool
        scored = rollout.select(rows)
        for epoch in range(config.inner_epochs):
            scores = score_tokens(model, scored, with_disparity=use_disparity and epoch == 0)
            if epoch == 0:  # pi_old = pi on the first pass (ratio 1)
                gap = sampler_gap(scored.logprobs, scores.logprobs, scored.completion_mask)
                batch.old_logprobs = with_rows(batch.old_logprobs, rows, scores.logprobs.detach())
                if recipe.needs_span_confidence:  # rlsf scores every row
                    per_token = scores.disparity if use_disparity else scores.logprobs.exp()
                    batch.span_confidence = span_confidence(per_token.detach(),
                                                            graded.answer_mask)  # [B]
            batch.logprobs = with_rows(batch.old_logprobs, rows, scores.logprobs)  # [B, T]
            result = recipe.fn(batch, config)
            if not torch.isfinite(result.loss):
                raise TrainingError(f"the loss became {float(result.loss.detach())} at step "
                                    f"{step}: lower the learning rate or turn on gradient "
                                    "clipping")
            optimizer.zero_grad(set_to_none=True)
            result.loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(
                params, config.max_grad_norm if config.max_grad_norm > 0 else math.inf)
            optimizer.step()
            if not bool(torch.isfinite(torch.cat([p.flatten() for p in params])).all()):
                # else sampling crashes; one read of the device instead of one per tensor
                raise TrainingError(f"the LoRA weights stopped being finite at step {step}: "
                                    "lower the learning rate or turn on gradient clipping")
        # 6. Log what this step saw, then evaluate when due.
        answer_prob = answer_probability(batch.old_logprobs, graded.answer_mask)
        writer.log(step, {f"train/{k}": v for k, v in {
            "reward/mean": float(result.rewards.mean()),
            "accuracy": float(graded.correct.mean()),
            "loss": float(result.loss.detach()),
            "format_rate": float(graded.well_formed.float().mean()),
            "mean_length": float(rollout.completion_mask.sum(-1).float().mean()),
            "truncation_rate": rollout.truncation_rate,
            "sampler_logprob_gap": gap,
            "confidence/verbalized": _nanmean(graded.confidence),
            "confidence/answer_prob": _nanmean(answer_prob),
            "grad_norm": float(grad_norm),
            "seconds": round(time.perf_counter() - t0, 4),
            # CPU seconds of the whole process over the step and its thread count: their
            # ratio to `seconds` is the share of the cores the run got.
            "cpu_seconds": round(time.process_time() - cpu0, 4),
            "threads": torch.get_num_threads(),
            "rows_scored": float(rows.float().mean()),
            **judged.metrics, **result.components}.items()})
        writer.log_samples(step, judged.samples)
        writer.update_status(step=step)
        if config.eval_every and step % config.eval_every == 0 and step != config.steps:
            run_eval(step)
        checkpoints.maybe_save(step)
    if config.steps > 0:
        run_eval(config.steps)
        save_adapter(model, writer.path / ADAPTER_FILE)  # what `init_from` starts from
    return "finished"


def _set_threads(n: int) -> None:
    if n != torch.get_num_threads():
        torch.set_num_threads(n)


def _nanmean(x: torch.Tensor) -> float | None:
    x = x[~torch.isnan(x)]
    return float(x.mean()) if x.numel() else None
