"""Build the embedded default model `tiny-arith` from scratch: `python -m tools.pretrain`.

A 4-layer Llama with a character tokenizer, trained by plain log-likelihood on clean
arithmetic (`a+b=SUM;C<d>`) and stopped early, so it is partly competent: the pilot found
that this, not label noise, gives a model that is sometimes right and sometimes wrong for
reasons it could in principle see.

The confidence digit in the training text imitates human-written confidence: mostly high
(overconfident for a partly competent model) and only weakly tied to what makes a sum hard
here (operand length: long operands are rarer in training). So the model starts
overconfident, with weakly informative verbalized confidence, as real instruction-tuned
LLMs do. (Tying it to carries instead made it inversely informative: a model that drops a
carry writes an answer that looks carry-free.) Deterministic for a given machine.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from tqdm import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from core.data.formats import COMPACT, CONFIDENCE_LEVELS
from core.data.tasks import TASKS, Example
from core.paths import EMBEDDED_DIR

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
CHARS = list("0123456789+-*=;C")
SEED = 0
STEPS = 600
BATCH = 256
LR = 2e-3
WARMUP = 100
MIXTURE = (TASKS["add"], TASKS["mix"])  # half of each batch from each task


def build_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character, built with the `tokenizers` library."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tk.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>", padding_side="left",
                                   model_max_length=32)


def build_model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=512,
        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=32, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, lab_prompt_format=COMPACT.name)
    return LlamaForCausalLM(config)


def operand_digits(question: str) -> int:
    """Digits in both operands together: the difficulty a reader sees at a glance."""
    return sum(ch.isdigit() for ch in question)


def confidence_level(example: Example, rng: np.random.Generator) -> int:
    """A human-like stated confidence: high on average, a little lower for longer problems
    and for subtraction; the noise keeps it only weakly informative."""
    mean = 9.0 - 0.4 * (operand_digits(example.question) - 4) - 0.4 * ("-" in example.question)
    return int(np.clip(round(mean + rng.normal(0.0, 1.2)), 0, CONFIDENCE_LEVELS - 1))


def training_batch(tokenizer: PreTrainedTokenizerFast, rng: np.random.Generator,
                   size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids, attention mask and labels (-100 on the prompt and padding)."""
    examples = [ex for task in MIXTURE for ex in task.train_batch(rng, size // len(MIXTURE))]
    prompts = [tokenizer(COMPACT.prompt(ex))["input_ids"] for ex in examples]
    targets = [tokenizer(COMPACT.target(ex, confidence_level(ex, rng)),
                         add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
               for ex in examples]
    width = max(len(p) + len(t) for p, t in zip(prompts, targets, strict=True))
    ids = torch.full((len(examples), width), tokenizer.pad_token_id)  # [N, L] right-padded
    labels = torch.full((len(examples), width), -100)  # [N, L]
    for i, (p, t) in enumerate(zip(prompts, targets, strict=True)):
        ids[i, :len(p) + len(t)] = torch.tensor(p + t)
        labels[i, len(p):len(p) + len(t)] = torch.tensor(t)
    return ids, (ids != tokenizer.pad_token_id).long(), labels


def pretrain(steps: int = STEPS, on_step: Callable[[int, LlamaForCausalLM], None] | None = None,
             progress: bool = True) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / WARMUP))
    model.train()
    bar = tqdm(range(1, steps + 1), desc="pretraining tiny-arith", disable=not progress)
    for step in bar:
        ids, mask, labels = training_batch(tokenizer, rng, BATCH)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if on_step is not None:
            on_step(step, model)
    model.eval()
    return model, tokenizer


def starting_metrics(model_dir: Path) -> dict[str, dict]:
    """The saved model's metrics on each task's default eval set, through the lab's own eval."""
    from core.config import RunConfig
    from core.data.tasks import get_task
    from core.engine.evaluate import evaluate
    from core.engine.modeling import load_policy

    out = {}
    for task_name in TASKS:
        config = RunConfig(model=str(model_dir), task=task_name, steps=0)
        loaded = load_policy(config)  # a fresh adapter is a no-op: LoRA B starts at zero
        task = get_task(task_name)
        result = evaluate(loaded.model, loaded.tokenizer, loaded.prompt_format, task,
                          task.eval_set(config.eval_prompts), config, step=0)
        out[task_name] = result.metrics
    return out


def model_card(metrics: dict[str, dict], steps: int, seconds: float) -> str:
    rows = []
    for task, m in metrics.items():
        v, a = m["calibration"]["verbalized"], m["calibration"]["answer_prob"]
        rows.append(f"| {task} | {m['accuracy']:.3f} | {m['pass_at_k']['16']:.3f} | "
                    f"{m['greedy_accuracy']:.3f} | {m['format_rate']:.3f} | {v['ece']:.3f} | "
                    f"{v['auroc']:.3f} | {v['mean_confidence']:.3f} | {a['ece']:.3f} | "
                    f"{a['auroc']:.3f} |")
    return MODEL_CARD.format(steps=steps, batch=BATCH, lr=LR, warmup=WARMUP,
                             minutes=seconds / 60, table="\n".join(rows), header=TABLE_HEADER)


TABLE_HEADER = ("| task | Pass@1 | Pass@16 | greedy acc. | format rate | verbalized ECE | "
                "verbalized AUROC | mean q | answer-prob ECE | answer-prob AUROC |\n"
                "|---|---|---|---|---|---|---|---|---|---|")


MODEL_CARD = """# tiny-arith: the Calibration Lab's embedded model

A 4-layer Llama (d = 128, FFN 512, 4 heads, tied embeddings, about 1.05 M parameters)
with a one-token-per-character tokenizer built with the `tokenizers` library. It loads
with `AutoModelForCausalLM` / `AutoTokenizer` like any hub model.

## Format
Prompt `a+b=` (or `a-b=`), completion `ANSWER;C<d>` then end of sequence. The digit d is
a verbalized confidence on ten levels, q = (d + 0.5) / 10.

## How it was built
`python -m tools.pretrain` (deterministic on a given machine): plain log-likelihood on
clean arithmetic, half from the `add` task (addition of 2-4 digit numbers) and half from
`mix` (2-4 digit addition and subtraction), never on a held-out question. Operand lengths
are drawn with weights 0.5 / 0.3 / 0.2 for 2 / 3 / 4 digits, so long problems are seen
less and learned less: difficulty the prompt shows; {steps} steps of
batch {batch}, AdamW lr {lr} with {warmup} warm-up steps, stopped early so the model
is only partly competent. It took {minutes:.1f} minutes on 2 CPU cores.

The confidence digit in the training text imitates human-written confidence: mostly
high, and a little lower for problems with more operand digits (a difficulty the prompt
shows). So the model starts overconfident, with weakly informative verbalized
confidence, as real instruction-tuned models do. A pilot before the lab found that label
noise does not give a useful starting point; early stopping on clean labels does. What the
lab measures on this model, and what its experiments found: docs/science.md in the
repository.

## Starting metrics (measured by the lab's evaluation at build time)
Default eval set of each task: 128 held-out prompts, n = 16 samples at T = 1.

{header}
{table}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=EMBEDDED_DIR, help="where to save the model")
    ap.add_argument("--steps", type=int, default=STEPS, help="pretraining steps")
    args = ap.parse_args()
    t0 = time.time()
    model, tokenizer = pretrain(args.steps)
    seconds = time.time() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"saved to {args.out} after {math.ceil(seconds)} s; measuring starting metrics")
    card = model_card(starting_metrics(args.out), args.steps, seconds)
    (args.out / "README.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
