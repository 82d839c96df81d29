"""How a failed run's error reads in status.json: its kind, what happened, what to change.

status.json keeps two fields: `error`, the words (`Kind: message`, with what to change), and
`error_kind`, one of ErrorKind, which the app reads to choose its advice (it never parses the
words). Torch-free: an exception is recognised by its class name, so the runner can use this
without importing torch.
"""

from __future__ import annotations

from enum import StrEnum

from core.config import RunConfig


class ErrorKind(StrEnum):
    OUT_OF_MEMORY = "out_of_memory"  # the device's allocator gave up
    UNSTABLE = "unstable"  # a NaN or inf loss, or sampling from a broken distribution
    CHECKPOINT = "checkpoint"  # the checkpoint to continue from cannot be used
    MODEL = "model"  # the model could not be found or loaded
    FILES = "files"  # a file could not be read or written
    CONFIG = "config"  # the run's config.json is unusable
    ENDED_UNREPORTED = "ended_unreported"  # the process died without recording why
    NOT_STARTED = "not_started"  # the training process could not be started
    OTHER = "other"


# Exceptions by class name (no torch import here), most specific first.
_KINDS_BY_CLASS = {"TrainingError": ErrorKind.UNSTABLE, "CheckpointError": ErrorKind.CHECKPOINT,
                   "ModelError": ErrorKind.MODEL, "ConfigError": ErrorKind.CONFIG}


def failure_kind(e: BaseException) -> ErrorKind:
    """The kind of an exception that ended a run."""
    if is_out_of_memory(e):
        return ErrorKind.OUT_OF_MEMORY
    for cls in type(e).__mro__:
        if cls.__name__ in _KINDS_BY_CLASS:
            return _KINDS_BY_CLASS[cls.__name__]
    # torch.multinomial on NaN or inf probabilities: the weights blew up
    if isinstance(e, RuntimeError) and "probability tensor" in str(e):
        return ErrorKind.UNSTABLE
    if isinstance(e, OSError):
        return ErrorKind.FILES
    return ErrorKind.OTHER


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
