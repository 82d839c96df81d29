"""The whole training loop with the model and its tensors on a stand-in `cuda` device, on a
CPU-only machine: a CPU tensor beside a GPU one anywhere in sampling, grading, the
rows-to-score probe, a recipe, scoring, the optimiser or evaluation fails here, not minutes
into a user's first GPU run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from stand_in_cuda import CUDA, DeviceMixError, StandInCuda, on_gpu

from core.config import RECIPE_NAMES, build_config
from core.engine.modeling import load_policy
from core.engine.train import train
from core.runtime.store import RunStore


def test_the_stand_in_device_catches_a_mix_and_allows_what_cuda_allows() -> None:
    with StandInCuda():
        gpu = torch.ones(3).to("cuda")
        assert gpu.device == CUDA and on_gpu(gpu * 2) and on_gpu(torch.zeros(2, device=CUDA))
        assert not on_gpu(gpu.cpu()) and not on_gpu(torch.ones(3))
        with pytest.raises(DeviceMixError):
            _ = gpu * torch.ones(3)  # the bug class this file is about
        with pytest.raises(DeviceMixError):
            torch.where(gpu > 0, torch.ones(3), gpu)
        with pytest.raises(TypeError, match="numpy"):
            gpu.numpy()
        _ = gpu * torch.tensor(2.0)  # a 0-dim CPU scalar is fine on CUDA
        assert gpu[torch.tensor([True, False, True])].tolist() == [1.0, 1.0]  # CPU index: fine


def _to_stand_in_gpu(module: torch.nn.Module) -> None:
    for t in [*module.parameters(), *module.buffers()]:
        t._stand_in_cuda = True


@pytest.mark.parametrize("recipe", RECIPE_NAMES)
def test_every_recipe_trains_a_step_on_the_stand_in_gpu(recipe: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (80e9, 80e9))
    config = build_config("smoke", recipe=recipe, steps=2, threads=1, checkpoint_every=1,
                          no_eval=recipe != "rlcr", eval_prompts=4, eval_samples=2,
                          kl_beta=0.05 if recipe == "binary" else 0.0)
    loaded = load_policy(config)
    for module in (loaded.model, loaded.sampler):
        _to_stand_in_gpu(module)
    loaded.device = CUDA
    store = RunStore(tmp_path)
    writer = store.create(config)
    with StandInCuda():
        assert train(config, writer, loaded=loaded) == "finished"
    record = store.load(writer.run_id)
    assert [t["step"] for t in record.train] == [1, 2]
    assert all(on_gpu(p) for p in loaded.model.parameters() if p.requires_grad)
