"""Reading completions: masks after EOS, answer spans as token masks, answer probability."""

from __future__ import annotations

import math

import torch

from core.formats import COMPACT
from core.pretrain import build_tokenizer
from core.rollout import Rollout, answer_probability, grade, span_confidence
from core.tasks import TASKS, Example

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


def test_sampling_logprobs_match_a_scoring_pass() -> None:
    """Evaluation trusts the log-probs kept while sampling; they equal a fresh forward pass."""
    from core.config import RunConfig
    from core.modeling import load_policy
    from core.rollout import sample, score_tokens

    loaded = load_policy(RunConfig(threads=1))
    torch.manual_seed(0)
    examples = TASKS["add"].eval_set(8)
    r = sample(loaded.model, loaded.tokenizer, loaded.prompt_format, examples, 4, 1.0, 10,
               with_logprobs=True)
    with torch.inference_mode():
        scored = score_tokens(loaded.model, r).logprobs
    mask = r.completion_mask.bool()
    assert torch.allclose(r.logprobs[mask], scored[mask], atol=1e-4)
