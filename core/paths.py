"""Where the lab's own files are: the repository root and the embedded model."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_DIR = REPO_ROOT / "data" / "models" / "tiny-arith"
