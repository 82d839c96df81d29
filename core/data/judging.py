"""Judges: where a run's reward verdict comes from, and how good that verdict was.

Torch-free rules the engine's judge (`core.engine.judges`) applies per completion, and the
confusion-matrix statistics every training step logs beside the verdict (docs/science.md,
"Judges"). Truth is always the task's exact grader; a judge only changes what the recipe sees.

- exact: the task's grader (the verdict is the truth).
- random-judge: the exact verdict flipped independently per sample, a right answer rejected
  at the false-negative rate and a wrong one accepted at the false-positive rate (seeded).
- shortcut-judge: also accepts a wrong answer that shares a surface feature with the
  reference (`surface_match`), plus an optional random false-negative rate.
- rlcr-strict: RLCR's reference code's own format check and answer comparison.
- llm-judge: a second language model reasons, then ends with a verdict tag (`read_verdict`).

Every judge rejects a completion whose answer cannot be read (a format failure), as the exact
grader does: a judge judges answers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.data.grading import _NUMBER, final_part, normalize_text, to_number

JUDGES = ("exact", "random-judge", "shortcut-judge", "rlcr-strict", "llm-judge")
RATE_JUDGES = ("random-judge", "shortcut-judge")  # the judges whose error rates are settings
# A judge's own random stream, apart from the training prompts' and sampling's: the same seed
# and step give the same flips whatever else the run draws, so a resumed run redoes them.
JUDGE_STREAM = 0x6A75


# --- the shortcut judge's surface rule ------------------------------------------------------
def _integer(text: str) -> int | None:
    """The last number written in `text` when it is a whole number, else None."""
    found = _NUMBER.findall(text)
    value = to_number(found[-1]) if found else None
    return int(value) if value is not None and value.denominator == 1 else None


def surface_match(predicted: str, reference: str) -> bool:
    """The shortcut judge's blind spot: does `predicted` look like `reference` on the surface?

    Whole numbers (the arithmetic tasks, numeric files): the same sign, the same number of
    digits and the same last digit (`123` passes for `173`). Anything else: after SQuAD
    normalisation, the same length in characters and the same last character. A classifier
    that learnt "right answers look like this" accepts exactly these.
    """
    p, r = _integer(predicted), _integer(final_part(reference))
    if p is not None and r is not None:
        return ((p < 0) == (r < 0) and len(str(abs(p))) == len(str(abs(r)))
                and abs(p) % 10 == abs(r) % 10)
    a, b = normalize_text(predicted), normalize_text(final_part(reference))
    return bool(a) and len(a) == len(b) and a[-1] == b[-1]


def judge_rng(seed: int, step: int) -> np.random.Generator:
    """The judge's generator for one training step (see JUDGE_STREAM)."""
    return np.random.default_rng([JUDGE_STREAM, seed, step])


def rule_verdicts(judge: str, truth: Sequence[bool], readable: Sequence[bool],
                  surface: Sequence[bool], fn_rate: float, fp_rate: float,
                  rng: np.random.Generator) -> list[bool]:
    """The random and shortcut judges' verdicts: `truth` the exact grader's, `readable` whether
    the answer could be read, `surface` whether a wrong answer passes `surface_match`.

    One uniform draw per sample for its false negative and one for its false positive, drawn
    for every sample whatever its truth, so a rate changes only the samples it flips.
    """
    n = len(truth)
    miss, slip = rng.random(n), rng.random(n)
    out = []
    for i in range(n):
        if not readable[i]:
            out.append(False)
        elif truth[i]:
            out.append(bool(miss[i] >= fn_rate))
        elif judge == "random-judge":
            out.append(bool(slip[i] < fp_rate))
        else:  # shortcut-judge: systematic false positives only
            out.append(bool(surface[i]))
    return out


# --- RLCR's reference checks ----------------------------------------------------------------
# RLCR's reward code (format pattern "tac": think, answer, confidence), as published:
# re.match(pattern, completion, re.DOTALL | re.MULTILINE); the last <answer> and <confidence>
# by re.findall; the confidence through Python's float(), in [0, 1].
RLCR_FORMAT = re.compile(r".*?</think>\s*<answer>.*?</answer>\s*<confidence>.*?</confidence>\s*\Z",
                         re.DOTALL | re.MULTILINE)
