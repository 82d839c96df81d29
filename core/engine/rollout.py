"""Sampling completions, reading them, and scoring their tokens under the policy.

One batched `generate` (KV cache) per call; one forward pass scores every completion token.
Shapes: B = prompts x samples, W = padded prompt width, T = completion width, V = vocab.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch
from transformers import Cache, PreTrainedModel, PreTrainedTokenizerBase

from core.data.formats import PromptFormat
from core.data.tasks import Example, Task


@dataclass
class Rollout:
    """Sampled completions for a list of prompts, `samples` each, grouped contiguously."""

    examples: list[Example]  # [B] the example behind each row
    input_ids: torch.Tensor  # [B, W + T] left-padded prompt, then completion, then pad
    attention_mask: torch.Tensor  # [B, W + T]
    completion_mask: torch.Tensor  # [B, T] 1 on completion tokens up to and including EOS
    prompt_width: int  # W
    texts: list[str]  # [B] completion text without special tokens
    logprobs: torch.Tensor | None = None  # [B, T] log pi(y_t) at T = 1 while sampling; 0 on pad
    samples: int = 1  # rows per prompt; each prompt's rows are contiguous and share its prefix

    @property
    def completion_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_width:]  # [B, T]

    def select(self, rows: torch.Tensor) -> Rollout:
        """The rows where `rows` [B] is true (whole groups, so prompts still share a cache)."""
        if bool(rows.all()):
            return self
        keep = rows.nonzero().squeeze(1).tolist()
        idx = rows.to(self.input_ids.device)
        return Rollout([self.examples[i] for i in keep], self.input_ids[idx],
                       self.attention_mask[idx], self.completion_mask[idx], self.prompt_width,
                       [self.texts[i] for i in keep],
                       None if self.logprobs is None else self.logprobs[idx], self.samples)


def with_rows(base: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """`base` [B, T] with the `rows` [B] replaced by `values` [rows, T] (keeps their grad)."""
    if bool(rows.all()):
        return values
    out = base.detach().clone()
    out[rows.to(out.device)] = values
    return out


@dataclass
class Graded:
    """What the completions say and whether they are right."""

    answers: list[str | None]  # [B]
    correct: torch.Tensor  # [B] float 0/1
    confidence: torch.Tensor  # [B] verbalized q, NaN where missing
    well_formed: torch.Tensor  # [B] bool
    answer_mask: torch.Tensor  # [B, T] 1 on the answer's tokens
    confidence_mask: torch.Tensor  # [B, T] 1 on the stated confidence's tokens


@dataclass
class TokenScores:
    logprobs: torch.Tensor  # [B, T] log pi(y_t | x, y_<t) at temperature 1
    disparity: torch.Tensor | None  # [B, T] p(chosen) - p(best other token); None if not asked


def sample(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat,
           examples: list[Example], samples: int, temperature: float | None,
           max_new_tokens: int) -> Rollout:
    """`samples` completions per example, temperature None meaning greedy, with each sampled
    token's log-probability at temperature 1 (what training and evaluation score)."""
    device = next(model.parameters()).device
    enc = tokenizer([fmt.prompt(ex) for ex in examples], return_tensors="pt",
                    padding=True).to(device)  # [P, W]
    input_ids = enc["input_ids"].repeat_interleave(samples, dim=0)  # [B, W]
    prompt_mask = enc["attention_mask"].repeat_interleave(samples, dim=0)  # [B, W]
    eos = _eos_ids(model, tokenizer).to(device)
    with torch.inference_mode():
        cache = _shared_prompt_cache(model, enc["input_ids"], enc["attention_mask"], samples)
        completion, logprobs = _decode(model, input_ids, prompt_mask, cache, max_new_tokens,
                                       temperature, eos, tokenizer.pad_token_id)
    completion, logprobs = completion.clone(), logprobs.clone()  # normal tensors for autograd
    is_eos = torch.isin(completion, eos)  # [B, T]
    # Tokens after the first EOS are padding: mask = 1 up to and including the first EOS.
    after_eos = (is_eos.cumsum(-1) - is_eos.long()) > 0  # [B, T]
    completion_mask = (~after_eos).long()  # [B, T]
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)  # [B, W + T]
    visible = completion.masked_fill(completion_mask == 0, tokenizer.pad_token_id)  # [B, T]
    texts = tokenizer.batch_decode(visible, skip_special_tokens=True)
    return Rollout([ex for ex in examples for _ in range(samples)],
                   torch.cat([input_ids, visible], dim=1), attention_mask, completion_mask,
                   input_ids.shape[1], texts, logprobs * completion_mask, samples)


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """Every id that ends a completion: the tokenizer's EOS and the model's generation
    config's (chat models often list two, e.g. <|im_end|> and <|endoftext|>)."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(configured) if isinstance(configured, list) else {configured}
    return torch.tensor(sorted(i for i in ids if i is not None))


def _decode(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
            cache: Cache | None, max_new_tokens: int, temperature: float | None,
            eos: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token by token with the KV cache: (tokens [B, T], log pi(token) at T = 1 [B, T]).

    The same sampling as `generate` with do_sample, temperature, top_k = 0 and top_p = 1 (the
    same tokens for the same seed; tested), without a hub model's own sampling defaults
    (repetition penalties, top-k) that would make the samples differ from the policy that
    training scores, and without keeping every step's [B, V] logits to read log-probs.
    """
    positions = position_ids(attention_mask)  # [B, W]
    done_before = 0 if cache is None else cache.get_seq_length()
    step_ids, step_pos = input_ids[:, done_before:], positions[:, done_before:]
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    tokens, logprobs = [], []
    for _ in range(max_new_tokens):
        out = model(input_ids=step_ids, attention_mask=attention_mask, position_ids=step_pos,
                    cache=cache, use_cache=True, logits_to_keep=1)
        cache = out.cache
        logits = out.logits[:, -1].float()  # [B, V]
        if temperature is None:
            chosen = logits.argmax(-1)  # [B]
        else:
            chosen = torch.multinomial(torch.softmax(logits / temperature, -1), 1).squeeze(1)
        chosen = chosen.masked_fill(finished, pad_id)  # [B]
        tokens.append(chosen)
        logprobs.append(torch.log_softmax(logits, -1).gather(1, chosen[:, None]).squeeze(1))
        finished = finished | torch.isin(chosen, eos)
        if bool(finished.all()):
            break
        step_ids, step_pos = chosen[:, None], step_pos[:, -1:] + 1  # [B, 1]
        attention_mask = torch.cat([attention_mask, torch.ones_like(step_ids)], dim=1)
    return torch.stack(tokens, 1), torch.stack(logprobs, 1)  # [B, T], [B, T]


