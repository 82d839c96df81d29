"""Loading models: the embedded default and any `from_pretrained` model, with LoRA on top.

The embedded model is loaded through exactly the path a hub model takes
(`AutoModelForCausalLM` / `AutoTokenizer`), from `data/models/tiny-arith`. It declares the
compact format in its config; every other model is a chat model, prompted through its
tokenizer's chat template with RLCR's tags (core.data.formats.TagFormat).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jinja2.exceptions import TemplateError
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import Embedding as LoraEmbedding
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.lora import LoraLayer
from safetensors import SafetensorError
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.modeling_layers import GradientCheckpointingLayer

from core.config import MERGED_COPY_SHARE_GPU, RunConfig
from core.data.formats import COMPACT, ChatRenderer, Messages, PromptFormat, TagFormat
from core.engine.checkpoint import load_adapter
from core.models.model_source import ModelError, ModelSource, check_model
from core.runtime.store import ADAPTER_FILE


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def pick_device(requested: str) -> torch.device:
    """auto: cuda, else mps, else cpu; an explicit device must be present."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' was asked for but no CUDA GPU is visible: use auto or cpu")
    if requested == "mps" and not mps_available():
        raise ModelError("device 'mps' was asked for but Apple's MPS is not available: use auto "
                         "or cpu")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available()
                            else "mps" if mps_available() else "cpu")
    return torch.device(requested)


def model_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA GPUs that compute in it natively (half the memory, the same range as
    float32); float32 elsewhere. The emulation that `is_bf16_supported` counts by default
    (T4, V100) runs bf16 through float32 units, slower than float32 itself."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16
    return torch.float32


def adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether tokenizing text puts a BOS token in front of it."""
    ids = tokenizer("a")["input_ids"]
    return tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id


def chat_renderer(tokenizer: PreTrainedTokenizerBase, reasoning: bool) -> ChatRenderer:
    """The tokenizer's chat template with the generation prompt on, as text.

    `enable_thinking` reaches templates that know it (Qwen3) and is ignored by the rest.
    A template that refuses a system message gets the instructions in the user's turn.
    Templates that write the BOS token themselves (Llama 3) lose it here, because
    `core.engine.rollout.sample` tokenizes with special tokens and would add a second one.
    """
    strip_bos = adds_bos(tokenizer) and bool(tokenizer.bos_token)

    def apply(messages: Messages) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=True,
                                             enable_thinking=reasoning)

    def render(messages: Messages) -> str:
        try:
            text = apply(messages)
        except TemplateError:
            system, user = messages[0]["content"], messages[1]["content"]
            text = apply([{"role": "user", "content": f"{system}\n\n{user}"}])
        if strip_bos and text.startswith(tokenizer.bos_token):
            text = text[len(tokenizer.bos_token):]
        return text

    return render


def prompt_format_for(model_config: object, tokenizer: PreTrainedTokenizerBase,
                      reasoning: bool = True) -> PromptFormat:
    """The embedded model declares the compact format in its config; others are chat models."""
    if getattr(model_config, "lab_prompt_format", None) == COMPACT.name:
        return COMPACT
    if not tokenizer.chat_template:
        raise ModelError("this model's tokenizer has no chat template: the lab prompts chat "
                         "models through their template, so use an instruction-tuned model")
    return TagFormat(render=chat_renderer(tokenizer, reasoning), reasoning=reasoning)


@dataclass
class LoadedModel:
    model: PeftModel  # the policy: base weights frozen, LoRA adapter trainable
    tokenizer: PreTrainedTokenizerBase
    prompt_format: PromptFormat
    device: torch.device
    sampler: PreTrainedModel | None = None  # plain copy for generation; None: use `model`
    # (plain layer in the sampler, LoRA layer in the policy) for every adapted layer
    merge_pairs: list[tuple[torch.nn.Module, torch.nn.Module]] = field(default_factory=list)
    sampler_note: str = ""  # why generation goes through the LoRA layers though asked to merge

    def sampling_model(self) -> PreTrainedModel:
        """The current policy as a plain model, for generation only (no gradients).

        Every LoRA layer costs three matmuls plus Python glue, and generation runs the whole
        network once per new token; with W + s B A merged into a copy of the adapted weights
        (`merge_into`), sampling the embedded model takes about half the time. The base
        weights are only read, so nothing drifts; the copy is rewritten from them and the
        current adapter at every call.
        """
        if self.sampler is None:
            return self.model
        with torch.no_grad():
            for plain, lora in self.merge_pairs:
                merge_into(plain.weight, lora)
        return self.sampler


def plain_adapter(layer: torch.nn.Module) -> str | None:
    """The name of a LoRA layer's one active adapter when its update is plain s B A x: not
    merged, no DoRA or other variant, no LoRA bias. None otherwise."""
    names = list(layer.active_adapters)
    if layer.merged or len(names) != 1:
        return None
    name = names[0]
    if name in layer.lora_variant or layer.use_dora.get(name, False) \
            or layer.lora_bias.get(name, False):
        return None
    return name


def lora_factors(layer: torch.nn.Module
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float] | None:
    """(W, L, R, s) such that the layer computes with the weight W + s L R, in W's own layout,
    for the LoRA layers whose update is exactly that: peft's plain Linear (nn.Linear, or
    GPT-2's Conv1D with fan_in_fan_out) and Embedding, one adapter, no DoRA or other variant,
    no LoRA bias. None for anything else, which then samples through the LoRA layers.

    Dropout needs nothing: generation runs without it (and the lab's LoRA has none).
    """
    if type(layer) not in (LoraLinear, LeanLoraLinear, LoraEmbedding) \
            or plain_adapter(layer) != "default":
        return None
    weight = layer.get_base_layer().weight
    if type(layer) is not LoraEmbedding:
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight  # [r, in], [out, r]
        left, right = (a.T, b.T) if layer.fan_in_fan_out else (b, a)  # [in, r] [r, out] or B, A
    else:
        a, b = layer.lora_embedding_A["default"], layer.lora_embedding_B["default"]  # [r, V] [H, r]
        left, right = a.T, b.T  # [V, r], [r, H]
    if (left.shape[0], right.shape[1]) != tuple(weight.shape) or not weight.is_floating_point():
        return None
    return weight, left, right, float(layer.scaling["default"])


def merge_into(out: torch.Tensor, layer: torch.nn.Module) -> None:
    """Write W + s L R (`lora_factors`) into `out`, computed in float32 and rounded once to
    `out`'s dtype: bf16 sums W, the update and its scaling without three roundings.

    One `addmm` per layer (float32 writes straight into `out`): on the embedded model the 28
    layers merge in about 0.8 ms, against 1.6 ms through peft's `get_delta_weight` plus an add.
    """
    weight, left, right, scale = lora_factors(layer)  # checked when the pairs were made
    if out.dtype == torch.float32 and weight.dtype == torch.float32:
        torch.addmm(weight, left.float(), right.float(), alpha=scale, out=out)  # [out, in]
    else:
        out.copy_(torch.addmm(weight.float(), left.float(), right.float(), alpha=scale))


def load_tokenizer(location: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    tok = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
    tok.padding_side = "left"  # generation continues from the right edge
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_pretrained(source: ModelSource, name: str, dtype: torch.dtype,
                    trust_remote_code: bool) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """Weights and tokenizer, any loading failure turned into a ModelError that says why."""
    try:
        base = AutoModelForCausalLM.from_pretrained(source.location, dtype=dtype,
                                                    trust_remote_code=trust_remote_code)
        tokenizer = load_tokenizer(source.location, trust_remote_code)
    except (OSError, ValueError, RuntimeError, KeyError, ImportError, SafetensorError) as e:
        why = (str(e).strip().splitlines() or [""])[0]
        hint = ("; this model ships its own code: pass --trust-remote-code if you trust its "
                "authors" if "trust_remote_code" in str(e) and not trust_remote_code else "")
        raise ModelError(f"could not load model {name!r}: {type(e).__name__}: {why}{hint}") from e
    return base, tokenizer


def enable_checkpointing(model: torch.nn.Module) -> None:
    """Activation checkpointing on each decoder layer.

    transformers checkpoints a layer only while it is in training mode with gradients on,
    so the layers are put in training mode here, whatever mode loading left them in.
    Generation runs without gradients and keeps its KV cache.
    """
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    for module in model.modules():
        if isinstance(module, GradientCheckpointingLayer) and module.gradient_checkpointing:
            module.training = True


class LeanLoraLinear(LoraLinear):
    """peft's LoRA Linear, computing a plain adapter's update as B (s A x) instead of
    s (B A x): the scaling multiplies the r-wide activations rather than the layer's output,
    and A and B run as bare matmuls, without peft's general path (variants, mixed adapter
    batches) and its module glue. On the embedded model the scoring pass with its backward
    takes 3 % less time (1.1-1.2 ms of 36-38). Anything else (a disabled or merged adapter,
    DoRA, a LoRA bias, several active adapters, extra arguments) goes through peft's own
    forward."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        name = plain_adapter(self)
        if args or kwargs or self.disable_adapters or name is None or name not in self.lora_A:
            return super().forward(x, *args, **kwargs)
        result = self.base_layer(x)  # [..., out]
        a, b = self.lora_A[name].weight, self.lora_B[name].weight  # [r, in], [out, r]
        h = self.lora_dropout[name](self._cast_input_dtype(x, a.dtype))  # [..., in]
        update = F.linear(F.linear(h, a) * self.scaling[name], b)  # [..., out]
        return (result + update).to(result.dtype)


