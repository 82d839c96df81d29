"""Post-hoc recalibration (core.recalibration) against hand-worked pool-adjacent-violators
fits, and the fixed question split it is fitted and measured on."""

from __future__ import annotations

import hashlib
import math
import zlib

import numpy as np
import pytest

from core.data.tasks import TASKS
from core.metrics import calibration_summary, raw_half, recalibrated
from core.recalibration import measuring_half, measuring_mask, recalibrate, summaries

NAN = float("nan")


def test_isotonic_map_matches_pool_adjacent_violators_by_hand() -> None:
    # y = 1, 0, 0, 1, 1 at x = .1 … .5. PAV: 1 > 0 pools {.1, .2} to 1/2; 1/2 > 0 pools
    # {.1, .2, .3} to 1/3; then 1/3 <= 1 <= 1 is monotone. Fit: 1/3, 1/3, 1/3, 1, 1.
    x = [0.1, 0.2, 0.3, 0.4, 0.5]
    y = [1, 0, 0, 1, 1]
    got = recalibrate(x, y, [0.0, 0.1, 0.25, 0.3, 0.35, 0.45, 0.9])
    # Below the first point and above the last the map holds its end values (clip); between
    # fitted points it interpolates linearly: at .35, halfway from 1/3 to 1.
    assert got == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 1.0, 1.0])


def test_tied_confidences_are_pooled_first() -> None:
    # Two samples at q = .5 (one right, one wrong) fit their mean 1/2; q = .8 fits 1.
    assert recalibrate([0.5, 0.5, 0.8], [1, 0, 1], [0.5, 0.65, 0.8]) == pytest.approx(
        [0.5, 0.75, 1.0])


def test_a_confidence_that_ranks_backwards_maps_to_the_base_rate() -> None:
    # Wrong at high q, right at low q: PAV pools everything to the accuracy, 1/2.
    assert recalibrate([0.2, 0.8], [1, 0], [0.0, 0.5, 1.0]) == pytest.approx([0.5] * 3)


def test_missing_confidences_stay_missing_and_no_fit_data_gives_nan() -> None:
    got = recalibrate([0.2, NAN, 0.8], [0, 1, 1], [NAN, 0.8])
    assert math.isnan(got[0]) and got[1] == pytest.approx(1.0)
    assert np.isnan(recalibrate([NAN, NAN], [0, 1], [0.3, 0.7])).all()


def test_summaries_score_the_map_and_the_raw_signal_on_the_same_rows() -> None:
    # Fitting half: q = .9 always, right half the time -> the map sends .9 to 1/2.
    # Measuring half: q = .9, right 2 of 4, plus one sample with no signal (NaN).
    q = np.array([0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, NAN])
    c = np.array([1, 0, 1, 0, 1, 0, 1, 0, 1])
    measure = np.array([False] * 4 + [True] * 5)
    out = summaries({"verbalized": q}, c, measure)
    assert set(out) == {recalibrated("verbalized"), raw_half("verbalized")}
    post, raw = out["verbalized_recalibrated"], out["verbalized_raw_half"]
    assert post["count"] == raw["count"] == 4  # the NaN sample is dropped from both
    assert post["ece"] == pytest.approx(0.0)  # every q = 1/2 against accuracy 1/2
    assert raw["ece"] == pytest.approx(0.4)  # |0.5 - 0.9|
    assert post["mean_confidence"] == pytest.approx(0.5)
    assert post["brier"] == pytest.approx(0.25) and raw["brier"] == pytest.approx(0.41)
    assert post["auroc"] == raw["auroc"] == pytest.approx(0.5)  # all tied: blind either way
    # Same fields as the raw signal's entry.
    assert set(post) == set(calibration_summary(q, c).to_dict())


def test_a_monotone_map_cannot_make_a_blind_signal_discriminate() -> None:
    rng = np.random.default_rng(0)
    q = rng.uniform(size=400)
    c = (rng.uniform(size=400) < 0.4).astype(float)  # right or wrong whatever q says
    measure = np.arange(400) % 2 == 1
    out = summaries({"verbalized": q}, c, measure)
    assert out["verbalized_raw_half"]["ece"] > 0.1
    assert out["verbalized_recalibrated"]["ece"] < out["verbalized_raw_half"]["ece"]
    assert abs(out["verbalized_recalibrated"]["auroc"] - 0.5) < 0.1


def test_the_split_is_a_fixed_hash_of_the_question_text() -> None:
    # Pinned answers: a salted hash() or a changed hash would move questions across halves.
    assert [measuring_half(q) for q in ("12+34", "7+8", "100+250", "45+67")] == [
        True, False, False, False]
    assert measuring_half("12+34") == (hashlib.blake2b(b"12+34", digest_size=8).digest()[0] % 2
                                       == 1)
    assert measuring_mask(["12+34", "7+8"], 3).tolist() == [True] * 3 + [False] * 3


@pytest.mark.parametrize("task", sorted(TASKS))
def test_both_halves_of_every_built_in_held_out_set_are_used(task: str) -> None:
    questions = [e.question for e in TASKS[task].eval_set(128)]
    # The held-out set is crc32 % 8 == 0, so crc32's parity would put every question on one
    # side; the split's own hash does not.
    assert all(zlib.crc32(q.encode()) % 2 == 0 for q in questions)
    share = sum(map(measuring_half, questions)) / len(questions)
    assert 0.4 <= share <= 0.6
