"""Where a model comes from, checked without importing torch or loading weights.

A model is the embedded default, a local folder, or a hub id read through the Hugging Face
cache. The checks here run before any run folder exists, so a bad model never leaves a
failed run behind: a missing or offline-uncached model, a folder without weights, a damaged
weight file, a model with neither the compact-format marker nor a chat template.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from core.config import EMBEDDED_MODEL
from core.paths import EMBEDDED_DIR

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")
COMPACT_MARKER = "lab_prompt_format"  # the embedded model's config.json key
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
HUB_TIMEOUT_S = 10.0


class ModelError(ValueError):
    """The model cannot be found or read; the message says what to do."""


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "embedded" | "local" | "hub"
    location: str  # folder path or hub id
    cached: Path | None = None  # a hub model's snapshot folder in the HF cache, if complete


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
    return ModelSource("hub", name, cached_snapshot(name))


# --- the Hugging Face cache ----------------------------------------------------------------

def hub_offline() -> bool:
    """HF_HUB_OFFLINE=1 (or TRANSFORMERS_OFFLINE=1): the hub must not be contacted."""
    return any(os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for v in OFFLINE_ENV)


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def cached_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of a hub model when its config and weights are there."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # a malformed id or an unreadable cache: treat as not cached
        return None
    if not isinstance(found, str):
        return None
    folder = Path(found).parent
    return folder if _weight_files(folder) else None


def download_hint(repo_id: str) -> str:
    return (f"download it once on a machine with internet: `hf download {repo_id}` (or "
            f"`huggingface-cli download {repo_id}`), which fills the Hugging Face cache "
            f"({hub_cache_dir()}; copy that folder over if the lab runs elsewhere); or save it "
            "with save_pretrained and pass the folder")


def check_hub_reachable(source: ModelSource) -> None:
    """An uncached hub model must exist and be downloadable now. One metadata request with
    a short timeout; run at launch only (the app's form checks stay offline)."""
    if source.kind != "hub" or source.cached is not None:
        return
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    repo_id = source.location
    try:
        HfApi().model_info(repo_id, timeout=HUB_TIMEOUT_S)
    except GatedRepoError as e:
        raise ModelError(f"{repo_id} is gated: accept its licence on huggingface.co, log in "
                         "with `hf auth login`, then launch again") from e
    except RepositoryNotFoundError as e:
        raise ModelError(f"there is no model {repo_id!r} on the Hugging Face hub (or it is "
                         "private: log in with `hf auth login`): check the id") from e
    except Exception as e:  # no network, a proxy, a timeout
        raise ModelError(f"{repo_id} is not in the Hugging Face cache and the hub cannot be "
                         f"reached ({type(e).__name__}): {download_hint(repo_id)}") from e


# --- a model folder --------------------------------------------------------------------------

def _weight_files(folder: Path) -> list[Path]:
    return [f for p in WEIGHT_PATTERNS for f in sorted(folder.glob(p))]


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file cannot be read, from its header alone; None if it looks whole.

    The format: 8 bytes of little-endian header length N, N bytes of JSON mapping each tensor
    to its byte range, then the data, which must end exactly where the last range ends."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return "shorter than a safetensors header"
        n = int.from_bytes(head, "little")
        if n > size - 8 or n > 100 * 2**20:
            return "its header length is larger than the file (truncated or not safetensors)"
        try:
            header = json.loads(f.read(n))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return "its header is not valid safetensors JSON"
    if 8 + n + max(ends, default=0) != size:
        return f"it holds {size - 8 - n} data bytes where its header lists {max(ends, default=0)}"
    return None


def weights_problem(path: Path) -> str | None:
    if path.name.endswith(".safetensors"):
        return safetensors_problem(path)
    if path.name.endswith(".bin") and not zipfile.is_zipfile(path):
        return "not a readable torch checkpoint (torch.save writes a zip archive)"
    if path.name.endswith(".index.json"):
        try:
            shards = set(json.loads(path.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return "not a valid weight index"
        missing = sorted(s for s in shards if not (path.parent / s).is_file())
        if missing:
            return f"lists shard(s) that are missing: {', '.join(missing)}"
    return None


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def has_chat_template(folder: Path) -> bool:
    return (any((folder / f).is_file() for f in CHAT_TEMPLATE_FILES)
            or bool(read_json(folder / "tokenizer_config.json").get("chat_template")))


def check_folder(folder: Path, name: str) -> None:
    """A model folder: config, readable weights, and a way to prompt it."""
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise ModelError(f"{name} is not a model folder (no config.json): point --model at a "
                         "folder written by save_pretrained")
    weights = _weight_files(folder)
    if not weights:
        raise ModelError(f"{name} has a config.json but no weights (*.safetensors or "
                         "pytorch_model.bin): save the model with save_pretrained")
    for w in weights:
        problem = weights_problem(w)
        if problem:
            raise ModelError(f"{name}: weight file {w.name} is damaged: {problem}. Download or "
                             "save the model again")
    config = read_json(folder / "config.json")
    if config.get(COMPACT_MARKER) is None and not has_chat_template(folder):
        raise ModelError(f"{name} has no chat template (tokenizer_config.json or "
                         "chat_template.jinja): the lab prompts chat models through their "
                         "template with RLCR's tags, so use an instruction-tuned model")


def check_model(name: str) -> ModelSource:
    """resolve_model, plus the folder checks; a hub model that is not cached must be
    downloadable, so offline it is refused with how to download it."""
    source = resolve_model(name)
    if source.kind == "embedded" and not Path(source.location).is_dir():
        raise ModelError(f"the embedded model is missing from {source.location}: rebuild it "
                         "with `python -m tools.pretrain`")
    if source.kind == "hub":
        if source.cached is None:
            if hub_offline():
                raise ModelError(f"{name} is not in the Hugging Face cache and this machine is "
                                 f"offline (HF_HUB_OFFLINE=1): {download_hint(name)}")
            return source
        check_folder(source.cached, name)
        return source
    check_folder(Path(source.location), name)
    return source


def model_folder(source: ModelSource) -> Path | None:
    """Where a model's files are on this machine now (None: a hub model not yet cached)."""
    return source.cached if source.kind == "hub" else Path(source.location)
