"""The device `auto` will pick, detected once in a subprocess so the app never imports torch.

The first call of `probe_device` starts the probe in a background thread and returns
DeviceInfo(known=False, pending=True) until it answers; later calls return the answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceInfo:
    known: bool  # False while the probe is running or when it failed
    cuda: bool = False
    name: str = ""
    detail: str = ""
    pending: bool = False  # the probe has not answered yet
    mps: bool = False  # Apple's Metal backend

    @property
    def auto(self) -> str:
        return "cuda" if self.cuda else "mps" if self.mps else "cpu"

    def describe(self) -> str:
        if not self.known:
            return self.detail or "detecting…"
        if self.cuda:
            return f"CUDA GPU: {self.name}"
        if self.mps:
            return "Apple GPU (MPS)"
        return f"CPU only ({os.cpu_count()} cores)"


_PROBE = ("import json, torch; c = torch.cuda.is_available(); "
          "m = bool(getattr(torch.backends, 'mps', None) and torch.backends.mps.is_available()); "
          "print(json.dumps({'cuda': c, 'mps': m, "
          "'name': torch.cuda.get_device_name(0) if c else ''}))")
_device: DeviceInfo | None = None
_device_thread: threading.Thread | None = None
_device_lock = threading.Lock()


def _probe() -> None:
    global _device
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                             timeout=120, check=True).stdout
        d = json.loads(out.strip().splitlines()[-1])
        info = DeviceInfo(True, bool(d["cuda"]), str(d["name"]), mps=bool(d.get("mps")))
    except Exception as e:  # no torch, a broken CUDA install, a timeout: say so, go on
        info = DeviceInfo(False, detail=f"could not detect ({type(e).__name__}); auto decides "
                          "when the run starts")
    _device = info


def probe_device(wait: float = 0.0) -> DeviceInfo:
    """What `auto` will pick. The first call starts a background probe; until it answers
    this returns DeviceInfo(known=False). `wait` seconds to block for the answer."""
    global _device_thread
    if _device is not None:
        return _device
    with _device_lock:
        if _device_thread is None:
            _device_thread = threading.Thread(target=_probe, daemon=True, name="device-probe")
            _device_thread.start()
    if wait > 0:
        _device_thread.join(wait)
    return _device or DeviceInfo(False, pending=True)

