"""Reading completions: masks after EOS, answer spans as token masks, answer probability."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from core.config import RunConfig
from core.data.formats import COMPACT
from core.data.tasks import TASKS, Example
from core.engine.modeling import LoadedModel, load_policy
from core.engine.rollout import Rollout, answer_probability, grade, span_confidence
from tools.pretrain import build_tokenizer

TOK = build_tokenizer()


def _rollout(completions: list[str], examples: list[Example], width: int = 4) -> Rollout:
    """A hand-made rollout: prompts are stand-in tokens, completions end with EOS."""
    rows = [TOK(c, add_special_tokens=False)["input_ids"] + [TOK.eos_token_id] for c in completions]
    t = max(len(r) for r in rows)
    comp = torch.full((len(rows), t), TOK.pad_token_id)
    mask = torch.zeros((len(rows), t), dtype=torch.long)
    for i, r in enumerate(rows):
        comp[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    prompt = torch.full((len(rows), width), TOK.bos_token_id)
    ids = torch.cat([prompt, comp], 1)
    attn = torch.cat([torch.ones_like(prompt), mask], 1)
    return Rollout(examples, ids, attn, mask, width, completions)


def test_grade_reads_answers_confidence_and_answer_tokens() -> None:
    ex = [Example("100+68", "168"), Example("1+1", "2"), Example("5-7", "-2")]
    r = _rollout(["168;C7", "3", "-2;C0"], ex)
    g = grade(r, COMPACT, TASKS["mix"], TOK)
    assert g.answers == ["168", "3", "-2"]
    assert g.correct.tolist() == [1.0, 0.0, 1.0]
    assert g.well_formed.tolist() == [True, False, True]
    # The right number without a stated confidence is a format failure, so not correct.
    broken = grade(_rollout(["168;5", "168"], ex[:1] * 2), COMPACT, TASKS["mix"], TOK)
    assert broken.answers == ["168", "168"] and broken.correct.tolist() == [0.0, 0.0]
    assert g.confidence[0].item() == 0.75 and math.isnan(g.confidence[1].item())
    # one token per character: the answer is the first len(answer) completion tokens
    assert g.answer_mask.tolist() == [[1, 1, 1, 0, 0, 0, 0],
                                      [1, 0, 0, 0, 0, 0, 0],
                                      [1, 1, 0, 0, 0, 0, 0]]


def test_answer_probability_is_product_over_answer_tokens() -> None:
    logprobs = torch.log(torch.tensor([[0.5, 0.4, 0.9], [0.2, 0.3, 0.3]]))
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    p = answer_probability(logprobs, mask)
    assert abs(p[0].item() - 0.2) < 1e-6  # 0.5 * 0.4
    assert math.isnan(p[1].item())  # no answer span


def test_span_confidence_is_mean_over_answer_tokens() -> None:
    per_token = torch.tensor([[0.9, 0.5, 0.1], [0.3, 0.3, 0.3]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    s = span_confidence(per_token, mask)
    assert abs(s[0].item() - 0.7) < 1e-6  # (0.9 + 0.5) / 2
    assert math.isnan(s[1].item())


def trained_looking_policy(config: RunConfig | None = None, seed: int = 1) -> LoadedModel:
    """The policy with a non-zero adapter: LoRA's B starts at zero, so perturb it."""
    loaded = load_policy(config or RunConfig(threads=1))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in loaded.model.named_parameters():
            if "lora_B" in n:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return loaded


def test_sampling_logprobs_match_a_scoring_pass() -> None:
    """Evaluation trusts the log-probs kept while sampling; they equal a fresh forward pass."""
    from core.config import RunConfig
    from core.engine.modeling import load_policy
    from core.engine.rollout import sample, score_tokens

    loaded = load_policy(RunConfig(threads=1))
    torch.manual_seed(0)
    examples = TASKS["add"].eval_set(8)
    r = sample(loaded.model, loaded.tokenizer, loaded.prompt_format, examples, 4, 1.0, 10)
    with torch.inference_mode():
        scored = score_tokens(loaded.model, r).logprobs
    mask = r.completion_mask.bool()
    assert torch.allclose(r.logprobs[mask], scored[mask], atol=1e-4)


