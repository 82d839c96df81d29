"""Evaluation metrics: Pass@k, calibration (ECE, Brier, AUROC, reliability) and consistency.

Pure numpy, no torch. Definitions follow docs/science.md ("Metrics", "Confidence signals").
`conf` arguments are confidences in [0, 1]; `correct` arguments are bools or 0/1.
Both accept lists or numpy arrays of the same length.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "SIGNALS",
    "CalibrationSummary",
    "ReliabilityBin",
    "auroc",
    "bin_index",
    "brier",
    "calibration_summary",
    "consistency",
    "cronbach_alpha",
    "distinct_answers",
    "ece",
    "histogram",
    "mean_pass_at_k",
    "mcdonald_omega",
    "mean_item_correlation",
    "mean_token_entropy",
    "overconfidence",
    "pass_at_k",
    "raw_half",
    "recalibrated",
    "reliability",
    "repeatability",
]

# The confidence signals every evaluation measures, in the order the app offers them:
# the stated q, the answer span's probability, and agreement among the n samples.
SIGNALS = ("verbalized", "answer_prob", "consistency")


def recalibrated(signal: str) -> str:
    """The calibration entry of `signal` after post-hoc recalibration (core.recalibration):
    a monotone map fitted on one half of the held-out prompts, measured on the other."""
    return f"{signal}_recalibrated"


def raw_half(signal: str) -> str:
    """The calibration entry of the raw `signal` on the half its recalibrated entry is
    measured on: the like-for-like row beside it (the plain entry covers every prompt)."""
    return f"{signal}_raw_half"


# ---------------------------------------------------------------------------- Pass@k


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k for one prompt with n samples of which c are correct.

    Equals 1 - C(n-c, k) / C(n, k): the chance that a random k-subset of the n samples
    holds at least one correct one. Raises ValueError unless 0 <= c <= n and 1 <= k <= n.
    """
    # Chen et al. 2021, "Evaluating Large Language Models Trained on Code", Fig. 3 numpy code:
    # 1 - prod_{i=n-c+1..n} (1 - k/i), which avoids the huge binomial coefficients.
    n, c, k = int(n), int(c), int(k)
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def mean_pass_at_k(correct_counts: Sequence[int], n: int, ks: Sequence[int]) -> dict[int, float]:
    """Pass@k averaged over prompts, for each k in ks.

    correct_counts[p] is the number of correct samples among the n samples of prompt p.
    Raises ValueError for no prompts or for a k or count that pass_at_k rejects.
    """
    # Chen et al. 2021: the benchmark Pass@k is the mean of the per-problem unbiased estimates.
    counts = [int(c) for c in correct_counts]
    if not counts:
        raise ValueError("mean_pass_at_k needs at least one prompt")
    return {int(k): float(np.mean([pass_at_k(n, c, k) for c in counts])) for k in ks}


# ---------------------------------------------------------------------------- helpers


