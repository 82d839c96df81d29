"""The one frozen description of a run: `RunConfig`, its presets, and validation.

Every field carries a help text in its metadata; the CLI and the app both show it.
A run writes its config as `config.json` before step 0 and reads nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from core.data.grading import GRADERS
from core.data.judging import JUDGES
from core.recipe_info import RECIPE_INFO

EMBEDDED_MODEL = "embedded"
RECIPE_NAMES = tuple(RECIPE_INFO)
DEVICES = ("auto", "cpu", "cuda", "mps")
LR_SCHEDULES = ("constant", "cosine")
SPAN_SIGNALS = ("disparity", "mean_prob")
GRADER_CHOICES = ("auto", *GRADERS)
# Evaluation generates at most this many rows per call when generation_batch_size is 0: it
# bounds memory on big models (the tiny model's evaluations fit in one call). The evaluator
# and the memory estimate both read it here.
EVAL_ROWS_PER_GENERATE = 1024
# Memory bounds the engine works within and the memory estimate assumes, here so both read
# one value: the KV cache one generate call may hold off the GPU, and the float32 logits of
# one chunk of tokens in the LM head's log-probabilities.
KV_CACHE_BUDGET_CPU = 4 * 2**30
LOGITS_CHUNK_BYTES = 256 * 2**20
# Share of a GPU's free memory (after loading the policy) that the merged sampler's copy of
# the adapted weights may take; a larger copy samples through the LoRA layers instead. The
# engine and merged_sampling's help read it here.
MERGED_COPY_SHARE_GPU = 0.25


class ConfigError(ValueError):
    """A setting that cannot work; the message says how to fix it."""


@dataclass(frozen=True)
class Bound:
    """Where a number setting may lie. Validation checks it and the launch form's widgets take
    their limits from it (`widget_limits`), so a widget never offers a value that validation
    rejects. `why` ends the message, saying how to fix it."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False  # low itself is not allowed
    open_high: bool = False
    why: str = ""
    nudge: float = 1e-6  # how far inside an open end a widget's limit sits

    def allows(self, v: float) -> bool:
        return ((self.low is None or (v > self.low if self.open_low else v >= self.low))
                and (self.high is None or (v < self.high if self.open_high else v <= self.high)))

    def rule(self) -> str:
        if self.low is not None and self.high is not None:
            return (f"lie in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}"
                    f"{')' if self.open_high else ']'}")
        if self.low is not None:
            return f"be {'>' if self.open_low else '>='} {self.low:g}"
        return f"be {'<' if self.open_high else '<='} {self.high:g}"

    def message(self, name: str, v: float) -> str:
        why = f" ({self.why})" if self.why else ""
        return f"{name} must {self.rule()}{why}, got {v}"


