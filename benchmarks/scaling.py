"""How the lab's step and evaluation times grow with G, completion length, model size and n.

Run by hand: `.venv/bin/python -m benchmarks.scaling [--steps 12] [--warmup 3]`. Prints
markdown tables for benchmarks/RESULTS.md. Every row is the median wall time of a step of
`core.engine.train.train` (binary reward, 16 prompts a step, no evaluation, no checkpoints) or of
one evaluation (128 held-out prompts x n samples plus greedy), with torch on every core.

- Completion length: the end-of-sequence token is swapped for one the model never writes,
  so every completion runs to exactly `max_new_tokens`.
- Model size: the embedded model (1.05 M parameters in its layers) against a randomly
  initialised Llama of the same vocabulary and format, about 10x bigger (hidden 320,
  8 layers: 9.8 M), written to a temporary folder and loaded through `--model`.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from benchmarks.timing import train_step_seconds
from core.config import build_config
from core.data.tasks import get_task
from core.engine.evaluate import evaluate
from core.engine.modeling import load_policy
from core.paths import EMBEDDED_DIR


def step_time(warmup: int, steps: int, never_stop: bool = False, **overrides: object) -> float:
    config = build_config("quick", recipe="binary", no_eval=True, steps=warmup + steps,
                          checkpoint_every=0, **overrides)
    loaded = load_policy(config)
    if never_stop:  # BOS is never generated after Q=, so every completion runs full length
        loaded.tokenizer.eos_token = loaded.tokenizer.bos_token
        for model in (loaded.model, loaded.sampler):
            if model is not None:
                model.generation_config.eos_token_id = loaded.tokenizer.bos_token_id
    return statistics.median(train_step_seconds(config, loaded)[warmup:])


def eval_time(n: int, repeats: int = 3) -> float:
    config = build_config("quick", eval_samples=n)
    torch.set_num_threads(os.cpu_count() or 1)
    loaded = load_policy(config)
    task = get_task(config.task)
    examples = task.eval_set(config.eval_prompts)
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        evaluate(loaded.sampling_model(), loaded.tokenizer, loaded.prompt_format, task,
                 examples, config, i)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def ten_times_bigger(folder: str) -> str:
    cfg = AutoConfig.from_pretrained(EMBEDDED_DIR)
    cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size = 320, 8, 1280
    cfg.head_dim = 64
    cfg.num_attention_heads = cfg.num_key_value_heads = 5
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(EMBEDDED_DIR).save_pretrained(folder)
    return folder


def table(title: str, header: str, rows: list[tuple[str, float]]) -> None:
    print(f"\n{title}\n\n| {header} | seconds | x first row |\n|---|---|---|")
    for name, sec in rows:
        print(f"| {name} | {sec:.3f} | {sec / rows[0][1]:.2f} |", flush=True)


def lengths(warmup: int, steps: int) -> None:
    table("Step time against completion length (G = 8, every completion full length)",
          "new tokens", [(str(t), step_time(warmup, steps, never_stop=True, max_new_tokens=t))
                         for t in (10, 20, 40)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    w, s = args.warmup, args.steps
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, python {platform.python_version()}; median of {s} steps "
          f"after {w} warm-up")
    table("Step time against G (16 prompts, at most 10 new tokens)", "G",
          [(str(g), step_time(w, s, group_size=g)) for g in (4, 8, 16, 32)])
    lengths(w, s)
    with tempfile.TemporaryDirectory() as big:
        sizes = [("embedded, 1.05 M", step_time(w, s)),
                 ("random, 9.8 M", step_time(w, s, model=ten_times_bigger(big)))]
    table("Step time against model size (G = 8, at most 10 new tokens)", "model", sizes)
    table("Evaluation time against n (128 prompts x n, plus greedy)", "n",
          [(str(n), eval_time(n)) for n in (8, 16, 32, 64)])


if __name__ == "__main__":
    main()
