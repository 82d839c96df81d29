"""The named experiments `python -m core experiment NAME` runs: what each trains and checks.

An experiment is data: its recipes and seeds, the preset every run shares (flags override it
for all runs alike), the question it answers, the targets it checks on the summary, and the
report sections it shows. To add one, write its targets (a function of the summary, see
`core.experiments.targets`) and add an `Experiment` to `EXPERIMENTS`; the orchestrator
(`core.experiments.orchestrator`), the CLI's choices and --help, and the report follow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.config import EMBEDDED_MODEL, PRESETS
from core.experiments import consistency
from core.experiments.claim_targets import (
    CHAINED_ARM,
    REWARD_ARM,
    calibration_targets,
    consistency_targets,
    coverage_targets,
    judges_targets,
    self_feedback_targets,
)
from core.experiments.targets import TargetResult


@dataclass(frozen=True)
class Chain:
    """An arm whose run starts from the end of another arm's run of the same seed
    (`init_from`): it is launched once that run has finished."""
    arm: str  # its name in the summary and the report
    recipe: str
    after: str  # the arm it starts from


@dataclass(frozen=True)
class MoreClaim:
    """A further claim an experiment's runs test, beside its own (its card on the board)."""
    key: str  # unique among claims: the board's widget keys
    title: str
    statement: str  # what the literature reports, with its figure
    source: str
    decides: tuple[str, ...]  # the target keys that decide it


@dataclass(frozen=True)
class Variant:
    """An arm that trains the experiment's one recipe with settings of its own on top of the
    shared ones (the judges experiment: one reward source per arm)."""
    arm: str  # its name in the summary and the report, and the runs' `arm_key` label
    settings: dict[str, Any]


@dataclass(frozen=True)
class Experiment:
    name: str  # the CLI's name for it; also the output folder's prefix
    title: str  # the report's heading
    question: str  # what it answers, in one sentence
    recipes: tuple[str, ...]
    preset: str  # a core.config preset shared by every run
    targets: Callable[[dict[str, Any]], Sequence[TargetResult]]
    seeds: tuple[int, ...] = (0, 1, 2)
    task: str = "add"
    extra: dict[str, Any] = field(default_factory=dict)  # settings on top of the preset
    # Report sections in page order, names from core.experiments.report.SECTIONS; None: all.
    sections: tuple[str, ...] | None = None
    chains: tuple[Chain, ...] = ()  # arms that start where another arm's run ended
    claim: str = ""  # what the literature reports, for the report and the claims board
    source: str = ""  # where the claim comes from
    claim_title: str = ""  # the claim's name on the board; empty: the title
    # Keys of the targets that decide the claim's verdict; empty: every judged target.
    decides: tuple[str, ...] = ()
    more_claims: tuple[MoreClaim, ...] = ()  # further claims the same runs test
    variants: tuple[Variant, ...] = ()  # arms of the one recipe with their own settings
    arm_key: str = "recipe"  # what the summary's runs call their arm (variants: e.g. judge)
    # A phase after the runs end, (summary, runs folder, output folder, progress stream) ->
    # what the summary gains; the targets are checked after it. None: training only.
    measure: Callable[..., dict[str, Any]] | None = None
    # summary.csv from the summary's `table` with these columns; empty: per recipe and metric.
    table_columns: tuple[str, ...] = ()

    @property
    def arms(self) -> tuple[str, ...]:
        """Every arm: the variants when there are any; else the recipes, then the chained
        arms."""
        if self.variants:
            return tuple(v.arm for v in self.variants)
        return self.recipes + tuple(c.arm for c in self.chains)

    def chain(self, arm: str) -> Chain | None:
        return next((c for c in self.chains if c.arm == arm), None)

    def variant(self, arm: str) -> Variant | None:
        return next((v for v in self.variants if v.arm == arm), None)

    @property
    def settings(self) -> dict[str, Any]:
        """The settings every run shares before command-line overrides (recorded in the
        summary as `experiment_settings`)."""
        return {**PRESETS[self.preset], **self.extra}

    def base_values(self) -> dict[str, Any]:
        """RunConfig values shared by every run: the embedded model, then the settings."""
        return {"model": EMBEDDED_MODEL, **self.settings}