def _f(default: Any, help: str, **kw: Any) -> Any:  # noqa: A002 - `help` mirrors argparse
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class RunConfig:
    # --- what to train -------------------------------------------------------------
    model: str = _f(EMBEDDED_MODEL, "Model: 'embedded' (the lab's tiny arithmetic model), a "
                    "local folder saved with save_pretrained, or a Hugging Face hub id (read "
                    "through the Hugging Face cache; offline it must be downloaded first).")
    trust_remote_code: bool = _f(False, "Run Python code shipped with the model (auto_map in "
                                 "its config.json). Off unless you trust its authors.")
    task: str = _f("add", "Task: 'add' (addition of 2-4 digit numbers), 'mix' (harder: "
                   "2-4 digit addition and subtraction), 'add2' (easy: 2-digit sums, which "
                   "the embedded model mostly solves already), a .jsonl or .csv file with question "
                   "and answer columns, or hf:DATASET_ID (a Hugging Face dataset; needs the "
                   "optional `datasets` package).")
    question_field: str = _f("question", "File and dataset tasks: the column holding the "
                             "question.")
    answer_field: str = _f("answer", "File and dataset tasks: the column holding the reference "
                           "answer.")
    grader: str = _f("auto", "File and dataset tasks: number (a plain number or GSM8K's "
                     "'#### 42'), math (math-verify when installed, else numeric), text (exact "
                     "match after SQuAD normalisation), or auto (number when at least half the "
                     "answers are numbers, else text). Built-in tasks match integers exactly.")
    dataset_subset: str = _f("", "Hugging Face dataset subset (config name), e.g. 'main' for "
                             "openai/gsm8k; empty: the default one.")
    dataset_split: str = _f("train", "Hugging Face dataset split, e.g. 'train' or "
                            "'train[:2000]'; the lab makes its own held-out split from it.")
    task_hash: str = _f("", "sha256 of the task's data, filled in at launch: the file's bytes, "
                        "or a dataset's question/answer rows. A run refuses data that no "
                        "longer matches; empty: not checked.")
    init_from: str = _f("", "Start from the end of another run: its id, in the same run "
                        "store (it must have finished, on the same model). Its LoRA update is "
                        "merged into the base weights and this run trains a fresh adapter on "
                        "top, so the reference (adapter off: KL, rlsf's DPO) is that starting "
                        "policy. Empty: start from the model itself.")
    recipe: str = _f("binary", "Reward recipe: " + ", ".join(RECIPE_NAMES) + ". Formulas and "
                     "papers: docs/science.md.")
    seed: int = _f(0, "Random seed for sampling, LoRA initialisation and the training prompts.",
                   bound=Bound(0, why="numpy's generators take no negative seed"))
    # --- reward source --------------------------------------------------------------
    judge: str = _f("exact", "Where the recipe's right/wrong verdict comes from: 'exact' (the "
                    "task's grader), 'random-judge' (the exact verdict flipped at random at "
                    "the two rates below: an honest, noisy judge), 'shortcut-judge' (also "
                    "accepts wrong answers that look right: same digit count and last digit, "
                    "or for text the same length and last letter; plus the false-negative "
                    "rate), 'rlcr-strict' (RLCR's reference code's format and answer checks; "
                    "chat models with reasoning on) or 'llm-judge' (judge_model reasons, then "
                    "gives a verdict). Truth from the exact grader is logged beside it; "
                    "evaluations never use the judge. docs/science.md, Judges.")
    judge_fn_rate: float = _f(0.0, "random-judge and shortcut-judge: the share of right "
                              "answers the judge rejects (false negatives), drawn per sample.",
                              bound=Bound(0.0, 1.0, why="a share of right answers"))
    judge_fp_rate: float = _f(0.0, "random-judge: the share of wrong answers the judge accepts "
                              "(false positives), drawn per sample. Above 1 - judge_fn_rate "
                              "the judge prefers wrong answers (Youden's J < 0).",
                              bound=Bound(0.0, 1.0, why="a share of wrong answers"))
    judge_model: str = _f("", "llm-judge: the judging model, a local folder or a Hugging Face "
                          "hub id (a chat model; loaded beside the policy, never trained).")
    judge_max_new_tokens: int = _f(256, "llm-judge: the longest judge reply, in tokens "
                                   "(its reasoning and the verdict tag).",
                                   bound=Bound(1))
    # --- RL loop -------------------------------------------------------------------
    steps: int = _f(100, "Optimiser steps. 0 evaluates the model only.",
                    bound=Bound(0, why="0 evaluates only"))
    prompts_per_step: int = _f(16, "Distinct training prompts per step.",
                               bound=Bound(1))
    group_size: int = _f(8, "G: completions sampled per prompt; the group baseline needs G >= 2.",
                         bound=Bound(2, why="G: a group needs two samples for its baseline"))
    temperature: float = _f(1.0, "Sampling temperature for training rollouts.",
                            bound=Bound(0.0, open_low=True, why="sampling; try 1.0", nudge=0.01))
    max_new_tokens: int = _f(10, "Longest completion, in tokens. The embedded model needs "
                             "about 10; chat models a few hundred with reasoning on.",
                             bound=Bound(1))
    reasoning: bool = _f(True, "Chat models: ask for <think> reasoning before the <answer> and "
                         "<confidence> tags (RLCR's format). Off: answer and confidence only "
                         "(and Qwen3's thinking mode off). The embedded model ignores it.")
    lr: float = _f(1e-3, "Adam learning rate for the LoRA weights.",
                   bound=Bound(0.0, open_low=True, why="try 1e-3", nudge=1e-8))
    lr_schedule: str = _f("constant", "Learning-rate schedule: 'constant', or 'cosine' from lr "
                          "down to lr/10 at the last step (a calmer end of the run).")
    adam_beta2: float = _f(0.99, "Adam beta2; lower reacts faster on a small, noisy policy.",
                           bound=Bound(0.0, 1.0, open_low=True, open_high=True))
    max_grad_norm: float = _f(1.0, "Gradient-norm clip; 0 turns clipping off.",
                              bound=Bound(0.0, why="0 turns clipping off"))
    inner_epochs: int = _f(1, "Optimiser steps per rollout batch. Above 1 the PPO clip applies.",
                           bound=Bound(1))
    clip_eps: float = _f(0.2, "PPO clip range epsilon for reused batches.",
                         bound=Bound(0.0, 1.0, open_low=True, open_high=True, why="try 0.2",
                                     nudge=0.01))
    scale_rewards: bool = _f(False, "GRPO: divide group-centred rewards by the group std.")
    kl_beta: float = _f(0.0, "KL penalty weight to the reference (adapter off), k3 estimator. "
                        "0 turns it off.",
                        bound=Bound(0.0, why="0 turns the KL term off"))
    rlcr_reward_to_go: bool = _f(True, "rlcr: credit the confidence tokens only with the Brier "
                                 "term they can change (reward-to-go), not with correctness, "
                                 "which is settled before they are written. Off: every token "
                                 "gets the whole reward's advantage.")
    wr_lambda: float = _f(0.1, "w-reinforce: weight lambda on correct samples (wrong get -1).",
                          bound=Bound(0.0, why="try 0.1"))
    rlsf_beta: float = _f(0.2, "rlsf: DPO beta.",
                          bound=Bound(0.0, open_low=True, why="try 0.2", nudge=0.01))
    rlsf_threshold: float = _f(0.9, "rlsf: a preferred trace needs answer-span confidence at "
                               "least this.",
                               bound=Bound(0.0, 1.0))
    rlsf_signal: str = _f("disparity", "rlsf: answer-span confidence, 'disparity' (p(top) - "
                          "p(runner-up), RLSF's default) or 'mean_prob'.")
    # --- LoRA ----------------------------------------------------------------------
    lora_rank: int = _f(16, "LoRA rank r.",
                        bound=Bound(1))
    lora_alpha: float = _f(32.0, "LoRA alpha; the update is scaled by alpha / r.",
                           bound=Bound(0.0, open_low=True, nudge=0.01))
    lora_targets: str = _f("all-linear", "LoRA target modules: 'all-linear' or a comma-separated "
                           "list of module names (e.g. 'q_proj,v_proj').")
    # --- evaluation ----------------------------------------------------------------
    eval_every: int = _f(20, "Evaluate every E steps; 0 evaluates only at step 0 and the end.",
                         bound=Bound(0, why="0: only at step 0 and the end"))
    eval_prompts: int = _f(128, "Held-out prompts per evaluation (a fixed set).",
                           bound=Bound(1))
    eval_samples: int = _f(16, "n: samples per held-out prompt, for accuracy, Pass@k and "
                           "consistency.",
                           bound=Bound(1))
    eval_temperature: float = _f(1.0, "Sampling temperature for evaluation.",
                                 bound=Bound(0.0, open_low=True, nudge=0.01,
                                             why="greedy accuracy is measured separately"))
    pass_k: tuple[int, ...] = _f((), "Pass@k values; empty means 1, 2, 4, ... up to n.")
    no_eval: bool = _f(False, "Skip every evaluation, the step-0 and final ones too.")
    keep_samples: int = _f(64, "Completions kept per evaluation for the completion browser.",
                           bound=Bound(0))
    # --- reliability ---------------------------------------------------------------
    checkpoint_every: int = _f(10, "Save a checkpoint (LoRA weights, optimiser and RNG states) "
                               "every K steps and when stopped, so a stopped or failed run "
                               "can continue as the same run. 0 turns checkpoints off: a "
                               "continued run then starts again from step 0.",
                               bound=Bound(0, why="0 turns checkpoints off"))
    # --- machine -------------------------------------------------------------------
    device: str = _f("auto", "Device: auto (cuda if present, else mps, else cpu), cpu, cuda "
                     "or mps. CUDA runs in bf16.")
    gradient_checkpointing: bool = _f(False, "Recompute each layer's activations in the "
                                      "backward pass instead of keeping them: less memory "
                                      "for long completions, roughly a third more time.")
    generation_batch_size: int = _f(0, "Completions generated per call at most (whole prompts "
                                    "at a time); 0: no set limit (up to "
                                    f"{EVAL_ROWS_PER_GENERATE} in evaluation). "
                                    "Either way a call holds no more rows than its KV cache "
                                    "fits in (two fifths of a GPU's free memory, 4 GiB on a "
                                    "CPU).", bound=Bound(0, why="0: no set limit"))
    threads: int = _f(0, "CPU threads for torch; 0: a share of the cores that follows the "
                      "runs training at once (every core when it trains alone).",
                      bound=Bound(0, why="0 shares the cores among the runs training at once"))
    merged_sampling: bool = _f(True, "Generate (training's samples and every evaluation) "
                               "with a copy of the adapted layers that has the LoRA update "
                               "merged in: faster sampling, the same numbers up to float "
                               "rounding, at the memory cost of one more copy of those "
                               "weights. On a GPU the copy is made only if it takes at most "
                               f"{MERGED_COPY_SHARE_GPU:g} of the free memory. Off: sample "
                               "through the LoRA layers.")

    def __post_init__(self) -> None:
        problems = validate(self)
        if problems:
            raise ConfigError("; ".join(problems))
        # JSON round trips hand us lists; keep the dataclass hashable and frozen.
        object.__setattr__(self, "pass_k", tuple(int(k) for k in self.pass_k))

    # --- derived -------------------------------------------------------------------
    @property
    def ks(self) -> tuple[int, ...]:
        """The Pass@k values evaluated: the explicit list, or powers of two up to n."""
        if self.pass_k:
            return tuple(sorted(set(self.pass_k)))
        return tuple(2**i for i in range(int(math.log2(self.eval_samples)) + 1))

    @property
    def n_evals(self) -> int:
        """Evaluations the run makes, as core.engine.train schedules them: step 0, every
        eval_every steps, and the last step (once)."""
        if self.no_eval:
            return 0
        if self.steps == 0:
            return 1
        return 2 + ((self.steps - 1) // self.eval_every if self.eval_every else 0)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["pass_k"] = list(self.pass_k)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: "
                              f"{', '.join(sorted(known))}")
        return cls(**d)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


