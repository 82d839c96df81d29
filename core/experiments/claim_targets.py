"""The claims' targets beyond the classic experiment's own: coverage, self-feedback,
post-hoc recalibration (checked on the calibration experiment's runs) and
consistency. Fixed thresholds on a summary.

Like `core.experiments.targets` (whose helpers these reuse), each target reads only the
summary (`aggregates`, `pass_k_max`, and for the format check the per-run `min_format_rate`),
so it is tested on hand-made summaries. Thresholds come from the claims as the literature
states them, fixed before any run: never tuned to pass.
"""

from __future__ import annotations

from typing import Any

from core.experiments.aggregation import SIGNAL_WORDS
from core.experiments.targets import (
    Check,
    TargetResult,
    _fmt,
    _ge,
    _k,
    _le,
    _lt,
    _missing,
    _verdict,
    classic_targets,
    mean_of,
    nsr_keeps,
    psr_sharpens,
)
from core.metrics import SIGNALS, raw_half, recalibrated

CHAINED_ARM = "rlsf after binary"  # the self-feedback experiment's chained arm
REWARD_ARM = "binary"  # the reward run the chained arm starts from
FORMAT_FLOOR = 0.90


def _ends(summary: dict[str, Any], arm: str, metric: str) -> tuple[float | None, float | None]:
    return mean_of(summary, arm, metric, "start"), mean_of(summary, arm, metric, "end")


def _drop(pair: tuple[float | None, float | None]) -> float | None:
    a, b = pair
    return None if a is None or b is None else a - b


# --- coverage: PSR narrows, NSR keeps ---------------------------------------------------------
def target_psr_narrows(summary: dict[str, Any]) -> TargetResult:
    return psr_sharpens(summary, "psr_narrows",
                        "PSR raises Pass@1 and lowers Pass@k at the largest k", prefix="psr ")


def target_nsr_keeps(summary: dict[str, Any]) -> TargetResult:
    return nsr_keeps(summary, "nsr_keeps", "NSR keeps Pass@k at the largest k, above PSR's",
                     prefix="nsr ")


def target_entropy(summary: dict[str, Any]) -> TargetResult:
    title = "PSR's token entropy falls by more than NSR's"
    if (res := _missing(summary, "entropy", title, ["psr", "nsr"])) is not None:
        return res
    psr, nsr = _ends(summary, "psr", "entropy"), _ends(summary, "nsr", "entropy")
    d_psr, d_nsr = _drop(psr), _drop(nsr)
    return _verdict("entropy", title, [
        Check("psr's fall (start − end) > nsr's fall",
              f"psr {_fmt(psr[0])} → {_fmt(psr[1])} (fall {_fmt(d_psr)}); nsr "
              f"{_fmt(nsr[0])} → {_fmt(nsr[1])} (fall {_fmt(d_nsr)})", _lt(d_nsr, d_psr)),
    ])


def _spread_report(summary: dict[str, Any]) -> TargetResult:
    """Every arm's Pass@1, Pass@k, entropy and distinct answers, start → end: no verdict."""
    k = _k(summary)
    checks = []
    for arm in summary.get("aggregates", {}):
        vals = [(m, _ends(summary, arm, m)) for m in ("pass@1", k, "entropy", "distinct_answers")]
        checks.append(Check(arm, "; ".join(f"{m.replace('pass', 'Pass')} {_fmt(a)} → {_fmt(b)}"
                                           for m, (a, b) in vals), None))
    return TargetResult("spread", "Every recipe: coverage and spread, start → end", "report",
                        checks)


def coverage_targets(summary: dict[str, Any]) -> list[TargetResult]:
    return [target_psr_narrows(summary), target_nsr_keeps(summary), target_entropy(summary),
            _spread_report(summary)]


