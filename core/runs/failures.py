"""How a failed run's error reads in status.json: its kind, what happened, what to change.

Torch-free: the exception is recognised by its class name, so the runner can use this
without importing torch.
"""

from __future__ import annotations

from core.config import RunConfig


def is_out_of_memory(e: BaseException) -> bool:
    """CUDA's torch.OutOfMemoryError, or MPS/CPU allocators' "out of memory" RuntimeError."""
    return type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e).lower()


def failure_message(e: BaseException, config: RunConfig) -> str:
    """`Kind: message`; out-of-memory errors say which settings shrink the run."""
    first = (str(e).strip().splitlines() or [""])[0]
    if not is_out_of_memory(e):
        return f"{type(e).__name__}: {e}"
    gen = config.generation_batch_size or "0: as many rows as the KV-cache budget allows"
    return (f"OutOfMemoryError: the device ran out of memory ({first[:200]}). Use a smaller G "
            f"(group_size, now {config.group_size}) or length (max_new_tokens, now "
            f"{config.max_new_tokens}), fewer prompts_per_step (now "
            f"{config.prompts_per_step}), a smaller generation_batch_size (now {gen}), or "
            "turn on gradient_checkpointing; the Launch page's memory estimate shows the "
            "largest part")
