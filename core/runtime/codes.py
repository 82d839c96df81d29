"""Participant codes for workshop mode: one secret code per person, bound to a display name.

The host creates them (`python -m core workshop codes 30 --names names.txt`); a participant
signs in with the code alone, and everything a name used to decide (who owns a run, the
per-person limit, the audit trail) now follows the code's name, which nobody can type.

Storage: `<runs>/.workshop/codes.json` (mode 0600), one scrypt hash per code, never the
code. scrypt (stdlib `hashlib.scrypt`) rather than a plain hash because it is memory-hard:
someone who copies the file cannot test guesses at GPU speed. One salt for the whole book,
not one per code: a sign-in must find its code among all of them, and with per-code salts
every attempt would cost one derivation per code (30 for a room), CPU a guesser could make
the host spend. Codes are 12 random characters from 31 (~59 bits), so a shared salt loses
nothing that matters: there is no table of such codes to precompute.

The book is re-read whenever the file changes, so codes added or revoked from the command
line or the host's page take effect in the running app at the next action of each session.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from core.runtime.store import default_runs_dir, run_lock

FOLDER = ".workshop"  # beside the runs; the store ignores names that are not run ids
CODES_FILE = "codes.json"
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read aloud, typed from paper
CODE_CHARS = 12
# scrypt cost: 16 MiB and ~40 ms per derivation on the 2-core development machine.
SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}
HOST, PARTICIPANT = "host", "participant"


def folder(root: Path | str | None = None) -> Path:
    return Path(root if root is not None else default_runs_dir()) / FOLDER


def book_path(root: Path | str | None = None) -> Path:
    return folder(root) / CODES_FILE


@dataclass(frozen=True)
class Code:
    id: str  # p01, p02, ..., h01: shown on the host's page and in the audit trail
    name: str  # the display name; unique among live codes, it owns the runs
    role: str  # HOST or PARTICIPANT
    hash: str  # hex scrypt of the code
    created_at: float
    revoked_at: float | None = None

    @property
    def live(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class Book:
    salt: str
    codes: tuple[Code, ...]

    def live(self) -> list[Code]:
        return [c for c in self.codes if c.live]

    def by_id(self, code_id: str) -> Code | None:
        return next((c for c in self.codes if c.id == code_id), None)


def normalize(code: str) -> str:
    """What a person typed, as stored: capitals, no spaces or dashes."""
    return "".join(ch for ch in code.upper() if ch.isalnum())


def new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_CHARS))
    return "-".join(raw[i:i + 4] for i in range(0, CODE_CHARS, 4))


def derive(code: str, salt: str) -> str:
    return hashlib.scrypt(normalize(code).encode(), salt=bytes.fromhex(salt), dklen=32,
                          maxmem=64 * 2 ** 20, **SCRYPT).hex()


_CACHE: dict[str, tuple[tuple[int, int], Book]] = {}
_CACHE_LOCK = threading.Lock()


def exists(root: Path | str | None = None) -> bool:
    return book_path(root).is_file()


def load(root: Path | str | None = None) -> Book | None:
    """The code book, or None when the host has made no codes (shared-token mode). Cached
    by the file's (mtime, size): each session checks its code at every action, cheaply."""
    path = book_path(root)
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    stamp, key = (st.st_mtime_ns, st.st_size), str(path.resolve())
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit and hit[0] == stamp:
        return hit[1]
    data = json.loads(path.read_text())
    book = Book(data["salt"], tuple(Code(**c) for c in data["codes"]))
    with _CACHE_LOCK:
        _CACHE[key] = (stamp, book)
    return book


def _save(root: Path | str | None, book: Book) -> None:
    path = book_path(root)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # hashes: owner only
    with os.fdopen(fd, "w") as f:
        json.dump({"salt": book.salt, "codes": [asdict(c) for c in book.codes]}, f, indent=1)
    os.replace(tmp, path)


def _locked_folder(root: Path | str | None) -> Path:
    where = folder(root)
    where.mkdir(parents=True, exist_ok=True, mode=0o700)
    return where


def unique_name(name: str, taken: Iterable[str]) -> str:
    """`name`, or `name 2`, `name 3`...: two live codes never share a name (it owns runs)."""
    taken = set(taken)
    if name not in taken:
        return name
    n = 2
    while f"{name} {n}" in taken:
        n += 1
    return f"{name} {n}"


