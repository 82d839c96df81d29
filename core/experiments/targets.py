"""The classic experiment's targets: fixed thresholds checked on a summary's means.

Each target reads only `summary["aggregates"]` and `summary["pass_k_max"]` (see
`core.experiments.aggregation`), so it can be tested on hand-made summaries. A target on a
recipe that did not finish is "not run"; a check on a missing number fails. The thresholds are
fixed in advance and never tuned per recipe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Check:
    label: str  # what is checked, with its threshold
    measured: str  # the numbers it was decided on
    passed: bool | None  # None: reported, not judged


@dataclass
class TargetResult:
    key: str
    title: str
    status: str  # "PASS", "FAIL", "not run" or "report"
    checks: list[Check] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mean_of(summary: dict[str, Any], recipe: str, metric: str, when: str) -> float | None:
    """A recipe's mean over seeds of `metric` at 'start' or 'end'; None if not measured."""
    agg = summary.get("aggregates", {}).get(recipe, {}).get(metric)
    return agg[when]["mean"] if agg else None


def _k(summary: dict[str, Any]) -> str:
    return f"pass@{summary['pass_k_max']}"


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _missing(summary: dict[str, Any], key: str, title: str, recipes: Sequence[str],
             note: str = "") -> TargetResult | None:
    absent = [r for r in recipes if r not in summary.get("aggregates", {})]
    if absent:
        return TargetResult(key, title, "not run", [], f"not run: no finished {', '.join(absent)}"
                            " runs" + (f". {note}" if note else ""))
    return None


def _verdict(key: str, title: str, checks: list[Check], note: str = "") -> TargetResult:
    """PASS only when every check passed; a check on a missing number fails."""
    return TargetResult(key, title, "PASS" if all(c.passed for c in checks) else "FAIL",
                        checks, note)


