"""Post-hoc recalibration: a monotone map fitted on one half of the held-out prompts and
measured on the other (docs/science.md, "Post-hoc recalibration").

Torch-free. Every evaluation fits, for each confidence signal, an isotonic regression of
correctness on confidence (the pool-adjacent-violators fit; Zadrozny & Elkan 2002,
"Transforming Classifier Scores into Accurate Multiclass Probability Estimates") on the
samples of the *fitting* half of the held-out prompts, applies it to the samples of the
*measuring* half and summarises the result there with the same fields as the raw signal.
The raw signal on that same measuring half is summarised beside it, so the two rows compare
the same samples: finite-sample ECE depends on the number of samples, and a map fitted on
the rows it is scored on would flatter itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.isotonic import IsotonicRegression

from core.metrics import calibration_summary, raw_half, recalibrated


def measuring_half(question: str) -> bool:
    """True when a held-out question is in the half the map is measured on, False when it is
    in the half the map is fitted on: the same answer for the same text on every machine,
    seed and run."""
    # The held-out set is itself chosen by crc32(question) % 8 == 0 (core.data.tasks), so
    # every held-out question's crc32 is even: its parity cannot split them. A second,
    # unrelated hash can; Python's hash() is salted per process and cannot either.
    return hashlib.blake2b(question.encode(), digest_size=8).digest()[0] % 2 == 1


def measuring_mask(questions: Sequence[str], n: int) -> np.ndarray:
    """[P * n] bool: each prompt's measuring_half, repeated over its n samples (rows are
    prompt-major, as the evaluation lays them out)."""
    return np.repeat(np.array([measuring_half(q) for q in questions], dtype=bool), n)


def recalibrate(fit_conf: ArrayLike, fit_correct: ArrayLike, conf: ArrayLike) -> np.ndarray:
    """conf mapped through the isotonic fit of fit_correct on fit_conf.

    NaN confidences (no signal: a format failure) are left out of the fit and stay NaN.
    Between fitted points the map interpolates linearly; outside them it holds the end
    values (out_of_bounds="clip"). With nothing to fit on, every value comes back NaN.
    """
    x = np.asarray(fit_conf, dtype=float).reshape(-1)
    y = np.asarray(fit_correct, dtype=float).reshape(-1)
    q = np.asarray(conf, dtype=float).reshape(-1)
    keep = ~np.isnan(x)
    out = np.full(q.shape, np.nan)
    if not keep.any():
        return out
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(x[keep], y[keep])
    has = ~np.isnan(q)
    if has.any():
        out[has] = iso.predict(q[has])
    return out


def summaries(signals: dict[str, np.ndarray], correct: np.ndarray, measure: np.ndarray,
              bins: int = 10) -> dict[str, dict[str, Any]]:
    """For every signal, `<signal>_recalibrated` (fitted on the rows where measure is False,
    summarised on the rows where it is True) and `<signal>_raw_half` (the raw signal on those
    same rows), each a calibration_summary dict. Arrays are [P * n]."""
    c = np.asarray(correct, dtype=float)
    out: dict[str, dict[str, Any]] = {}
    for name, conf in signals.items():
        q = np.asarray(conf, dtype=float)
        mapped = recalibrate(q[~measure], c[~measure], q[measure])
        out[recalibrated(name)] = calibration_summary(mapped, c[measure], bins).to_dict()
        out[raw_half(name)] = calibration_summary(q[measure], c[measure], bins).to_dict()
    return out