RLCR_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.MULTILINE)
RLCR_CONFIDENCE = re.compile(r"<confidence>(.*?)</confidence>", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class StrictGrade:
    well_formed: bool
    correct: bool  # False whenever not well_formed
    confidence: float | None


def rlcr_confidence(completion: str) -> float | None:
    """The last <confidence> read by float(): "0.85" and " .9 " read, "85%" and "high" do not;
    outside [0, 1] is None. NaN, which float() reads and the reference's range check lets
    through (its reward is then NaN), is None here: a format failure."""
    found = RLCR_CONFIDENCE.findall(completion)
    try:
        q = float(found[-1]) if found else None
    except ValueError:
        return None
    return q if q is not None and not math.isnan(q) and 0.0 <= q <= 1.0 else None


def rlcr_answer_equal(answer: str, reference: str, grader: str) -> bool:
    """The reference's comparison. Text tasks: SQuAD exact match. Otherwise math-verify's
    verify(reference string, parse(answer)): a string reference against the parsed answer
    compares strings, so it holds when the answer's extracted expression is written exactly
    as the reference is ("168" is right for 168, "168.0" is not). Without math-verify
    installed, the extracted expression is the last number written in the answer (or the
    whole answer when it has none). The reference's '####' part, if any, is the reference."""
    gold = final_part(reference).strip()
    if grader == "text":
        return normalize_text(answer) == normalize_text(gold)
    try:
        from math_verify import parse, verify
    except ImportError:
        found = _NUMBER.findall(answer)
        written = (found[-1] if found else answer).strip()
        return bool(gold) and written == gold
    try:
        return bool(verify(gold, parse(answer)))
    except Exception:  # math-verify raises on odd input; the reference then scored a 0
        return False


def rlcr_strict(completion: str, reference: str, grader: str) -> StrictGrade:
    """Format, correctness and confidence as RLCR's reference reward code reads them."""
    q = rlcr_confidence(completion)
    if RLCR_FORMAT.match(completion) is None or q is None:
        return StrictGrade(False, False, None)
    answers = RLCR_ANSWER.findall(completion)
    return StrictGrade(True, rlcr_answer_equal(answers[-1] if answers else "", reference,
                                               grader), q)


def rlcr_reference_reward(lab_reward: float) -> float:
    """The reference's summed reward 0.5 format + 0.5 accuracy + 0.5 (1 - (c - q)^2) on the
    lab's scale: r_RLCR = 1 + r_lab / 2 (so a format failure, lab -2, is the reference's 0)."""
    return 1.0 + lab_reward / 2.0


# --- the language-model judge's verdict -----------------------------------------------------
VERDICT_TAG = "verdict"
ACCEPT, REJECT = "correct", "incorrect"
_VERDICT = re.compile(rf"<{VERDICT_TAG}>(.*?)</{VERDICT_TAG}>", re.DOTALL | re.IGNORECASE)
JUDGE_SYSTEM = (
    "You grade answers. Read the response and decide whether its final answer is the "
    "reference answer. First reason step by step, then end your reply with exactly one tag: "
    f"<{VERDICT_TAG}>{ACCEPT}</{VERDICT_TAG}> or <{VERDICT_TAG}>{REJECT}</{VERDICT_TAG}>, "
    "and nothing after it.")


def judge_request(question: str, reference: str, response: str) -> str:
    """The judge's user message: the question, the reference answer and the whole response
    to grade (its reasoning included, as a judge of the work would read it)."""
    return (f"Question: {question}\nReference answer: {final_part(reference)}\n"
            f"Response to grade: {response}")


def read_verdict(text: str) -> bool | None:
    """The judge's verdict: True (correct), False (incorrect) or None (unreadable).

    Readable only when the reply holds exactly one verdict tag, it closes the reply (nothing
    but whitespace after it), and it says correct or incorrect. No tag, two tags (a judge that
    has not committed) and a tag inside the reasoning are unreadable; an unreadable verdict
    rejects the answer and is counted (train/judge/unreadable)."""
    tags = list(_VERDICT.finditer(text))
    if len(tags) != 1 or text[tags[0].end():].strip():
        return None
    word = tags[0].group(1).strip().lower()
    return True if word == ACCEPT else False if word == REJECT else None


# --- how good the verdicts were ------------------------------------------------------------
@dataclass(frozen=True)
class JudgeStats:
    """One batch's confusion matrix of verdict against truth (the exact grader)."""
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def tpr(self) -> float | None:
        """TPR = TP / (TP + FN): the share of right answers the judge accepts."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def fpr(self) -> float | None:
        """FPR = FP / (FP + TN): the share of wrong answers the judge accepts."""
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else None

    @property
    def youden_j(self) -> float | None:
        """Youden's J = TPR - FPR (Youden 1950): 1 a perfect judge, 0 one that ignores the
        answer, < 0 one that prefers wrong answers."""
        return None if self.tpr is None or self.fpr is None else self.tpr - self.fpr

    @property
    def agreement(self) -> float | None:
        """(TP + TN) / n: the share of samples where the verdict is the truth."""
        n = self.tp + self.fp + self.fn + self.tn
        return (self.tp + self.tn) / n if n else None


def judge_stats(verdict: Sequence[bool], truth: Sequence[bool]) -> JudgeStats:
    pairs = list(zip(verdict, truth, strict=True))
    return JudgeStats(tp=sum(v and t for v, t in pairs), fp=sum(v and not t for v, t in pairs),
                      fn=sum(t and not v for v, t in pairs),
                      tn=sum(not v and not t for v, t in pairs))


def judge_metrics(verdict: Sequence[bool], truth: Sequence[bool]) -> dict[str, float | None]:
    """What a training step logs beside the reward (`train/…` keys): judged and true accuracy
    and the judge's TPR, FPR, Youden's J and agreement on the batch."""
    s = judge_stats(verdict, truth)
    n = max(len(truth), 1)
    return {"judge/judged_accuracy": sum(map(bool, verdict)) / n,
            "judge/true_accuracy": sum(map(bool, truth)) / n,
            "judge/tpr": s.tpr, "judge/fpr": s.fpr, "judge/youden_j": s.youden_j,
            "judge/agreement": s.agreement}


def matched_fp_rate(agreement: float, accuracy: float) -> float:
    """The random judge's false-positive rate (no false negatives) that gives `agreement` on
    samples whose accuracy is `accuracy`: agreement = 1 - FPR (1 - accuracy)."""
    wrong = 1.0 - accuracy
    if wrong <= 0:
        raise ValueError("every sample is right: no false-positive rate changes agreement")
    return min(max((1.0 - agreement) / wrong, 0.0), 1.0)