def help_text(name: str) -> str:
    """The help text of a RunConfig field, shared by the CLI and the app."""
    return FIELDS[name].metadata["help"]


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(RunConfig)}


def widget_limits(name: str) -> dict[str, int | float]:
    """min_value / max_value for a number widget of a setting, read from its Bound. An open
    end moves inside by the bound's nudge (by 1 for a whole number), so a widget never offers
    a value that validation rejects. Of the setting's own kind, as Streamlit needs."""
    bound: Bound = FIELDS[name].metadata["bound"]
    kind = type(FIELDS[name].default)
    inside = bound.nudge if kind is float else 1
    limits: dict[str, int | float] = {}
    if bound.low is not None:
        limits["min_value"] = kind(bound.low + inside if bound.open_low else bound.low)
    if bound.high is not None:
        limits["max_value"] = kind(bound.high - inside if bound.open_high else bound.high)
    return limits


# What each annotation accepts, and how to say so. Annotations are strings here (PEP 563).
_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    "float": (lambda v: isinstance(v, int | float) and not isinstance(v, bool)
              and math.isfinite(v), "a finite number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "text"),
    "None": (lambda v: v is None, "empty"),
    "tuple[int, ...]": (lambda v: isinstance(v, list | tuple)
                        and all(_KINDS["int"][0](k) for k in v), "a list of whole numbers"),
}


