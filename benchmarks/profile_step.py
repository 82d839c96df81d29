"""Where a training step and an evaluation spend their time (the speed work's profile).

Run by hand: `.venv/bin/python -m benchmarks.profile_step [--steps 20] [--threads N]
[--recipe binary] [--cprofile]`. Times each phase of the hot path with wall clocks around
the same helpers `core.engine.train` calls (sampling, grading, scoring, backward, optimiser step,
one evaluation), then optionally prints cProfile's top functions for the sampling phase.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import torch

from benchmarks.timing import print_profile
from core.config import build_config
from core.data.tasks import get_task
from core.engine.evaluate import evaluate
from core.engine.modeling import load_policy
from core.engine.recipes import RECIPES, RecipeBatch
from core.engine.rollout import grade, sample, score_tokens

try:
    from core.engine.rollout import with_rows
except ImportError:  # the lab before the merged sampler and row skipping
    with_rows = None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--recipe", default="binary")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=10)
    ap.add_argument("--cprofile", action="store_true")
    ap.add_argument("--skip-eval", action="store_true", help="time the training step only")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time phases in this process's CPU seconds, not wall seconds (steadier "
                         "on a shared machine; with --threads 1 it is the work done)")
    args = ap.parse_args()
    config = build_config("quick", recipe=args.recipe, threads=args.threads,
                          prompts_per_step=args.prompts, group_size=args.group_size,
                          max_new_tokens=args.max_new_tokens)
    torch.set_num_threads(args.threads)
    loaded = load_policy(config)
    model, tok, fmt = loaded.model, loaded.tokenizer, loaded.prompt_format
    task = get_task(config.task)
    rng = np.random.default_rng(0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr)
    recipe = RECIPES[config.recipe]
    phases: dict[str, list[float]] = defaultdict(list)
    clock = time.process_time if args.cpu_time else time.perf_counter
    # The lab before the speed work had no merged sampler; this lets the script profile that
    # code too
    # (cd OLD && PYTHONPATH=OLD NEW/.venv/bin/python NEW/benchmarks/profile_step.py).
    sampler = getattr(loaded, "sampling_model", lambda: model)

    @contextmanager
    def phase(name: str) -> Iterator[None]:
        t = clock()
        yield
        phases[name].append(clock() - t)

    def step() -> None:
        with phase("sample"):
            ex = task.train_batch(rng, config.prompts_per_step)
            ro = sample(sampler(), tok, fmt, ex, config.group_size,
                        config.temperature, config.max_new_tokens)
        with phase("grade"):
            g = grade(ro, fmt, task, tok)
            batch = RecipeBatch(ro.logprobs, ro.logprobs, ro.completion_mask.float(), g.correct,
                                g.confidence, g.well_formed, config.group_size,
                                confidence_mask=g.confidence_mask)
        with phase("pick rows"):  # rows without advantage are not scored (since the speed work)
            rows = (recipe.rows_to_score(batch, config) if hasattr(recipe, "rows_to_score")
                    else None)
            scored = ro if rows is None else ro.select(rows)
        with phase("score (forward)"):
            s = score_tokens(model, scored)
        with phase("recipe"):
            lp = s.logprobs if rows is None else with_rows(ro.logprobs, rows, s.logprobs)
            res = recipe.fn(replace(batch, logprobs=lp, old_logprobs=lp.detach()), config)
        with phase("backward"):
            opt.zero_grad(set_to_none=True)
            res.loss.backward()
        with phase("optimizer"):
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            opt.step()

    for _ in range(3):
        step()  # warm-up
    phases.clear()
    for _ in range(args.steps):
        step()
    total = sum(float(np.median(v)) for v in phases.values())
    print(f"{args.threads} threads, G={config.group_size}, "
          f"{config.prompts_per_step} prompts, {config.max_new_tokens} new tokens")
    for name, v in phases.items():
        med = float(np.median(v))
        print(f"  {name:16s} {1000 * med:7.1f} ms  {100 * med / total:5.1f} %")
    print(f"  {'step (sum)':16s} {1000 * total:7.1f} ms")
    if not args.skip_eval:
        eval_set = task.eval_set(config.eval_prompts)
        t = clock()
        evaluate(sampler(), tok, fmt, task, eval_set, config, 0)
        print(f"evaluation ({config.eval_prompts} prompts x n={config.eval_samples} + "
              f"greedy): {clock() - t:.2f} s")
    if args.cprofile:
        print_profile(lambda: [step() for _ in range(10)])


if __name__ == "__main__":
    main()
