"""Scoring a prompt's identical completions once: which rows are copies, how much a shared row
weighs in each recipe's gradient (hand-worked), and that every recipe's loss and gradients
equal those of scoring every full row."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from core.config import RunConfig
from core.data.tasks import TASKS, Example
from core.engine import rollout as rollout_module
from core.engine.recipes import RECIPES, RecipeBatch
from core.engine.rollout import (
    Rollout,
    distinct_completions,
    grade,
    position_ids,
    sample,
    score_tokens,
    span_confidence,
    with_rows,
)
from tests.test_rollout import _rollout, trained_looking_policy


def _grouped(completions: list[str], samples: int) -> Rollout:
    examples = [Example("1+1", "2")] * len(completions)
    return replace(_rollout(completions, examples), samples=samples)


def test_distinct_completions_pairs_copies_within_a_prompt_only() -> None:
    # Prompt 0: a, a, b; prompt 1: a, c, c. The "a" of prompt 1 is not prompt 0's "a".
    r = _grouped(["5", "5", "6", "5", "77", "77"], samples=3)
    first, inverse = distinct_completions(r)
    assert sorted(first.tolist()) == [0, 2, 3, 4]
    assert first[inverse].tolist() == [0, 0, 2, 3, 4, 4]  # each row's representative


def test_a_shared_row_weighs_as_its_copies_together_in_w_reinforce() -> None:
    """W-REINFORCE (lambda = 0.1): a group of 4 = three copies of a right completion x (3
    tokens with EOS) and one wrong y (2 tokens). The token mean runs over N = 3*3 + 2 = 11
    tokens, so d loss / d log pi of each of x's tokens is -3 * 0.1 / 11 (three copies) and of
    y's +1 / 11, with x scored once."""
    loaded = trained_looking_policy()
    r = _grouped(["12", "12", "12", "5"], samples=4)
    assert r.completion_mask.sum(-1).tolist() == [3, 3, 3, 2]
    kept: list[torch.Tensor] = []
    real_head = rollout_module.head_logprobs

    def keeping_head(*args, **kwargs):  # the distinct rows' log-probs [U * T], as computed
        logprobs, disparity = real_head(*args, **kwargs)
        logprobs.retain_grad()
        kept.append(logprobs)
        return logprobs, disparity

    config = RunConfig(threads=1, recipe="w-reinforce", group_size=4, wr_lambda=0.1)
    rollout_module.head_logprobs = keeping_head
    try:
        scores = score_tokens(loaded.model, r).logprobs  # [4, T]
    finally:
        rollout_module.head_logprobs = real_head
    batch = RecipeBatch(scores, scores.detach(), r.completion_mask.float(),
                        torch.tensor([1.0, 1.0, 1.0, 0.0]), torch.full((4,), 0.5),
                        torch.ones(4, dtype=torch.bool), 4)
    RECIPES["w-reinforce"].fn(batch, config).loss.backward()
    (distinct,) = kept
    t = r.completion_ids.shape[1]
    grad = distinct.grad.view(-1, t)  # [U, T]: the rows scored, x and y
    assert grad.shape[0] == 2
    first, _ = distinct_completions(r)
    x, y = (first == 0).nonzero().item(), (first == 3).nonzero().item()
    assert grad[x].tolist() == pytest.approx([-0.3 / 11] * 3, rel=1e-6)
    assert grad[y, :2].tolist() == pytest.approx([1 / 11] * 2, rel=1e-6)
    assert grad[y, 2:].abs().sum() == 0  # padding after y's EOS


def _full_row_scores(model, r: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
    """The textbook way, for reference: one forward pass over every full row; log pi [B, T]
    and RLSF's disparity p(y) - p(best other) [B, T]."""
    t = r.completion_ids.shape[1]
    out = model(input_ids=r.input_ids, attention_mask=r.attention_mask,
                position_ids=position_ids(r.attention_mask), logits_to_keep=t + 1)
    logp = torch.log_softmax(out.logits[:, :-1].float(), -1)  # [B, T, V]
    chosen = logp.gather(-1, r.completion_ids.unsqueeze(-1)).squeeze(-1)  # [B, T]
    with torch.no_grad():
        top2 = logp.topk(2, dim=-1)
        is_top = top2.indices[..., 0] == r.completion_ids
        other = torch.where(is_top, top2.values[..., 1], top2.values[..., 0])
        disparity = chosen.exp() - other.exp()
    return chosen, disparity


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_trains_alike_on_shared_and_full_rows(recipe: str) -> None:
    """At T = 0.5 most of a group repeats (whole groups too): the recipe's loss and every
    LoRA gradient are those of scoring each full row, whatever the recipe does per copy."""
    config = RunConfig(threads=1, recipe=recipe, group_size=6, rlsf_threshold=0.5)  # pairs
    loaded = trained_looking_policy(config, seed=3)
    model = loaded.model
    torch.manual_seed(3)
    r = sample(model, loaded.tokenizer, loaded.prompt_format, TASKS["add"].eval_set(6), 6,
               0.5, 10)
    first, inverse = distinct_completions(r)
    copies = torch.bincount(inverse).tolist()
    assert max(copies) == 6 and len(first) <= 18  # a whole group alike; half shared
    graded = grade(r, loaded.prompt_format, TASKS["add"], loaded.tokenizer)
    assert 0 < float(graded.correct.mean()) < 1
    template = RecipeBatch(r.logprobs, r.logprobs, r.completion_mask.float(), graded.correct,
                           graded.confidence, graded.well_formed, 6,
                           confidence_mask=graded.confidence_mask)
    spec = RECIPES[recipe]
    if spec.needs_reference(config):
        with torch.no_grad(), model.disable_adapter():
            template.ref_logprobs = _full_row_scores(model, r)[0]
    params = [p for p in model.parameters() if p.requires_grad]

    def update(score) -> tuple[float, list[torch.Tensor]]:
        rows = spec.rows_to_score(template, config)
        logprobs, disparity = score(r.select(rows))
        old = with_rows(r.logprobs, rows, logprobs.detach())
        batch = replace(template, logprobs=with_rows(old, rows, logprobs), old_logprobs=old)
        if spec.needs_span_confidence:
            batch.span_confidence = span_confidence(disparity, graded.answer_mask)
        loss = spec.fn(batch, config).loss
        loss.backward()
        grads = [p.grad.clone() for p in params]
        model.zero_grad(set_to_none=True)
        return float(loss.detach()), grads

    def shared(rows: Rollout) -> tuple[torch.Tensor, torch.Tensor | None]:
        s = score_tokens(model, rows, with_disparity=spec.needs_span_confidence)
        return s.logprobs, s.disparity

    loss_shared, grads_shared = update(shared)
    loss_full, grads_full = update(lambda rows: _full_row_scores(model, rows))
    assert loss_shared == pytest.approx(loss_full, rel=1e-5, abs=1e-7)
    total = torch.cat([g.flatten() for g in grads_full]).norm()
    assert total > 0
    diff = torch.cat([(a - b).flatten() for a, b in zip(grads_shared, grads_full, strict=True)])
    assert float(diff.norm() / total) < 1e-5