def _as_pair(conf: ArrayLike, correct: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Both arguments as 1-D float arrays of equal length (ValueError otherwise)."""
    q = np.asarray(conf, dtype=float).reshape(-1)
    c = np.asarray(correct, dtype=float).reshape(-1)
    if q.shape != c.shape:
        raise ValueError(f"conf and correct differ in length: {q.size} != {c.size}")
    return q, c


def _none_if_nan(x: float | None) -> float | None:
    """x as a plain float, or None when it is None or NaN."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


# ---------------------------------------------------------------------------- binning


@dataclass(frozen=True)
class ReliabilityBin:
    """One row of a reliability table: bin [lo, hi), its size and mean confidence/accuracy.

    confidence and accuracy are None when the bin is empty.
    """

    lo: float
    hi: float
    count: int
    confidence: float | None
    accuracy: float | None


def bin_index(conf: ArrayLike, bins: int = 10) -> np.ndarray:
    """Equal-width bin of each confidence on [0, 1]: bin b holds [b/bins, (b+1)/bins).

    conf == 1.0 goes to the last bin; values outside [0, 1] are clipped to the end bins.
    A 1e-9 guard keeps e.g. 0.3 * 10 = 2.9999999999999996 in bin 3.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    q = np.asarray(conf, dtype=float)
    return np.clip(np.floor(q * bins + 1e-9), 0, bins - 1).astype(np.int64)


def reliability(conf: ArrayLike, correct: ArrayLike, bins: int = 10) -> list[ReliabilityBin]:
    """Reliability table: for each of `bins` equal-width bins, count, mean conf, accuracy."""
    # Guo et al. 2017, "On Calibration of Modern Neural Networks", Sec. 2 (reliability diagrams).
    q, c = _as_pair(conf, correct)
    idx = bin_index(q, bins)
    rows: list[ReliabilityBin] = []
    for b in range(bins):
        mask = idx == b
        count = int(mask.sum())
        rows.append(
            ReliabilityBin(
                lo=b / bins,
                hi=(b + 1) / bins,
                count=count,
                confidence=float(q[mask].mean()) if count else None,
                accuracy=float(c[mask].mean()) if count else None,
            )
        )
    return rows


def histogram(conf: ArrayLike, bins: int = 10) -> list[int]:
    """Number of confidences in each equal-width bin (binned with bin_index)."""
    idx = bin_index(np.asarray(conf, dtype=float).reshape(-1), bins)
    return [int(x) for x in np.bincount(idx, minlength=bins)]


# ---------------------------------------------------------------------------- calibration


def ece(conf: ArrayLike, correct: ArrayLike, bins: int = 10) -> float:
    """Expected calibration error: sum_b |B_b|/N * |acc(B_b) - conf(B_b)|; NaN when N == 0."""
    # Naeini et al. 2015 (AAAI), "Obtaining Well Calibrated Probabilities Using Bayesian
    # Binning"; Guo et al. 2017, Sec. 2. Equal-width bins as in the RLCR public code.
    q, c = _as_pair(conf, correct)
    n = q.size
    if n == 0:
        return float("nan")
    total = 0.0
    for row in reliability(q, c, bins):
        if row.count:
            assert row.accuracy is not None and row.confidence is not None
            total += row.count / n * abs(row.accuracy - row.confidence)
    return float(total)


def brier(conf: ArrayLike, correct: ArrayLike) -> float:
    """Brier score: mean (q - c)^2; NaN when empty."""
    # Brier 1950, "Verification of Forecasts Expressed in Terms of Probability".
    q, c = _as_pair(conf, correct)
    if q.size == 0:
        return float("nan")
    return float(np.mean((q - c) ** 2))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    before = np.cumsum(counts) - counts  # how many values are strictly smaller
    return (before + (counts + 1) / 2.0)[inverse.reshape(-1)]


def auroc(conf: ArrayLike, correct: ArrayLike) -> float | None:
    """AUROC of conf as a predictor of correct: P(conf_correct > conf_wrong), ties count 1/2.

    None when there are no correct or no wrong samples.
    """
    # Mann & Whitney 1947 U statistic via average ranks; AUC = U / (n_pos * n_neg)
    # (Hanley & McNeil 1982, "The Meaning and Use of the Area under a ROC Curve").
    q, c = _as_pair(conf, correct)
    pos = c > 0.5
    n_pos = int(pos.sum())
    n_neg = int(q.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(q)
    u = float(ranks[pos].sum()) - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def overconfidence(conf: ArrayLike, correct: ArrayLike) -> float:
    """Mean confidence minus accuracy (> 0: overconfident); NaN when empty."""
    # docs/science.md "Metrics": overconfidence = mean q - accuracy (a signed calibration gap).
    q, c = _as_pair(conf, correct)
    if q.size == 0:
        return float("nan")
    return float(q.mean() - c.mean())


# ---------------------------------------------------------------------------- consistency


def consistency(answers: Sequence[Sequence[str | None]]) -> list[list[float | None]]:
    """Per sample, the share of its prompt's samples that gave the same answer.

    answers[p][i] is the parsed answer of sample i of prompt p (None = format failure).
    The denominator counts all samples of the prompt, failures included; the result is
    None where the answer itself is None.
    """
    # docs/science.md "Confidence signals": consistency (self-consistency agreement, as in
    # Wang et al. 2023, "Self-Consistency Improves Chain of Thought Reasoning").
    out: list[list[float | None]] = []
    for group in answers:
        n = len(group)
        votes = Counter(a for a in group if a is not None)
        out.append([None if a is None else votes[a] / n for a in group])
    return out


# ------------------------------------------------------- repeated answers: test-retest


def repeatability(outputs: Sequence[Sequence[str]]) -> float:
    """Share of questions whose repeated outputs are all identical.

    outputs[q][r] is the whole completion text of repetition r of question q: the strictest
    sense of "the same output every time" (the answer and the stated confidence alike).
    """
    if not outputs:
        raise ValueError("repeatability needs at least one question")
    return float(np.mean([len(set(group)) == 1 for group in outputs]))


def _item_matrix(scores: ArrayLike) -> np.ndarray | None:
    """scores [subjects, items] as floats; None when reliability is undefined: fewer than two
    subjects or two items, or an item with no variance across subjects."""
    x = np.asarray(scores, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"scores must be a [subjects, items] matrix, got shape {x.shape}")
    if x.shape[0] < 2 or x.shape[1] < 2 or np.any(x.var(axis=0) == 0):
        return None
    return x


def cronbach_alpha(scores: ArrayLike) -> float | None:
    """Cronbach's alpha of scores [subjects, items]: k/(k-1) * (1 - sum var(item) / var(total)).

    Here the items are the repetitions (each a rater answering every question) and the
    subjects are the questions. None where it is undefined: an item with no variance across
    subjects (its share of the total is then meaningless; every question right, or every
    one wrong, in that repetition) or fewer than two of either.
    """
    # Cronbach 1951, "Coefficient alpha and the internal structure of tests", eq. 2; sample
    # variances (ddof 1), as pingouin.cronbach_alpha computes it.
    x = _item_matrix(scores)
    if x is None:
        return None
    k = x.shape[1]
    return float(k / (k - 1) * (1 - x.var(axis=0, ddof=1).sum() / x.sum(1).var(ddof=1)))


OMEGA_MAX_ITER = 5_000
OMEGA_TOL = 1e-10


def one_factor_loadings(corr: np.ndarray) -> np.ndarray:
    """Loadings [k] of a one-factor model fitted to a correlation matrix [k, k] by iterated
    principal-axis factoring, whose fixed point is the unweighted least-squares (MINRES)
    fit of the off-diagonal correlations (Harman 1976, "Modern Factor Analysis", ch. 8).

    Communalities start at each item's largest absolute correlation with another item (the
    usual start when, as with more items than subjects, the matrix cannot be inverted for
    squared multiple correlations); signs are set so the loadings sum to a non-negative value.
    """
    k = corr.shape[0]
    off = np.abs(corr - np.diag(np.diag(corr)))
    h2 = off.max(axis=1)
    for _ in range(OMEGA_MAX_ITER):
        reduced = corr.copy()
        reduced[np.diag_indices(k)] = h2  # [k, k]
        values, vectors = np.linalg.eigh(reduced)  # ascending
        loadings = vectors[:, -1] * math.sqrt(max(values[-1], 0.0))  # [k]
        new = loadings**2
        if np.max(np.abs(new - h2)) < OMEGA_TOL:
            break
        h2 = new
    return loadings if loadings.sum() >= 0 else -loadings


def mean_item_correlation(scores: ArrayLike) -> float | None:
    """Mean correlation between two items of scores [subjects, items] (None as in
    `cronbach_alpha`): with repetitions as items, how far one draw predicts another, the
    reliability of a single answer. Alpha and omega are the reliability of the sum over every
    item, which grows with their number (Spearman-Brown: k r / (1 + (k - 1) r))."""
    x = _item_matrix(scores)
    if x is None:
        return None
    corr = np.corrcoef(x, rowvar=False)  # [k, k]
    k = corr.shape[0]
    return float((corr.sum() - np.trace(corr)) / (k * (k - 1)))


def mcdonald_omega(scores: ArrayLike) -> float | None:
    """McDonald's omega (total) of scores [subjects, items] under one common factor:
    (sum of loadings)^2 / ((sum of loadings)^2 + sum of unique variances), on the items'
    correlation matrix (standardized omega).

    Items and subjects as in `cronbach_alpha`, and None where it is. When every item is the
    same column (one output repeated), the correlations are all 1, one factor explains
    everything and omega is exactly 1: the repetitions agree perfectly, which says nothing
    about whether the answers are right. Unique variances below 0 (a Heywood case) count as 0.
    """
    # McDonald 1999, "Test Theory: A Unified Treatment", eq. 6.20b.
    x = _item_matrix(scores)
    if x is None:
        return None
    loadings = one_factor_loadings(np.corrcoef(x, rowvar=False))
    common = loadings.sum() ** 2
    unique = np.clip(1 - loadings**2, 0, None).sum()
    return float(min(1.0, common / (common + unique)))


# ---------------------------------------------------------------------------- diversity


def distinct_answers(answers: Sequence[Sequence[str | None]]) -> float:
    """Mean over prompts of the number of distinct parsed answers among its samples.

    answers[p][i] as in `consistency`; a format failure (None) is not an answer and is not
    counted. 1.0 means every prompt's samples agree; n means they all differ. It falls when a
    recipe concentrates probability mass on one answer per prompt (Zhu et al. 2025, "The
    Surprising Effectiveness of Negative Reinforcement": PSR narrows, NSR keeps the spread).
    """
    if not answers:
        raise ValueError("distinct_answers needs at least one prompt")
    return float(np.mean([len({a for a in group if a is not None}) for group in answers]))


def mean_token_entropy(entropy_sums: ArrayLike, lengths: ArrayLike) -> float | None:
    """Mean per-token entropy (nats) over every completion token of every sample.

    entropy_sums[i] is the sum over sample i's tokens of H(pi(. | x, y_<t)); lengths[i] its
    token count. Token-weighted, like the held-out token entropy of Zhu et al. 2025 (Fig. 4);
    None when there are no tokens.
    """
    total = float(np.asarray(lengths, dtype=float).sum())
    return float(np.asarray(entropy_sums, dtype=float).sum() / total) if total > 0 else None


# ---------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class CalibrationSummary:
    """All calibration numbers for one confidence signal; numbers are None when count == 0."""

    count: int
    ece: float | None
    brier: float | None
    auroc: float | None
    overconfidence: float | None
    mean_confidence: float | None
    reliability: list[ReliabilityBin]
    hist_correct: list[int]
    hist_incorrect: list[int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; NaN is written as None."""
        return {
            "count": int(self.count),
            "ece": _none_if_nan(self.ece),
            "brier": _none_if_nan(self.brier),
            "auroc": _none_if_nan(self.auroc),
            "overconfidence": _none_if_nan(self.overconfidence),
            "mean_confidence": _none_if_nan(self.mean_confidence),
            "reliability": [
                {
                    "lo": float(r.lo),
                    "hi": float(r.hi),
                    "count": int(r.count),
                    "confidence": _none_if_nan(r.confidence),
                    "accuracy": _none_if_nan(r.accuracy),
                }
                for r in self.reliability
            ],
            "hist_correct": [int(x) for x in self.hist_correct],
            "hist_incorrect": [int(x) for x in self.hist_incorrect],
        }


def calibration_summary(conf: ArrayLike, correct: ArrayLike, bins: int = 10) -> CalibrationSummary:
    """ECE, Brier, AUROC, overconfidence, reliability table and histograms for one signal.

    Samples whose conf is NaN (signal undefined, e.g. a format failure) are dropped first;
    count is the number kept. With count == 0 every number is None, every reliability bin
    is empty (count 0) and both histograms are all zeros.
    """
    q, c = _as_pair(conf, correct)
    keep = ~np.isnan(q)
    q, c = q[keep], c[keep]
    pos = c > 0.5
    if q.size == 0:
        return CalibrationSummary(
            count=0,
            ece=None,
            brier=None,
            auroc=None,
            overconfidence=None,
            mean_confidence=None,
            reliability=reliability(q, c, bins),
            hist_correct=[0] * bins,
            hist_incorrect=[0] * bins,
        )
    return CalibrationSummary(
        count=int(q.size),
        ece=_none_if_nan(ece(q, c, bins)),
        brier=_none_if_nan(brier(q, c)),
        auroc=auroc(q, c),
        overconfidence=_none_if_nan(overconfidence(q, c)),
        mean_confidence=float(q.mean()),
        reliability=reliability(q, c, bins),
        hist_correct=histogram(q[pos], bins),
        hist_incorrect=histogram(q[~pos], bins),
    )
