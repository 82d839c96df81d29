"""Random chat models built from a config, for tests, demos and the GPU check: nothing is
downloaded. `python -m tools.tiny_chat OUT --arch qwen2|llama [--size tiny|qwen2.5-0.5b]`.

The tokenizer, built with the `tokenizers` library, has one token per printable character,
one token per RLCR tag, the architecture's own chat special tokens, and a jinja chat
template in the style of that family (ChatML for Qwen2 with Qwen3's `enable_thinking`
switch; Llama 3's headers with a BOS that the template writes itself). The weights are
random, so completions are noise: these models exercise the chat path, they do not answer.
"""

from __future__ import annotations

import argparse
import json
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

TAG_TOKENS = ["<think>", "</think>", "<answer>", "</answer>", "<confidence>", "</confidence>"]
CHARS = sorted(set(string.printable) - set("\t\r\x0b\x0c"))

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{ '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}")
LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
    "message['content'] + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")


@dataclass(frozen=True)
class Family:
    specials: tuple[str, ...]  # every special token, the named ones included
    bos: str | None
    eos: str
    pad: str
    template: str


FAMILIES = {
    "qwen2": Family(("<|endoftext|>", "<|im_start|>", "<|im_end|>"), None, "<|im_end|>",
                    "<|endoftext|>", CHATML_TEMPLATE),
    "llama": Family(("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                     "<|end_header_id|>", "<|eot_id|>", "<|finetune_right_pad_id|>"),
                    "<|begin_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>",
                    LLAMA3_TEMPLATE),
}
# Decoder shapes: a few-layer toy, and Qwen2.5-0.5B's own (its config.json on the hub).
SIZES = {
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2},
    "qwen2.5-0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                     "num_attention_heads": 14, "num_key_value_heads": 2,
                     "rope_theta": 1_000_000.0},
}
QWEN25_VOCAB = 151_936


def build_chat_tokenizer(arch: str = "qwen2", vocab_size: int | None = None
                         ) -> PreTrainedTokenizerFast:
    """Characters + tags + the family's specials; `vocab_size` pads the vocabulary with
    filler tokens that text never produces (a random model may still sample them)."""
    fam = FAMILIES[arch]
    names = [*fam.specials, "<unk>", *CHARS, *TAG_TOKENS]
    if vocab_size is not None:
        names += [f"<x{i}>" for i in range(max(0, vocab_size - len(names)))]
    vocab = {tok: i for i, tok in enumerate(names)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False)
                           for t in (*fam.specials, "<unk>")])
    tk.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    if fam.bos is not None:  # Llama's tokenizer puts BOS in front of every text
        tk.post_processor = processors.TemplateProcessing(
            single=f"{fam.bos} $A", special_tokens=[(fam.bos, vocab[fam.bos])])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=fam.bos, eos_token=fam.eos,
                                  pad_token=fam.pad, unk_token="<unk>", padding_side="left",
                                  model_max_length=32_768)
    tok.chat_template = fam.template
    return tok


def build_chat_model(arch: str, tokenizer: PreTrainedTokenizerFast, size: str = "tiny",
                     seed: int = 0) -> PreTrainedModel:
    """A randomly initialised Qwen2 or Llama decoder sized for `tokenizer`."""
    ids = {"vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
           "max_position_embeddings": 32_768, "tie_word_embeddings": arch == "qwen2"}
    torch.manual_seed(seed)
    if arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**ids, **SIZES[size]))
    return LlamaForCausalLM(LlamaConfig(**ids, **SIZES[size]))


def write_chat_model(folder: Path | str, arch: str = "qwen2", size: str = "tiny",
                     vocab_size: int | None = None, seed: int = 0) -> Path:
    """Save a random chat model and its tokenizer into `folder` (save_pretrained)."""
    folder = Path(folder)
    tokenizer = build_chat_tokenizer(arch, vocab_size)
    build_chat_model(arch, tokenizer, size, seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_arithmetic_qa(path: Path | str, rows: int = 200, seed: int = 0) -> Path:
    """A JSONL of word-problem-shaped sums ({"question", "answer"} per line)."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(rows):
        a, b = (int(x) for x in rng.integers(10, 1000, size=2))
        lines.append(json.dumps({"question": f"What is {a} + {b}?", "answer": str(a + b)}))
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the model into")
    parser.add_argument("--arch", choices=sorted(FAMILIES), default="qwen2")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--vocab-size", type=int, default=None,
                        help=f"pad the vocabulary (Qwen2.5's is {QWEN25_VOCAB})")
    parser.add_argument("--qa", type=Path, default=None,
                        help="also write an arithmetic question/answer JSONL here")
    args = parser.parse_args(argv)
    print(write_chat_model(args.out, args.arch, args.size, args.vocab_size))
    if args.qa:
        print(write_arithmetic_qa(args.qa))


if __name__ == "__main__":
    main()