# --- self-feedback: RLSF improves without labels ----------------------------------------------
def target_format(summary: dict[str, Any]) -> TargetResult:
    title = f"Every rlsf run keeps its format: format rate ≥ {FORMAT_FLOOR:.2f} at every evaluation"
    runs = [r for r in summary.get("runs", []) if r["recipe"] in ("rlsf", CHAINED_ARM)
            and r.get("status") == "finished"]
    if not runs:
        return TargetResult("format", title, "not run", [], "not run: no finished rlsf runs")
    return _verdict("format", title, [
        Check(f"{r['recipe']} seed {r['seed']}: lowest format rate",
              _fmt(r.get("min_format_rate")), _ge(r.get("min_format_rate"), FORMAT_FLOOR))
        for r in runs])


def target_rlsf_accuracy(summary: dict[str, Any]) -> TargetResult:
    title = "Plain rlsf raises accuracy without labels"
    if (res := _missing(summary, "rlsf_accuracy", title, ["rlsf"])) is not None:
        return res
    a0, a1 = _ends(summary, "rlsf", "accuracy")
    return _verdict("rlsf_accuracy", title, [
        Check("rlsf accuracy end ≥ start + 0.03", f"{_fmt(a0)} → {_fmt(a1)}",
              _ge(a1, a0 + 0.03) if a0 is not None else False)])


def target_chained_calibration(summary: dict[str, Any]) -> TargetResult:
    title = "rlsf after a reward run lowers the answer-probability ECE it started from"
    if (res := _missing(summary, "chained", title, [CHAINED_ARM])) is not None:
        return res
    e0, e1 = _ends(summary, CHAINED_ARM, "answer_prob/ece")
    o0, o1 = _ends(summary, REWARD_ARM, "answer_prob/ece")
    oc0, oc1 = _ends(summary, REWARD_ARM, "answer_prob/overconfidence")
    direction = ("" if oc1 is None else " (over-confident)" if oc1 > 0 else
                 " (under-confident)")
    note = (f"The {REWARD_ARM} run it starts from moved answer-probability ECE "
            f"{_fmt(o0)} → {_fmt(o1)} and overconfidence (mean confidence − accuracy) "
            f"{_fmt(oc0)} → {_fmt(oc1)}{direction}.")
    return _verdict("chained", title, [
        Check(f"{CHAINED_ARM}: answer-prob ECE end < start", f"{_fmt(e0)} → {_fmt(e1)}",
              _lt(e1, e0))], note)


def self_feedback_targets(summary: dict[str, Any]) -> list[TargetResult]:
    return [target_format(summary), target_rlsf_accuracy(summary),
            target_chained_calibration(summary)]


# --- post-hoc recalibration: fixes the numbers, not the knowledge -----------------------------
# Fixed before the calibration experiment's seeds 0-2 were read. "Near" rlcr's ECE: within
# 0.03, the ECE the RLCR paper itself reports for its calibrated model (Damani et al. 2025),
# so a gap that size is one the literature counts as calibrated. The AUROC bounds are the classic
# targets' own: binary's stays at or below 0.60 (target a), rlcr's at or above 0.65
# (target b), so "clearly above" is their 0.05 gap.
NEAR_ECE = 0.03
BLIND_AUROC = 0.60
CLEARLY_ABOVE = 0.05
POSTHOC_ARM = "binary + post-hoc"  # the report's name for binary after recalibration
RAW_ECE, POST_ECE = f"{raw_half('verbalized')}/ece", f"{recalibrated('verbalized')}/ece"
RAW_AUROC, POST_AUROC = (f"{raw_half('verbalized')}/auroc",
                         f"{recalibrated('verbalized')}/auroc")


def _posthoc_missing(summary: dict[str, Any], key: str, title: str) -> TargetResult | None:
    if (res := _missing(summary, key, title, ["binary", "rlcr"])) is not None:
        return res
    if mean_of(summary, "binary", POST_ECE, "end") is None:
        return TargetResult(key, title, "not run", [], "not run: these runs logged no "
                            "recalibrated signal (they predate it, or no evaluation had "
                            "samples on both halves)")
    return None


