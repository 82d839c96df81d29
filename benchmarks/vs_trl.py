"""Seconds per training step: the lab's trainer against TRL's GRPOTrainer on the same work.

Run by hand: `make bench-trl` (builds `.venv-trl` with the project's requirements plus
`trl`, which is not a project requirement, then runs this file in it). Options:
`--repeats R` (alternating runs per side, default 3), `--steps N` (steps per run, the first
`--warmup` of which are not counted), `--threads`.

Same work on both sides: the embedded model and tokenizer, 8 prompts x G = 8 = 64
completions a step, at most 10 new tokens, temperature 1 with no top-k/top-p, LoRA r 16 /
alpha 32 on all linear layers, lr 1e-3, binary correctness reward, one inner step, no KL,
no evaluation, CPU. Each run is a fresh subprocess; the two sides alternate so drift in the
machine's speed hits both. A step is timed wall-clock from its start to the next, so it
includes everything each trainer does per step (sampling, reward, loss, backward,
optimiser, bookkeeping; neither side saves checkpoints). The last line reads `ratio lab/trl = X.XX`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.runtime import slots

ROOT = Path(__file__).resolve().parent.parent
PROMPTS, GROUP, NEW_TOKENS, LR, RANK, ALPHA = 8, 8, 10, 1e-3, 16, 32


def lab_steps(steps: int, threads: int) -> list[float]:
    """Step times of `core.engine.train.train` with the shared settings."""
    from benchmarks.timing import train_step_seconds
    from core.config import build_config

    return train_step_seconds(build_config(
        "quick", recipe="binary", steps=steps, prompts_per_step=PROMPTS, group_size=GROUP,
        max_new_tokens=NEW_TOKENS, lr=LR, lora_rank=RANK, lora_alpha=ALPHA, kl_beta=0.0,
        inner_epochs=1, temperature=1.0, no_eval=True, threads=threads, device="cpu",
        checkpoint_every=0))  # TRL's side saves nothing either


def trl_steps(steps: int, threads: int) -> list[float]:
    """Step times of TRL's GRPOTrainer with a LoRA peft_config and the shared settings."""
    import numpy as np
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from core.data.formats import COMPACT
    from core.data.tasks import Example, get_task
    from core.engine.modeling import load_tokenizer
    from core.paths import EMBEDDED_DIR

    torch.set_num_threads(threads)
    task = get_task("add")
    examples = task.train_batch(np.random.default_rng(0), PROMPTS * (steps + 1))
    data = Dataset.from_list([{"prompt": COMPACT.prompt(e), "answer": e.answer}
                              for e in examples])

    def binary_reward(completions: list[str], answer: list[str], **_: object) -> list[float]:
        return [float(task.is_correct(COMPACT.parse(c).answer, Example("", a)))
                for c, a in zip(completions, answer, strict=True)]

    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(
            output_dir=out, per_device_train_batch_size=PROMPTS * GROUP,
            num_generations=GROUP, max_completion_length=NEW_TOKENS, temperature=1.0,
            top_k=0, top_p=1.0, learning_rate=LR, beta=0.0, num_iterations=1, max_steps=steps,
            gradient_accumulation_steps=1, use_cpu=True, bf16=False, report_to="none",
            logging_steps=10_000, save_strategy="no", dataloader_num_workers=0, seed=0,
            lr_scheduler_type="constant", warmup_steps=0, shuffle_dataset=False,
            disable_tqdm=True, gradient_checkpointing=False)
        model = AutoModelForCausalLM.from_pretrained(EMBEDDED_DIR, dtype=torch.float32)
        trainer = GRPOTrainer(
            model=model, reward_funcs=binary_reward, args=args, train_dataset=data,
            processing_class=load_tokenizer(str(EMBEDDED_DIR)), callbacks=[Clock()],
            peft_config=LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0,
                                   target_modules="all-linear", task_type="CAUSAL_LM"))
        stamps.append(time.perf_counter())
        trainer.train()
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--side", choices=["lab", "trl"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:  # child process: one run, step times as JSON on the last line
        fn = lab_steps if args.side == "lab" else trl_steps
        print(json.dumps(fn(args.steps, args.threads)))
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}, {args.threads} torch threads; "
          f"{PROMPTS} prompts x G={GROUP}, {NEW_TOKENS} new tokens, {args.steps} steps a run "
          f"({args.warmup} warm-up), {args.repeats} runs a side", flush=True)
    # Both sides get the OpenMP setting the lab's engine sets for itself as torch loads
    # (slots.omp_settings): TRL's process would otherwise keep libgomp's default spin, which
    # under load alone skews the ratio.
    env = slots.omp_env()
    wait = {k: env[k] for k in slots.OMP_WAIT_VARIABLES if k in env}
    print(f"OpenMP wait for both sides: {wait or 'libgomp default'}"
          f", load average {os.getloadavg()[0]:.1f}", flush=True)
    counted: dict[str, list[float]] = {"lab": [], "trl": []}
    for r in range(args.repeats):
        for side in ("lab", "trl"):
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.vs_trl", "--side", side, "--steps",
                 str(args.steps), "--threads", str(args.threads)],
                cwd=ROOT, check=True, capture_output=True, text=True, env=env).stdout
            times = json.loads(out.strip().splitlines()[-1])[args.warmup:]
            counted[side] += times
            print(f"run {r} {side}: median {statistics.median(times):.4f} s/step "
                  f"over {len(times)} steps", flush=True)
    lab, trl = (statistics.median(counted[s]) for s in ("lab", "trl"))
    print(f"lab median {lab:.4f} s/step, trl median {trl:.4f} s/step")
    print(f"ratio lab/trl = {lab / trl:.2f}")


if __name__ == "__main__":
    main()
