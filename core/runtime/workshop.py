"""Workshop mode: the app served to a room, behind participant codes or one shared token.

Off unless $CALIBRATION_LAB_WORKSHOP is 1 (`make workshop` sets it). Then every page asks
for a participant code (when the host made codes: core.runtime.codes) or for the shared token
($CALIBRATION_LAB_TOKEN) and a name; each person may have a few live runs, only the models
the host allows, never `trust_remote_code`, and may stop, continue, tag or delete only
their own runs (the host's code: any run). Read from the environment and the code book on
every call, so tests and the host can switch it. What this does not protect against is
written in the README.
"""

from __future__ import annotations

import hmac
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import EMBEDDED_MODEL
from core.runtime import codes

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
    codes: bool = False  # participant codes exist: they replace the shared token

    @property
    def setup_problem(self) -> str | None:
        """Why the host's settings are unsafe to serve; None when they are fine."""
        if not self.enabled:
            return None
        if not self.codes and len(self.token) < MIN_TOKEN_LENGTH:
            return (f"workshop mode needs participant codes (`python -m core workshop codes "
                    f"N`) or an access token of at least {MIN_TOKEN_LENGTH} characters in "
                    f"${TOKEN_ENV} (the host sets it before starting the app)")
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
                    tuple(dict.fromkeys([EMBEDDED_MODEL, *extra])), codes.exists())


def token_ok(given: str, ws: Workshop | None = None) -> bool:
    """Constant-time comparison, so response times do not leak the token a byte at a time."""
    ws = ws or settings()
    if ws.setup_problem or not ws.enabled or ws.codes:  # codes replace the shared token
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
        raise WorkshopError("sign in to the workshop first")
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
    if ws.enabled and (not user or owner != user) and not (ws.codes and codes.is_host(user)):
        raise WorkshopError(f"only {owner or 'the host'} can {action} this run")


def revoke_code(who: str, root: Path | str | None = None) -> codes.Code:
    """Revoke a live code by id or name (KeyError if none); recorded in the audit trail."""
    done = codes.revoke(who, root)
    audit("code revoked", None, root, code=done.id, name=done.name)
    return done


def add_codes(names: list[str], role: str = codes.PARTICIPANT,
              root: Path | str | None = None) -> list[tuple[codes.Code, str]]:
    """New codes for these display names (cleaned like a typed name; empty ones dropped)."""
    made = codes.add([n for n in map(clean_name, names) if n], role, root)
    audit("codes added", None, root, codes=[c.id for c, _ in made])
    return made


# --- the audit trail ---------------------------------------------------------------------

AUDIT_FILE = "audit.jsonl"


def audit(event: str, who: str | None, root: Path | str | None = None, **detail: Any) -> None:
    """Append one line to <runs>/.workshop/audit.jsonl (in workshop mode, or once codes
    exist): who did what to which run, codes made and revoked, sign-ins refused with their
    source. Never raises: a full disk must not stop a run being stopped."""
    if not (settings().enabled or codes.exists(root)):
        return
    row = {"time": round(time.time(), 3), "event": event, "who": who, **detail}
    try:
        where = codes.folder(root)
        where.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(where / AUDIT_FILE, "a") as f:
            f.write(json.dumps(row) + "\n")
    except OSError:
        pass


def audit_tail(n: int = 50, root: Path | str | None = None) -> list[dict[str, Any]]:
    """The last `n` audit lines, newest first."""
    try:
        lines = (codes.folder(root) / AUDIT_FILE).read_text().splitlines()[-n:]
    except OSError:
        return []
    out = []
    for line in reversed(lines):
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


# --- who is here ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Presence:
    name: str
    code_id: str | None
    source: str
    last_seen: float


_PRESENCE: dict[str, Presence] = {}  # session id -> the person seen there last
_PRESENCE_LOCK = threading.Lock()
PRESENT_FOR = 120.0  # seconds since a session's last action that still counts as here


def seen(session: str, name: str, code_id: str | None, source: str, now: float) -> None:
    with _PRESENCE_LOCK:
        _PRESENCE[session] = Presence(name, code_id, source, now)


def gone(session: str) -> None:
    with _PRESENCE_LOCK:
        _PRESENCE.pop(session, None)


def present(now: float) -> list[Presence]:
    """Sessions with an action in the last PRESENT_FOR seconds, most recent first."""
    with _PRESENCE_LOCK:
        for k in [k for k, p in _PRESENCE.items() if now - p.last_seen > 10 * PRESENT_FOR]:
            del _PRESENCE[k]
        here = [p for p in _PRESENCE.values() if now - p.last_seen <= PRESENT_FOR]
    return sorted(here, key=lambda p: -p.last_seen)