def lora_config(config: RunConfig) -> LoraConfig:
    """The run's adapter: LoRA on its target layers, linear ones as `LeanLoraLinear`."""
    targets: str | list[str] = config.lora_targets.strip()
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")
    # peft's documented (experimental) hook for a custom layer class; its dispatch tries it
    # before peft's own.
    lora._register_custom_module({torch.nn.Linear: LeanLoraLinear})
    return lora


def merge_run_policy(base: PreTrainedModel, run_dir: Path) -> PreTrainedModel:
    """`base` with the final policy of the run in `run_dir` folded into its weights: that
    run's own starting point first (its `init_from`, recursively), then its adapter."""
    prior = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    if prior.init_from:
        base = merge_run_policy(base, run_dir.parent / prior.init_from)
    peft = get_peft_model(base, lora_config(prior))
    weights = load_adapter(run_dir / ADAPTER_FILE)
    result = peft.load_state_dict(weights, strict=False)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing:
        raise ModelError(f"the adapter of run {run_dir.name} does not fit this model "
                         f"({len(result.unexpected_keys)} unexpected, {len(missing)} missing "
                         "weights)")
    return peft.merge_and_unload()


def load_policy(config: RunConfig, start_from: Path | None = None) -> LoadedModel:
    """The base model with a fresh LoRA adapter, seeded by the run's seed. `start_from`, the
    folder of the run `config.init_from` names, has its final policy merged in first."""
    source = check_model(config.model)
    device = pick_device(config.device)
    base, tokenizer = load_pretrained(source, config.model, model_dtype(device),
                                      config.trust_remote_code)
    fmt = prompt_format_for(base.config, tokenizer, config.reasoning)
    check_plain_lm_head(base, config.model)
    if start_from is not None:
        base = merge_run_policy(base, start_from)
    torch.manual_seed(config.seed)
    lora = lora_config(config)
    # The sampler is copied first, on the CPU (it only generates, so it never checkpoints);
    # `_merged_sampler` moves only its own adapted weights to the device.
    sampler = copy.deepcopy(base).eval() if config.merged_sampling else None
    if config.gradient_checkpointing:
        enable_checkpointing(base)
    model = get_peft_model(base, lora)
    check_unadapted_head(model, config.lora_targets)
    model = model.to(device)
    if sampler is None:
        return LoadedModel(model, tokenizer, fmt, device)
    sampler, pairs, note = _merged_sampler(model, sampler, device)
    return LoadedModel(model, tokenizer, fmt, device, sampler, pairs, note)


