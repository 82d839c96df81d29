"""Loading models: the embedded default and any `from_pretrained` model, with LoRA on top.

The embedded model is loaded through exactly the path a hub model takes
(`AutoModelForCausalLM` / `AutoTokenizer`), from `data/models/tiny-arith`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from core.config import RunConfig
from core.formats import COMPACT, PromptFormat
from core.model_source import ModelError, check_model


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' was asked for but no CUDA GPU is visible: use auto or cpu")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def prompt_format_for(model_config: object) -> PromptFormat:
    """The embedded model declares the compact format in its config; others are chat models."""
    fmt = getattr(model_config, "lab_prompt_format", None)
    if fmt == COMPACT.name:
        return COMPACT
    raise ModelError("this model has no compact-format marker; chat models need the tag "
                     "format, which this version of the lab does not have yet")


@dataclass
class LoadedModel:
    model: PeftModel  # the policy: base weights frozen, LoRA adapter trainable
    tokenizer: PreTrainedTokenizerBase
    prompt_format: PromptFormat
    device: torch.device
    sampler: PreTrainedModel | None = None  # plain copy for generation; None: use `model`
    _merge_pairs: list[tuple[torch.nn.Module, torch.nn.Module]] = field(default_factory=list)

    def sampling_model(self) -> PreTrainedModel:
        """The current policy as a plain model, for generation only (no gradients).

        Every LoRA layer costs three matmuls plus Python glue, and generation runs the whole
        network once per new token; with W + B A merged into a copy of the adapted weights,
        sampling the embedded model takes about 40 % less time. The base weights are never
        written, so nothing drifts.
        """
        if self.sampler is None:
            return self.model
        with torch.no_grad():
            for plain, lora in self._merge_pairs:
                plain.weight.copy_(lora.base_layer.weight + lora.get_delta_weight("default"))
        return self.sampler


def load_tokenizer(location: str) -> PreTrainedTokenizerBase:
    tok = AutoTokenizer.from_pretrained(location)
    tok.padding_side = "left"  # generation continues from the right edge
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_policy(config: RunConfig) -> LoadedModel:
    """The base model with a fresh LoRA adapter, seeded by the run's seed."""
    source = check_model(config.model)
    device = pick_device(config.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        base = AutoModelForCausalLM.from_pretrained(source.location, dtype=dtype)
        tokenizer = load_tokenizer(source.location)
    except OSError as e:
        raise ModelError(f"could not load model {config.model!r}: {e}") from e
    fmt = prompt_format_for(base.config)
    torch.manual_seed(config.seed)
    targets: str | list[str] = config.lora_targets.strip()
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")
    sampler = copy.deepcopy(base).to(device).eval() if config.merged_sampling else None
    model = get_peft_model(base, lora).to(device)
    loaded = LoadedModel(model, tokenizer, fmt, device, sampler)
    if sampler is not None:
        loaded._merge_pairs = _pair_adapted_layers(model, sampler)
    return loaded


def _pair_adapted_layers(model: PeftModel, sampler: PreTrainedModel
                         ) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
    """(plain linear in the sampler, LoRA layer in the policy) for every adapted layer.

    The sampler shares every other parameter with the policy's frozen base, so the copy
    costs memory only for the adapted weights.
    """
    base = model.get_base_model()
    lora_layers = {name: m for name, m in base.named_modules() if hasattr(m, "get_delta_weight")}
    shared = dict(base.named_parameters(remove_duplicate=False))
    for name, _ in list(sampler.named_parameters(remove_duplicate=False)):
        owner, leaf = name.rsplit(".", 1)
        if owner not in lora_layers:
            setattr(sampler.get_submodule(owner), leaf, shared[name])
    return [(sampler.get_submodule(name), m) for name, m in lora_layers.items()]
