"""`make workshop`: the app served to the room over HTTPS, by Streamlit itself.

Streamlit serves TLS natively (server.sslCertFile / server.sslKeyFile); with them set, the
port speaks TLS only, so plain HTTP on the workshop port is not served at all. The host's
own certificate is used when given; otherwise a self-signed pair is made once, at first
start, with the `openssl` command (present wherever Python's ssl module is, so no new
dependency) into <runs>/.workshop/tls/, which is outside git. Its SHA-256 fingerprint is
printed so participants can compare it with what their browser shows before accepting it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from core.paths import REPO_ROOT
from core.runtime import codes, workshop
from core.runtime.store import RUNS_DIR_ENV

CERT_DAYS = 30  # a workshop's certificate; a new one is made when it is gone


class ServeError(RuntimeError):
    """The workshop cannot be served as asked; the message says what to fix."""


def tls_folder(root: Path | str | None = None) -> Path:
    return codes.folder(root) / "tls"


def fingerprint(cert: Path) -> str:
    """SHA-256 of the certificate's DER bytes, as browsers show it (AA:BB:...)."""
    pem = cert.read_text()
    body = pem.split("-----BEGIN CERTIFICATE-----")[1].split("-----END CERTIFICATE-----")[0]
    digest = hashlib.sha256(base64.b64decode("".join(body.split()))).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def host_names() -> list[str]:
    """Names the room may use for this machine: its hostname and its addresses."""
    names = ["localhost", socket.gethostname()]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # picks the outgoing interface; sends nothing
            names.append(s.getsockname()[0])
    except OSError:
        pass
    return list(dict.fromkeys(names))


def self_signed(root: Path | str | None = None) -> tuple[Path, Path]:
    """The self-signed pair in <runs>/.workshop/tls, made on first call."""
    where = tls_folder(root)
    cert, key = where / "cert.pem", where / "key.pem"
    if cert.is_file() and key.is_file():
        return cert, key
    if shutil.which("openssl") is None:
        raise ServeError("no `openssl` command to make a certificate: install it, or give "
                         "your own with --cert and --key (CERT= and KEY= for make)")
    where.mkdir(parents=True, exist_ok=True, mode=0o700)
    alt = ",".join(f"IP:{n}" if n.replace(".", "").isdigit() else f"DNS:{n}"
                   for n in [*host_names(), "127.0.0.1"])
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
                    "-days", str(CERT_DAYS), "-subj", "/CN=Calibration Lab workshop",
                    "-addext", f"subjectAltName={alt}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    os.chmod(key, 0o600)
    return cert, key


def streamlit_command(port: int, cert: Path, key: Path) -> list[str]:
    """The app on every interface, TLS only, error details off, no file watcher."""
    return [sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "app.py"),
            "--server.address", "0.0.0.0", "--server.port", str(port),
            "--server.sslCertFile", str(cert), "--server.sslKeyFile", str(key),
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--client.showErrorDetails", "none", "--client.toolbarMode", "minimal",
            "--server.fileWatcherType", "none", "--server.runOnSave", "false"]


def prepare(port: int, cert: Path | None = None, key: Path | None = None,
            root: Path | str | None = None) -> list[str]:
    """Check the room's setup, find or make the certificate, print what the host tells the
    room; returns the command that serves it."""
    os.environ[workshop.ENABLED_ENV] = "1"
    if root is not None:  # the app reads the runs folder (and the code book) from here
        os.environ[RUNS_DIR_ENV] = str(root)
    problem = workshop.settings().setup_problem
    if problem:
        raise ServeError(problem)
    if (cert is None) != (key is None):
        raise ServeError("give both --cert and --key (CERT= and KEY=), or neither for a "
                         "self-signed certificate")
    if cert is None or key is None:
        cert, key = self_signed(root)
        kind = "self-signed (browsers warn once; compare the fingerprint, then accept)"
    else:
        kind = "the host's own"
    for path in (cert, key):
        if not Path(path).is_file():
            raise ServeError(f"{path} is not a file")
    print(f"Certificate: {kind}\n  {cert}\n  SHA-256 {fingerprint(Path(cert))}")
    print("Open: " + "  ".join(f"https://{n}:{port}" for n in host_names()))
    print("Plain http:// is not served on this port.", flush=True)
    return streamlit_command(port, Path(cert), Path(key))


def serve(port: int, cert: Path | None = None, key: Path | None = None,
          root: Path | str | None = None) -> int:
    command = prepare(port, cert, key, root)
    os.execv(command[0], command)  # Streamlit becomes this process: Ctrl-C stops it
    return 0  # not reached
