"""Tests for core.engine.recipes against hand-worked values (docs/science.md, recipes).

The arithmetic behind every expected number is written out in the comments.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from core.config import RunConfig
from core.engine.recipes import (
    RECIPES,
    RLCR_FORMAT_PENALTY,
    RecipeBatch,
    confidence_pairs,
    confidence_token_advantages,
    dpo_pair_loss,
    grpo_advantages,
    kl_k3,
    masked_mean,
    policy_gradient_loss,
    rlcr_reward,
    signed_advantages,
)

NAN = float("nan")
LN2 = math.log(2.0)


def t(values, **kw) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, **kw)


def close(actual, expected, tol: float = 1e-9) -> bool:
    if isinstance(actual, torch.Tensor):
        actual = actual.detach()
    return abs(float(actual) - float(expected)) <= tol


# ------------------------------------------------------------------ grpo_advantages


def test_grpo_advantages_unscaled():
    # G = 4. group 0: r = 1,0,0,0, mean 0.25 -> A = .75, -.25, -.25, -.25
    #        group 1: r = 1,1,0,0, mean 0.5  -> A = .5, .5, -.5, -.5
    adv = grpo_advantages(t([1, 0, 0, 0, 1, 1, 0, 0]), 4, scale=False)
    assert torch.allclose(adv, t([0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5]))


def test_grpo_advantages_scaled_uses_unbiased_std_plus_1e4():
    # group 0: deviations .75, -.25 x3; unbiased var = (.5625 + 3 * .0625) / 3 = .25, std .5
    #   (the biased std would be sqrt(.1875) = .433, so the test tells them apart)
    # group 1: deviations +-.5; unbiased var = 4 * .25 / 3 = 1/3, std = 0.57735
    adv = grpo_advantages(t([1, 0, 0, 0, 1, 1, 0, 0]), 4, scale=True)
    s1 = math.sqrt(1 / 3)
    expected = t([0.75 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001,
                  0.5 / (s1 + 1e-4), 0.5 / (s1 + 1e-4), -0.5 / (s1 + 1e-4), -0.5 / (s1 + 1e-4)])
    assert torch.allclose(adv, expected, rtol=0, atol=1e-9)


def test_grpo_advantages_constant_group_is_zero_not_nan():
    # all-equal rewards: deviation 0, std 0 -> 0 / (0 + 1e-4) = 0
    adv = grpo_advantages(t([1, 1, 0, 0]), 2, scale=True)
    assert torch.equal(adv, t([0, 0, 0, 0]))


def test_grpo_advantages_groups_are_contiguous():
    # G = 2: groups are (r0, r1) and (r2, r3), not (r0, r2) and (r1, r3)
    # (1, 0) -> +.5, -.5 ; (0, 0) -> 0, 0
    adv = grpo_advantages(t([1, 0, 0, 0]), 2, scale=False)
    assert torch.equal(adv, t([0.5, -0.5, 0, 0]))


# ------------------------------------------------------------- policy_gradient_loss


MASK = t([[1, 1], [1, 0], [1, 0], [1, 1]])  # tokens per row 2, 1, 1, 2 -> 6 in all
LOGPROBS = [[-0.1, -0.2], [-0.3, -0.4], [-0.5, -0.6], [-0.7, -0.8]]
# log ref - log pi for the KL tests (k3 mean over unmasked tokens, see test_kl_k3_hand_value)
KL_D = [[LN2, 0], [LN2, 5], [0, 5], [LN2, -LN2]]
KL_MEAN = (2.5 - 2 * LN2) / 6  # 0.185618


def test_policy_gradient_loss_at_ratio_one_is_minus_token_mean_advantage():
    # old = current, so rho = 1 and the loss is -sum_b A_b n_b / sum_b n_b
    # A = 1, -2, 3, 0.5 ; n = 2, 1, 1, 2 -> -(2 - 2 + 3 + 1) / 6 = -4/6
    lp = t(LOGPROBS, requires_grad=True)
    loss = policy_gradient_loss(lp, lp.detach(), t([1, -2, 3, 0.5]), MASK, clip_eps=0.2)
    assert close(loss, -4 / 6)


def test_policy_gradient_gradient_equals_reinforce_token_mean():
    # d/d logpi of token-mean(-A logpi) = -A_b * mask_bt / 6
    a = t([1, -2, 3, 0.5])
    lp = t(LOGPROBS, requires_grad=True)
    policy_gradient_loss(lp, lp.detach(), a, MASK, clip_eps=0.2).backward()
    reference = t(LOGPROBS, requires_grad=True)
    masked_mean(-a.unsqueeze(1) * reference, MASK).backward()
    expected = t([[-1 / 6, -1 / 6], [2 / 6, 0], [-3 / 6, 0], [-0.5 / 6, -0.5 / 6]])
    assert torch.allclose(lp.grad, expected)
    assert torch.allclose(lp.grad, reference.grad)


def test_policy_gradient_per_token_advantages():
    # A given per token [B, T]: -(1*1 + 2*1 + 3*0 + 4*1) / 3 = -7/3 (mask drops the 3)
    lp = t([[-0.1, -0.2], [-0.3, -0.4]], requires_grad=True)
    mask = t([[1, 1], [0, 1]])
    loss = policy_gradient_loss(lp, lp.detach(), t([[1, 2], [3, 4]]), mask, clip_eps=0.2)
    assert close(loss, -7 / 3)


def test_policy_gradient_clip():
    # old log pi = 0, so rho = exp(log pi). eps = 0.2: clip range [0.8, 1.2]. N = 4 tokens.
    #   row 0, A = +1: rho 1.5 -> min(1.5, 1.2) = 1.2  (clipped, term -1.2, grad 0)
    #                  rho 0.5 -> min(0.5, 0.8) = 0.5  (unclipped, term -0.5)
    #   row 1, A = -1: rho 1.5 -> min(-1.5, -1.2) = -1.5 (unclipped, term +1.5)
    #                  rho 0.5 -> min(-0.5, -0.8) = -0.8 (clipped, term +0.8, grad 0)
    # loss = (-1.2 - 0.5 + 1.5 + 0.8) / 4 = 0.15
    # unclipped grads: d(-rho A)/d log pi / N = -rho A / 4: row 0 tok 1 -0.125, row 1 tok 0 +0.375
    lp = torch.log(t([[1.5, 0.5], [1.5, 0.5]])).requires_grad_()
    loss = policy_gradient_loss(lp, torch.zeros(2, 2, dtype=torch.float64), t([1, -1]),
                                torch.ones(2, 2, dtype=torch.float64), clip_eps=0.2)
    assert close(loss, 0.15)
    loss.backward()
    assert torch.allclose(lp.grad, t([[0, -0.125], [0.375, 0]]))


# ------------------------------------------------------------------------- kl_k3


def test_kl_k3_hand_value():
    # k3 = exp(d) - d - 1, d = log ref - log pi
    #   d = ln 2:  2 - ln 2 - 1 = 1 - ln 2 = 0.306853
    #   d = -ln 2: 0.5 + ln 2 - 1 = ln 2 - 0.5 = 0.193147   (not symmetric in d)
    #   d = 0: 0
    # unmasked tokens d: [ln2, 0], [ln2], [0], [ln2, -ln2]; the masked entries (5) are ignored
    # sum = 3 (1 - ln 2) + (ln 2 - 0.5) = 2.5 - 2 ln 2 = 1.113706 -> mean over 6 = 0.185618
    lp = t(LOGPROBS)
    assert close(kl_k3(lp, lp + t(KL_D), MASK), (2.5 - 2 * LN2) / 6)
    assert close(kl_k3(lp, lp, MASK), 0.0)
    one = t([[-0.5]])
    assert close(kl_k3(one, one + LN2, t([[1.0]])), 1 - LN2)
    assert close(kl_k3(one, one - LN2, t([[1.0]])), LN2 - 0.5)


# ------------------------------------------------------------------------ rlcr reward


def test_rlcr_reward_hand_values():
    # c=1, q=.75: 1 - .0625 = .9375 ; c=0, q=.75: 0 - .5625 = -.5625
    # format failure: -2 ; c=0, q=0: 0 - 0 = 0 ; c=1, q=1: 1 ; c=0, q=1: -1
    r = rlcr_reward(t([1, 0, 1, 0, 1, 0]), t([0.75, 0.75, NAN, 0.0, 1.0, 1.0]),
                    torch.tensor([True, True, False, True, True, True]))
    assert torch.allclose(r, t([0.9375, -0.5625, -2.0, 0.0, 1.0, -1.0]))
    assert RLCR_FORMAT_PENALTY == -2.0


def test_rlcr_format_failure_gets_penalty_even_when_correct():
    # a correct answer with no confidence is still a format failure
    r = rlcr_reward(t([1.0]), t([NAN]), torch.tensor([False]))
    assert torch.equal(r, t([-2.0]))


def test_confidence_token_advantages_hand_values():
    # Brier-only reward -(q - c)^2, centred over the well-formed samples of each group:
    # group 0: -(0.25)^2 = -.0625, -(0.45)^2 = -.2025, mean -.1325 -> +.07, -.07
    # group 1: only row 3 is well formed -> it is its own mean -> 0; the failure gets 0
    adv = confidence_token_advantages(t([1, 0, 1, 1]), t([0.75, 0.45, NAN, 0.95]),
                                      torch.tensor([True, True, False, True]), 2)
    assert torch.allclose(adv, t([0.07, -0.07, 0, 0]))


# ----------------------------------------------------------------- signed advantages


@pytest.mark.parametrize(("positive", "negative", "expected"), [
    (1.0, 0.0, [1, 0, 1, 0]),  # psr: +1 on correct, no update on wrong
    (0.0, 1.0, [0, -1, 0, -1]),  # nsr: -1 on wrong, no update on correct
    (0.1, 1.0, [0.1, -1, 0.1, -1]),  # w-reinforce, lambda = 0.1
])
def test_signed_advantages(positive, negative, expected):
    adv = signed_advantages(t([1, 0, 1, 0]), positive, negative)
    assert torch.allclose(adv, t(expected))


# ------------------------------------------------------------------ confidence_pairs


def test_confidence_pairs_threshold_strict_and_nan():
    # G = 3, threshold 0.9
    # group 0: s = .95, .90, .50 -> (0,1) .95>.9, (0,2), (1,2): .90 >= .9 is eligible
    # group 1: s = .95, .95, NaN -> ties never pair (strictly greater), NaN never pairs
    s = t([0.95, 0.90, 0.50, 0.95, 0.95, NAN])
    pairs = confidence_pairs(s, 3, threshold=0.9)
    expected = torch.zeros(2, 3, 3, dtype=torch.bool)
    expected[0, 0, 1] = expected[0, 0, 2] = expected[0, 1, 2] = True
    assert torch.equal(pairs, expected)


def test_confidence_pairs_threshold_excludes_low_winners():
    # threshold .96: no sample reaches it, so no pairs even though s differ
    s = t([0.95, 0.90, 0.50, 0.95, 0.95, NAN])
    assert not confidence_pairs(s, 3, threshold=0.96).any()
    # threshold 0: every strictly-greater pair, still none involving NaN
    pairs = confidence_pairs(s, 3, threshold=0.0)
    assert int(pairs.sum()) == 3
    assert not pairs[1].any()


# --------------------------------------------------------------------- dpo_pair_loss


def test_dpo_pair_loss_hand_value_and_gradient():
    # one pair (0 over 1), margin h0 - h1 = 1, beta .5:
    # -log sigmoid(.5) = log(1 + e^-.5) = 0.474077
    # d/dh0 = -beta * sigmoid(-beta m) = -.5 * .377541 = -.188770 ; d/dh1 = +.188770
    h = t([[1.0, 0.0]], requires_grad=True)
    preferred = torch.tensor([[[False, True], [False, False]]])
    loss, n = dpo_pair_loss(h, preferred, beta=0.5)
    assert n == 1
    assert close(loss, math.log1p(math.exp(-0.5)))
    assert close(loss, 0.4740769841801067)
    loss.backward()
    g = 0.5 / (1 + math.exp(0.5))
    assert torch.allclose(h.grad, t([[-g, g]]))


def test_dpo_pair_loss_is_a_mean_over_pairs():
    # pairs (0,1) margin 2 and (1,0) margin -2, beta 1:
    # (softplus(-2) + softplus(2)) / 2 = log((1 + e^-2)(1 + e^2)) / 2 = log(2 + 2 cosh 2) / 2
    h = t([[2.0, 0.0]])
    preferred = torch.tensor([[[False, True], [True, False]]])
    loss, n = dpo_pair_loss(h, preferred, beta=1.0)
    assert n == 2
    assert close(loss, math.log(2 + 2 * math.cosh(2.0)) / 2)


def test_dpo_zero_pairs_is_zero_loss_on_the_graph():
    h = t([[0.3, -0.1]], requires_grad=True)
    loss, n = dpo_pair_loss(h, torch.zeros(1, 2, 2, dtype=torch.bool), beta=0.2)
    assert n == 0
    assert float(loss.detach()) == 0.0
    assert loss.grad_fn is not None
    loss.backward()  # must not raise: the optimiser step runs on it
    assert torch.equal(h.grad, t([[0.0, 0.0]]))


# ------------------------------------------------------- every recipe, end to end
#
# One hand-built batch: B = 4 (P = 2 prompts x G = 2), T = 2.
#   correct     = 1, 0 | 1, 1
#   confidence  = .75, .45 | NaN, .95      (row 2 is a format failure)
#   mask        = [1,1], [1,0] | [1,0], [1,1]  -> tokens per row n = 2, 1, 1, 2; N = 6
# rho = 1 (old = current), so every policy-gradient loss is -sum_b A_b n_b / 6.

CORRECT = [1.0, 0.0, 1.0, 1.0]
CONFIDENCE = [0.75, 0.45, NAN, 0.95]
WELL_FORMED = [True, True, False, True]
SPAN = [0.95, 0.50, 0.92, 0.91]
# log pi - log ref per token; the 9s sit on masked tokens and must not count.
# sequence log-ratios h = .5, -.5 | 0, 1
DELTA = [[0.25, 0.25], [-0.5, 9.0], [0.0, 9.0], [0.5, 0.5]]


def make_batch(ref: str | None = None, confidence_mask: bool = False) -> RecipeBatch:
    lp = t(LOGPROBS, requires_grad=True)
    ref_lp = None
    if ref == "dpo":
        ref_lp = lp.detach() - t(DELTA)
    elif ref == "kl":
        ref_lp = lp.detach() + t(KL_D)
    return RecipeBatch(
        logprobs=lp, old_logprobs=lp.detach().clone(), mask=MASK.clone(),
        correct=t(CORRECT), confidence=t(CONFIDENCE),
        well_formed=torch.tensor(WELL_FORMED), group_size=2, ref_logprobs=ref_lp,
        span_confidence=t(SPAN),
        confidence_mask=t([[0, 1], [0, 0], [0, 0], [0, 1]]) if confidence_mask else None)


def rlcr_expected():
    # rewards: .9375 (1 - .25^2), -.2025 (0 - .45^2), -2 (format), .9975 (1 - .05^2)
    # group 0 mean .3675 -> A = +.57, -.57 ; group 1 mean -.50125 -> A = -1.49875, +1.49875
    # loss = -(.57*2 - .57*1 - 1.49875*1 + 1.49875*2) / 6 = -(.57 + 1.49875) / 6
    return -(0.57 + 1.49875) / 6


DPO_EXPECTED = math.log(2 + 2 * math.cosh(0.2)) / 2
# rlsf, threshold .9: group 0 s = .95, .50 -> pair (0, 1), margin h0 - h1 = 1
#                     group 1 s = .92, .91 -> pair (2, 3), margin h2 - h3 = -1
# beta .2: (softplus(-.2) + softplus(.2)) / 2 = log(2 + 2 cosh .2) / 2 = 0.698139

# recipe -> (config overrides, expected loss, expected rewards, expected components)
CASES = {
    # A = r - mean: group (1,0) -> +.5, -.5 ; group (1,1) -> 0, 0
    # loss = -(.5*2 - .5*1) / 6 = -1/12 ; |A| mean = (.5 + .5) / 4 = .25
    "binary": ({}, -1 / 12, CORRECT,
               {"reward/correct": 0.75, "loss/pg": -1 / 12, "advantage/abs_mean": 0.25}),
    "rlcr": ({"rlcr_reward_to_go": False}, rlcr_expected(), [0.9375, -0.2025, -2.0, 0.9975],
             {"reward/correct": 0.75, "loss/pg": rlcr_expected(),
              # Brier over the 3 well-formed rows: (.0625 + .2025 + .0025) / 3 = .0891667
              "reward/brier": -(0.0625 + 0.2025 + 0.0025) / 3,
              "reward/format_penalty": -2 * 0.25}),  # 1 failure in 4
    # A = 1, 0, 1, 1 -> -(2 + 0 + 1 + 2) / 6 = -5/6 ; 3 of 4 samples updated
    "psr": ({}, -5 / 6, CORRECT,
            {"reward/correct": 0.75, "samples/updated": 0.75, "loss/pg": -5 / 6}),
    # A = 0, -1, 0, 0 -> -(-1 * 1) / 6 = 1/6 ; 1 of 4 updated
    "nsr": ({}, 1 / 6, CORRECT,
            {"reward/correct": 0.75, "samples/updated": 0.25, "loss/pg": 1 / 6}),
    # lambda .5: A = .5, -1, .5, .5 -> -(1 - 1 + .5 + 1) / 6 = -1.5/6 = -.25
    "w-reinforce": ({"wr_lambda": 0.5}, -0.25, CORRECT,
                    {"reward/correct": 0.75, "samples/updated": 1.0, "loss/pg": -0.25,
                     "advantage/abs_mean": (0.5 + 1 + 0.5 + 0.5) / 4}),
    # rewards = the span confidences; mean (.95 + .5 + .92 + .91) / 4 = .82
    "rlsf": ({}, DPO_EXPECTED, SPAN,
             {"loss/dpo": DPO_EXPECTED, "rlsf/pairs": 2.0, "reward/span_confidence": 0.82}),
}


def test_every_registered_recipe_has_a_hand_worked_case():
    assert set(RECIPES) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_recipe_end_to_end(name):
    overrides, loss, rewards, components = CASES[name]
    config = RunConfig(recipe=name, **overrides)
    batch = make_batch(ref="dpo" if name == "rlsf" else None)
    result = RECIPES[name].fn(batch, config)
    assert close(result.loss, loss), (float(result.loss.detach()), loss)
    assert torch.allclose(result.rewards, t(rewards))
    assert result.rewards.grad_fn is None
    for key, value in components.items():
        assert key in result.components, key
        assert close(result.components[key], value), (key, result.components[key], value)
    assert "loss/kl" not in result.components  # kl_beta = 0 by default
    assert result.loss.requires_grad
    result.loss.backward()
    assert batch.logprobs.grad is not None


def test_w_reinforce_default_lambda_is_0_1():
    # A = .1, -1, .1, .1 -> -(.2 - 1 + .1 + .2) / 6 = .5 / 6 = 1/12
    config = RunConfig(recipe="w-reinforce")
    assert config.wr_lambda == 0.1
    assert close(RECIPES["w-reinforce"].fn(make_batch(), config).loss, 1 / 12)


def test_binary_recipe_gradient():
    # A = .5, -.5, 0, 0: grad = -A_b mask_bt / 6
    batch = make_batch()
    RECIPES["binary"].fn(batch, RunConfig(recipe="binary")).loss.backward()
    expected = t([[-0.5 / 6, -0.5 / 6], [0.5 / 6, 0], [0, 0], [0, 0]])
    assert torch.allclose(batch.logprobs.grad, expected)


def test_binary_recipe_scale_rewards():
    # group (1, 0): std = sqrt(.5) -> A = +-.5 / (.707107 + 1e-4); group (1, 1): 0
    # loss = -(2A - A) / 6 = -A / 6
    a = 0.5 / (math.sqrt(0.5) + 1e-4)
    result = RECIPES["binary"].fn(make_batch(), RunConfig(recipe="binary", scale_rewards=True))
    assert close(result.loss, -a / 6)


def test_rlcr_reward_to_go_credits_confidence_tokens_with_brier_only():
    # Token advantages: the confidence token gets the Brier-only advantage, others the GRPO A.
    #   row 0: [ .57,  .07 ]     (conf token: see test_confidence_token_advantages_hand_values)
    #   row 1: [-.57,  masked]
    #   row 2: [-1.49875, masked]
    #   row 3: [1.49875, 0]      (only well-formed row of its group -> Brier advantage 0)
    # loss = -(.57 + .07 - .57 - 1.49875 + 1.49875 + 0) / 6 = -.07 / 6
    config = RunConfig(recipe="rlcr")
    assert config.rlcr_reward_to_go
    result = RECIPES["rlcr"].fn(make_batch(confidence_mask=True), config)
    assert close(result.loss, -0.07 / 6)
    assert torch.allclose(result.rewards, t([0.9375, -0.2025, -2.0, 0.9975]))
    # without a confidence mask the recipe falls back to the whole-reward advantage
    fallback = RECIPES["rlcr"].fn(make_batch(confidence_mask=False), config)
    assert close(fallback.loss, rlcr_expected())


@pytest.mark.parametrize("name", ["binary", "psr", "rlsf"])
def test_kl_beta_adds_beta_times_k3(name):
    # k3 mean over the 6 unmasked tokens = (2.5 - 2 ln 2) / 6 = 0.185618 (test_kl_k3_hand_value)
    # beta = .3: loss = base + .3 * 0.185618 ; binary base -1/12, psr base -5/6
    # rlsf has its own reference for the DPO ratio; here ref = pi + KL_D, so h = -sum d:
    #   h = -ln2, -ln2 | 0, 0 ; pairs (0,1) and (2,3) both have margin 0
    #   dpo = softplus(0) = ln 2
    overrides, base, _, _ = CASES[name]
    if name == "rlsf":
        base = LN2
    config = RunConfig(recipe=name, kl_beta=0.3, **overrides)
    assert RECIPES[name].needs_reference(config)
    result = RECIPES[name].fn(make_batch(ref="kl"), config)
    assert close(result.components["loss/kl"], KL_MEAN)
    assert close(result.loss, base + 0.3 * KL_MEAN), (float(result.loss.detach()), base)


def test_rlsf_with_no_pairs_returns_zero_loss_with_grad_fn():
    # threshold 1.0: no span confidence reaches it, so no pairs
    config = RunConfig(recipe="rlsf", rlsf_threshold=1.0)
    batch = make_batch(ref="dpo")
    result = RECIPES["rlsf"].fn(batch, config)
    assert float(result.loss.detach()) == 0.0
    assert result.loss.grad_fn is not None
    assert result.components["rlsf/pairs"] == 0.0
    result.loss.backward()
    assert torch.equal(batch.logprobs.grad, torch.zeros(4, 2, dtype=torch.float64))


def test_recipe_reference_needs():
    assert RECIPES["rlsf"].needs_span_confidence
    assert RECIPES["rlsf"].needs_reference(RunConfig(recipe="rlsf"))
    assert not RECIPES["binary"].needs_span_confidence
    assert not RECIPES["binary"].needs_reference(RunConfig())
    assert RECIPES["binary"].needs_reference(RunConfig(kl_beta=0.1))


class _Unreadable:
    """Stands in for the correctness labels: any use of it fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"rlsf read the correctness labels (.{name})")

    def __getitem__(self, key):
        raise AssertionError("rlsf read the correctness labels (indexing)")

    def __array__(self, *args, **kwargs):
        raise AssertionError("rlsf read the correctness labels (as an array)")

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        raise AssertionError(f"rlsf read the correctness labels ({func.__name__})")


@pytest.mark.parametrize("kl_beta", [0.0, 0.3])
def test_rlsf_loss_never_reads_correctness(kl_beta):
    """rlsf is label-free: its loss, its rows and its reward are computed with the labels
    replaced by an object that fails on any use, and equal the hand-worked values."""
    config = RunConfig(recipe="rlsf", kl_beta=kl_beta)
    batch = make_batch(ref="dpo")
    blind = replace(batch, correct=_Unreadable())
    assert bool(RECIPES["rlsf"].rows_to_score(blind, config).all())
    result = RECIPES["rlsf"].fn(blind, config)
    expected = RECIPES["rlsf"].fn(make_batch(ref="dpo"), config)
    assert close(result.loss, float(expected.loss.detach()))
    if kl_beta == 0.0:
        assert close(result.loss, DPO_EXPECTED)
    assert torch.allclose(result.rewards, t(SPAN))
    result.loss.backward()
    assert blind.logprobs.grad is not None