EXPERIMENTS: dict[str, Experiment] = {
    "classic": Experiment(
        name="classic",
        title="Classic experiment",
        question=("Can the standard recipe — log-likelihood training plus a binary right/wrong "
                  "reward — give a model that knows what it knows: whose stated confidence "
                  "matches its accuracy?"),
        recipes=("binary", "rlcr", "psr", "nsr", "w-reinforce", "rlsf"),
        preset="classic",
        targets=calibration_targets,
        claim=("A binary right/wrong reward raises accuracy but leaves the stated confidence "
               "blind (AUROC ≈ 0.5) and overconfident; a proper scoring rule on the stated "
               "confidence (RLCR, reward c − (q − c)²) makes it calibrated and informative "
               "without costing accuracy. Published (Qwen2.5-7B, HotpotQA): RLVR accuracy "
               "0.63 / ECE 0.37 against RLCR 0.62 / 0.03."),
        source="Damani et al. 2025, \"Beyond Binary Rewards\" (RLCR)",
        claim_title="Calibration: binary leaves stated confidence blind, RLCR informs it",
        # psr and nsr's coverage targets are the coverage experiment's claim.
        decides=("binary", "rlcr", "answer_prob"),
        more_claims=(MoreClaim(
            key="classic-posthoc",
            title="Post-hoc recalibration fixes the numbers, not the knowledge",
            statement=("A monotone map fitted after training (isotonic regression on held-out "
                       "answers) closes most of a reward-trained model's calibration gap at no "
                       "training cost: on CommonsenseQA, ECE 24.4 for RLVR and 16.0 for "
                       "calibration-aware GRPO against 4.8 for GRPO + isotonic. Being "
                       "monotone, it keeps the ranking of confidences, so it cannot make a "
                       "blind confidence (AUROC ≈ 0.5) tell right from wrong."),
            source="Yaldiz et al. 2026 (arXiv 2601.13284); Zadrozny & Elkan 2002 (isotonic)",
            decides=("posthoc_numbers", "posthoc_knowledge")),),
    ),
    # The embedded model already solves most two-digit sums (greedy 0.85, Pass@64 1.0), so
    # RL mostly redistributes probability mass; n = 64 samples take Pass@k to k = 64. The
    # quick preset's 100 steps at lr 1e-3: on trial seed 100 (300 steps) psr's entropy fell
    # from the first evaluation on and fell faster than nsr's already by step 50-100.
    "coverage": Experiment(
        name="coverage",
        title="Coverage: PSR narrows, NSR keeps",
        question=("Does reinforcing only the correct samples (PSR) sharpen the model — Pass@1 "
                  "up, Pass@k at large k down, token entropy collapsing — while training only "
                  "on the wrong ones (NSR) keeps the spread?"),
        recipes=("binary", "psr", "nsr", "w-reinforce"),
        preset="quick",
        task="add2",
        extra={"eval_samples": 64, "eval_every": 50},
        targets=coverage_targets,
        sections=("claim", "settings", "targets", "metrics", "spread", "curves", "runs"),
        claim=("PSR raises Pass@1 but lowers Pass@k at large k; NSR keeps Pass@k across the "
               "spectrum. On MATH (Qwen2.5-Math-7B) PSR falls below the base model for "
               "k > 8, Pass@256 91.2 against 96.9; PSR's token entropy collapses fast while "
               "NSR's stays near the base model's."),
        source=("Zhu et al. 2025, \"The Surprising Effectiveness of Negative Reinforcement "
                "in LLM Reasoning\""),
    ),
    # Settings chosen on trial seed 100: at lr 1e-3 rlsf collapses (accuracy and format to
    # 0); at lr 1e-4 its held-out accuracy rose and its format held over 50 steps, with or
    # without a KL anchor (beta 0.1 changed nothing, KL < 0.003), so no anchor. DPO beta 0.2
    # and pairs with confidence >= 0.9 as RLSF's code does. The quick preset otherwise, and
    # the same settings for the binary run the chained arm starts from.
    "self-feedback": Experiment(
        name="self-feedback",
        title="Self-feedback: RLSF improves without labels",
        question=("Can a model improve, and undo the miscalibration a reward run gave it, by "
                  "preferring its own more confident answers — with no labels at all?"),
        recipes=(REWARD_ARM, "rlsf"),
        chains=(Chain(CHAINED_ARM, "rlsf", REWARD_ARM),),
        preset="quick",
        extra={"lr": 1e-4},
        targets=self_feedback_targets,
        sections=("claim", "settings", "targets", "metrics", "monitor", "curves",
                  "reliability", "runs"),
        claim=("Preference pairs ranked by the model's own confidence in its answer span, "
               "trained with DPO, improve reasoning and restore the calibration that reward "
               "training damaged, without labels (code defaults: DPO β 0.2, lr 1e-6, LoRA r "
               "8, pairs with conf_i ≥ 0.9 and conf_i > conf_j)."),
        source="van Niekerk et al. 2025, RLSF (reinforcement learning from self-feedback)",
    ),
    # The two imperfect judges are matched on agreement with the exact grader over the start
    # model's training samples: `python -m tools.judge_agreement --task mix` (the embedded
    # model, 4096 samples at T = 1): accuracy 0.258, the shortcut judge's FPR 0.670 (no false
    # negatives), agreement 0.503; a random judge without false negatives matches it at FPR
    # (1 - 0.503) / (1 - 0.258) = 0.670. Both then have TPR 1 and J = 0.33 and differ only in
    # the pattern of their errors. On `add` the rule passes 0.83 of the wrong answers (the
    # embedded model's errors sit in the middle digits): J = 0.17 would leave too little
    # signal to see any judge teach in a short run, so the task is `mix`. The inverted judge:
    # TPR 0.3, FPR 0.8, J = -0.5. The classic preset (300 steps, cosine) at lr 3e-4, chosen
    # on trial seed 100 only: at the classic lr 1e-3 the random judge's noise wrecked the
    # policy (accuracy 0.273 -> 0.064; the inverted judge's -> 0.000; exact 0.273 -> 0.390,
    # shortcut 0.273 -> 0.275); at lr 3e-4 exact went 0.273 -> 0.373 and random 0.273 ->
    # 0.324, without a collapse.
    "judges": Experiment(
        name="judges",
        title="Judges: the pattern of a judge's errors",
        question=("Trained on a judge's verdicts instead of the exact grader's, does the kind "
                  "of error matter more than how many: does a judge with random errors only "
                  "slow learning, while one whose false positives follow a surface rule, at "
                  "the same agreement, teaches its blind spot, and one with J < 0 teaches "
                  "wrong answers?"),
        recipes=("binary",),
        variants=(
            Variant("exact", {"judge": "exact"}),
            Variant("random", {"judge": "random-judge", "judge_fp_rate": 0.670}),
            Variant("shortcut", {"judge": "shortcut-judge"}),
            Variant("inverted", {"judge": "random-judge", "judge_fn_rate": 0.7,
                                 "judge_fp_rate": 0.8}),
        ),
        arm_key="judge",
        task="mix",
        preset="classic",
        extra={"lr": 3e-4},
        targets=judges_targets,
        sections=("claim", "settings", "targets", "judges", "metrics", "curves", "runs"),
        claim=("The pattern of a judge's errors matters more than their rate: random false "
               "negatives and positives only slow learning while Youden's J = TPR − FPR > 0, "
               "a judge with J < 0 makes the policy learn wrong answers, and systematic false "
               "positives make the policy learn the judge's blind spot (controlled "
               "arithmetic; a policy trained against an LLM judge collapsed to the tokens that "
               "fooled it)."),
        source=("Egashira et al. 2026; \"Rate or Fate\" 2026; \"One Token to Fool "
                "LLM-as-a-Judge\" 2025"),
        claim_title="Judges: random errors slow learning, systematic ones are learnt",
    ),
    # The runs supply end models only; the measurement is the consistency phase. The classic
    # preset (the calibration experiment's settings), so rlcr's end model is the calibrated
    # one that experiment reports; on trial seed 100 each run took about 2 minutes and the
    # measuring phase ~3 s of CPU per model and temperature.
    "consistency": Experiment(
        name="consistency",
        title="Consistency at T = 0 is not reliability",
        question=("Does an answer repeated identically at temperature 0 — perfect test-retest "
                  "agreement — tell you it is right, or is it one draw repeated?"),
        recipes=("binary", "rlcr"),
        preset="classic",
        targets=consistency_targets,
        sections=("claim", "settings", "targets", "consistency", "runs"),
        claim=("A fixed seed at temperature 0 repeats the same output, yet it is still one draw "
               "from the model's distribution: consistency is not reliability. A judge asked "
               "100 times with 100 seeds had McDonald's ω = 1.0 at T ≈ 0 on every benchmark "
               "and ≈ 0.46–0.82 at T = 1, while its accuracy stayed well below 100 %."),
        source=("Schroeder & Wood-Doughty 2024, \"Can You Trust LLM Judgments? Reliability "
                "of LLM-as-a-Judge\""),
        claim_title="Consistency at T = 0 is not reliability",
        decides=("t0_consistent", "omega_falls"),
        measure=consistency.measure_runs,
        table_columns=consistency.TABLE_COLUMNS,
    ),
}
# Other names for an experiment: `calibration` is what the classic experiment shows.
ALIASES = {"calibration": "classic"}


def find(name: str) -> Experiment:
    """The experiment `name` (or an alias) names; ValueError lists the choices."""
    key = ALIASES.get(name, name)
    if key not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}: choose one of "
                         f"{', '.join([*EXPERIMENTS, *ALIASES])}")
    return EXPERIMENTS[key]
