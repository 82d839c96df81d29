"""Where a model comes from, checked without importing torch or loading weights."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from core.config import EMBEDDED_MODEL

REPO_ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_DIR = REPO_ROOT / "data" / "models" / "tiny-arith"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")


class ModelError(ValueError):
    """The model cannot be found or read; the message says what to do."""


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "embedded" | "local" | "hub"
    location: str  # folder path or hub id


def resolve_model(name: str) -> ModelSource:
    """Where a model name points: the embedded model, a local folder, or a hub id."""
    if name == EMBEDDED_MODEL:
        return ModelSource("embedded", str(EMBEDDED_DIR))
    path = Path(name).expanduser()
    if path.exists():
        return ModelSource("local", str(path))
    if not _HUB_ID.match(name):
        raise ModelError(f"model path {name} does not exist: give an existing folder, a hub id "
                         "like Qwen/Qwen2.5-0.5B-Instruct, or 'embedded'")
    return ModelSource("hub", name)


def check_model(name: str) -> ModelSource:
    """resolve_model, plus: a local folder must hold a config and weights."""
    source = resolve_model(name)
    if source.kind == "hub":
        return source
    path = Path(source.location)
    if source.kind == "embedded" and not path.is_dir():
        raise ModelError(f"the embedded model is missing from {path}: rebuild it with "
                         "`python -m core.pretrain`")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ModelError(f"{name} is not a model folder (no config.json): point --model at a "
                         "folder written by save_pretrained")
    if not any(next(path.glob(p), None) for p in WEIGHT_PATTERNS):
        raise ModelError(f"{name} has a config.json but no weights (*.safetensors or "
                         "pytorch_model.bin): save the model with save_pretrained")
    return source
