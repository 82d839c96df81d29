"""Sampling completions, reading them, and scoring their tokens under the policy.

One KV-cached decode loop per slice of rows; one forward pass scores every completion token.
Shapes: B = prompts x samples, W = padded prompt width, T = completion width, V = vocab,
H = hidden size.

Device rule: every tensor these functions return lives on the model's device (grading's
Python-built tensors included), so the recipes never mix devices; tests/test_device_mix.py
runs the loop on a stand-in GPU to keep it so.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from transformers import Cache, PreTrainedModel, PreTrainedTokenizerBase

from core.config import KV_CACHE_BUDGET_CPU, LOGITS_CHUNK_BYTES
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
    entropy: torch.Tensor | None = None  # [B, T] H(pi(. | x, y_<t)) at T = 1, nats; 0 on pad
    truncated: torch.Tensor | None = None  # [B] bool: cut at max_new_tokens before any EOS

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
                       None if self.logprobs is None else self.logprobs[idx], self.samples,
                       None if self.entropy is None else self.entropy[idx],
                       None if self.truncated is None else self.truncated[idx])

    @property
    def truncation_rate(self) -> float:
        """Share of completions that hit max_new_tokens before ending (0 if unknown)."""
        return float(self.truncated.float().mean()) if self.truncated is not None else 0.0


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
           max_new_tokens: int, generators: Sequence[torch.Generator] | None = None
           ) -> Rollout:
    """`samples` completions per example, temperature None meaning greedy, with each sampled
    token's log-probability at temperature 1 (what training and evaluation score).

    `generators` [B], one per row (a CPU generator each), make every row draw from its own
    random stream instead of torch's global one (see `row_draw`)."""
    device = next(model.parameters()).device
    enc = tokenizer([fmt.prompt(ex) for ex in examples], return_tensors="pt",
                    padding=True).to(device)  # [P, W]
    input_ids = enc["input_ids"].repeat_interleave(samples, dim=0)  # [B, W]
    prompt_mask = enc["attention_mask"].repeat_interleave(samples, dim=0)  # [B, W]
    eos = _eos_ids(model, tokenizer).to(device)
    with torch.inference_mode():
        completion, logprobs, entropy = _decode(model, enc["input_ids"], enc["attention_mask"],
                                                samples, max_new_tokens, temperature, eos,
                                                tokenizer.pad_token_id,
                                                finished_check_every(device), generators)
    completion, logprobs = completion.clone(), logprobs.clone()  # normal tensors for autograd
    is_eos = torch.isin(completion, eos)  # [B, T]
    # Tokens after the first EOS are padding: mask = 1 up to and including the first EOS.
    after_eos = (is_eos.cumsum(-1) - is_eos.long()) > 0  # [B, T]
    completion_mask = (~after_eos).long()  # [B, T]
    # Decoding checks for the end every few steps on a GPU: drop the all-padding columns that
    # a late check leaves, so T is what a check at every step gives.
    width = int(completion_mask.any(0).sum())  # each row's mask is a run of ones from 0
    completion, logprobs, entropy = completion[:, :width], logprobs[:, :width], entropy[:, :width]
    completion_mask, is_eos = completion_mask[:, :width], is_eos[:, :width]
    truncated = ~is_eos.any(-1) & (completion_mask.sum(-1) >= max_new_tokens)  # [B]
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)  # [B, W + T]
    visible = completion.masked_fill(completion_mask == 0, tokenizer.pad_token_id)  # [B, T]
    texts = tokenizer.batch_decode(visible, skip_special_tokens=True)
    return Rollout([ex for ex in examples for _ in range(samples)],
                   torch.cat([input_ids, visible], dim=1), attention_mask, completion_mask,
                   input_ids.shape[1], texts, logprobs * completion_mask, samples,
                   entropy.clone() * completion_mask, truncated)


FINISHED_CHECK_EVERY_GPU = 8  # decode steps between reads of `finished` on an accelerator