def test_merged_sampler_is_the_policy_and_leaves_the_base_alone() -> None:
    """With a non-zero adapter, the merged copy samples what the LoRA policy would score."""
    from core.config import RunConfig
    from core.engine.modeling import load_policy
    from core.engine.rollout import sample, score_tokens

    loaded = trained_looking_policy()
    base_before = {n: p.clone() for n, p in loaded.model.named_parameters() if "lora" not in n}
    sampler = loaded.sampling_model()
    assert sampler is not loaded.model
    torch.manual_seed(0)
    r = sample(sampler, loaded.tokenizer, loaded.prompt_format, TASKS["add"].eval_set(8), 4,
               1.0, 10)
    with torch.inference_mode():
        scored = score_tokens(loaded.model, r).logprobs
    mask = r.completion_mask.bool()
    assert torch.allclose(r.logprobs[mask], scored[mask], atol=1e-4)
    after = dict(loaded.model.named_parameters())
    assert all(torch.equal(p, after[n]) for n, p in base_before.items())
    # Unadapted weights are shared with the policy, not copied.
    embed = loaded.model.get_base_model().model.embed_tokens.weight
    assert sampler.model.embed_tokens.weight.data_ptr() == embed.data_ptr()
    # Turning the merge off samples through the LoRA layers themselves.
    assert load_policy(RunConfig(threads=1, merged_sampling=False)).sampling_model().__class__ \
        .__name__.startswith("Peft")


@pytest.mark.parametrize("one_token_prompt", [False, True])
def test_shared_prefix_scoring_equals_full_rows_with_gradients(one_token_prompt: bool) -> None:
    """Scoring each prompt once and repeating its KV cache changes neither values nor grads;
    a one-token prompt has nothing to cache before its last token and is scored whole."""
    from dataclasses import replace

    from core.engine.rollout import position_ids, sample, score_tokens

    loaded = trained_looking_policy(seed=2)
    torch.manual_seed(0)
    r = sample(loaded.model, loaded.tokenizer, loaded.prompt_format, TASKS["add"].eval_set(6),
               4, 1.0, 10)
    if one_token_prompt:  # keep only each prompt's last token
        w = r.prompt_width
        r = replace(r, input_ids=r.input_ids[:, w - 1:],
                    attention_mask=r.attention_mask[:, w - 1:], prompt_width=1)
    params = [p for p in loaded.model.parameters() if p.requires_grad]

    def one_pass_over_full_rows() -> torch.Tensor:  # the textbook way, for reference
        t = r.completion_ids.shape[1]
        out = loaded.model(input_ids=r.input_ids, attention_mask=r.attention_mask,
                           position_ids=position_ids(r.attention_mask), logits_to_keep=t + 1)
        logp = torch.log_softmax(out.logits[:, :-1].float(), -1)  # [B, T, V]
        return logp.gather(-1, r.completion_ids.unsqueeze(-1)).squeeze(-1)  # [B, T]

    def logprobs_and_grads(score: Callable[[], torch.Tensor]
                           ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        lp = score()
        (lp * r.completion_mask).sum().backward()
        grads = [p.grad.clone() for p in params]
        loaded.model.zero_grad(set_to_none=True)
        return lp.detach(), grads

    assert r.samples == 4
    shared, shared_grads = logprobs_and_grads(lambda: score_tokens(loaded.model, r).logprobs)
    full, full_grads = logprobs_and_grads(one_pass_over_full_rows)
    mask = r.completion_mask.bool()
    assert torch.allclose(shared[mask], full[mask], atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4)
               for a, b in zip(shared_grads, full_grads, strict=True))


