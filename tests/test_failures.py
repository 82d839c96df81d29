"""A run that runs out of memory is marked failed with what to change; its log stays."""

from __future__ import annotations

import pytest
import torch

from core.config import build_config
from core.engine import train as train_module
from core.runtime.failures import ErrorKind, failure_kind, failure_message, is_out_of_memory
from core.runtime.runner import execute
from core.runtime.store import RunStore


def test_cuda_out_of_memory_marks_the_run_failed_and_keeps_what_was_logged(tmp_path,
                                                                           monkeypatch):
    def runs_out(config, writer, should_stop=None, loaded=None, threads=None):
        writer.log(0, {"eval/accuracy": 0.25})
        writer.log(1, {"train/loss": 0.5})
        writer.update_status(step=1)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 "
                                     "has a total capacity of 23.6 GiB")

    monkeypatch.setattr(train_module, "train", runs_out)
    config = build_config("chat", model="embedded", steps=5)
    store = RunStore(tmp_path)
    writer = store.create(config)
    assert execute(config, writer) == "failed"
    record = store.load(writer.run_id)
    assert record.status == "failed" and record.step == 1
    assert record.error_kind == ErrorKind.OUT_OF_MEMORY
    assert record.error.startswith("OutOfMemoryError: the device ran out of memory (CUDA out")
    for hint in ("smaller G (group_size, now 8)", "max_new_tokens, now 384",
                 "generation_batch_size (now 0: as many rows as the KV-cache budget",
                 "gradient_checkpointing"):
        assert hint in record.error
    assert [t["step"] for t in record.train] == [1] and record.evals[0]["accuracy"] == 0.25
    assert "Traceback" in (writer.path / "log.txt").read_text()  # the details, for later


@pytest.mark.parametrize(("error", "oom"), [
    (torch.OutOfMemoryError("CUDA out of memory"), True),
    (RuntimeError("MPS backend out of memory (MPS allocated: 8 GB)"), True),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
])
def test_out_of_memory_is_recognised_by_kind_or_words(error, oom):
    assert is_out_of_memory(error) is oom
    message = failure_message(error, build_config())
    assert ("smaller G" in message) is oom
    if not oom:
        assert message == f"RuntimeError: {error}"


def test_every_failure_has_a_kind_the_app_reads_instead_of_the_words():
    from core.engine.checkpoint import CheckpointError
    from core.engine.train import TrainingError
    from core.models.model_source import ModelError

    cases = [(torch.OutOfMemoryError("CUDA out of memory"), ErrorKind.OUT_OF_MEMORY),
             (TrainingError("the loss became nan at step 1"), ErrorKind.UNSTABLE),
             (RuntimeError("probability tensor contains either `inf`, `nan` or element < 0"),
              ErrorKind.UNSTABLE),
             (CheckpointError("checkpoint.pt is damaged"), ErrorKind.CHECKPOINT),
             (ModelError("no such model"), ErrorKind.MODEL),
             (FileNotFoundError("metrics.jsonl"), ErrorKind.FILES),
             (ValueError("something else"), ErrorKind.OTHER)]
    for error, kind in cases:
        assert failure_kind(error) is kind, error
