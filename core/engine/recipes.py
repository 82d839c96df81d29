"""Reward recipes (docs/science.md, "Reward recipes"): one signature, one registry.

Each recipe maps a scored rollout to a loss to minimise, the per-sample reward it used,
and named components for the app's charts. The building blocks are small pure functions.
Shapes: B = prompts x G samples (groups contiguous), T = completion tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from core.config import RunConfig
from core.recipe_info import RECIPE_INFO, RecipeInfo

RLCR_FORMAT_PENALTY = -2.0  # RLCR's code: below every well-formed output's reward (>= -1)


@dataclass
class RecipeBatch:
    logprobs: torch.Tensor  # [B, T] current policy, carries the gradient
    old_logprobs: torch.Tensor  # [B, T] policy at rollout time (no grad)
    mask: torch.Tensor  # [B, T] float, 1 on completion tokens
    correct: torch.Tensor  # [B] float 0/1
    confidence: torch.Tensor  # [B] verbalized q, NaN where missing
    well_formed: torch.Tensor  # [B] bool
    group_size: int  # G
    ref_logprobs: torch.Tensor | None = None  # [B, T] adapter off; needed for KL and rlsf
    span_confidence: torch.Tensor | None = None  # [B] answer-span confidence; rlsf only
    confidence_mask: torch.Tensor | None = None  # [B, T] 1 on the stated confidence's tokens


@dataclass
class RecipeResult:
    loss: torch.Tensor  # scalar to minimise
    rewards: torch.Tensor  # [B] the per-sample signal the recipe optimises
    components: dict[str, float] = field(default_factory=dict)  # named parts, for charts


# --- pure building blocks ---------------------------------------------------------------

def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def grpo_advantages(rewards: torch.Tensor, group_size: int, scale: bool) -> torch.Tensor:
    """A = r - mean_group(r), optionally / (std_group + 1e-4).

    GRPO, Shao et al. 2024 (DeepSeekMath) sec. 4.1.2; RLCR's code uses the unscaled form.
    std is the unbiased sample std, as in TRL's GRPOTrainer.
    """
    groups = rewards.view(-1, group_size)  # [P, G]
    adv = groups - groups.mean(dim=1, keepdim=True)  # [P, G]
    if scale:
        adv = adv / (groups.std(dim=1, keepdim=True) + 1e-4)  # [P, G]
    return adv.reshape(-1)  # [B]


def policy_gradient_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor,
                         advantages: torch.Tensor, mask: torch.Tensor,
                         clip_eps: float) -> torch.Tensor:
    """Token-mean of -min(rho A, clip(rho, 1-eps, 1+eps) A), rho = pi / pi_old.

    `advantages` is per sample [B] or per token [B, T].
    PPO clip, Schulman et al. 2017, eq. 7. On the first pass over a batch rho = 1, and the
    gradient equals that of the plain token-mean of -A log pi (REINFORCE).
    """
    ratio = torch.exp(logprobs - old_logprobs)  # [B, T]
    adv = advantages if advantages.dim() == 2 else advantages.unsqueeze(1)  # [B, T] or [B, 1]
    per_token = -torch.minimum(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv)
    return masked_mean(per_token, mask)


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-mean KL(pi || ref) by the k3 estimator exp(d) - d - 1, d = log ref - log pi.

    Schulman 2020, "Approximating KL divergence"; as in GRPO (Shao et al. 2024, eq. 4).
    """
    d = ref_logprobs - logprobs  # [B, T]
    return masked_mean(torch.exp(d) - d - 1, mask)


def rlcr_reward(correct: torch.Tensor, confidence: torch.Tensor,
                well_formed: torch.Tensor) -> torch.Tensor:
    """r = c - (q - c)^2, and -2 for a format failure (Damani et al. 2025, RLCR)."""
    brier = (torch.nan_to_num(confidence) - correct) ** 2  # [B]
    return torch.where(well_formed, correct - brier, torch.full_like(correct, RLCR_FORMAT_PENALTY))