def check_plain_lm_head(model: PreTrainedModel, name: str) -> None:
    """Scoring computes log-probs from the last hidden states through the LM head's weight
    (core.engine.rollout.head_logprobs), so a model whose logits are anything else (capped
    as Gemma 2's, scaled as Cohere's, a head that is not one linear layer) is refused
    rather than scored wrongly."""
    c = model.config.get_text_config() if hasattr(model.config, "get_text_config") \
        else model.config
    changed = [k for k in ("final_logit_softcapping", "logit_scale")
               if getattr(c, k, None) not in (None, 1, 1.0)]
    head = model.get_output_embeddings()
    if changed or not isinstance(head, torch.nn.Linear) or not hasattr(model, "get_decoder"):
        why = f"its config sets {', '.join(changed)}" if changed else \
            "its LM head is not a single linear layer over the decoder's output"
        raise ModelError(f"model {name!r} is not supported yet: {why}, and the lab computes "
                         "log-probs from the last hidden states through a plain LM head")


def check_unadapted_head(model: PeftModel, targets: str) -> None:
    """Scoring reads the LM head's weight directly (core.engine.rollout.head_logprobs), which
    on a LoRA-wrapped head is its base weight: an adapter there would be neither scored nor
    trained while sampling used it. So lora_targets may not name the head ('all-linear'
    leaves it out)."""
    head = model.get_output_embeddings()
    if isinstance(head, LoraLayer):
        raise ModelError(f"lora_targets {targets!r} puts LoRA on the LM head, which the lab "
                         "scores through its base weight: leave the head out of lora_targets")


def _merged_sampler(model: PeftModel, sampler: PreTrainedModel, device: torch.device
                    ) -> tuple[PreTrainedModel | None, list[tuple[torch.nn.Module,
                                                                 torch.nn.Module]], str]:
    """The sampler (a CPU copy of the base made before LoRA wrapped it) on `device`, with
    its (plain layer, LoRA layer) pairs; or (None, [], why) when generation must go through
    the LoRA layers instead: a LoRA layer `lora_factors` cannot fold exactly, or, on a GPU,
    a copy of the adapted weights larger than MERGED_COPY_SHARE_GPU of the free memory
    (the rest is for the KV cache, activations and the optimiser; for a 0.5B model with
    LoRA on every linear layer the copy is about 0.7 GB in bf16).

    The sampler shares every other parameter with the policy's frozen base, so only the
    adapted weights are copied, and only they travel to the device.
    """
    base = model.get_base_model()
    lora_layers = {name: m for name, m in base.named_modules() if isinstance(m, LoraLayer)}
    for name, m in lora_layers.items():
        if lora_factors(m) is None:
            return None, [], (f"layer {name} ({type(m).__name__}) cannot be merged exactly, "
                              "so sampling runs through the LoRA layers")
    shared = dict(base.named_parameters(remove_duplicate=False))
    for name, _ in list(sampler.named_parameters(remove_duplicate=False)):
        owner, leaf = name.rsplit(".", 1)
        if owner not in lora_layers:
            setattr(sampler.get_submodule(owner), leaf, shared[name])
    pairs = [(sampler.get_submodule(name), m) for name, m in lora_layers.items()]
    too_big = merged_copy_too_big(sum(plain.weight.nbytes for plain, _ in pairs), device)
    if too_big:
        return None, [], too_big
    return sampler.requires_grad_(False).to(device), pairs, ""


def merged_copy_too_big(copy_bytes: int, device: torch.device) -> str:
    """Why a merged copy of `copy_bytes` is not made on `device` ("" when it is): on a GPU it
    may take MERGED_COPY_SHARE_GPU of the free memory; CPU memory is the user's to watch, as
    for the KV cache."""
    if device.type != "cuda":
        return ""
    free, _ = torch.cuda.mem_get_info(device)
    if copy_bytes <= MERGED_COPY_SHARE_GPU * free:
        return ""
    return (f"the merged copy of the adapted weights ({copy_bytes / 2**20:.0f} MiB) would take "
            f"more than {MERGED_COPY_SHARE_GPU:.0%} of the GPU's free memory "
            f"({free / 2**20:.0f} MiB), so sampling runs through the LoRA layers")
