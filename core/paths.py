"""Where the lab's own files are: the repository root, the embedded model, measured costs."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_DIR = REPO_ROOT / "data" / "models" / "tiny-arith"
COSTS_FILE = REPO_ROOT / "data" / "costs.json"  # written by benchmarks/costs.py
