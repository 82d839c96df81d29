"""The Launch page's pickers in words: the built-in tasks and the models, with their sizes."""

from __future__ import annotations

from core.config import EMBEDDED_MODEL
from core.data.tasks import TASKS
from core.models.model_catalog import CATALOG, fmt_gb, fmt_params


def task_choices() -> dict[str, str]:
    """Task name -> what it asks, in words, read from the task definitions themselves."""
    words = {"+": "addition", "-": "subtraction", "*": "multiplication"}
    out = {}
    for name, task in TASKS.items():
        ops = tuple(getattr(task, "ops", ()))
        digits = sorted(set(getattr(task, "digits", ())))
        what = " and ".join(words.get(o, o) for o in ops) or "questions"
        size = (f"{digits[0]}-{digits[-1]} digit " if len(digits) > 1
                else f"{digits[0]} digit " if digits else "")
        out[name] = f"{name} — {size}{what}"
    return out


EMBEDDED_CHOICE = "embedded (tiny-arith)"
OTHER_MODEL = "other: folder or hub id"


def model_choices() -> dict[str, str]:
    """The Launch page's model picker: choice -> label with size and bf16 weight memory."""
    out = {EMBEDDED_CHOICE: "embedded (tiny-arith) · 1 M params · any CPU"}
    for m in CATALOG:
        out[m.hub_id] = (f"{m.hub_id} · {fmt_params(m.arch.params)} params · weights "
                         f"{fmt_gb(m.arch.params * 2)} in bf16")
    out[OTHER_MODEL] = OTHER_MODEL
    return out


def model_for_choice(choice: str, typed: str = "") -> str:
    """The RunConfig.model value of a picker choice (`typed` for 'other')."""
    if choice == EMBEDDED_CHOICE:
        return EMBEDDED_MODEL
    return typed.strip() if choice == OTHER_MODEL else choice
