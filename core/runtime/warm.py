"""Warm starts: a long-lived process that has already imported the engine forks each run.

A fresh `python -m core _execute RUN_DIR` spends about 5 CPU seconds importing torch,
transformers, peft and scikit-learn before it trains (benchmarks/RESULTS.md, "Warm starts"),
a large share of a short run. So the runner asks a warm server instead: one process per
(user, code, interpreter, environment) that imports the engine once, listens on a unix socket
and forks a child per run. The child starts its own session, writes to the run's log.txt,
takes the launcher's environment and working directory and runs the same `_execute` path as
a fresh process. The server hands the run to the child (status.json's pid, as the launcher
does for a fresh process), so stop (SIGTERM to that pid), the status a reader sees and crash
detection are unchanged; as the child's parent it reaps it and records an unreported end
with the launcher's own logic (runner.record_end).

Fork safety: the server imports but runs no torch op. GNU OpenMP's thread pool, which a
forked child cannot use (its first parallel op hangs), starts only at the first parallel op;
CUDA starts only in the child: the server refuses to serve if the CUDA driver is loaded in it
or a probe child finds torch calling the fork unsafe (`torch.cuda._is_in_bad_fork`). The BLAS
threads numpy and scipy start at import are re-made after a fork by OpenBLAS's own fork
handlers. `gc.freeze()` keeps the children from copying the server's memory when they
collect garbage.

Never stale: the socket's name is a fingerprint of core/'s sources, the interpreter and the
environment (torch reads some variables, e.g. OMP_WAIT_POLICY, once as it loads), and the
server checks the sources again before each fork; a server whose code changed takes no more
runs and exits once its runs have ended. It also exits after IDLE_SECONDS with no child.
Whenever no server can serve, the runner starts a fresh interpreter as before and the run's
log.txt says why. Off with CALIBRATION_LAB_WARM=0.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from core.paths import REPO_ROOT
from core.runtime import slots
from core.runtime.store import LOCK_FILE, RunWriter, process_start

WARM_ENV = "CALIBRATION_LAB_WARM"  # "0" (or off/false/no): every run starts a fresh process
WARM_DIR_ENV = "CALIBRATION_LAB_WARM_DIR"  # where the servers' sockets live
IDLE_SECONDS = 600.0  # a server with no child for this long exits
START_SECONDS = 120.0  # a new server has this long to import the engine (slower under load)
# A request the server has not served this long after it was sent is refused, and its
# launcher waits twice as long for the answer: a late fork can never race a fresh start.
REQUEST_SECONDS = 30.0
POLL_SECONDS = 0.1
CODE_DIR = Path(__file__).resolve().parent.parent  # core/


class WarmError(RuntimeError):
    """No warm start this time; the message says why."""


def enabled() -> bool:
    return os.environ.get(WARM_ENV, "1").strip().lower() not in ("0", "off", "false", "no")


def code_fingerprint() -> str:
    """A hash of every source file under core/ (names and contents) and the interpreter."""
    h = hashlib.sha256(f"{sys.executable}\0{sys.version}\0".encode())
    for path in sorted(CODE_DIR.rglob("*.py")):
        h.update(str(path.relative_to(CODE_DIR)).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


# Variables read when a run calls for them, never as a module loads (the lab's own; pytest's
# per-test name): a child takes them from its request, so they do not choose the server.
KEY_IGNORES = ("CALIBRATION_LAB_", "PYTEST_CURRENT_TEST")


def server_key(code: str, env: dict[str, str]) -> str:
    """The name a server with this code and this environment listens under."""
    h = hashlib.sha256(code.encode())
    for name in sorted(n for n in env if not n.startswith(KEY_IGNORES)):
        h.update(f"{name}={env[name]}\0".encode())
    return h.hexdigest()[:16]


def socket_dir() -> Path:
    """$CALIBRATION_LAB_WARM_DIR, else a folder in /tmp only this user may enter."""
    raw = os.environ.get(WARM_DIR_ENV, "").strip()
    folder = Path(raw) if raw else Path("/tmp") / f"calibration-lab-warm-{os.getuid()}"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise WarmError(f"{folder} is not a folder only this user can enter")
    return folder


def server_pids(folder: Path) -> list[int]:
    """The pids of the servers in `folder` that are alive (a tidy-up, e.g. after tests)."""
    pids = []
    for lock in folder.glob("*.lock"):
        with contextlib.suppress(OSError, ValueError):
            fd = os.open(lock, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                continue  # nobody holds it: no server
            except BlockingIOError:
                pids.append(int(lock.read_text()))
            finally:
                os.close(fd)
    return pids


# ------------------------------------------------------------------------- the launcher


def fork_run(path: Path, wait: bool = True) -> int | None:
    """Have a warm server start `_execute path` and hand it the run; the child's pid, or
    None when there is no warm start (off, or no server could serve: the reason is in the
    run's log.txt) and the caller must start a fresh process. With `wait` False a server
    that is not up yet is started for later runs and this one starts fresh at once: a
    click in the app never waits for the engine's import."""
    if not enabled():
        return None
    try:
        # The environment a fresh run's process would have as torch loads (the OpenMP
        # setting included), so the server started for it matches.
        env = slots.omp_env()
        key = server_key(code_fingerprint(), env)
        conn = _connect(socket_dir(), key, env, wait)
        with conn:
            return _ask(conn, path, env)
    except (OSError, ValueError, WarmError) as e:
        with contextlib.suppress(OSError):
            RunWriter(path).log_text(f"no warm start ({e}); starting a fresh process")
        return None


def _connect(folder: Path, key: str, env: dict[str, str], wait: bool) -> socket.socket:
    """A connection to the server for `key`, started here if none listens (and waited for
    if `wait`)."""
    address = str(folder / f"{key}.sock")
    with contextlib.suppress(OSError):
        return _dial(address)
    with contextlib.suppress(FileNotFoundError):  # not again for this code: it would fail
        raise WarmError((folder / f"{key}.refused").read_text().strip())
    server = start_server(folder, key, env)
    try:
        if not wait:
            raise WarmError("the warm server is starting, for the runs after this one")
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            try:
                return _dial(address)
            except OSError:
                if server.poll() is not None:  # it exited: another server won, or it failed
                    with contextlib.suppress(OSError):
                        return _dial(address)
                    raise WarmError(f"the warm server exited with code {server.returncode}; "
                                    f"see {folder / (key + '.log')}") from None
                time.sleep(POLL_SECONDS)
        raise WarmError(f"the warm server did not start within {START_SECONDS:.0f} s")
    finally:  # reaped from now on (a waiting thread would keep poll() above from seeing it)
        threading.Thread(target=server.wait, daemon=True).start()


def _dial(address: str) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(address)
    except OSError:
        conn.close()
        raise
    return conn


def start_server(folder: Path, key: str, env: dict[str, str]) -> subprocess.Popen:
    """`python -m core _warm` in its own session, its output in KEY.log."""
    with open(folder / f"{key}.log", "a") as log:
        proc = subprocess.Popen(  # an argument list: no shell
            [sys.executable, "-m", "core", "_warm", "--dir", str(folder), "--key", key],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=REPO_ROOT, env=env)
    return proc


def _ask(conn: socket.socket, path: Path, env: dict[str, str]) -> int:
    request = {"run_dir": str(path), "env": env, "cwd": str(REPO_ROOT),
               "sent": time.monotonic()}
    conn.settimeout(2 * REQUEST_SECONDS)
    conn.sendall(json.dumps(request).encode() + b"\n")
    reply = json.loads(_read_line(conn) or b"{}")
    if not isinstance(reply.get("pid"), int):
        raise WarmError(f"the warm server refused: {reply.get('error', 'no answer')}")
    return reply["pid"]


def _read_line(conn: socket.socket, limit: int = 1 << 20) -> bytes:
    data = b""
    while not data.endswith(b"\n") and len(data) < limit:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


# --------------------------------------------------------------------------- the server


def serve(folder: Path, key: str, execute_dir: Callable[[Path], int],
          record_end: Callable[[Path, int, int], None],
          idle: float = IDLE_SECONDS) -> int:
    """Import the engine once, then fork a child per request until IDLE_SECONDS pass with
    no child, or the code changes. `execute_dir(run_dir)` is what a child runs (the
    `_execute` command's body); `record_end(run_dir, pid, returncode)` records a child
    that died without reporting. Returns the exit code."""
    started = dict(os.environ)
    code = code_fingerprint()
    if server_key(code, started) != key:
        return _say("the code or environment changed before this server started")
    lock = os.open(folder / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _say("another server already serves this key")
    os.ftruncate(lock, 0)
    os.write(lock, str(os.getpid()).encode())  # which process serves (server_pids)
    t0 = time.process_time()
    import core.engine.train  # noqa: F401  the point of this process: torch and the rest

    if not _fork_is_safe():
        why = "CUDA was started as the engine loaded: a forked run could not use it"
        (folder / f"{key}.refused").write_text(why + "\n")  # for as long as this code lasts
        return _say(why)
    _say(f"engine imported in {time.process_time() - t0:.2f} CPU s; serving")
    address = folder / f"{key}.sock"
    address.unlink(missing_ok=True)  # a dead server's: this one holds the key's lock
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(address))
    listener.listen(64)
    gc.freeze()  # the children share these objects; a collection must not copy them
    children: dict[int, Path] = {}
    try:
        _serve_until_done(listener, lock, code, execute_dir, idle, children, record_end)
    finally:
        _stop_listening(listener, address)
    while children:  # a stale server still records the ends of the runs it started
        _reap(children, record_end)
        time.sleep(POLL_SECONDS)
    return 0


def _serve_until_done(listener: socket.socket, lock: int, code: str,
                      execute_dir: Callable[[Path], int], idle: float,
                      children: dict[int, Path],
                      record_end: Callable[[Path, int, int], None]) -> None:
    """Fork a child per request until `idle` seconds pass with no child, or core/ changed."""
    last_busy = time.monotonic()
    while True:
        _reap(children, record_end)
        if children:
            last_busy = time.monotonic()
        elif time.monotonic() - last_busy > idle:
            _say(f"no run for {idle:.0f} s; exiting")
            return
        if not select.select([listener], [], [], POLL_SECONDS)[0]:
            continue
        conn, _ = listener.accept()
        with conn:
            stale = _serve_one(conn, listener, lock, code, execute_dir, children)
        if stale:
            _say("core/ changed since this server started; exiting once its runs end")
            return
        last_busy = time.monotonic()


def _stop_listening(listener: socket.socket, address: Path) -> None:
    """Close the socket and remove its file (no successor can have replaced it: this process
    holds the key's lock until it exits)."""
    with contextlib.suppress(OSError):
        address.unlink()
    listener.close()


def _say(message: str) -> int:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} warm server {os.getpid()}: {message}",
          flush=True)
    return 0