def test_sampling_from_a_shared_prompt_cache_matches_plain_generate() -> None:
    """Same seed: the same tokens as `generate` over every expanded prompt row."""
    from transformers import GenerationConfig

    from core.config import RunConfig
    from core.engine.modeling import load_policy
    from core.engine.rollout import sample

    loaded = load_policy(RunConfig(threads=1))
    tok, examples = loaded.tokenizer, TASKS["add"].eval_set(6)
    torch.manual_seed(3)
    ours = sample(loaded.model, tok, loaded.prompt_format, examples, 5, 1.0, 10)
    enc = tok([loaded.prompt_format.prompt(e) for e in examples for _ in range(5)],
              return_tensors="pt", padding=True)
    torch.manual_seed(3)
    with torch.inference_mode():
        plain = loaded.model.generate(**enc, generation_config=GenerationConfig(
            max_new_tokens=10, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))
    assert torch.equal(ours.input_ids, plain)


@pytest.mark.parametrize(("recipe", "expected_groups"), [
    ("binary", [False, True, False, True]),  # equal rewards in a group: zero advantage
    ("psr", [True, True, False, True]),  # psr moves only correct samples
    ("nsr", [False, True, True, True]),  # nsr only wrong ones
])
def test_skipping_rows_without_advantage_gives_the_same_update(recipe, expected_groups) -> None:
    """The train loop scores only rows that carry advantage; loss and gradients match."""
    from dataclasses import replace

    from core.config import RunConfig
    from core.engine.recipes import RECIPES, RecipeBatch
    from core.engine.rollout import sample, score_tokens, with_rows

    config = RunConfig(threads=1, recipe=recipe, group_size=4)
    loaded = trained_looking_policy(config, seed=4)
    torch.manual_seed(0)
    r = sample(loaded.model, loaded.tokenizer, loaded.prompt_format, TASKS["add"].eval_set(4),
               4, 1.0, 10)
    correct = torch.tensor([1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0], dtype=torch.float)
    template = RecipeBatch(r.logprobs, r.logprobs, r.completion_mask.float(), correct,
                           torch.full((16,), 0.55), torch.ones(16, dtype=torch.bool), 4)
    params = [p for p in loaded.model.parameters() if p.requires_grad]

    def update(rows: torch.Tensor) -> tuple[float, list[torch.Tensor]]:
        scores = score_tokens(loaded.model, r.select(rows)).logprobs
        old = with_rows(r.logprobs, rows, scores.detach())
        batch = replace(template, logprobs=with_rows(old, rows, scores), old_logprobs=old)
        loss = RECIPES[recipe].fn(batch, config).loss
        loss.backward()
        grads = [p.grad.clone() for p in params]
        loaded.model.zero_grad(set_to_none=True)
        return float(loss.detach()), grads

    rows = RECIPES[recipe].rows_to_score(template, config)
    assert rows.view(4, 4)[:, 0].tolist() == expected_groups
    loss_all, grads_all = update(torch.ones(16, dtype=torch.bool))
    loss_some, grads_some = update(rows)
    assert loss_some == pytest.approx(loss_all, abs=1e-7)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(grads_all, grads_some,
                                                                strict=True))
    # With a KL term every row counts.
    kl = replace(config, kl_beta=0.1)
    assert bool(RECIPES[recipe].rows_to_score(template, kl).all())


def test_sampling_entropy_matches_the_scoring_pass_distribution() -> None:
    """The per-token entropy kept while sampling is -sum p log p of the policy at T = 1,
    the same distribution a fresh forward pass gives; padding carries none."""
    from core.engine.rollout import _completion_hidden, sample

    loaded = trained_looking_policy(RunConfig(threads=1))
    torch.manual_seed(0)
    examples = TASKS["add"].eval_set(8)
    r = sample(loaded.model, loaded.tokenizer, loaded.prompt_format, examples, 4, 0.7, 10)
    with torch.inference_mode():
        every_row = torch.arange(r.input_ids.shape[0])  # [B]
        logits = loaded.model.get_output_embeddings()(
            _completion_hidden(loaded.model, r, every_row))
        log_p = torch.log_softmax(logits.float(), -1)  # [B, T, V]
    expected = -(log_p.exp() * log_p).sum(-1)  # [B, T]
    mask = r.completion_mask.bool()
    assert torch.allclose(r.entropy[mask], expected[mask], atol=1e-4)
    assert bool((r.entropy[~mask] == 0).all())
    assert float(r.entropy[mask].min()) >= 0.0
