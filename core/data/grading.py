"""Graders: is a predicted answer the same as the reference answer?

Three kinds, chosen per task (RunConfig.grader):
- number: GSM8K style. The reference is the text after its last `####` (or all of it) and
  must read as a number; a prediction is right when the last number it contains equals it
  (lm-eval's "flexible extract"). 1,000 = 1000 = 1000.0; 1/2 = 0.5.
- math: `math-verify` when it is installed (an optional package), else a numeric fallback
  that strips LaTeX wrappers (\\boxed, $, \\frac) and compares numbers, then plain strings.
- text: exact match after SQuAD/HotpotQA normalisation (lower case, no punctuation, no
  articles a/an/the, single spaces), as in the official SQuAD v1.1 evaluation script.
"""

from __future__ import annotations

import re
import string
from fractions import Fraction

GRADERS = ("number", "math", "text")
GSM8K_MARK = "####"
# An optional sign, digits with optional thousands commas, an optional decimal part, and an
# optional /denominator; or a bare decimal like .5.
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|[-+]?\.\d+")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def final_part(text: str) -> str:
    """GSM8K writes the final answer after `####`; other text is returned whole."""
    return text.rsplit(GSM8K_MARK, 1)[-1].strip() if GSM8K_MARK in text else text.strip()


def to_number(token: str) -> Fraction | None:
    """One number token as an exact fraction (thousands commas dropped); None if it is not."""
    token = token.replace(",", "")
    try:
        if "/" in token:
            num, den = token.split("/")
            return Fraction(Fraction(num), Fraction(den)) if Fraction(den) != 0 else None
        return Fraction(token)
    except (ValueError, ZeroDivisionError):
        return None


def read_number(text: str) -> Fraction | None:
    """The reference side, strict: the whole final part must be one number (a leading $, a
    trailing period or % aside). "72", "#### 1,000", "$3.50" read; "Paris", "3 apples" not."""
    core = final_part(text).strip().removeprefix("$").rstrip(".").strip()
    core = core.removesuffix("%").strip()
    return to_number(core) if _NUMBER.fullmatch(core) else None


def last_number(text: str) -> Fraction | None:
    """The prediction side, lenient: the last number anywhere in the final part."""
    found = _NUMBER.findall(final_part(text))
    return to_number(found[-1]) if found else None


def number_equal(predicted: str, reference: str) -> bool:
    want = read_number(reference)
    got = last_number(predicted)
    return want is not None and got is not None and got == want


def normalize_text(s: str) -> str:
    """SQuAD v1.1's normalize_answer: lower, drop punctuation and articles, fix spaces."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def text_equal(predicted: str, reference: str) -> bool:
    return normalize_text(predicted) == normalize_text(reference)


def _strip_latex(s: str) -> str:
    """The numeric fallback's view of a LaTeX answer: \\boxed{x} -> x, \\frac{a}{b} -> a/b."""
    s = final_part(s).strip().strip("$").strip()
    boxed = re.search(r"\\boxed\{(.*)\}", s)
    if boxed:
        s = boxed.group(1)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"(\1)/(\2)", s)
    s = re.sub(r"\\(left|right|!|,|;|quad)", "", s)
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    return re.sub(r"\s+", "", s).rstrip(".")


def _math_fallback(predicted: str, reference: str) -> bool:
    p, r = _strip_latex(predicted), _strip_latex(reference)
    simple = re.compile(r"\(?([-+]?[\d.,]+)\)?(?:/\(?(\d+)\)?)?")
    mp, mr = simple.fullmatch(p), simple.fullmatch(r)
    if mp and mr:
        a, b = (to_number(m.group(1) + (f"/{m.group(2)}" if m.group(2) else "")) for m in (mp, mr))
        if a is not None and b is not None:
            return a == b
    return p == r and p != ""


def math_equal(predicted: str, reference: str) -> bool:
    """math-verify's symbolic check when installed (gold first, both wrapped in $...$, as its
    README does), else the numeric fallback."""
    try:
        from math_verify import parse, verify
    except ImportError:
        return _math_fallback(predicted, reference)
    try:
        return bool(verify(parse(f"${final_part(reference)}$"), parse(f"${predicted}$")))
    except Exception:  # math-verify raises on odd input; the fallback still has a view
        return _math_fallback(predicted, reference)


def grade_answer(grader: str, predicted: str | None, reference: str) -> bool:
    """Is `predicted` right under `grader` (one of GRADERS)? A missing answer is wrong."""
    if predicted is None or not predicted.strip():
        return False
    if grader == "number":
        return number_equal(predicted, reference)
    if grader == "math":
        return math_equal(predicted, reference)
    if grader == "text":
        return text_equal(predicted, reference)
    raise ValueError(f"unknown grader {grader!r}: choose one of {', '.join(GRADERS)}")