def finished_check_every(device: torch.device) -> int:
    """How often decoding reads on the host which rows are still going, to drop the rows that
    ended and run each distinct prefix once (`_decode`).

    The read waits for the GPU to finish all queued work: once a step it stalls the GPU every
    token. On the CPU it costs nothing; on a GPU, rows that ended keep drawing padding for up
    to 7 more steps (their mask is 0) and rows that share a prefix run it separately until
    the next read.
    """
    return 1 if device.type == "cpu" else FINISHED_CHECK_EVERY_GPU


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """Every id that ends a completion: the tokenizer's EOS and the model's generation
    config's (chat models often list two, e.g. <|im_end|> and <|endoftext|>)."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(configured) if isinstance(configured, list) else {configured}
    return torch.tensor(sorted(i for i in ids if i is not None))


def _decode(model: PreTrainedModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
            samples: int, max_new_tokens: int, temperature: float | None,
            eos: torch.Tensor, pad_id: int, check_every: int = 1,
            generators: Sequence[torch.Generator] | None = None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`samples` continuations of each of P prompts [P, W], token by token with the KV cache:
    (tokens [B, T], log pi(token) at T = 1 [B, T], entropy of pi at T = 1 [B, T]), B = P x
    samples, each prompt's rows contiguous. The first step runs each whole prompt once, its
    cache then shared by the prompt's rows.

    The network runs once per distinct prefix, not once per row: rows are drawn from the
    logits of their prefix (a node), and after each read (`finished_check_every`) the rows
    that have not ended are regrouped by (node, token drawn), so a prompt's samples that
    agree so far share one row of the forward pass and of the cache (as beam search moves
    its beams, by `Cache.reorder_cache`), and rows that ended drop out. A small model's
    samples agree often: at the start of the classic experiment 128 prompts x 16 samples
    decode 28 % of the row-steps that every row would, at n = 64 17 %.

    The same sampling as `generate` with do_sample, temperature, top_k = 0 and top_p = 1 (the
    same tokens for the same seed; tested): every row still draws from its own [V] softmax
    each step, so the random stream is consumed as before. Without a hub model's own sampling
    defaults (repetition penalties, top-k) that would make the samples differ from the policy
    that training scores, and without keeping every step's [B, V] logits to read log-probs.
    """
    rows = prompt_ids.shape[0] * samples  # B
    device = prompt_ids.device
    every_row = torch.arange(rows, device=device)  # [B]
    node_of_row = every_row // samples  # [B] the node (distinct prefix) each row reads
    mask = prompt_mask  # [U, W + t] per node
    step_ids, step_pos = prompt_ids, position_ids(prompt_mask)  # [U, W] each, U = P
    cache = None
    per_row = samples == 1  # whether node i is row i (then nothing needs moving)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)  # [B]
    tokens, logprobs, entropy = [], [], []
    for step in range(max_new_tokens):
        out = model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos,
                    cache=cache, use_cache=True, logits_to_keep=1)
        cache = out.cache
        node_logits = out.logits[:, -1].float()  # [U, V]
        logits = node_logits[node_of_row]  # [B, V]
        if temperature is None:
            chosen = logits.argmax(-1)  # [B]
        elif generators is not None:
            chosen = row_draw(logits, temperature, generators)  # [B]
        else:
            chosen = torch.multinomial(torch.softmax(logits / temperature, -1), 1).squeeze(1)
        chosen = chosen.masked_fill(finished, pad_id)  # [B]
        tokens.append(chosen)
        log_p = torch.log_softmax(node_logits, -1)  # [U, V]
        logprobs.append(log_p[node_of_row].gather(1, chosen[:, None]).squeeze(1))  # [B]
        # The policy's own spread (T = 1), whatever temperature sampled: -sum p log p.
        entropy.append(-(log_p.exp() * log_p).sum(-1)[node_of_row])  # [B]
        finished = finished | torch.isin(chosen, eos)
        if (step + 1) % check_every == 0:  # regroup the rows still going by prefix
            going = (~finished).nonzero().squeeze(1)  # [R]
            if going.numel() == 0:
                break
            vocab = node_logits.shape[1]
            nodes, inverse = torch.unique(node_of_row[going] * vocab + chosen[going],
                                          return_inverse=True)  # [U'], [R]
            parent, next_ids = nodes // vocab, nodes % vocab  # [U'] each
            node_of_row = torch.zeros_like(node_of_row).index_copy(0, going, inverse)
            moved = parent.shape[0] != step_ids.shape[0] or not torch.equal(
                parent, every_row[:parent.shape[0]])  # read on the host, as `going` was
            per_row = False
        else:  # one node per row until the next read, decided without asking the device
            parent, next_ids, moved = node_of_row, chosen, not per_row
            node_of_row, per_row = every_row, True
        if moved:
            cache.reorder_cache(parent)
            mask, step_pos = mask[parent], step_pos[parent]
        step_ids, step_pos = next_ids[:, None], step_pos[:, -1:] + 1  # [U', 1]
        mask = torch.cat([mask, torch.ones_like(step_ids)], dim=1)  # [U', W + t + 1]
    return torch.stack(tokens, 1), torch.stack(logprobs, 1), torch.stack(entropy, 1)


