"""Checkpoints: a stopped or failed run continues as the same run, on the same trajectory.

`checkpoint.pt` in the run folder holds, at the end of a step s (after its evaluation): the
LoRA weights, the optimiser state, and every random generator the loop draws from - numpy's
Generator for the training prompts and torch's generators for sampling. Evaluation seeds its
own forked generator, so it needs nothing here. The file is written beside its target and
renamed over it, so a crash at any moment leaves the previous checkpoint whole.

A resumed run drops the metric and sample rows logged after s (they were made after the
state it continues from, and are made again), so the record has every step exactly once.
On the CPU the rows made again are identical on the same machine. On a CUDA GPU they are the
same procedure from the same state, not the same bits: some kernels (attention's backward,
atomics in reductions) add in a varying order, so figures drift apart within rounding and the
sampled tokens can then differ. Only the GPU the run used is saved; a run continues on a
machine with fewer (or other) GPUs, on the device it is given there. Checkpoints are taken
every `checkpoint_every` steps and when a run is stopped, never at the last step: after it
only the final evaluation is left.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.config import RunConfig
from core.files import atomic_file
from core.runtime.store import RunWriter

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = 1


def save_adapter(model: torch.nn.Module, path: os.PathLike[str] | str) -> None:
    """The trainable (LoRA) weights alone, written atomically: a run's final policy."""
    save_atomically({"format": FORMAT, "lora": {n: p.detach().cpu()
                                                for n, p in _trainable(model).items()}}, path)


def load_adapter(path: os.PathLike[str] | str) -> dict[str, torch.Tensor]:
    """The LoRA weights `save_adapter` wrote, by parameter name."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an adapter file this version can read")
    return state["lora"]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says what to do."""


def _trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()  # the run's own GPU only
    return states


def cuda_rng_state(saved: Any, device_index: int) -> torch.Tensor:
    """The generator state to restore on this machine's current GPU from what a checkpoint
    holds: one state (this format), or one per GPU of the saving machine (earlier
    checkpoints, which `set_rng_state_all` failed to restore on a machine with fewer GPUs):
    then the state of the GPU with this index if the saver had it, else its first."""
    if isinstance(saved, list | tuple):
        return saved[device_index] if device_index < len(saved) else saved[0]
    return saved


def save_atomically(state: dict[str, Any], path: os.PathLike[str] | str) -> None:
    """torch.save through core.files.atomic_file: the old checkpoint or the new one, and the
    rename fsynced too."""
    with atomic_file(path, "wb", sync_folder=True) as f:
        torch.save(state, f)


@dataclass
class Checkpointer:
    writer: RunWriter
    config: RunConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    rng: np.random.Generator
    last: int = 0  # the step of the newest checkpoint on disk; 0: none

    @property
    def path(self) -> str:
        return os.fspath(self.writer.path / CHECKPOINT_FILE)

    def restore(self) -> int:
        """Load the checkpoint if there is one; returns the step to continue after (0: a
        fresh start). Rows logged after that step are dropped from the record."""
        step = 0
        if os.path.exists(self.path):
            try:
                state = torch.load(self.path, map_location="cpu", weights_only=True)
            except Exception as e:  # a truncated or foreign file
                raise CheckpointError(f"{CHECKPOINT_FILE} is unreadable ({e}): delete it to "
                                      "start this run again from step 0") from e
            step = self._apply(state)
            self.writer.log_text(f"continuing from the checkpoint at step {step}")
        # Step 0: nothing was saved, so everything logged before is redone from scratch.
        self.writer.truncate(step if step else -1)
        self.writer.update_status(step=step, checkpoint_step=step or None)
        self.last = step
        return step

    def _apply(self, state: dict[str, Any]) -> int:
        params = _trainable(self.model)
        if state.get("format") != FORMAT or set(state.get("lora", {})) != set(params):
            raise CheckpointError(f"{CHECKPOINT_FILE} does not match this run's model: delete "
                                  "it to start this run again from step 0")
        step = int(state["step"])
        if not 0 < step < self.config.steps:
            raise CheckpointError(f"{CHECKPOINT_FILE} is at step {step}, outside this run's "
                                  f"1..{self.config.steps - 1}")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state["lora"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            index = torch.cuda.current_device()
            torch.cuda.set_rng_state(cuda_rng_state(state["rng"]["cuda"], index), index)
        return step

    def save(self, step: int) -> None:
        """Checkpoint the state after `step`: a no-op when off, at step 0, at the last step or
        when that step is saved already."""
        if not self.config.checkpoint_every or not 0 < step < self.config.steps \
                or step == self.last:
            return
        save_atomically({
            "format": FORMAT, "step": step,
            "lora": {n: p.detach().cpu() for n, p in _trainable(self.model).items()},
            "optimizer": self.optimizer.state_dict(),
            "numpy_rng": self.rng.bit_generator.state,
            "rng": _rng_states()}, self.path)
        self.last = step
        self.writer.update_status(checkpoint_step=step)

    def maybe_save(self, step: int) -> None:
        """At the end of a step, after its evaluation: every `checkpoint_every` steps."""
        if self.config.checkpoint_every and step % self.config.checkpoint_every == 0:
            self.save(step)
