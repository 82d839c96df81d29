"""Loading models: the embedded default and any `from_pretrained` model, with LoRA on top.

The embedded model is loaded through exactly the path a hub model takes
(`AutoModelForCausalLM` / `AutoTokenizer`), from `data/models/tiny-arith`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

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
    model = get_peft_model(base, lora).to(device)
    return LoadedModel(model, tokenizer, fmt, device)