def _prompt_cache(model: PreTrainedModel, prompt_ids: torch.Tensor,
                  prompt_mask: torch.Tensor) -> Cache:
    """KV cache of every prompt [P, W] but its last token (W >= 2), one row per prompt: a
    prompt's scored rows continue from it, so the prompt runs once, not once per row."""
    out = model(input_ids=prompt_ids[:, :-1], attention_mask=prompt_mask[:, :-1],
                position_ids=position_ids(prompt_mask)[:, :-1], use_cache=True,
                logits_to_keep=1)
    return out.cache


def row_draw(logits: torch.Tensor, temperature: float,
             generators: Sequence[torch.Generator]) -> torch.Tensor:
    """One token per row [B] from softmax(logits / T) [B, V], row b drawing its noise from
    generators[b] alone: argmax(logits / T + Gumbel noise), the Gumbel-max trick (Gumbel 1954;
    Maddison et al. 2014, "A* Sampling", sec. 2), which samples exactly that softmax.

    What a row draws then depends on its own generator only, never on which rows share its
    batch: a repetition seeded on its own gives the same completion batched with 99 others
    or alone.
    """
    u = torch.stack([torch.rand(logits.shape[1], generator=g, dtype=torch.float64)
                     for g in generators]).to(logits.device)  # [B, V] uniform in [0, 1)
    gumbel = -torch.log(-torch.log(u.clamp(min=torch.finfo(torch.float64).tiny)))  # [B, V]
    return (logits.double() / temperature + gumbel).argmax(-1)  # [B]


