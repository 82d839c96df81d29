"""GPU check: a 20-step `rlcr` run of a random model the size of Qwen2.5-0.5B, end to end
through the lab's own engine (`core.runtime.runner.execute`), with nothing downloaded.

    .venv/bin/python benchmarks/gpu_check.py            # on a CUDA machine
    .venv/bin/python benchmarks/gpu_check.py --tiny     # anywhere: a toy model, 2 steps
    .venv/bin/python benchmarks/gpu_check.py --device cpu --steps 2 --prompts 2 \
        --group-size 8 --max-new-tokens 128            # the full-size model on the CPU (slow)

The model is Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4864)
built from a config with the test tokenizer (tools.tiny_chat: characters + RLCR tags + ChatML
specials) padded to Qwen2.5's 151,936-token vocabulary, so the vocabulary-wide logits cost
what they cost on the real model. Its weights are random, so it almost never samples EOS:
every completion runs to max_new_tokens, the worst case for time and memory. Evaluation is
off: the figures are training steps (generation, scoring, backward, optimiser). Activation
checkpointing is on, as in the chat preset (--no-gradient-checkpointing turns it off).

Prints the median step time (the first step, warm-up, left out), generated tokens per second
of generation time, and peak memory (CUDA: torch.cuda.max_memory_allocated; CPU: the
process's peak resident size) beside the lab's own estimate of the peak for the same
settings (core.models.model_catalog), then one JSON line with the same figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import core.engine.rollout  # noqa: E402
from core.config import RunConfig, build_config  # noqa: E402
from core.data.task_data import task_for  # noqa: E402
from core.engine.modeling import load_tokenizer, prompt_format_for  # noqa: E402
from core.models.model_catalog import read_arch, run_estimate  # noqa: E402
from core.runtime.runner import execute, preflight  # noqa: E402
from core.runtime.store import RunStore  # noqa: E402
from tools.tiny_chat import QWEN25_VOCAB, write_arithmetic_qa, write_chat_model  # noqa: E402


class GenerationTimer:
    """Wraps core.engine.rollout.sample (which sample_in_slices calls) to time generation."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.tokens = 0
        self._sample = core.engine.rollout.sample

    def __call__(self, *args, **kwargs):
        sync()
        t0 = time.perf_counter()
        rollout = self._sample(*args, **kwargs)
        sync()
        self.seconds += time.perf_counter() - t0
        self.tokens += int(rollout.completion_mask.sum())
        return rollout


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_memory_gb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: KiB


def prompt_tokens(config: RunConfig) -> int:
    """The widest training prompt in tokens (this character-level tokenizer makes prompts
    several times longer than a real BPE's), for the lab's memory estimate."""
    tokenizer = load_tokenizer(config.model)
    fmt = prompt_format_for(object(), tokenizer, config.reasoning)
    return max(len(tokenizer(fmt.prompt(ex))["input_ids"])
               for ex in task_for(config).eval_set(32))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true",
                   help="a toy model and 2 steps: checks the script on any machine")
    p.add_argument("--steps", type=int, default=None, help="default 20 (2 with --tiny)")
    p.add_argument("--prompts", type=int, default=4, help="prompts per step")
    p.add_argument("--group-size", type=int, default=8, help="G")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--generation-batch-size", type=int, default=0)
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction,
                   default=True, help="as the chat preset (default on)")
    p.add_argument("--device", default="auto")
    p.add_argument("--keep", type=Path, default=None, help="keep the model and run here")
    args = p.parse_args(argv)
    if not args.tiny and args.device != "cpu" and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible. Run it on a CUDA machine, with --device cpu "
              "(the full-size model on the CPU: slow), or with --tiny to check the script "
              "itself.", file=sys.stderr)
        return 2
    steps = args.steps or (2 if args.tiny else 20)
    work = args.keep or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    t0 = time.perf_counter()
    model = write_chat_model(work / "model", "qwen2", "tiny" if args.tiny else "qwen2.5-0.5b",
                             vocab_size=None if args.tiny else QWEN25_VOCAB)
    built = time.perf_counter() - t0
    config = build_config(
        model=str(model), task=str(write_arithmetic_qa(work / "qa.jsonl", rows=400)),
        recipe="rlcr", steps=steps, prompts_per_step=args.prompts, group_size=args.group_size,
        max_new_tokens=args.max_new_tokens, temperature=0.7, no_eval=True, device=args.device,
        generation_batch_size=args.generation_batch_size,
        gradient_checkpointing=args.gradient_checkpointing)
    preflight(config)
    estimate = run_estimate(config, "cuda" if args.device in ("auto", "cuda")
                            and torch.cuda.is_available() else "cpu", prompt_tokens(config))
    store = RunStore(work / "runs")
    writer = store.create(config)
    timer = GenerationTimer()
    core.engine.rollout.sample = timer
    try:
        status = execute(config, writer)
    finally:
        core.engine.rollout.sample = timer._sample
    record = store.load(writer.run_id)
    if status != "finished":
        print(f"gpu_check: the run {status}: {record.error}", file=sys.stderr)
        return 1
    device = "cuda" if torch.cuda.is_available() and args.device in ("auto", "cuda") else "cpu"
    secs = [t["seconds"] for t in record.train]
    result = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "model": "random Qwen2 " + ("tiny" if args.tiny else "0.5B shape, vocab 151936"),
        "parameters": read_arch(model).params,
        "steps": steps, "prompts_per_step": args.prompts, "group_size": args.group_size,
        "max_new_tokens": args.max_new_tokens,
        "gradient_checkpointing": args.gradient_checkpointing,
        "generation_batch_size": args.generation_batch_size,
        "step_seconds_median": round(statistics.median(secs[1:] or secs), 3),
        "generated_tokens": timer.tokens,
        "generated_tokens_per_second": round(timer.tokens / max(timer.seconds, 1e-9), 1),
        "generation_share_of_step_time": round(timer.seconds / max(sum(secs), 1e-9), 3),
        "peak_memory_gb": round(peak_memory_gb(device), 2),
        "estimated_peak_gb": round(estimate.total / 1e9, 2) if estimate else None,
        "model_build_seconds": round(built, 1),
    }
    print(f"{result['model']} ({result['parameters'] / 1e6:.1f} M parameters) on "
          f"{result['device']}: {steps} rlcr steps of "
          f"{args.prompts} prompts x G = {args.group_size}, up to {args.max_new_tokens} tokens")
    print(f"  step time (median)      {result['step_seconds_median']:.3f} s")
    print(f"  generated tokens / s    {result['generated_tokens_per_second']:.1f} "
          f"({timer.tokens} tokens; generation is "
          f"{100 * result['generation_share_of_step_time']:.0f}% of step time)")
    print(f"  peak memory             {result['peak_memory_gb']:.2f} GB "
          f"(the lab estimates {result['estimated_peak_gb']} GB)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