def target_posthoc_numbers(summary: dict[str, Any]) -> TargetResult:
    title = "Post-hoc recalibration fixes binary's numbers: its verbalized ECE falls to near rlcr's"
    if (res := _posthoc_missing(summary, "posthoc_numbers", title)) is not None:
        return res
    raw = mean_of(summary, "binary", RAW_ECE, "end")
    post = mean_of(summary, "binary", POST_ECE, "end")
    rlcr = mean_of(summary, "rlcr", RAW_ECE, "end")
    half = 0.5 * raw if raw is not None else None
    near = rlcr + NEAR_ECE if rlcr is not None else None
    return _verdict("posthoc_numbers", title, [
        Check(f"{POSTHOC_ARM}: end verbalized ECE ≤ 0.5 × binary's raw",
              f"{_fmt(post)} vs 0.5 × {_fmt(raw)} = {_fmt(half)}", _le(post, half)),
        Check(f"{POSTHOC_ARM}: end verbalized ECE ≤ rlcr's raw + {NEAR_ECE:.2f}",
              f"{_fmt(post)} vs {_fmt(rlcr)} + {NEAR_ECE:.2f} = {_fmt(near)}", _le(post, near)),
    ], "Both measured on the same half of the held-out prompts; the map was fitted on the "
       "other half. It needs labelled held-out answers and no training change.")


def target_posthoc_knowledge(summary: dict[str, Any]) -> TargetResult:
    title = "…but not the knowledge: binary's AUROC stays blind, rlcr's stays clearly above it"
    if (res := _posthoc_missing(summary, "posthoc_knowledge", title)) is not None:
        return res
    post = mean_of(summary, "binary", POST_AUROC, "end")
    rlcr = mean_of(summary, "rlcr", RAW_AUROC, "end")
    floor = post + CLEARLY_ABOVE if post is not None else None
    return _verdict("posthoc_knowledge", title, [
        Check(f"{POSTHOC_ARM}: end verbalized AUROC ≤ {BLIND_AUROC:.2f}", _fmt(post),
              _le(post, BLIND_AUROC)),
        Check(f"rlcr's raw end verbalized AUROC ≥ {POSTHOC_ARM}'s + {CLEARLY_ABOVE:.2f}",
              f"{_fmt(rlcr)} vs {_fmt(post)} + {CLEARLY_ABOVE:.2f} = {_fmt(floor)}",
              _ge(rlcr, floor)),
    ])


def _posthoc_report(summary: dict[str, Any]) -> TargetResult:
    """Every recipe and signal at the end: ECE and AUROC raw → post-hoc, no verdict."""
    checks = []
    for arm in summary.get("aggregates", {}):
        for sig in SIGNALS:
            raw, post = ([mean_of(summary, arm, f"{entry(sig)}/{f}", "end")
                          for f in ("ece", "auroc")] for entry in (raw_half, recalibrated))
            if all(v is None for v in (*raw, *post)):
                continue
            checks.append(Check(f"{arm}, {SIGNAL_WORDS[sig]}: raw → post-hoc",
                                f"ECE {_fmt(raw[0])} → {_fmt(post[0])}; AUROC {_fmt(raw[1])} "
                                f"→ {_fmt(post[1])}", None))
    title = "Every recipe and signal after post-hoc recalibration"
    if not checks:
        return TargetResult("posthoc_all", title, "not run", [], "not run: no finished run "
                            "logged a recalibrated signal")
    return TargetResult("posthoc_all", title, "report", checks)


def calibration_targets(summary: dict[str, Any]) -> list[TargetResult]:
    """The classic experiment's targets (a)-(f), then the post-hoc recalibration claim's."""
    return [*classic_targets(summary), target_posthoc_numbers(summary),
            target_posthoc_knowledge(summary), _posthoc_report(summary)]