def _ge(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and a >= b - 1e-12


def _le(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and a <= b + 1e-12


def _lt(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and a < b


def target_binary(summary: dict[str, Any]) -> TargetResult:
    """(a) binary: accuracy rises, confidence stays blind (AUROC) and miscalibrated (ECE)."""
    title = "(a) binary reward raises accuracy but not calibration"
    note = ("Accuracy rising toward an overconfident start can shrink ECE by itself; that "
            "is not calibration.")
    if (res := _missing(summary, "binary", title, ["binary"], note)) is not None:
        return res
    a0, a1 = (mean_of(summary, "binary", "accuracy", w) for w in ("start", "end"))
    gain = a1 - a0 if None not in (a0, a1) else None
    auroc = mean_of(summary, "binary", "verbalized/auroc", "end")
    ece = mean_of(summary, "binary", "verbalized/ece", "end")
    return _verdict("binary", title, [
        Check("end − start accuracy ≥ 0.05",
               f"{_fmt(a0)} → {_fmt(a1)} (Δ {_fmt(gain)})", _ge(gain, 0.05)),
        Check("end verbalized AUROC ≤ 0.60", _fmt(auroc), _le(auroc, 0.60)),
        Check("end verbalized ECE ≥ 0.10", _fmt(ece), _ge(ece, 0.10)),
    ], note)


def target_rlcr(summary: dict[str, Any]) -> TargetResult:
    """(b) rlcr: calibrated (ECE) and discriminating (AUROC) without losing accuracy."""
    title = "(b) rlcr calibrates without costing accuracy"
    if (res := _missing(summary, "rlcr", title, ["rlcr", "binary"])) is not None:
        return res
    ece = mean_of(summary, "rlcr", "verbalized/ece", "end")
    b_ece = mean_of(summary, "binary", "verbalized/ece", "end")
    acc = mean_of(summary, "rlcr", "accuracy", "end")
    b_acc = mean_of(summary, "binary", "accuracy", "end")
    auroc = mean_of(summary, "rlcr", "verbalized/auroc", "end")
    half = 0.5 * b_ece if b_ece is not None else None
    floor = b_acc - 0.05 if b_acc is not None else None
    return _verdict("rlcr", title, [
        Check("end verbalized ECE ≤ 0.5 × binary's end ECE",
               f"{_fmt(ece)} vs 0.5 × {_fmt(b_ece)} = {_fmt(half)}", _le(ece, half)),
        Check("end verbalized ECE ≤ 0.08", _fmt(ece), _le(ece, 0.08)),
        Check("end accuracy ≥ binary's end accuracy − 0.05",
               f"{_fmt(acc)} vs {_fmt(b_acc)} − 0.05 = {_fmt(floor)}", _ge(acc, floor)),
        Check("end verbalized AUROC ≥ 0.65", _fmt(auroc), _ge(auroc, 0.65)),
    ])


def psr_sharpens(summary: dict[str, Any], key: str, title: str, prefix: str = ""
                 ) -> TargetResult:
    """psr sharpens: Pass@1 up, Pass@k at the largest k down (Zhu et al. 2025). `key` and
    `title` name the target in the experiment that checks it; `prefix` starts each check."""
    if (res := _missing(summary, key, title, ["psr"])) is not None:
        return res
    k = _k(summary)
    p0, p1 = (mean_of(summary, "psr", "pass@1", w) for w in ("start", "end"))
    k0, k1 = (mean_of(summary, "psr", k, w) for w in ("start", "end"))
    return _verdict(key, title, [
        Check(f"{prefix}Pass@1 end > start", f"{_fmt(p0)} → {_fmt(p1)}", _lt(p0, p1)),
        Check(f"{prefix}{k.replace('pass', 'Pass')} end < start", f"{_fmt(k0)} → {_fmt(k1)}",
              _lt(k1, k0)),
    ])


def nsr_keeps(summary: dict[str, Any], key: str, title: str, prefix: str = ""
              ) -> TargetResult:
    """nsr keeps the spread: Pass@k at the largest k holds (within 0.02) and ends 0.05 above
    psr's (Zhu et al. 2025). Arguments as for `psr_sharpens`."""
    if (res := _missing(summary, key, title, ["nsr", "psr"])) is not None:
        return res
    k = _k(summary)
    label = k.replace("pass", "Pass")
    k0, k1 = (mean_of(summary, "nsr", k, w) for w in ("start", "end"))
    psr1 = mean_of(summary, "psr", k, "end")
    return _verdict(key, title, [
        Check(f"{prefix}{label} end ≥ start − 0.02", f"{_fmt(k0)} → {_fmt(k1)}",
              _ge(k1, k0 - 0.02) if k0 is not None else False),
        Check(f"{prefix}end {label} ≥ psr's end {label} + 0.05",
              f"{_fmt(k1)} vs {_fmt(psr1)} + 0.05", _ge(k1, psr1 + 0.05)
              if psr1 is not None else False),
    ])


def target_psr(summary: dict[str, Any]) -> TargetResult:
    """(c) psr sharpens: Pass@1 up, Pass@k at the largest k down."""
    return psr_sharpens(summary, "psr", "(c) psr raises Pass@1 and lowers Pass@k at large k")


def target_nsr(summary: dict[str, Any]) -> TargetResult:
    """(d) nsr keeps the spread: Pass@k holds, and beats psr's at the end."""
    return nsr_keeps(summary, "nsr", "(d) nsr keeps Pass@k at large k, above psr")


def target_answer_prob(summary: dict[str, Any]) -> TargetResult:
    """(e) answer probability: calibrated at the start, binary makes it overconfident."""
    title = "(e) answer probability starts calibrated; binary makes it overconfident"
    if (res := _missing(summary, "answer_prob", title, ["binary"])) is not None:
        return res
    e0, e1 = (mean_of(summary, "binary", "answer_prob/ece", w) for w in ("start", "end"))
    o0, o1 = (mean_of(summary, "binary", "answer_prob/overconfidence", w)
              for w in ("start", "end"))
    return _verdict("answer_prob", title, [
        Check("start answer-prob ECE ≤ 0.10 (binary's runs at step 0)", _fmt(e0),
               _le(e0, 0.10)),
        Check("binary: answer-prob overconfidence end > start", f"{_fmt(o0)} → {_fmt(o1)}",
               _lt(o0, o1)),
        Check("binary: answer-prob ECE end > start", f"{_fmt(e0)} → {_fmt(e1)}",
               _lt(e0, e1)),
    ])


def _change(name: str, a: float | None, b: float | None, up_is: str = "") -> str:
    """'name rose by d (a → b, worse)': the direction of a change in words."""
    if a is None or b is None:
        return f"{name}: not measured"
    if abs(b - a) < 0.005:
        return f"{name} held ({_fmt(a)} → {_fmt(b)})"
    judged = "" if not up_is else f", {up_is if b > a else _OPPOSITE[up_is]}"
    return (f"{name} {'rose' if b > a else 'fell'} by {abs(b - a):.3f} "
            f"({_fmt(a)} → {_fmt(b)}{judged})")


_OPPOSITE = {"worse": "better", "better": "worse"}


def target_rlsf(summary: dict[str, Any]) -> TargetResult:
    """(f) rlsf: accuracy and answer-prob calibration change, reported without a verdict."""
    title = "(f) rlsf (no labels): what happened to accuracy and answer-prob calibration"
    if (res := _missing(summary, "rlsf", title, ["rlsf"])) is not None:
        return res
    names = {"accuracy": ("accuracy", ""), "answer_prob/ece": ("answer-prob ECE", "worse"),
             "answer_prob/overconfidence": ("answer-prob overconfidence", "")}
    vals = {m: [mean_of(summary, "rlsf", m, w) for w in ("start", "end")] for m in names}
    checks = [Check(f"{names[m][0]} start → end", f"{_fmt(a)} → {_fmt(b)}", None)
              for m, (a, b) in vals.items()]
    note = "; ".join(_change(names[m][0], a, b, names[m][1]) for m, (a, b) in vals.items())
    return TargetResult("rlsf", title, "report", checks, note[:1].upper() + note[1:] + ".")


CLASSIC_TARGETS: tuple[Callable[[dict[str, Any]], TargetResult], ...] = (
    target_binary, target_rlcr, target_psr, target_nsr, target_answer_prob, target_rlsf)


def classic_targets(summary: dict[str, Any]) -> list[TargetResult]:
    """Every classic target, in order (a)-(f)."""
    return [t(summary) for t in CLASSIC_TARGETS]
