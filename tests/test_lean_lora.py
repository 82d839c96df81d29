"""`LeanLoraLinear` (core.engine.modeling): peft's LoRA Linear with the scaling moved before
B. The same outputs and gradients as peft's forward, its dtype rules kept, and peft's own
forward for everything the lean path does not cover."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import Linear as PeftLinear
from test_merged_sampling import _Net

from core.config import RunConfig
from core.engine.modeling import LeanLoraLinear, load_policy, lora_config


def _pair(dtype: torch.dtype = torch.float32, **lora: object
          ) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(peft's own layer, the lean one) over the same base and the same non-zero adapter;
    alpha 6 over rank 4 is a scaling of 1.5, which rounds differently in the two orders."""
    torch.manual_seed(0)
    net = _Net(torch.nn.Linear(6, 5, bias=True, dtype=dtype))
    config = LoraConfig(r=4, lora_alpha=6, target_modules=["layer"], **lora)
    peft = get_peft_model(copy.deepcopy(net), config)
    lean_config = copy.deepcopy(config)
    lean_config._register_custom_module({torch.nn.Linear: LeanLoraLinear})
    lean = get_peft_model(copy.deepcopy(net), lean_config)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for (name, p), (_, q) in zip(peft.named_parameters(), lean.named_parameters(),
                                     strict=True):
            if "lora_" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
                q.copy_(p)
    assert type(peft.get_base_model().layer) is PeftLinear
    assert type(lean.get_base_model().layer) is LeanLoraLinear
    return peft, lean


def _grads(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    out = model(x)
    (out.float() ** 2).sum().backward()
    return out.detach(), [p.grad for p in model.parameters() if p.requires_grad]


def test_the_lean_layer_gives_peft_s_outputs_and_gradients() -> None:
    peft, lean = _pair()
    x = torch.randn(3, 2, 6)
    (want, want_grads), (got, got_grads) = _grads(peft, x), _grads(lean, x)
    assert (want - peft.get_base_model().layer.base_layer(x)).abs().max() > 0.1  # LoRA matters
    assert torch.allclose(got, want, atol=1e-6, rtol=0)
    assert len(got_grads) == len(want_grads) == 2
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-5)
               for a, b in zip(got_grads, want_grads, strict=True))


def test_a_bf16_base_with_a_float32_adapter_keeps_peft_s_dtypes() -> None:
    """On a GPU the base is bf16 and peft keeps the adapter in float32: the input is cast up
    for the adapter and the sum rounded back to bf16, as peft does."""
    peft, lean = _pair(torch.bfloat16)
    assert lean.get_base_model().layer.lora_A["default"].weight.dtype == torch.float32
    x = torch.randn(4, 6, dtype=torch.bfloat16)
    with torch.no_grad():
        want, got = peft(x), lean(x)
    assert got.dtype == want.dtype == torch.bfloat16
    assert torch.allclose(got.float(), want.float(), atol=1e-2, rtol=0)


def test_a_disabled_adapter_and_dora_go_through_peft_s_forward() -> None:
    peft, lean = _pair()
    x = torch.randn(3, 6)
    with torch.no_grad(), lean.disable_adapter():
        assert torch.equal(lean(x), lean.get_base_model().layer.base_layer(x))
    dora_peft, dora_lean = _pair(use_dora=True)
    with torch.no_grad():
        assert torch.allclose(dora_lean(x), dora_peft(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("targets", ["all-linear", "q_proj,v_proj"])
def test_the_policy_s_linear_lora_layers_are_lean(targets: str) -> None:
    loaded = load_policy(RunConfig(threads=1, lora_targets=targets))
    layers = [m for m in loaded.model.modules() if isinstance(m, PeftLinear)]
    assert layers and all(type(m) is LeanLoraLinear for m in layers)
    assert lora_config(RunConfig(lora_targets=targets))._custom_modules == {
        torch.nn.Linear: LeanLoraLinear}