def add(names: list[str], role: str = PARTICIPANT, root: Path | str | None = None,
        now: float | None = None) -> list[tuple[Code, str]]:
    """New codes, one per name; returns (code, the code in clear) - the only time it exists
    in clear. A name that a revoked code had is reused on purpose: that is how a person who
    lost their code gets a new one and keeps their runs."""
    now = time.time() if now is None else now
    with run_lock(_locked_folder(root)):
        book = load(root) or Book(secrets.token_hex(16), ())
        prefix = "h" if role == HOST else "p"
        number = 1 + sum(c.id.startswith(prefix) for c in book.codes)
        taken = [c.name for c in book.live()]
        out = []
        for name in names:
            plain = new_code()
            code = Code(f"{prefix}{number:02d}", unique_name(name, taken), role,
                        derive(plain, book.salt), now)
            number += 1
            taken.append(code.name)
            out.append((code, plain))
        _save(root, Book(book.salt, book.codes + tuple(c for c, _ in out)))
    return out


def revoke(who: str, root: Path | str | None = None, now: float | None = None) -> Code:
    """Revoke the live code with this id or name (KeyError if none): its session is signed
    out at its next action, and the code no longer signs in."""
    now = time.time() if now is None else now
    with run_lock(_locked_folder(root)):
        book = load(root)
        hit = next((c for c in (book.live() if book else []) if who in (c.id, c.name)), None)
        if book is None or hit is None:
            raise KeyError(f"no live code with id or name {who!r}")
        done = Code(**{**asdict(hit), "revoked_at": now})
        _save(root, Book(book.salt, tuple(done if c.id == hit.id else c for c in book.codes)))
    return done


def check(code: str, root: Path | str | None = None) -> Code | None:
    """The live code that `code` is, or None. One scrypt, then a constant-time comparison
    against every live code (no early exit), so timing says nothing about near misses."""
    book = load(root)
    if book is None or not normalize(code):
        return None
    given = derive(code, book.salt).encode()
    found = None
    for c in book.live():
        if hmac.compare_digest(given, c.hash.encode()):
            found = c
    return found


def live_code(code_id: str | None, root: Path | str | None = None) -> Code | None:
    """The code a session signed in with, if it is still live (a file stat when unchanged)."""
    book = load(root)
    code = book.by_id(code_id) if book and code_id else None
    return code if code is not None and code.live else None


def is_host(name: str | None, root: Path | str | None = None) -> bool:
    book = load(root)
    return bool(name) and book is not None and any(
        c.role == HOST and c.name == name for c in book.live())


# --- wrong codes cost a growing delay per source ---------------------------------------------

FREE_TRIES = 3  # typos: the first three wrong codes cost nothing
MAX_DELAY = 300.0  # seconds; a source never waits longer than this for its next try
FORGET_AFTER = 900.0  # a source's wrong codes are forgotten after this long without one


def delay_after(failures: int) -> float:
    """Seconds a source must wait after its `failures`-th wrong code in a row: 0 for the
    first FREE_TRIES, then 1, 2, 4, ... doubling, at most MAX_DELAY."""
    if failures < FREE_TRIES:
        return 0.0
    return min(MAX_DELAY, 2.0 ** (failures - FREE_TRIES))


class Throttle:
    """Wrong codes per source (the connection's IP address), shared by every session of the
    server process: opening more tabs does not buy more guesses. A success does not reset
    the count (a participant with a good code could otherwise reset it between guesses at
    the host's code); time does."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[int, float]] = {}  # source -> (failures, last failure)

    def wait(self, source: str, now: float) -> float:
        """Seconds before `source` may try again; 0 when it may now."""
        with self._lock:
            failures, last = self._seen.get(source, (0, 0.0))
        if now - last > FORGET_AFTER:
            return 0.0
        return max(0.0, last + delay_after(failures) - now)

    def failed(self, source: str, now: float) -> float:
        """Count a wrong code; returns the wait it earns."""
        with self._lock:
            failures, last = self._seen.get(source, (0, 0.0))
            failures = 1 if now - last > FORGET_AFTER else failures + 1
            self._seen[source] = (failures, now)
            if len(self._seen) > 10_000:  # a scan from many addresses must not grow memory
                cutoff = now - FORGET_AFTER
                self._seen = {s: v for s, v in self._seen.items() if v[1] >= cutoff}
        return delay_after(failures)


THROTTLE = Throttle()


def sheet(pairs: list[tuple[Code, str]], title: str = "Calibration Lab · workshop codes") -> str:
    """The codes as a page to print and cut into slips: one per person, name beside code."""
    cut = "- " * 36
    lines = [title, "Each code is personal: it signs you in under your name. "
             "Do not share it.", cut.rstrip()]
    for code, plain in pairs:
        lines += [f"  {code.name:<32} {plain}    ({code.id})", cut.rstrip()]
    return "\n".join(lines)
