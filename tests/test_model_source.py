"""Model checks before any run exists: damaged weights, chat templates, the HF cache offline,
and the memory estimate's arithmetic."""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import pytest
from huggingface_hub import constants
from huggingface_hub.errors import RepositoryNotFoundError

from core.config import build_config
from core.models import model_source
from core.models.model_catalog import CATALOG, CATALOG_BY_ID, Arch, estimate_memory, read_arch
from core.models.model_source import (
    ModelError,
    ModelSource,
    check_hub_reachable,
    check_model,
    safetensors_problem,
)
from core.paths import EMBEDDED_DIR
from tools.tiny_chat import write_chat_model


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_chat_model(tmp_path_factory.mktemp("m") / "qwen2", "qwen2")


def copy_of(src: Path, tmp_path: Path) -> Path:
    dest = tmp_path / src.name
    shutil.copytree(src, dest)
    return dest


def test_whole_models_pass(chat_model):
    assert check_model(str(chat_model)).kind == "local"
    assert check_model("embedded").kind == "embedded"
    assert safetensors_problem(chat_model / "model.safetensors") is None


@pytest.mark.parametrize(("damage", "why"), [
    (lambda b: b[:-100], "data bytes where its header lists"),  # an interrupted copy
    (lambda b: b[:5], "shorter than a safetensors header"),
    (lambda b: (2**40).to_bytes(8, "little") + b[8:], "header length is larger"),
    (lambda b: b[:8] + b"{not json" + b[17:], "not valid safetensors JSON"),
    (lambda b: b"<html>Rate limited</html>" + b[25:], "header length is larger"),
])
def test_damaged_safetensors_are_refused_before_loading(chat_model, tmp_path, damage, why):
    folder = copy_of(chat_model, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(ModelError, match="weight file model.safetensors is damaged") as e:
        check_model(str(folder))
    assert why in str(e.value)


def test_damaged_bin_and_index_with_a_missing_shard(chat_model, tmp_path):
    folder = copy_of(chat_model, tmp_path)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="not a readable torch checkpoint"):
        check_model(str(folder))
    (folder / "pytorch_model.bin").unlink()
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(ModelError, match="missing: model-00001-of-00002.safetensors"):
        check_model(str(folder))


def test_a_model_without_chat_template_or_marker_is_refused(chat_model, tmp_path):
    folder = copy_of(chat_model, tmp_path)
    (folder / "chat_template.jinja").unlink()
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="no chat template"):
        check_model(str(folder))


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def put_in_cache(cache: Path, repo_id: str, model: Path) -> Path:
    """The Hugging Face cache layout: refs/main names a snapshot folder of files."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(model, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    return snapshot


def test_hub_models_offline(hf_cache, chat_model, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="not in the Hugging Face cache and this machine is "
                                         "offline.*hf download lab/tiny-chat"):
        check_model("lab/tiny-chat")
    snapshot = put_in_cache(hf_cache, "lab/tiny-chat", chat_model)
    source = check_model("lab/tiny-chat")  # cached: fine offline
    assert (source.kind, source.cached) == ("hub", snapshot)
    (snapshot / "model.safetensors").write_bytes(b"x" * 20)
    with pytest.raises(ModelError, match="damaged"):  # the cached copy is checked too
        check_model("lab/tiny-chat")


def test_uncached_hub_model_online_is_looked_up_at_launch(hf_cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    source = check_model("lab/not-cached")  # the form check itself stays offline
    assert source == ModelSource("hub", "lab/not-cached", None)

    def answer(error):
        def model_info(self, repo_id, timeout=None):
            raise error
        return model_info

    import huggingface_hub

    not_found = RepositoryNotFoundError("404", response=types.SimpleNamespace(
        headers={}, status_code=404, request=None, url="", text=""))
    for error, message in ((not_found, "there is no model 'lab/not-cached'"),
                           (ConnectionError("no route"), "hub cannot be reached")):
        monkeypatch.setattr(huggingface_hub.HfApi, "model_info", answer(error))
        with pytest.raises(ModelError, match=message):
            check_hub_reachable(source)
    check_hub_reachable(ModelSource("local", "/x"))  # nothing to look up


@pytest.mark.parametrize(("hub_id", "published"), [
    ("Qwen/Qwen2.5-0.5B-Instruct", 0.494e9), ("Qwen/Qwen2.5-1.5B-Instruct", 1.54e9),
    ("HuggingFaceTB/SmolLM2-360M-Instruct", 0.362e9), ("Qwen/Qwen3-0.6B", 0.596e9),
    ("meta-llama/Llama-3.2-1B-Instruct", 1.236e9),
])
def test_catalogue_parameter_counts_match_the_model_cards(hub_id, published):
    assert abs(CATALOG_BY_ID[hub_id].arch.params - published) / published < 0.01
    assert len(CATALOG) == 5


def test_parameter_count_from_a_config_matches_the_real_model():
    from tools.tiny_chat import build_chat_model, build_chat_tokenizer

    for arch in ("qwen2", "llama"):
        model = build_chat_model(arch, build_chat_tokenizer(arch))
        counted = Arch.from_config(model.config.to_dict()).params
        real = sum(p.numel() for p in model.parameters())
        assert 0.97 < counted / real <= 1.0  # norms and biases are left out
    assert read_arch(EMBEDDED_DIR).vocab == 20
    assert Arch.from_config({"model_type": "mystery"}) is None


def test_memory_estimate_grows_with_g_and_length_and_shrinks_with_slicing():
    arch = CATALOG_BY_ID["Qwen/Qwen2.5-0.5B-Instruct"].arch
    base = build_config("chat")
    mem = estimate_memory(arch, base, "cuda")
    assert mem.dtype == "bf16" and mem.parts["weights"] == pytest.approx(arch.params * 2)
    assert estimate_memory(arch, base.replace(group_size=16), "cuda").total > mem.total
    assert estimate_memory(arch, base.replace(max_new_tokens=768), "cuda").total > mem.total
    sliced = base.replace(generation_batch_size=4, no_eval=False)
    unsliced = base.replace(generation_batch_size=0)
    assert estimate_memory(arch, sliced, "cuda").total <= estimate_memory(
        arch, unsliced, "cuda").total
    assert estimate_memory(arch, base, "cpu").dtype == "float32"
    assert "GB" in mem.describe()


def test_offline_flag_spellings(monkeypatch):
    for value, offline in (("1", True), ("true", True), ("0", False), ("", False)):
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        assert model_source.hub_offline() is offline
