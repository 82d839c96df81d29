"""Workshop mode: the app served to a room, behind one shared access token.

Off unless $CALIBRATION_LAB_WORKSHOP is 1 (`make workshop` sets it). Then every page asks
for the token ($CALIBRATION_LAB_TOKEN) and a name; each name may have a few live runs,
only the models the host allows, never `trust_remote_code`, and may stop, continue, tag or
delete only its own runs. Read from the environment on every call, so tests can switch it.
What this does not protect against is written in the README (no TLS, one shared token...).
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from typing import Any

from core.config import EMBEDDED_MODEL

ENABLED_ENV = "CALIBRATION_LAB_WORKSHOP"
TOKEN_ENV = "CALIBRATION_LAB_TOKEN"
RUNS_PER_USER_ENV = "CALIBRATION_LAB_RUNS_PER_USER"
ALLOWED_MODELS_ENV = "CALIBRATION_LAB_ALLOWED_MODELS"
MIN_TOKEN_LENGTH = 16
DEFAULT_RUNS_PER_USER = 4  # the classic comparison is four runs
MAX_NAME_LENGTH = 40


class WorkshopError(PermissionError):
    """Something workshop mode does not allow; the message says what is allowed."""


@dataclass(frozen=True)
class Workshop:
    enabled: bool
    token: str = ""
    runs_per_user: int = DEFAULT_RUNS_PER_USER
    allowed_models: tuple[str, ...] = (EMBEDDED_MODEL,)

    @property
    def setup_problem(self) -> str | None:
        """Why the host's settings are unsafe to serve; None when they are fine."""
        if not self.enabled:
            return None
        if len(self.token) < MIN_TOKEN_LENGTH:
            return (f"workshop mode needs an access token of at least {MIN_TOKEN_LENGTH} "
                    f"characters in ${TOKEN_ENV} (the host sets it before starting the app)")
        if self.runs_per_user < 1:
            return f"${RUNS_PER_USER_ENV} must be a whole number >= 1"
        return None


def settings() -> Workshop:
    if os.environ.get(ENABLED_ENV, "").strip() not in ("1", "true", "yes"):
        return Workshop(False)
    try:
        per_user = int(os.environ.get(RUNS_PER_USER_ENV, DEFAULT_RUNS_PER_USER))
    except ValueError:
        per_user = 0  # reported by setup_problem
    extra = [m.strip() for m in os.environ.get(ALLOWED_MODELS_ENV, "").split(",") if m.strip()]
    return Workshop(True, os.environ.get(TOKEN_ENV, "").strip(), per_user,
                    tuple(dict.fromkeys([EMBEDDED_MODEL, *extra])))


def token_ok(given: str, ws: Workshop | None = None) -> bool:
    """Constant-time comparison, so response times do not leak the token a byte at a time."""
    ws = ws or settings()
    if ws.setup_problem or not ws.enabled:
        return False
    return hmac.compare_digest(given.strip().encode(), ws.token.encode())


def clean_name(name: str) -> str:
    """A display name: letters, digits, spaces and . ' - _ only (it is shown in markdown,
    where brackets would make a link), single-spaced, short."""
    name = "".join(ch for ch in name if ch.isalnum() or ch in " .'-_")
    return " ".join(name.split())[:MAX_NAME_LENGTH]


def config_problems(config: dict[str, Any], ws: Workshop | None = None) -> list[str]:
    """What workshop mode forbids in a run's settings (checked before the model is looked
    up, so a participant cannot probe the host's folders through model paths)."""
    ws = ws or settings()
    if not ws.enabled:
        return []
    p = []
    if config.get("model") not in ws.allowed_models:
        p.append(f"this workshop allows only these models: {', '.join(ws.allowed_models)}")
    if config.get("trust_remote_code"):
        p.append("trust_remote_code is not allowed in workshop mode: it would run the "
                 "model's own code on the host")
    return p


def check_launch(config: dict[str, Any], user: str | None, active_runs: int,
                 new_runs: int = 1, ws: Workshop | None = None) -> None:
    """Raise WorkshopError unless `user`, who has `active_runs` live runs, may start
    `new_runs` more with `config` now."""
    ws = ws or settings()
    if not ws.enabled:
        return
    if ws.setup_problem:
        raise WorkshopError(ws.setup_problem)
    if not user:
        raise WorkshopError("sign in with the workshop token and your name first")
    problems = config_problems(config, ws)
    if active_runs + new_runs > ws.runs_per_user:
        problems.append(f"{user} has {active_runs} queued or running runs and one person may "
                        f"have {ws.runs_per_user} at once here: wait for one to finish or "
                        "stop one")
    if problems:
        raise WorkshopError("; ".join(problems))


def check_owner(owner: str | None, user: str | None, action: str,
                ws: Workshop | None = None) -> None:
    """Raise WorkshopError unless `user` may `action` a run that `owner` launched."""
    ws = ws or settings()
    if ws.enabled and (not user or owner != user):
        raise WorkshopError(f"only {owner or 'the host'} can {action} this run")