def confidence_token_advantages(correct: torch.Tensor, confidence: torch.Tensor,
                                well_formed: torch.Tensor, group_size: int) -> torch.Tensor:
    """Advantage of the confidence tokens under reward-to-go: only the Brier term -(q - c)^2.

    Correctness is settled before the confidence is written, so it is a valid,
    action-independent baseline for those tokens (Williams 1992; "reward-to-go",
    Sutton & Barto 2018 sec. 13.3): dropping it keeps the gradient unbiased and removes
    most of its variance. Centred on the group mean over well-formed samples; 0 elsewhere.
    """
    brier = -(torch.nan_to_num(confidence) - correct) ** 2  # [B]
    valid = well_formed.float().view(-1, group_size)  # [P, G]
    groups = brier.view(-1, group_size)  # [P, G]
    mean = (groups * valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp(min=1)
    return ((groups - mean) * valid).reshape(-1)  # [B]


def signed_advantages(correct: torch.Tensor, positive: float, negative: float) -> torch.Tensor:
    """A = +positive on correct samples, -negative on wrong ones, no baseline.

    Zhu et al. 2025 ("The Surprising Effectiveness of Negative Reinforcement"): PSR is
    (1, 0), NSR is (0, 1), W-REINFORCE is (lambda, 1).
    """
    return torch.where(correct > 0, torch.full_like(correct, positive),
                       torch.full_like(correct, -negative))


def dpo_pair_loss(seq_logratio: torch.Tensor, preferred: torch.Tensor,
                  beta: float) -> tuple[torch.Tensor, int]:
    """Mean over preferred pairs (i, j) of -log sigmoid(beta (h_i - h_j)), h = log pi/ref.

    DPO sigmoid loss, Rafailov et al. 2023, eq. 7. `seq_logratio` is [P, G]; `preferred`
    [P, G, G] marks i preferred over j within a prompt. No pairs: a zero loss on the graph.
    """
    margins = seq_logratio.unsqueeze(2) - seq_logratio.unsqueeze(1)  # [P, G, G]
    n_pairs = int(preferred.sum())
    if n_pairs == 0:
        return seq_logratio.sum() * 0.0, 0
    return -F.logsigmoid(beta * margins[preferred]).mean(), n_pairs


def confidence_pairs(span_confidence: torch.Tensor, group_size: int,
                     threshold: float) -> torch.Tensor:
    """RLSF's pairs: i preferred over j when s_i > s_j and s_i >= threshold (NaN never pairs)."""
    s = span_confidence.view(-1, group_size)  # [P, G]
    valid = ~torch.isnan(s)  # [P, G]
    s = torch.nan_to_num(s, nan=-torch.inf)
    better = s.unsqueeze(2) > s.unsqueeze(1)  # [P, G, G]
    return better & (s >= threshold).unsqueeze(2) & valid.unsqueeze(2) & valid.unsqueeze(1)


# --- recipes ----------------------------------------------------------------------------

def _with_pg(batch: RecipeBatch, config: RunConfig, rewards: torch.Tensor,
             advantages: torch.Tensor, components: dict[str, float]) -> RecipeResult:
    """Policy-gradient loss on the given advantages, plus the optional KL term."""
    pg = policy_gradient_loss(batch.logprobs, batch.old_logprobs, advantages, batch.mask,
                              config.clip_eps)
    components = {**components, "loss/pg": float(pg.detach()),
                  "advantage/abs_mean": float(advantages.abs().mean())}
    return _with_kl(batch, config, pg, rewards, components)


def _with_kl(batch: RecipeBatch, config: RunConfig, loss: torch.Tensor, rewards: torch.Tensor,
             components: dict[str, float]) -> RecipeResult:
    if config.kl_beta > 0:
        assert batch.ref_logprobs is not None, "kl_beta > 0 needs reference log-probs"
        kl = kl_k3(batch.logprobs, batch.ref_logprobs, batch.mask)
        components["loss/kl"] = float(kl.detach())
        loss = loss + config.kl_beta * kl
    return RecipeResult(loss, rewards.detach(), components)


def binary(batch: RecipeBatch, config: RunConfig) -> RecipeResult:
    rewards = batch.correct  # [B]
    adv = grpo_advantages(rewards, batch.group_size, config.scale_rewards)
    return _with_pg(batch, config, rewards, adv, {"reward/correct": float(rewards.mean())})


def rlcr(batch: RecipeBatch, config: RunConfig) -> RecipeResult:
    rewards = rlcr_reward(batch.correct, batch.confidence, batch.well_formed)  # [B]
    adv = grpo_advantages(rewards, batch.group_size, config.scale_rewards)  # [B]
    if config.rlcr_reward_to_go and batch.confidence_mask is not None:
        conf_adv = confidence_token_advantages(batch.correct, batch.confidence,
                                               batch.well_formed, batch.group_size)  # [B]
        conf = batch.confidence_mask.bool()  # [B, T]
        adv = torch.where(conf, conf_adv.unsqueeze(1), adv.unsqueeze(1))  # [B, T]
    ok = batch.well_formed
    brier = ((batch.confidence[ok] - batch.correct[ok]) ** 2).mean() if ok.any() else 0.0
    return _with_pg(batch, config, rewards, adv, {
        "reward/correct": float(batch.correct.mean()),
        "reward/brier": -float(brier),
        "reward/format_penalty": RLCR_FORMAT_PENALTY * float((~ok).float().mean()),
    })


def _signed(positive: Callable[[RunConfig], float], negative: float) -> Callable:
    def recipe(batch: RecipeBatch, config: RunConfig) -> RecipeResult:
        adv = signed_advantages(batch.correct, positive(config), negative)
        updated = (adv != 0).float().mean()
        return _with_pg(batch, config, batch.correct, adv, {
            "reward/correct": float(batch.correct.mean()), "samples/updated": float(updated)})
    return recipe


psr = _signed(lambda c: 1.0, 0.0)
nsr = _signed(lambda c: 0.0, 1.0)
w_reinforce = _signed(lambda c: c.wr_lambda, 1.0)


def rlsf(batch: RecipeBatch, config: RunConfig) -> RecipeResult:
    """Label-free: prefer more self-confident traces (RLSF), trained with DPO."""
    assert batch.ref_logprobs is not None and batch.span_confidence is not None
    preferred = confidence_pairs(batch.span_confidence, batch.group_size, config.rlsf_threshold)
    logratio = ((batch.logprobs - batch.ref_logprobs) * batch.mask).sum(-1)  # [B]
    loss, n_pairs = dpo_pair_loss(logratio.view(-1, batch.group_size), preferred,
                                  config.rlsf_beta)
    s = batch.span_confidence
    components = {"loss/dpo": float(loss.detach()), "rlsf/pairs": float(n_pairs),
                  "reward/span_confidence": float(s[~torch.isnan(s)].mean()) if
                  (~torch.isnan(s)).any() else 0.0}
    return _with_kl(batch, config, loss, torch.nan_to_num(s), components)


@dataclass(frozen=True)
class Recipe:
    info: RecipeInfo
    fn: Callable[[RecipeBatch, RunConfig], RecipeResult]

    @property
    def needs_span_confidence(self) -> bool:
        return self.info.needs_span_confidence

    def needs_reference(self, config: RunConfig) -> bool:
        return config.kl_beta > 0 or self.info.needs_span_confidence

    def rows_to_score(self, batch: RecipeBatch, config: RunConfig) -> torch.Tensor:
        """[B] bool: the rows the update needs log-probs with gradients for, whole groups.

        A policy-gradient loss is linear in log pi at ratio 1, so differentiating it once
        at a probe shows which rows carry any weight. The rest (a group whose rewards are all
        equal under a group baseline; every wrong sample under psr) add exactly zero to the
        loss and its gradient, and scoring them is wasted work. With a KL term or rlsf's
        DPO loss every row counts.
        """
        every_row = torch.ones(batch.mask.shape[0], dtype=torch.bool)  # [B]; rlsf: no labels
        if self.needs_reference(config):
            return every_row
        probe = torch.zeros_like(batch.mask, requires_grad=True)  # [B, T]
        result = self.fn(replace(batch, logprobs=probe, old_logprobs=probe.detach()), config)
        (grad,) = torch.autograd.grad(result.loss, probe, allow_unused=True)
        groups = torch.zeros(len(every_row) // batch.group_size, dtype=torch.bool)  # [P]
        if grad is not None:
            groups = (grad != 0).any(-1).view(-1, batch.group_size).any(-1).cpu()  # [P]
        groups[0] |= ~groups.any()  # one group even so: Adam steps on its momentum as before
        return groups.repeat_interleave(batch.group_size)  # [B]


_FNS = {"binary": binary, "rlcr": rlcr, "psr": psr, "nsr": nsr, "w-reinforce": w_reinforce,
        "rlsf": rlsf}
assert set(_FNS) == set(RECIPE_INFO), "core.recipe_info and core.engine.recipes disagree"
RECIPES: dict[str, Recipe] = {name: Recipe(RECIPE_INFO[name], fn) for name, fn in _FNS.items()}