def _fork_is_safe() -> bool:
    """Whether a child forked now may use CUDA: the CUDA driver is not loaded here (a call
    such as torch.cuda.device_count() loads and starts it, and a forked child cannot use a
    driver its parent started) and torch agrees (asked in a probe child)."""
    with contextlib.suppress(OSError):
        if "libcuda.so" in Path("/proc/self/maps").read_text():
            return False
    pid = os.fork()
    if pid == 0:
        torch = sys.modules["torch"]
        os._exit(1 if torch.cuda._is_in_bad_fork() else 0)
    return os.waitpid(pid, 0)[1] == 0


def _reap(children: dict[int, Path], record_end: Callable[[Path, int, int], None]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # none left to wait for (reaped elsewhere): nothing to record
            children.clear()
            return
        if pid == 0:
            return
        path = children.pop(pid, None)
        if path is not None:
            record_end(path, pid, os.waitstatus_to_exitcode(status))


def _peer(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of `conn`."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _ = struct.unpack("3i", creds)
    return pid, uid


def _serve_one(conn: socket.socket, listener: socket.socket, lock: int, code: str,
               execute_dir: Callable[[Path], int], children: dict[int, Path]) -> bool:
    """Answer one request: fork its run and hand the run over, or say why not. True when
    the code changed (the server must exit)."""
    conn.settimeout(REQUEST_SECONDS)
    try:
        launcher, uid = _peer(conn)
        request = json.loads(_read_line(conn))
        path = Path(request["run_dir"])
        if uid != os.getuid():
            raise WarmError("a request from another user")
        if code_fingerprint() != code:
            _reply(conn, error="core/ changed since this server started")
            return True
        if time.monotonic() - float(request["sent"]) > REQUEST_SECONDS:
            raise WarmError("the request waited too long; its launcher starts a fresh process")
        pid = _fork_and_hand_over(path, launcher, request, (conn, listener), lock, execute_dir)
    except (OSError, ValueError, KeyError, TypeError, WarmError) as e:
        with contextlib.suppress(OSError):
            _reply(conn, error=str(e) or type(e).__name__)
        return False
    children[pid] = path
    with contextlib.suppress(OSError):  # the child runs whether or not the launcher hears
        _reply(conn, pid=pid)
    return False


def _reply(conn: socket.socket, **fields: Any) -> None:
    conn.sendall(json.dumps(fields).encode() + b"\n")


def _fork_and_hand_over(path: Path, launcher: int, request: dict[str, Any],
                        inherited: tuple[socket.socket, socket.socket], lock: int,
                        execute_dir: Callable[[Path], int]) -> int:
    """Under the run's lock, while status.json still names the launcher: fork the child and
    write its pid there (as RunWriter.hand_over does for a fresh process), so this process
    can never reap a child whose run does not name it yet."""
    run_fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(run_fd, fcntl.LOCK_EX)
        writer = RunWriter(path)
        if writer.status.get("pid") != launcher:
            raise WarmError("the run is no longer its launcher's to hand over")
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(path, request, (*inherited, ), (run_fd, lock), execute_dir)
        writer.update_status(pid=pid, pid_start=process_start(pid))
        return pid
    finally:
        os.close(run_fd)  # drops the run's lock (the child closed its copy first)


def _child(path: Path, request: dict[str, Any], sockets: tuple[socket.socket, ...],
           fds: tuple[int, ...], execute_dir: Callable[[Path], int]) -> NoReturn:
    """The run's process: set up as a fresh `python -m core _execute` would be, run it,
    exit with its code. Never returns into the server's loop."""
    code = 1
    try:
        for fd in fds:
            os.close(fd)  # the run's lock (its claim takes it) and the server's key lock
        for s in sockets:
            s.close()
        os.setsid()  # its own session, like start_new_session: a stop of the app is not its
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        log = os.open(path / "log.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        sys.argv = [sys.argv[0], "_execute", str(path)]
        code = execute_dir(path)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # a fresh interpreter prints the trace and exits 1
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
