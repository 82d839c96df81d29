"""Model sizes without loading weights: a curated list, parameter counts from a config.json,
and a rough memory estimate for a run. Torch-free, so the app can show it before launch.

The estimate is arithmetic over the shapes the engine allocates
(core.engine.rollout, core.engine.train):
weights, LoRA with Adam state, the KV cache while generating, the vocabulary-wide logits that
sampling keeps for evaluation, and the training pass (logits in float32 for log_softmax plus
activations). For ~150k-token vocabularies the logits, not the weights, dominate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import EVAL_ROWS_PER_GENERATE, RunConfig

GB = 1e9
PROMPT_TOKENS_CHAT = 160  # system prompt + a short question, in BPE tokens (assumed)
PROMPT_TOKENS_EMBEDDED = 12
ACTIVATION_BYTES_PER_HIDDEN = 34  # per token and layer, in 16-bit (Korthikanti et al. 2022)


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


def estimate_memory(arch: Arch, config: RunConfig, device: str, embedded: bool = False
                    ) -> MemoryEstimate:
    """Peak bytes of a run on `device` ('cuda' runs in bf16, others in float32): weights and
    LoRA + Adam always, plus the largest of generation and the training pass."""
    w = 2 if device == "cuda" else 4
    seq_prompt = PROMPT_TOKENS_EMBEDDED if embedded else PROMPT_TOKENS_CHAT
    t = config.max_new_tokens
    seq = seq_prompt + t
    train_rows = config.prompts_per_step * config.group_size
    cap = config.generation_batch_size

    def rows(total: int, per_prompt: int, default_cap: int) -> int:
        """Rows in one generate call: whole prompts up to the cap."""
        limit = cap or default_cap
        return min(total, max(per_prompt, limit // per_prompt * per_prompt))

    gen_train = rows(train_rows, config.group_size, train_rows)
    gen_eval = 0 if config.no_eval else rows(config.eval_prompts * config.eval_samples,
                                             config.eval_samples, EVAL_ROWS_PER_GENERATE)
    kv_per_row = 2 * arch.layers * arch.kv_heads * arch.head_dim * w * seq
    # Sampling for evaluation keeps every step's logits in float32 (transformers' generate),
    # stacks them and takes a log_softmax: 12 bytes per row, new token and vocabulary entry.
    eval_logits = gen_eval * t * arch.vocab * 12
    # The training pass: logits (w), a float32 copy and its log_softmax kept for backward.
    train_logits = train_rows * (t + 1) * arch.vocab * (w + 8)
    per_token_layer = ACTIVATION_BYTES_PER_HIDDEN * arch.hidden * w / 2
    if config.gradient_checkpointing:  # each layer's input, plus one layer recomputed
        activations = train_rows * seq * (arch.layers * arch.hidden * w + per_token_layer)
    else:
        activations = train_rows * seq * arch.layers * per_token_layer
    phases = {"generation (train)": gen_train * kv_per_row,
              "generation (eval)": gen_eval * kv_per_row + eval_logits,
              "training pass": train_logits + activations}
    peak_name = max(phases, key=phases.__getitem__)
    fixed = {"weights": arch.params * w, "LoRA + Adam": arch.lora_params(config.lora_rank) * 16}
    parts = {**fixed, peak_name: phases[peak_name]}
    return MemoryEstimate(sum(parts.values()), parts, "bf16" if w == 2 else "float32")
