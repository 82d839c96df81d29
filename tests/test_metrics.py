"""Tests for core.metrics against hand-worked values and brute-force references."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from core.metrics import (
    CalibrationSummary,
    ReliabilityBin,
    auroc,
    bin_index,
    brier,
    calibration_summary,
    consistency,
    distinct_answers,
    ece,
    histogram,
    mean_pass_at_k,
    mean_token_entropy,
    overconfidence,
    pass_at_k,
    reliability,
)

# A small hand example used by several tests (N = 8):
#   bin 1: conf 0.10, 0.15  correct 0, 1         -> mean conf 0.125, acc 0.5,  |gap| 0.375
#   bin 5: conf 0.50, 0.50  correct 1, 1         -> mean conf 0.5,   acc 1.0,  |gap| 0.5
#   bin 9: conf 0.90, 1.00, 0.95, 0.95  c 1,1,1,0 -> mean conf 0.95, acc 0.75, |gap| 0.2
HAND_CONF = [0.10, 0.15, 0.50, 0.50, 0.90, 1.00, 0.95, 0.95]
HAND_CORRECT = [0, 1, 1, 1, 1, 1, 1, 0]


# ---------------------------------------------------------------------------- Pass@k


def test_pass_at_k_hand_values():
    # 1 - C(3,2)/C(4,2) = 1 - 3/6 = 0.5
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    # 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    # 1 - C(4,3)/C(6,3) = 1 - 4/20 = 0.8
    assert pass_at_k(6, 2, 3) == pytest.approx(0.8)
    # C(n-1,k)/C(n,k) = (n-k)/n, so 1 - 128/256 = 0.5 (large n stays stable)
    assert pass_at_k(256, 1, 128) == pytest.approx(0.5, abs=1e-12)


def test_pass_at_k_edges():
    # no correct samples: C(5,k)/C(5,k) = 1 -> 0
    for k in range(1, 6):
        assert pass_at_k(5, 0, k) == 0.0
    # all correct: C(0,k) = 0 -> 1
    for n in (1, 3, 8):
        for k in range(1, n + 1):
            assert pass_at_k(n, n, k) == 1.0
    # k > n - c: every k-subset holds a correct sample -> 1
    assert pass_at_k(4, 2, 3) == 1.0


def test_pass_at_1_is_fraction_correct():
    # 1 - C(n-c,1)/C(n,1) = 1 - (n-c)/n = c/n
    n = 7
    for c in range(n + 1):
        assert pass_at_k(n, c, 1) == pytest.approx(c / n)


@pytest.mark.parametrize(("n", "c", "k"), [(3, 4, 1), (3, -1, 1), (3, 1, 0), (3, 1, 4), (0, 0, 1)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_mean_pass_at_k_hand_values():
    # n = 4, counts 0, 1, 4
    # k=1: (0 + 1/4 + 1) / 3 = 1.25/3
    # k=2: (0 + [1 - C(3,2)/C(4,2) = 0.5] + 1) / 3 = 1.5/3 = 0.5
    # k=4: (0 + 1 [3 < 4] + 1) / 3 = 2/3
    got = mean_pass_at_k([0, 1, 4], n=4, ks=[1, 2, 4])
    assert list(got) == [1, 2, 4]
    assert got[1] == pytest.approx(1.25 / 3)
    assert got[2] == pytest.approx(0.5)
    assert got[4] == pytest.approx(2 / 3)


def test_mean_pass_at_k_errors():
    with pytest.raises(ValueError):
        mean_pass_at_k([], n=4, ks=[1])
    with pytest.raises(ValueError):
        mean_pass_at_k([1], n=4, ks=[8])


def test_pass_at_k_matches_subset_enumeration():
    # brute force: the share of k-subsets of the n samples that contain a correct one
    for n in range(1, 8):
        for c in range(n + 1):
            samples = [1] * c + [0] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(samples, k))
                ref = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(ref, abs=1e-12), (n, c, k)
    # and against exact binomials for larger n
    for n, c, k in [(64, 5, 10), (100, 37, 50), (256, 3, 200)]:
        ref = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(ref, abs=1e-12)


# ---------------------------------------------------------------------------- binning


def test_bin_index_edges():
    # 0.0 -> 0, 0.0999 -> 0, 0.1 -> 1, 0.3 -> 3, 0.7 -> 7, 0.95 -> 9, 1.0 -> 9 (last bin)
    got = bin_index(np.array([0.0, 0.0999, 0.1, 0.3, 0.7, 0.95, 1.0]))
    assert got.tolist() == [0, 0, 1, 3, 7, 9, 9]


@pytest.mark.parametrize("bins", [7, 10, 20, 100])
def test_bin_index_left_edges_land_in_their_bin(bins):
    # b/bins is the left edge of bin b, whatever float error b/bins*bins carries
    edges = np.arange(bins) / bins
    assert bin_index(edges, bins).tolist() == list(range(bins))
    assert bin_index(np.array([1.0]), bins).tolist() == [bins - 1]


def test_histogram():
    # 0.0, 0.05 -> bin 0; 0.1 -> bin 1; 0.55 -> bin 5; 1.0 -> bin 9
    assert histogram([0.0, 0.05, 0.1, 0.55, 1.0]) == [2, 1, 0, 0, 0, 1, 0, 0, 0, 1]
    assert histogram([], bins=4) == [0, 0, 0, 0]


def test_reliability_hand_example():
    rows = reliability(HAND_CONF, HAND_CORRECT)
    assert len(rows) == 10
    assert [r.count for r in rows] == [0, 2, 0, 0, 0, 2, 0, 0, 0, 4]
    assert rows[1].lo == pytest.approx(0.1) and rows[1].hi == pytest.approx(0.2)
    assert rows[1].confidence == pytest.approx(0.125)  # (0.10 + 0.15) / 2
    assert rows[1].accuracy == pytest.approx(0.5)  # (0 + 1) / 2
    assert rows[5].confidence == pytest.approx(0.5)
    assert rows[5].accuracy == pytest.approx(1.0)
    assert rows[9].confidence == pytest.approx(0.95)  # (0.9 + 1.0 + 0.95 + 0.95) / 4
    assert rows[9].accuracy == pytest.approx(0.75)  # 3 / 4
    assert rows[0] == ReliabilityBin(lo=0.0, hi=0.1, count=0, confidence=None, accuracy=None)


# ---------------------------------------------------------------------------- calibration


def test_ece_hand_example():
    # 2/8 * 0.375 + 2/8 * 0.5 + 4/8 * 0.2 = 0.09375 + 0.125 + 0.1 = 0.31875
    assert ece(HAND_CONF, HAND_CORRECT) == pytest.approx(0.31875)
    # same with numpy input and bool labels
    c = np.array(HAND_CORRECT, dtype=bool)
    assert ece(np.array(HAND_CONF), c) == pytest.approx(0.31875)


def test_ece_perfect_and_empty():
    # bin 5: conf 0.5 x4, 2 correct -> acc 0.5 = conf; bin 9: conf 1.0, correct -> gap 0
    assert ece([0.5, 0.5, 0.5, 0.5, 1.0], [1, 0, 1, 0, 1]) == pytest.approx(0.0)
    assert math.isnan(ece([], []))


def test_ece_rejects_length_mismatch():
    with pytest.raises(ValueError):
        ece([0.5, 0.5], [1])


def test_brier():
    # ((0.8 - 1)^2 + (0.3 - 0)^2) / 2 = (0.04 + 0.09) / 2 = 0.065
    assert brier([0.8, 0.3], [1, 0]) == pytest.approx(0.065)
    # hand example: 0.01 + 0.7225 + 0.25 + 0.25 + 0.01 + 0 + 0.0025 + 0.9025 = 2.1475; / 8
    assert brier(HAND_CONF, HAND_CORRECT) == pytest.approx(2.1475 / 8)
    assert brier([1.0, 0.0], [True, False]) == 0.0


def test_overconfidence():
    # mean q = (0.1+0.15+0.5+0.5+0.9+1.0+0.95+0.95)/8 = 5.05/8 = 0.63125; acc = 6/8 = 0.75
    assert overconfidence(HAND_CONF, HAND_CORRECT) == pytest.approx(0.63125 - 0.75)
    # always says 0.9, right half the time: 0.9 - 0.5 = 0.4
    assert overconfidence([0.9] * 4, [1, 0, 1, 0]) == pytest.approx(0.4)


def test_auroc_hand_values():
    # perfect separation: every correct above every wrong
    assert auroc([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == 1.0
    # reversed
    assert auroc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 0.0
    # all tied: every pair counts 1/2
    assert auroc([0.7] * 5, [1, 0, 1, 0, 0]) == pytest.approx(0.5)
    # 2x2 with a tie: correct {0.8, 0.5}, wrong {0.5, 0.2}
    # pairs (0.8,0.5)=1, (0.8,0.2)=1, (0.5,0.5)=1/2, (0.5,0.2)=1 -> 3.5 / 4 = 0.875
    assert auroc([0.8, 0.5, 0.5, 0.2], [1, 1, 0, 0]) == pytest.approx(0.875)


def test_auroc_none_for_one_class():
    assert auroc([0.2, 0.9], [1, 1]) is None
    assert auroc([0.2, 0.9], [0, 0]) is None
    assert auroc([], []) is None


def _auroc_pairs(conf, correct):
    """O(N^2) reference: share of (correct, wrong) pairs ordered right, ties 1/2."""
    pos = [q for q, c in zip(conf, correct, strict=True) if c]
    neg = [q for q, c in zip(conf, correct, strict=True) if not c]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def _ece_loop(conf, correct, bins=10):
    """Reference ECE: bins found by comparing with the edges, one sample at a time."""
    groups = [[] for _ in range(bins)]
    for q, c in zip(conf, correct, strict=True):
        b = next(b for b in range(bins) if q < (b + 1) / bins or b == bins - 1)
        groups[b].append((q, c))
    n = len(conf)
    return sum(
        len(g) / n * abs(sum(c for _, c in g) / len(g) - sum(q for q, _ in g) / len(g))
        for g in groups
        if g
    )


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_auroc_and_ece_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 60
    # rounded to 2 decimals so ties occur, and kept off the exact bin edges for _ece_loop
    conf = np.round(rng.uniform(0, 1, n), 2) + 0.003
    conf = np.clip(conf, 0.0, 1.0)
    correct = (rng.uniform(0, 1, n) < conf).astype(int)
    assert auroc(conf, correct) == pytest.approx(_auroc_pairs(conf.tolist(), correct.tolist()))
    assert ece(conf, correct) == pytest.approx(_ece_loop(conf.tolist(), correct.tolist()))
    assert brier(conf, correct) == pytest.approx(
        np.mean([(q - c) ** 2 for q, c in zip(conf, correct, strict=True)])
    )


# ---------------------------------------------------------------------------- consistency


def test_consistency_with_failures():
    answers = [["a", "a", "b", None], ["x"], [None, None], []]
    # prompt 0: n = 4 (failure counted), "a" x2 -> 2/4, "b" -> 1/4, None -> None
    assert consistency(answers) == [[0.5, 0.5, 0.25, None], [1.0], [None, None], []]


# ---------------------------------------------------------------------------- summary


def test_calibration_summary_drops_nan():
    conf = [0.9, float("nan"), 0.2, float("nan")]
    correct = [1, 1, 0, 0]
    s = calibration_summary(conf, correct)
    # kept: (0.9, correct) and (0.2, wrong)
    assert s.count == 2
    # bin 9: |1 - 0.9| = 0.1, bin 2: |0 - 0.2| = 0.2, each weight 1/2 -> 0.15
    assert s.ece == pytest.approx(0.15)
    # ((0.9-1)^2 + (0.2-0)^2) / 2 = (0.01 + 0.04) / 2 = 0.025
    assert s.brier == pytest.approx(0.025)
    assert s.auroc == 1.0
    # mean q (0.9+0.2)/2 = 0.55; accuracy 1/2 -> 0.05
    assert s.mean_confidence == pytest.approx(0.55)
    assert s.overconfidence == pytest.approx(0.05)
    assert s.hist_correct == [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    assert s.hist_incorrect == [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    assert [r.count for r in s.reliability] == [0, 0, 1, 0, 0, 0, 0, 0, 0, 1]
    d = s.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["reliability"][9] == {
        "lo": 0.9,
        "hi": 1.0,
        "count": 1,
        "confidence": 0.9,
        "accuracy": 1.0,
    }
    assert d["reliability"][0]["confidence"] is None


def test_calibration_summary_empty():
    s = calibration_summary([float("nan")] * 3, [1, 0, 1], bins=5)
    assert isinstance(s, CalibrationSummary)
    assert s.count == 0
    assert s.ece is None and s.brier is None and s.auroc is None
    assert s.overconfidence is None and s.mean_confidence is None
    assert len(s.reliability) == 5
    assert all(r.count == 0 and r.confidence is None and r.accuracy is None for r in s.reliability)
    assert s.hist_correct == [0] * 5 and s.hist_incorrect == [0] * 5
    json.dumps(s.to_dict(), allow_nan=False)
    # no input at all behaves the same
    assert calibration_summary([], []).count == 0


def test_calibration_summary_one_class_is_json_clean():
    s = calibration_summary(np.array([0.9, 0.99, 1.0]), np.array([True, True, True]))
    assert s.auroc is None
    # (0.9 + 0.99 + 1.0)/3 - 1 = 2.89/3 - 1
    assert s.overconfidence == pytest.approx(2.89 / 3 - 1)
    text = json.dumps(s.to_dict(), allow_nan=False)
    assert json.loads(text)["count"] == 3


def test_distinct_answers_hand_values() -> None:
    # prompt 1: {"3", "4"} = 2; prompt 2: {"7"} = 1 (the failure is no answer); prompt 3: 0.
    answers = [["3", "4", "3"], ["7", None, "7"], [None, None, None]]
    assert distinct_answers(answers) == pytest.approx((2 + 1 + 0) / 3)
    with pytest.raises(ValueError):
        distinct_answers([])


def test_mean_token_entropy_is_token_weighted() -> None:
    # Two samples: 3 tokens summing to 1.5 nats, 1 token of 0.5 nats -> 2.0 / 4 tokens.
    assert mean_token_entropy([1.5, 0.5], [3, 1]) == pytest.approx(0.5)
    assert mean_token_entropy([0.0], [0]) is None
