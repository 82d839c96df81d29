"""Model sizes without loading weights: a curated list, parameter counts from a config.json,
and a rough memory estimate for a run. Torch-free, so the app can show it before launch.

The estimate is arithmetic over the shapes the engine allocates
(core.engine.rollout, core.engine.train): weights, the sampler's merged copy of the adapted
weights, LoRA with Adam state, then the larger of generation (the KV cache of one generate
call) and the training pass (activations, the last hidden states, and one chunk of the LM
head's float32 logits with their gradient). It was checked against a measured peak on the
CPU (benchmarks/RESULTS.md, "GPU path"); the CUDA figures are not measured yet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import (
    EVAL_ROWS_PER_GENERATE,
    KV_CACHE_BUDGET_CPU,
    LOGITS_CHUNK_BYTES,
    RunConfig,
)
from core.models.model_source import ModelError, model_folder, resolve_model

GB = 1e9
PROMPT_TOKENS_CHAT = 160  # system prompt + a short question, in BPE tokens (assumed)
PROMPT_TOKENS_EMBEDDED = 12
ACTIVATION_BYTES_PER_HIDDEN = 34  # per token and layer, in 16-bit (Korthikanti et al. 2022)
RUNTIME_BYTES_CPU = 0.42 * GB  # Python with torch, transformers and peft loaded (measured)


@dataclass(frozen=True)
class Arch:
    """The shapes of a Llama-like decoder, read from a config.json."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool = True

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Arch | None:
        """None when the config lacks the usual decoder keys (an unusual architecture)."""
        try:
            heads = int(cfg["num_attention_heads"])
            hidden = int(cfg["hidden_size"])
            return cls(int(cfg["num_hidden_layers"]), hidden, heads,
                       int(cfg.get("num_key_value_heads") or heads),
                       int(cfg.get("head_dim") or hidden // heads),
                       int(cfg["intermediate_size"]), int(cfg["vocab_size"]),
                       bool(cfg.get("tie_word_embeddings", True)))
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            return None

    @property
    def layer_linears(self) -> list[tuple[int, int]]:
        """(in, out) of each linear in one layer: q, k, v, o, gate, up, down."""
        h, i = self.hidden, self.intermediate
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    @property
    def params(self) -> int:
        """Parameters, biases and norms aside (well under 1% for these models)."""
        per_layer = sum(a * b for a, b in self.layer_linears)
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * per_layer + embeddings

    def lora_params(self, rank: int) -> int:
        """LoRA on every linear of every layer ('all-linear'): r * (in + out) each."""
        return self.layers * sum(rank * (a + b) for a, b in self.layer_linears)


@dataclass(frozen=True)
class CatalogModel:
    hub_id: str
    arch: Arch
    note: str


# Shapes from each model's config.json on the hub.
CATALOG: tuple[CatalogModel, ...] = (
    CatalogModel("Qwen/Qwen2.5-0.5B-Instruct", Arch(24, 896, 14, 2, 64, 4864, 151936),
                 "the reference small chat model"),
    CatalogModel("Qwen/Qwen2.5-1.5B-Instruct", Arch(28, 1536, 12, 2, 128, 8960, 151936),
                 "stronger and slower: the largest here"),
    CatalogModel("HuggingFaceTB/SmolLM2-360M-Instruct", Arch(32, 960, 15, 5, 64, 2560, 49152),
                 "smallest; small vocabulary, so light on memory"),
    CatalogModel("Qwen/Qwen3-0.6B", Arch(28, 1024, 16, 8, 128, 3072, 151936),
                 "thinking model; reasoning off turns its thinking mode off"),
    CatalogModel("meta-llama/Llama-3.2-1B-Instruct", Arch(16, 2048, 32, 8, 64, 8192, 128256),
                 "gated: accept Meta's licence on the hub and log in before downloading"),
)
CATALOG_BY_ID = {m.hub_id: m for m in CATALOG}


def read_arch(folder: Path) -> Arch | None:
    try:
        return Arch.from_config(json.loads((folder / "config.json").read_text()))
    except (OSError, ValueError):
        return None


def fmt_params(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.0f} M" if n >= 1e6 else f"{n:,}"


def fmt_gb(n_bytes: float) -> str:
    return f"{n_bytes / GB:.1f} GB" if n_bytes >= 0.1 * GB else f"{n_bytes / 1e6:.0f} MB"


@dataclass(frozen=True)
class MemoryEstimate:
    total: float  # bytes at the peak
    parts: dict[str, float]  # name -> bytes; the peak is the fixed parts plus the largest phase
    dtype: str

    def describe(self) -> str:
        parts = ", ".join(f"{k} {fmt_gb(v)}" for k, v in self.parts.items())
        return f"about {fmt_gb(self.total)} at the peak ({self.dtype}; {parts})"


def lm_head_bytes(tokens: int, arch: Arch, w: int) -> float:
    """The LM head's share of a training pass over `tokens` completion tokens: one chunk's
    float32 logits, their softmax and gradient at a time (core.engine.rollout.head_logprobs),
    and a float32 copy of a 16-bit head's weight (w: bytes per weight)."""
    return 3 * min(LOGITS_CHUNK_BYTES, tokens * arch.vocab * 4) \
        + (arch.vocab * arch.hidden * 4 if w != 4 else 0)


def estimate_memory(arch: Arch, config: RunConfig, device: str, embedded: bool = False,
                    prompt_tokens: int | None = None) -> MemoryEstimate:
    """Peak bytes of a run on `device` ('cuda' runs in bf16, others in float32): weights, the
    sampler's merged copy and LoRA + Adam always, plus the larger of generation and the
    training pass. `prompt_tokens`: the prompt's length if known (else a typical one)."""
    w = 2 if device == "cuda" else 4
    seq_prompt = prompt_tokens or (PROMPT_TOKENS_EMBEDDED if embedded else PROMPT_TOKENS_CHAT)
    t = config.max_new_tokens
    seq = seq_prompt + t
    train_rows = config.prompts_per_step * config.group_size
    cap = config.generation_batch_size
    kv_per_row = 2 * arch.layers * arch.kv_heads * arch.head_dim * w * seq

    def rows(total: int, per_prompt: int, row_limit: int) -> int:
        """Rows in one generate call: whole prompts up to the row limit and, off the GPU,
        the KV-cache budget (core.engine.rollout; on a GPU it is a share of free memory)."""
        limit = min(cap or row_limit, row_limit)
        if device != "cuda":
            limit = min(limit, KV_CACHE_BUDGET_CPU // kv_per_row)
        return min(total, max(per_prompt, limit // per_prompt * per_prompt))

    gen_rows = max(rows(train_rows, config.group_size, train_rows),
                   0 if config.no_eval else rows(config.eval_prompts * config.eval_samples,
                                                 config.eval_samples, EVAL_ROWS_PER_GENERATE))
    # Decoding keeps the KV cache and one step's [rows, V] logits, softmax and log-softmax.
    generation = gen_rows * (kv_per_row + arch.vocab * 4 * 3)
    head = lm_head_bytes(train_rows * t, arch, w)
    per_token_layer = ACTIVATION_BYTES_PER_HIDDEN * arch.hidden * w / 2
    if config.gradient_checkpointing:  # each layer's input, plus one layer recomputed
        activations = train_rows * seq * (arch.layers * arch.hidden * w + per_token_layer)
    else:
        activations = train_rows * seq * arch.layers * per_token_layer
    phases = {"generation": generation,
              "training pass": head + activations + train_rows * t * arch.hidden * w}
    peak_name = max(phases, key=phases.__getitem__)
    adapted = arch.layers * sum(a * b for a, b in arch.layer_linears)
    fixed = {"weights": arch.params * w,
             "sampler copy": adapted * w if config.merged_sampling else 0,
             "LoRA + Adam": arch.lora_params(config.lora_rank) * 16,
             "runtime": RUNTIME_BYTES_CPU if device != "cuda" else 0}
    parts = {k: v for k, v in {**fixed, peak_name: phases[peak_name]}.items() if v}
    return MemoryEstimate(sum(parts.values()), parts, "bf16" if w == 2 else "float32")


def run_estimate(config: RunConfig, device: str, prompt_tokens: int | None = None
                 ) -> MemoryEstimate | None:
    """`estimate_memory` for a run's model on `device` ('cuda', 'cpu', 'mps'): shapes from
    its config.json, else the curated list; None when they are unknown (a hub model outside
    the list that is not cached yet, an unusual architecture)."""
    arch = model_arch(config.model)
    if arch is None:
        return None
    embedded = resolve_model(config.model).kind == "embedded"
    return estimate_memory(arch, config, device, embedded, prompt_tokens)


def model_arch(name: str) -> Arch | None:
    """A model's shapes: from its config.json, else the curated list; None when unknown."""
    try:
        source = resolve_model(name)
    except ModelError:
        return None
    folder = model_folder(source)
    arch = read_arch(folder) if folder is not None else None
    if arch is None and name in CATALOG_BY_ID:
        arch = CATALOG_BY_ID[name].arch
    return arch