def type_problems(values: dict[str, Any]) -> dict[str, str]:
    """Setting -> message, for each setting of the wrong kind (NaN and inf included), read
    from its annotation; a kind this table does not know is left to validate's own rules."""
    p = {}
    for name, value in values.items():
        kinds = [k.strip() for k in str(FIELDS[name].type).split("|")]
        if any(k not in _KINDS for k in kinds) or any(_KINDS[k][0](value) for k in kinds):
            continue
        p[name] = f"{name} must be {' or '.join(_KINDS[k][1] for k in kinds)}, got {value!r}"
    return p


def _default(name: str) -> Any:
    f = FIELDS[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def validate(config: RunConfig) -> list[str]:
    """Every broken invariant of a config, each as a message saying how to fix it."""
    values = dataclasses.asdict(config)
    wrong = type_problems(values)
    p = list(wrong.values())
    # The range checks see a wrong-kind setting at its (valid) default: each problem is
    # reported once, as its kind, never as a crash or a second message about the same value.
    c = SimpleNamespace(**(values | {name: _default(name) for name in wrong}))
    if c.recipe not in RECIPE_NAMES:
        p.append(f"unknown recipe {c.recipe!r}: choose one of {', '.join(RECIPE_NAMES)}")
    if c.device not in DEVICES:
        p.append(f"unknown device {c.device!r}: choose one of {', '.join(DEVICES)}")
    if c.lr_schedule not in LR_SCHEDULES:
        p.append(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, "
                 f"got {c.lr_schedule!r}")
    if c.rlsf_signal not in SPAN_SIGNALS:
        p.append(f"rlsf_signal must be one of {', '.join(SPAN_SIGNALS)}, got {c.rlsf_signal!r}")
    for name, f in FIELDS.items():  # every number setting's range, from its Bound
        bound = f.metadata.get("bound")
        if bound is not None and not bound.allows(getattr(c, name)):
            p.append(bound.message(name, getattr(c, name)))
    if not c.lora_targets.strip():
        p.append("lora_targets must name modules or be 'all-linear'")
    bad_k = [k for k in c.pass_k if not 1 <= int(k) <= c.eval_samples]
    if bad_k:
        p.append(f"Pass@k needs 1 <= k <= n = {c.eval_samples}; raise eval_samples or drop "
                 f"k = {', '.join(map(str, bad_k))}")
    if not c.model.strip():
        p.append("model must be 'embedded', a local folder or a hub id")
    if c.grader not in GRADER_CHOICES:
        p.append(f"unknown grader {c.grader!r}: choose one of {', '.join(GRADER_CHOICES)}")
    if not c.question_field.strip() or not c.answer_field.strip():
        p.append("question_field and answer_field must name columns (e.g. question, answer)")
    elif c.question_field == c.answer_field:
        p.append(f"question_field and answer_field are both {c.question_field!r}: map the "
                 "answer to its own column")
    if not c.dataset_split.strip():
        p.append("dataset_split must name a split, e.g. train")
    p.extend(judge_problems(c))
    if c.init_from and (c.init_from != c.init_from.strip() or "/" in c.init_from
                        or c.init_from.startswith(".")):
        p.append(f"init_from must be a run id from the run store (no '/', no leading "
                 f"'.'), got {c.init_from!r}")
    return p


def judge_problems(c: Any) -> list[str]:
    """The reward source's invariants. The rates and judge_model are read only by the judges
    their help names (the Launch page shows them only there); other judges ignore them."""
    if c.judge not in JUDGES:
        return [f"unknown judge {c.judge!r}: choose one of {', '.join(JUDGES)}"]
    p = []
    if c.judge == "llm-judge" and not c.judge_model.strip():
        p.append("llm-judge needs judge_model: a local folder or a hub id of a chat model")
    if c.judge == "rlcr-strict" and c.model == EMBEDDED_MODEL:
        p.append("rlcr-strict checks RLCR's tag format, which the embedded model does not "
                 "write: pick a chat model or another judge")
    elif c.judge == "rlcr-strict" and not c.reasoning:
        p.append("rlcr-strict needs reasoning on: RLCR's format check wants a </think> "
                 "before the answer")
    return p


# Presets are partial configs; flags given beside a preset override its values.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"steps": 100, "eval_every": 20, "eval_prompts": 128, "eval_samples": 16},
    # The classic experiment's settings, chosen on trial seeds 100 and 101 only (the report's
    # seeds are 0-2): at 100 steps rlcr was still moving (verbalized AUROC 0.63 and rising);
    # at a constant lr the end of a 300-step run swung (binary accuracy 0.42 -> 0.38 over its
    # last 50 steps), and the cosine decay calmed it.
    "classic": {"steps": 300, "eval_every": 50, "eval_prompts": 128, "eval_samples": 16,
                "lr_schedule": "cosine"},
    "smoke": {"steps": 4, "eval_every": 2, "eval_prompts": 16, "eval_samples": 4,
              "prompts_per_step": 4, "group_size": 4, "checkpoint_every": 2},
    # A starting point for a ~0.5B chat model on one GPU: RLCR's T = 0.7, a LoRA learning
    # rate well below the embedded model's, generation sliced by KV-cache memory (0), and
    # reasoning off. With it on, Qwen3's thinking mode usually runs past 384 tokens, so every
    # completion is cut before its answer, every group scores alike and nothing is learnt;
    # reasoning off also turns the thinking mode off. The truncation rate shows it either way.
    "chat": {"steps": 50, "prompts_per_step": 4, "group_size": 8, "temperature": 0.7,
             "eval_temperature": 0.7, "max_new_tokens": 384, "lr": 2e-5, "eval_every": 10,
             "eval_prompts": 64, "eval_samples": 4, "generation_batch_size": 0,
             "reasoning": False, "gradient_checkpointing": True},
}


def learning_rate(c: RunConfig, step: int) -> float:
    """The learning rate for optimiser step `step` (1-based).

    cosine: lr * (0.1 + 0.9 * (1 + cos(pi * (step - 1) / (steps - 1))) / 2), so step 1 uses lr
    and the last step lr / 10 (the cosine decay of SGDR, Loshchilov & Hutter 2017, with a
    floor, as nanoGPT uses it).
    """
    if c.lr_schedule == "constant" or c.steps <= 1:
        return c.lr
    progress = (step - 1) / (c.steps - 1)
    return c.lr * (0.1 + 0.9 * (1 + math.cos(math.pi * progress)) / 2)


def build_config(preset: str | None = None, **overrides: Any) -> RunConfig:
    """A RunConfig from an optional preset plus explicit overrides (which win)."""
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return RunConfig.from_dict(values)