# --- judges: the pattern of a judge's errors ---------------------------------------------------
JUDGE_ARMS = ("exact", "random", "shortcut", "inverted")
RANDOM_GAIN = 0.03  # the random judge still teaches: end ≥ start + this
SHORTCUT_BELOW = 0.05  # the shortcut judge ends at least this far below the random judge


def _judge_fig(summary: dict[str, Any], arm: str, key: str, when: str) -> float | None:
    """An arm's training-side judge figure (core.experiments.aggregation.judge_summary)."""
    part = (summary.get("judges") or {}).get(arm, {}).get(key)
    return part[when]["mean"] if part else None


def _gain(summary: dict[str, Any], arm: str) -> float | None:
    return _drop(_ends(summary, arm, "accuracy")[::-1])  # end − start


def target_exact_most(summary: dict[str, Any]) -> TargetResult:
    title = "The exact grader raises true accuracy the most"
    if (res := _missing(summary, "exact_most", title, JUDGE_ARMS)) is not None:
        return res
    gains = {arm: _gain(summary, arm) for arm in JUDGE_ARMS}
    others = [a for a in JUDGE_ARMS if a != "exact"]
    return _verdict("exact_most", title, [
        Check(f"exact's gain > {arm}'s", f"exact {_fmt(gains['exact'])}, {arm} "
              f"{_fmt(gains[arm])}", _lt(gains[arm], gains["exact"])) for arm in others])


def target_random_learns(summary: dict[str, Any]) -> TargetResult:
    title = f"The random judge (J > 0) still teaches: true accuracy ≥ start + {RANDOM_GAIN:.2f}"
    if (res := _missing(summary, "random_learns", title, ["random"])) is not None:
        return res
    a0, a1 = _ends(summary, "random", "accuracy")
    return _verdict("random_learns", title, [
        Check(f"random end ≥ start + {RANDOM_GAIN:.2f}", f"{_fmt(a0)} → {_fmt(a1)}",
              _ge(a1, a0 + RANDOM_GAIN) if a0 is not None else False)])


def target_shortcut_learnt(summary: dict[str, Any]) -> TargetResult:
    title = ("The shortcut judge's blind spot is learnt: it ends below the random judge at "
             "the same agreement, and its judged − true gap widens")
    if (res := _missing(summary, "shortcut_learnt", title, ["shortcut", "random"])) is not None:
        return res
    s1, r1 = _ends(summary, "shortcut", "accuracy")[1], _ends(summary, "random", "accuracy")[1]
    g0, g1 = (_judge_fig(summary, "shortcut", "gap", w) for w in ("start", "end"))
    return _verdict("shortcut_learnt", title, [
        Check(f"shortcut end ≤ random end − {SHORTCUT_BELOW:.2f}",
              f"shortcut {_fmt(s1)}, random {_fmt(r1)}",
              _le(s1, r1 - SHORTCUT_BELOW) if r1 is not None else False),
        Check("shortcut's training gap judged − true accuracy: end > start",
              f"{_fmt(g0)} → {_fmt(g1)}", _lt(g0, g1))])


def target_inverted_unlearns(summary: dict[str, Any]) -> TargetResult:
    title = "The judge with J < 0 teaches wrong answers: true accuracy ends below the start"
    if (res := _missing(summary, "inverted_unlearns", title, ["inverted"])) is not None:
        return res
    a0, a1 = _ends(summary, "inverted", "accuracy")
    return _verdict("inverted_unlearns", title, [
        Check("inverted end < start", f"{_fmt(a0)} → {_fmt(a1)}", _lt(a1, a0))])


def _judges_report(summary: dict[str, Any]) -> TargetResult:
    """Every arm's judge on its first and last training steps: no verdict. The random and
    shortcut judges' start agreement is the matching the experiment set."""
    checks = []
    for arm in summary.get("judges") or {}:
        vals = [(label, [_judge_fig(summary, arm, key, w) for w in ("start", "end")])
                for label, key in (("agreement", "agreement"), ("J", "youden_j"),
                                   ("judged accuracy", "judged_accuracy"),
                                   ("true accuracy", "true_accuracy"))]
        checks.append(Check(arm, "; ".join(f"{label} {_fmt(a)} → {_fmt(b)}"
                                           for label, (a, b) in vals), None))
    return TargetResult("judge_figures", "Every judge on the training batches, first → last "
                        "steps", "report", checks)