def _shared_prompt_cache(model: PreTrainedModel, prompt_ids: torch.Tensor,
                         prompt_mask: torch.Tensor, samples: int) -> Cache | None:
    """KV cache of every prompt but its last token, computed once and repeated `samples` times.

    Generating from full rows would run each prompt once per sample; this runs it once per
    prompt, and decoding starts from the last prompt token (same tokens; tested).
    """
    if samples == 1 or prompt_ids.shape[1] < 2:
        return None
    out = model(input_ids=prompt_ids[:, :-1], attention_mask=prompt_mask[:, :-1],
                position_ids=position_ids(prompt_mask)[:, :-1], use_cache=True,
                logits_to_keep=1)
    out.cache.batch_repeat_interleave(samples)  # [P, ...] -> [B, ...], differentiable
    return out.cache


def sample_in_slices(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                     fmt: PromptFormat, examples: list[Example], samples: int,
                     temperature: float | None, max_new_tokens: int, max_rows: int = 0
                     ) -> Rollout:
    """`sample`, generating at most `max_rows` rows per call (whole prompts; 0: all at once)
    and joining the slices into one rollout. Bounds generation memory on big models."""
    per_call = max(1, max_rows // samples) if max_rows else len(examples)
    if per_call >= len(examples):
        return sample(model, tokenizer, fmt, examples, samples, temperature, max_new_tokens)
    return join_rollouts([sample(model, tokenizer, fmt, examples[i:i + per_call], samples,
                                 temperature, max_new_tokens)
                          for i in range(0, len(examples), per_call)], tokenizer.pad_token_id)


def join_rollouts(parts: list[Rollout], pad_id: int) -> Rollout:
    """Rollouts stacked row-wise: prompts left-padded to the widest W, completions
    right-padded to the longest T (padding is masked out everywhere)."""
    width = max(r.prompt_width for r in parts)  # W
    length = max(r.completion_ids.shape[1] for r in parts)  # T

    def pad(x: torch.Tensor, left: int, right: int, value: float) -> torch.Tensor:
        return torch.nn.functional.pad(x, (left, right), value=value)

    ids, attn, comp, logprobs = [], [], [], []
    for r in parts:
        left, right = width - r.prompt_width, length - r.completion_ids.shape[1]
        ids.append(pad(r.input_ids, left, right, pad_id))  # [b, W + T]
        attn.append(pad(r.attention_mask, left, right, 0))  # [b, W + T]
        comp.append(pad(r.completion_mask, 0, right, 0))  # [b, T]
        if r.logprobs is not None:
            logprobs.append(pad(r.logprobs, 0, right, 0.0))  # [b, T]
    return Rollout([ex for r in parts for ex in r.examples], torch.cat(ids), torch.cat(attn),
                   torch.cat(comp), width, [t for r in parts for t in r.texts],
                   torch.cat(logprobs) if len(logprobs) == len(parts) else None,
                   parts[0].samples)


@cache
def _piece_lengths(tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """Characters each token id adds to decoded text (special tokens add none)."""
    ids = [[i] for i in range(len(tokenizer))]
    return torch.tensor([len(t) for t in tokenizer.batch_decode(ids, skip_special_tokens=True)])


def grade(rollout: Rollout, fmt: PromptFormat, task: Task,
          tokenizer: PreTrainedTokenizerBase) -> Graded:
    parsed = [fmt.parse(t) for t in rollout.texts]
    # A format failure is never correct (docs/science.md: a completion that does not parse has no
    # answer). Counting a readable answer with a broken tail as right let recipes that never
    # look at the confidence reinforce broken tails until no output stated one (psr, 300
    # steps, seed 100: format rate 0.99 -> 0.00), and then calibration cannot be measured.
    correct = torch.tensor([float(p.well_formed and task.is_correct(p.answer, ex))
                            for p, ex in zip(parsed, rollout.examples, strict=True)])
    confidence = torch.tensor([p.confidence if p.confidence is not None else float("nan")
                               for p in parsed])
    well_formed = torch.tensor([p.well_formed for p in parsed])
    ids = rollout.completion_ids.cpu()  # [B, T]
    piece = _piece_lengths(tokenizer)[ids] * rollout.completion_mask.cpu()  # [B, T]
    end = piece.cumsum(-1)  # [B, T] character offset after each token
    start = end - piece  # [B, T]

    def span_mask(spans: list[tuple[int, int] | None]) -> torch.Tensor:
        """Tokens that overlap a character span of the completion text."""
        s = torch.tensor([span or (0, 0) for span in spans])  # [B, 2]
        mask = (start < s[:, 1:]) & (end > s[:, :1]) & (piece > 0)  # [B, T]
        return mask.long().to(rollout.input_ids.device)

    return Graded([p.answer for p in parsed], correct, confidence, well_formed,
                  span_mask([p.answer_span for p in parsed]),
                  span_mask([p.confidence_span for p in parsed]))


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as `generate` assigns them."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)  # [B, W + T]


def score_tokens(model: PreTrainedModel, rollout: Rollout, with_disparity: bool = False
                 ) -> TokenScores:
    """Log-probabilities of the completion tokens (with grad if enabled).

    A prompt's G completions share its prefix, so the prompt goes through the network once
    and its KV cache is repeated G times for the completion tokens: (G - 1) / G of the
    prompt's compute is saved, and the gradient still reaches the LoRA weights through the
    shared prefix. Same values as one forward pass over every full row (tested).
    """
    logits = _completion_logits(model, rollout)  # [B, T, V]
    logp_all = torch.log_softmax(logits.float(), dim=-1)  # [B, T, V]
    targets = rollout.completion_ids.unsqueeze(-1)  # [B, T, 1]
    logprobs = logp_all.gather(-1, targets).squeeze(-1)  # [B, T]
    disparity = None
    if with_disparity:
        with torch.no_grad():
            top2 = logp_all.topk(2, dim=-1)  # values [B, T, 2]
            chosen_is_top = top2.indices[..., 0] == rollout.completion_ids  # [B, T]
            best_other = torch.where(chosen_is_top, top2.values[..., 1], top2.values[..., 0])
            disparity = logprobs.detach().exp() - best_other.exp()  # [B, T]
    return TokenScores(logprobs, disparity)


def _completion_logits(model: PreTrainedModel, rollout: Rollout) -> torch.Tensor:
    """Logits that predict each completion token y_1 .. y_T: [B, T, V].

    Each prompt's cache comes from `_shared_prompt_cache`, as in sampling; one more pass then
    runs the last prompt token and y_1 .. y_T-1 over it, and the gradient reaches the LoRA
    weights through the shared prefix too.
    """
    g, w = rollout.samples, rollout.prompt_width
    end = w + rollout.completion_ids.shape[1] - 1  # y_T predicts nothing
    # Activation checkpointing re-runs each layer in the backward pass, and the re-run would
    # append the completions' keys to the shared cache a second time: score full rows then.
    recomputes = torch.is_grad_enabled() and any(
        getattr(m, "gradient_checkpointing", False) and m.training for m in model.modules())
    cache = None if recomputes else _shared_prompt_cache(
        model, rollout.input_ids[::g, :w], rollout.attention_mask[::g, :w], g)
    start = 0 if cache is None else cache.get_seq_length()
    out = model(input_ids=rollout.input_ids[:, start:end],
                attention_mask=rollout.attention_mask[:, :end],
                position_ids=position_ids(rollout.attention_mask)[:, start:end],
                cache=cache, use_cache=cache is not None,
                logits_to_keep=end - w + 1)
    return out.logits  # [B, T, V]


def answer_probability(logprobs: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """pi(answer span | prompt, text before it): product of the answer tokens' probabilities."""
    total = (logprobs.detach() * answer_mask).sum(-1)  # [B]
    return torch.where(answer_mask.sum(-1) > 0, total.exp(), torch.full_like(total, float("nan")))


def span_confidence(per_token: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """Mean of a per-token signal over the answer span (RLSF's ranking signal); NaN if none."""
    n = answer_mask.sum(-1)  # [B]
    mean = (per_token * answer_mask).sum(-1) / n.clamp(min=1)  # [B]
    return torch.where(n > 0, mean, torch.full_like(mean, float("nan")))