def sample_in_slices(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                     fmt: PromptFormat, examples: list[Example], samples: int,
                     temperature: float | None, max_new_tokens: int, max_rows: int = 0,
                     generators: Sequence[torch.Generator] | None = None) -> Rollout:
    """`sample` over slices of whole prompts, joined into one rollout: at most `max_rows`
    rows per call (0: no row limit) and never more than keep the KV cache within its budget,
    so memory follows the model's size rather than a row count. `generators`: one per row,
    as in `sample`."""
    widest = max(len(ids) for ids in tokenizer([fmt.prompt(ex) for ex in examples])["input_ids"])
    rows = len(examples) * samples
    fit = rows_within(kv_cache_budget(model), kv_bytes_per_token(model)
                      * (widest + max_new_tokens), rows, samples)
    per_call = max(1, min(max_rows or rows, fit) // samples)
    if per_call >= len(examples):
        return sample(model, tokenizer, fmt, examples, samples, temperature, max_new_tokens,
                      generators)
    return join_rollouts([sample(model, tokenizer, fmt, examples[i:i + per_call], samples,
                                 temperature, max_new_tokens,
                                 None if generators is None
                                 else generators[i * samples:(i + per_call) * samples])
                          for i in range(0, len(examples), per_call)], tokenizer.pad_token_id)


KV_CACHE_SHARE_GPU = 0.4  # share of the GPU's free memory one generate call's cache may take


def kv_bytes_per_token(model: PreTrainedModel) -> int:
    """Bytes the KV cache holds per row and token: keys and values of every layer."""
    c = model.config.get_text_config() if hasattr(model.config, "get_text_config") \
        else model.config
    heads = c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    dtype_bytes = next(model.parameters()).element_size()
    return 2 * c.num_hidden_layers * kv_heads * head_dim * dtype_bytes


def kv_cache_budget(model: PreTrainedModel) -> int:
    """Bytes one generate call's KV cache may take: a share of the GPU's free memory (the
    rest is for the weights, activations and the LM head's [B, V] logits), else a fixed
    budget (CPU memory is slower to run out of and swapping is the user's to see)."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * KV_CACHE_SHARE_GPU)
    return KV_CACHE_BUDGET_CPU


def rows_within(budget: int, bytes_per_row: int, rows: int, samples: int) -> int:
    """Rows per generate call: whole prompts (`samples` rows each) whose cache fits the
    budget, at least one prompt, at most every row."""
    fit = budget // max(1, bytes_per_row) // samples * samples
    return min(rows, max(samples, fit))


def join_rollouts(parts: list[Rollout], pad_id: int) -> Rollout:
    """Rollouts stacked row-wise: prompts left-padded to the widest W, completions
    right-padded to the longest T (padding is masked out everywhere)."""
    width = max(r.prompt_width for r in parts)  # W
    length = max(r.completion_ids.shape[1] for r in parts)  # T

    def pad(x: torch.Tensor, left: int, right: int, value: float) -> torch.Tensor:
        return torch.nn.functional.pad(x, (left, right), value=value)

    ids, attn, comp, logprobs, entropy, truncated = [], [], [], [], [], []
    for r in parts:
        left, right = width - r.prompt_width, length - r.completion_ids.shape[1]
        ids.append(pad(r.input_ids, left, right, pad_id))  # [b, W + T]
        attn.append(pad(r.attention_mask, left, right, 0))  # [b, W + T]
        comp.append(pad(r.completion_mask, 0, right, 0))  # [b, T]
        if r.logprobs is not None:
            logprobs.append(pad(r.logprobs, 0, right, 0.0))  # [b, T]
        if r.entropy is not None:
            entropy.append(pad(r.entropy, 0, right, 0.0))  # [b, T]
        if r.truncated is not None:
            truncated.append(r.truncated)  # [b]
    return Rollout([ex for r in parts for ex in r.examples], torch.cat(ids), torch.cat(attn),
                   torch.cat(comp), width, [t for r in parts for t in r.texts],
                   torch.cat(logprobs) if len(logprobs) == len(parts) else None,
                   parts[0].samples,
                   torch.cat(entropy) if len(entropy) == len(parts) else None,
                   torch.cat(truncated) if len(truncated) == len(parts) else None)


@cache
def _pieces(tokenizer: PreTrainedTokenizerBase) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token id: the characters it adds to decoded text alone (special tokens add none),
    and whether that is exact. A byte-level BPE token (Qwen's, Llama 3's) may hold part of a
    multi-byte character, which decodes alone to U+FFFD; such rows are measured by decoding."""
    ids = [[i] for i in range(len(tokenizer))]
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    return (torch.tensor([len(t) for t in texts]),
            torch.tensor(["\ufffd" not in t for t in texts]))


def token_offsets(tokenizer: PreTrainedTokenizerBase, ids: torch.Tensor, mask: torch.Tensor,
                  texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Character offsets (start, end) [B, T] of each completion token in its row's text.

    Fast path: the lengths of tokens decoded alone, when they add up to the row's text.
    Otherwise (a token holding part of a character, or a tokenizer whose tokens decode
    differently alone, as SentencePiece's leading spaces do) each token ends where the
    decoded prefix up to it stops agreeing with the text; a token that completes no
    character is given the character it begins, so a span still covers every token of it.
    """
    length, exact = _pieces(tokenizer)
    piece = length[ids] * mask  # [B, T]
    end = piece.cumsum(-1)  # [B, T]
    suspect = ((~exact[ids]) & mask.bool()).any(-1) | (end[:, -1] != torch.tensor(
        [len(t) for t in texts]))  # [B]
    for row in suspect.nonzero().flatten().tolist():
        n = int(mask[row].sum())
        prefixes = tokenizer.batch_decode([ids[row, :t + 1].tolist() for t in range(n)],
                                          skip_special_tokens=True)
        text = texts[row]
        ends = [_agreed(p, text) for p in prefixes]
        end[row, :n] = torch.tensor(ends)
        end[row, n:] = ends[-1] if ends else 0
    start = torch.cat([torch.zeros_like(end[:, :1]), end[:, :-1]], dim=1)  # [B, T]
    partial = (end == start) & (length[ids] > 0) & mask.bool()  # part of a character
    return start, torch.where(partial, start + 1, end)


def _agreed(prefix: str, text: str) -> int:
    """Length of the common beginning of a decoded prefix and the whole text."""
    n = min(len(prefix), len(text))
    i = 0
    while i < n and prefix[i] == text[i]:
        i += 1
    return i


def grade(rollout: Rollout, fmt: PromptFormat, task: Task,
          tokenizer: PreTrainedTokenizerBase) -> Graded:
    parsed = [fmt.parse(t) for t in rollout.texts]
    # A format failure is never correct (docs/science.md: a completion that does not parse has no
    # answer). Counting a readable answer with a broken tail as right let recipes that never
    # look at the confidence reinforce broken tails until no output stated one (psr, 300
    # steps, seed 100: format rate 0.99 -> 0.00), and then calibration cannot be measured.
    device = rollout.input_ids.device  # every result goes where the log-probs are
    correct = torch.tensor([float(p.well_formed and task.is_correct(p.answer, ex))
                            for p, ex in zip(parsed, rollout.examples, strict=True)])
    confidence = torch.tensor([p.confidence if p.confidence is not None else float("nan")
                               for p in parsed])
    well_formed = torch.tensor([p.well_formed for p in parsed])
    start, end = token_offsets(tokenizer, rollout.completion_ids.cpu(),
                               rollout.completion_mask.cpu(), rollout.texts)  # [B, T] each

    def span_mask(spans: list[tuple[int, int] | None]) -> torch.Tensor:
        """Tokens that overlap a character span of the completion text."""
        s = torch.tensor([span or (0, 0) for span in spans])  # [B, 2]
        return ((start < s[:, 1:]) & (end > s[:, :1]) & (end > start)).long()  # [B, T]

    return Graded([p.answer for p in parsed], correct.to(device), confidence.to(device),
                  well_formed.to(device), span_mask([p.answer_span for p in parsed]).to(device),
                  span_mask([p.confidence_span for p in parsed]).to(device))


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as `generate` assigns them."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)  # [B, W + T]


def score_tokens(model: PreTrainedModel, rollout: Rollout, with_disparity: bool = False,
                 share_copies: bool = True) -> TokenScores:
    """Log-probabilities of the completion tokens (with grad if enabled).

    A prompt's G completions share its prefix, so the prompt goes through the network once
    and its KV cache is repeated for the completion tokens: (G - 1) / G of the prompt's
    compute is saved, and the gradient still reaches the LoRA weights through the shared
    prefix. Same values and gradients as one forward pass over every full row (tested). The
    LM head then runs over chunks of tokens (`head_logprobs`), never on all of them at once.

    `share_copies`: a prompt's identical completions (about a third of a group of 8 at the
    start of the classic experiment, half late in a w-reinforce run) are scored once and that
    row's log-probs given to each copy by index; the backward of the index sums the copies'
    gradients into the one row, so a row standing for k copies weighs k times whatever the
    recipe does with each copy. Loss and gradients equal full scoring's to float rounding on
    every recipe (tested; benchmarks/score_sharing.py along whole runs), 20 % off scoring's
    forward and backward. Its runs take another trajectory than scoring every row, as any
    change of summation order does; against such a float-order control, 20 paired
    w-reinforce seeds showed no shift (benchmarks/RESULTS.md, "The shared-scoring
    question"). `False` scores every row, for that comparison.
    """
    if share_copies:
        first, inverse = distinct_completions(rollout)  # [U], [B]
    else:
        first = torch.arange(rollout.input_ids.shape[0], device=rollout.input_ids.device)  # [B]
        inverse = None
    hidden = _completion_hidden(model, rollout, first)  # [U, T, H]
    head = model.get_output_embeddings()
    u, t, h = hidden.shape
    targets = rollout.completion_ids[first]  # [U, T]
    weight = head.weight if head.weight.dtype == torch.float32 else head.weight.float()
    bias = None if getattr(head, "bias", None) is None else head.bias.float()
    logprobs, disparity = head_logprobs(hidden.reshape(u * t, h), weight, bias,
                                        targets.reshape(u * t), with_disparity)
    logprobs = logprobs.view(u, t)
    disparity = None if disparity is None else disparity.view(u, t)
    if inverse is not None:  # each row takes its copy's [U, T] -> [B, T]
        logprobs, disparity = logprobs[inverse], None if disparity is None else disparity[inverse]
    return TokenScores(logprobs, disparity)


def distinct_completions(rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
    """(the first row of each distinct (prompt, completion) pair [U], in prompt order;
    which of them each row is [B]). Tokens after the end count too: they are masked
    padding, the same in every copy."""
    b = rollout.input_ids.shape[0]
    row = torch.arange(b, device=rollout.input_ids.device)  # [B]
    keys = torch.cat([(row // rollout.samples)[:, None], rollout.completion_ids,
                      rollout.completion_mask], dim=1)  # [B, 1 + 2T]: prompt, tokens, mask
    _, inverse = torch.unique(keys, dim=0, return_inverse=True)  # [B], sorted by prompt
    first = torch.full((int(inverse.max()) + 1,), b, device=row.device)  # [U]
    return first.scatter_reduce(0, inverse, row, "amin"), inverse


def head_logprobs(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  targets: torch.Tensor, with_disparity: bool = False,
                  chunk_bytes: int = LOGITS_CHUNK_BYTES
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi(y) = z[y] - logsumexp(z), z = W h (+ b) in float32, for N tokens: [N] (and the
    disparity p(y) - p(best other) [N] if asked, without gradient).

    The [N, V] logits never exist whole: each chunk of tokens is its own checkpointed
    function, so the forward keeps only its [n] result and the backward recomputes one
    chunk's logits at a time. A 150k-token vocabulary made the whole-batch logits (bf16,
    a float32 copy, the log-softmax kept for backward, then their gradients) the largest
    thing in a training step; float32 also removes bf16's rounding of large logits. The
    vocabulary-wide reductions follow the usual log-softmax identity (e.g. Goodfellow et al.
    2016, sec. 6.2.2.3); only memory differs from `log_softmax(logits).gather(y)`.
    """
    rows = max(1, chunk_bytes // (4 * weight.shape[0]))  # tokens per chunk
    one_chunk = hidden.shape[0] <= rows
    logprobs, disparity = [], []
    for i in range(0, hidden.shape[0], rows):
        h, y = hidden[i:i + rows], targets[i:i + rows]  # [n, H], [n]
        if one_chunk or not torch.is_grad_enabled():  # nothing to save: no recompute either
            logprobs.append(_chunk_logprobs(h, weight, bias, y))
        else:
            logprobs.append(checkpoint(_chunk_logprobs, h, weight, bias, y,
                                       use_reentrant=False))
        if with_disparity:
            with torch.no_grad():
                disparity.append(_chunk_disparity(h, weight, bias, y))
    return torch.cat(logprobs), torch.cat(disparity) if with_disparity else None


def _chunk_logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
                  ) -> torch.Tensor:
    return F.linear(h.float(), weight, bias)  # [n, V] float32


def _chunk_logprobs(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    y: torch.Tensor) -> torch.Tensor:
    z = _chunk_logits(h, weight, bias)  # [n, V]
    return z.gather(1, y[:, None]).squeeze(1) - torch.logsumexp(z, dim=1)  # [n]


def _chunk_disparity(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     y: torch.Tensor) -> torch.Tensor:
    """p(y) - p(best token other than y): RLSF's per-token confidence."""
    logp = torch.log_softmax(_chunk_logits(h, weight, bias), dim=1)  # [n, V]
    top2 = logp.topk(2, dim=1)  # values [n, 2]
    chosen_is_top = top2.indices[:, 0] == y  # [n]
    best_other = torch.where(chosen_is_top, top2.values[:, 1], top2.values[:, 0])  # [n]
    return logp.gather(1, y[:, None]).squeeze(1).exp() - best_other.exp()  # [n]


def _completion_hidden(model: PreTrainedModel, rollout: Rollout,
                       rows: torch.Tensor) -> torch.Tensor:
    """Last hidden states that predict each completion token y_1 .. y_T of the rollout's
    `rows` [R]: [R, T, H].

    Each prompt's cache comes from `_prompt_cache` and is gathered for its
    rows (differentiably, so the gradient of every row reaches the LoRA weights through the
    shared prefix too); one more pass then runs the last prompt token and y_1 .. y_T-1 over
    it.
    """
    g, w = rollout.samples, rollout.prompt_width
    b, t = rollout.completion_ids.shape
    end = w + t - 1  # y_T predicts nothing
    ids, mask = rollout.input_ids[rows], rollout.attention_mask[rows]  # [R, W + T]
    # Activation checkpointing re-runs each layer in the backward pass, and the re-run would
    # append the completions' keys to the shared cache a second time: score full rows then.
    recomputes = torch.is_grad_enabled() and any(
        m.gradient_checkpointing and m.training for m in _checkpointable(model))
    cache = None
    # Worth it when some prompt has more than one row, and possible when the prompt has a
    # token before its last.
    if not recomputes and rows.shape[0] > b // g and w >= 2:
        cache = _prompt_cache(model, rollout.input_ids[::g, :w], rollout.attention_mask[::g, :w])
        cache.reorder_cache(rows // g)  # [P, ...] -> [R, ...], differentiable
    start = 0 if cache is None else cache.get_seq_length()
    out = model.get_decoder()(input_ids=ids[:, start:end], attention_mask=mask[:, :end],
                              position_ids=position_ids(mask)[:, start:end],
                              cache=cache, use_cache=cache is not None)
    return out.last_hidden_state[:, -t:]  # [R, T, H]


_CHECKPOINTABLE: weakref.WeakKeyDictionary[torch.nn.Module, list[torch.nn.Module]] = \
    weakref.WeakKeyDictionary()


def _checkpointable(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules of `model` that can checkpoint (they have `gradient_checkpointing`), found
    once per model: walking its few hundred modules took 0.5 ms of every scoring call. A
    model's module tree is fixed once it is loaded (LoRA wraps before scoring starts)."""
    found = _CHECKPOINTABLE.get(model)
    if found is None:
        found = [m for m in model.modules() if hasattr(m, "gradient_checkpointing")]
        _CHECKPOINTABLE[model] = found
    return found


def sampler_gap(sampled: torch.Tensor, scored: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean |log pi_sampler(y) - log pi_policy(y)| over completion tokens [B, T].

    Sampling runs a copy with W + BA merged into each adapted weight; in bf16 that sum drops
    updates smaller than about 2^-9 |W|, the size of early LoRA updates at small learning
    rates, so the sampler (which evaluation also uses) can lag the policy. On float32 this
    is rounding noise (~1e-6).
    """
    m = mask.float()
    return float(((sampled - scored.detach()).abs() * m).sum() / m.sum().clamp(min=1.0))


def answer_probability(logprobs: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """pi(answer span | prompt, text before it): product of the answer tokens' probabilities."""
    total = (logprobs.detach() * answer_mask).sum(-1)  # [B]
    return torch.where(answer_mask.sum(-1) > 0, total.exp(), torch.full_like(total, float("nan")))


def span_confidence(per_token: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """Mean of a per-token signal over the answer span (RLSF's ranking signal); NaN if none."""
    n = answer_mask.sum(-1)  # [B]
    mean = (per_token * answer_mask).sum(-1) / n.clamp(min=1)  # [B]
    return torch.where(n > 0, mean, torch.full_like(mean, float("nan")))
