"""`make workshop` serves HTTPS only: the real server, started as the Makefile starts it
(`python -m core workshop serve`), answers over TLS with the certificate whose fingerprint
it printed, and a plain-HTTP request on the same port gets no page."""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.runtime import codes, serve, workshop
from core.runtime.store import RUNS_DIR_ENV

ROOT = Path(__file__).resolve().parent.parent
START_DEADLINE = 120.0  # seconds for Streamlit to start on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "runs"
    codes.add(["alice"], root=root)
    port = free_port()
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != workshop.TOKEN_ENV}
    env[RUNS_DIR_ENV] = str(root)
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "core", "workshop", "serve", "--port",
                                 str(port), "--runs-dir", str(root)], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    cert = serve.tls_folder(root) / "cert.pem"
    deadline = time.monotonic() + START_DEADLINE
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            context = ssl.create_default_context(cafile=str(cert))
            with (socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
                  context.wrap_socket(sock, server_hostname="localhost")):
                break
        except (OSError, ssl.SSLError):
            assert time.monotonic() < deadline, f"no TLS server after {START_DEADLINE} s"
            time.sleep(0.5)
    try:
        yield port, context, cert, log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_https_serves_and_plain_http_does_not_on_the_workshop_port(server):
    port, context, cert, log = server
    https = http.client.HTTPSConnection("localhost", port, context=context, timeout=30)
    https.request("GET", "/_stcore/health")
    answer = https.getresponse()
    assert (answer.status, answer.read()) == (200, b"ok")
    der = https.sock.getpeercert(binary_form=True)
    shown = hashlib.sha256(der).hexdigest().upper()
    assert shown == serve.fingerprint(cert).replace(":", "")
    assert serve.fingerprint(cert) in log.read_text()  # what the host reads out to the room
    https.close()

    plain = http.client.HTTPConnection("localhost", port, timeout=30)
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        plain.request("GET", "/_stcore/health")
        plain.getresponse()


def test_serving_refuses_a_half_given_certificate_and_an_unsafe_room(tmp_path, monkeypatch):
    monkeypatch.setenv(RUNS_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(workshop.ENABLED_ENV, "1")  # prepare() sets it; restored after
    monkeypatch.delenv(workshop.TOKEN_ENV, raising=False)
    with pytest.raises(serve.ServeError, match="participant codes"):
        serve.prepare(8501, root=tmp_path)
    codes.add(["alice"], root=tmp_path)
    with pytest.raises(serve.ServeError, match="both --cert and --key"):
        serve.prepare(8501, cert=tmp_path / "c.pem", root=tmp_path)


def test_the_fingerprint_is_sha256_of_the_certificate_bytes(tmp_path):
    der = b"\x30\x03\x02\x01\x05"
    body = base64.b64encode(der).decode()
    pem = tmp_path / "c.pem"
    pem.write_text(f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
    digest = hashlib.sha256(der).hexdigest().upper()
    assert serve.fingerprint(pem) == ":".join(digest[i:i + 2] for i in range(0, 64, 2))