def judges_targets(summary: dict[str, Any]) -> list[TargetResult]:
    return [target_exact_most(summary), target_random_learns(summary),
            target_shortcut_learnt(summary), target_inverted_unlearns(summary),
            _judges_report(summary)]


# --- consistency: consistency at T = 0 is not reliability -------------------------------------
T0_REPEATABILITY = 1.0
T0_OMEGA_FLOOR = 0.99
T0_ACCURACY_CEILING = 0.70


def _table(summary: dict[str, Any], temperature: float) -> list[dict[str, Any]]:
    return [r for r in summary.get("table") or [] if r["temperature"] == temperature]


def _model(r: dict[str, Any]) -> str:
    return f"{r['recipe']} seed {r['seed']}" + ("" if r["model"] == "start" else
                                                 f" ({r['model']})")


def target_t0_consistent(summary: dict[str, Any]) -> TargetResult:
    title = (f"At T = 0 every model repeats itself (repeatability {T0_REPEATABILITY:.2f}, "
             f"omega ≥ {T0_OMEGA_FLOOR}) while its accuracy is ≤ {T0_ACCURACY_CEILING:.2f}")
    rows = _table(summary, 0.0)
    if not rows:
        return TargetResult("t0_consistent", title, "not run", [], "not run: no T = 0 rows")
    return _verdict("t0_consistent", title, [
        Check(_model(r), f"repeatability {_fmt(r['repeatability'])}, omega {_fmt(r['omega'])}, "
                         f"accuracy {_fmt(r['accuracy'])}",
              _ge(r["repeatability"], T0_REPEATABILITY) and _ge(r["omega"], T0_OMEGA_FLOOR)
              and _le(r["accuracy"], T0_ACCURACY_CEILING))
        for r in rows],
        "Omega is 1 at T = 0 because the 100 repetitions are one column repeated: a perfect "
        "agreement of the draws, not evidence that the answer is right.")


def target_omega_falls(summary: dict[str, Any]) -> TargetResult:
    title = "Omega is lower at T = 1 than at T = 0, for every model"
    cold = {(r["model"], r["seed"]): r for r in _table(summary, 0.0)}
    hot = [r for r in _table(summary, 1.0) if (r["model"], r["seed"]) in cold]
    if not hot:
        return TargetResult("omega_falls", title, "not run", [], "not run: no T = 0 and T = 1 "
                            "rows of one model")
    return _verdict("omega_falls", title, [
        Check(_model(r), f"omega {_fmt(cold[(r['model'], r['seed'])]['omega'])} → "
                         f"{_fmt(r['omega'])}", _lt(r["omega"], cold[(r["model"], r["seed"])]
                                                    ["omega"]))
        for r in hot])


def _determinism_report(summary: dict[str, Any]) -> TargetResult:
    """Greedy outputs across generation batch sizes: reported, not judged."""
    found = summary.get("batch_determinism") or {}
    checks = [Check(model, ", ".join(f"{k} rows: {v} differ" for k, v in
                                     d.get("differing_questions", {}).items()) + " of "
                    f"{d.get('questions')} questions", None)
              for model, d in (found.get("models") or {}).items()]
    return TargetResult("batch_determinism", "Greedy outputs stay the same when the number of "
                        "rows generated together changes", "report", checks,
                        "identical everywhere" if found.get("identical") else
                        "some differ: floating-point sums in another order flip an argmax"
                        if found else "not measured")


def consistency_targets(summary: dict[str, Any]) -> list[TargetResult]:
    return [target_t0_consistent(summary), target_omega_falls(summary),
            _determinism_report(summary)]
