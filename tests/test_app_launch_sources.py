"""Launch: the model picker (curated chat models, folders, hub ids), uploads with a column
mapping, Hugging Face datasets, GPU knobs and the memory estimate."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from app_helpers import ok, page, texts, use_store
from huggingface_hub import constants

from core.config import help_text
from core.data import task_data
from tools.tiny_chat import write_chat_model
from ui import choices

QWEN = "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    return use_store(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory) -> Path:
    return write_chat_model(tmp_path_factory.mktemp("m") / "tiny-qwen2", "qwen2")


def qa_jsonl(n: int = 120, q: str = "question", a: str = "answer") -> bytes:
    return "".join(json.dumps({q: f"What is {i} + 2?", a: str(i + 2), "id": i}) + "\n"
                   for i in range(n)).encode()


def test_curated_models_show_size_memory_and_cache_state(runs_dir):
    at = page("launch")
    options = at.selectbox(key="launch_model_kind").options
    for name in ("Qwen2.5-0.5B-Instruct", "Qwen2.5-1.5B-Instruct", "SmolLM2-360M-Instruct",
                 "Qwen3-0.6B", "Llama-3.2-1B-Instruct"):
        assert any(name in o and "params" in o and "GB" in o for o in options), name
    at.selectbox(key="launch_model_kind").set_value(QWEN).run()
    ok(at)
    assert "not cached yet: the run downloads it first" in texts(at)
    assert "Memory: **about" in at.info[0].value and "float32" in at.info[0].value  # CPU
    assert "too short for a chat model" in at.warning[0].value  # quick preset: 10 tokens
    at.selectbox(key="launch_preset").set_value("chat").run()
    ok(at)
    assert not at.warning and not at.error
    assert at.number_input(key="launch_max_new_tokens").value == 384
    assert at.toggle(key="launch_gradient_checkpointing").value is True
    assert at.number_input(key="launch_generation_batch_size").value == 0  # sliced by memory
    assert at.toggle(key="launch_reasoning").value is False  # Qwen3's thinking runs past 384


def test_offline_and_not_cached_blocks_launch_with_how_to_download(runs_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = page("launch")
    at.selectbox(key="launch_model_kind").set_value(QWEN).run()
    ok(at)
    assert "is not in the Hugging Face cache and this machine is offline" in at.error[0].value
    assert f"hf download {QWEN}" in at.error[0].value
    assert at.button(key="launch_go").disabled


def test_a_cuda_machine_estimates_in_bf16(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    use_store(tmp_path, monkeypatch, cuda=True)
    at = page("launch")
    at.selectbox(key="launch_preset").set_value("chat")
    at.selectbox(key="launch_model_kind").set_value(QWEN).run()
    ok(at)
    assert "bf16" in at.info[0].value and "training pass" in at.info[0].value


def test_local_chat_model_with_its_knobs(runs_dir, chat_model, fake_launch):
    at = page("launch")
    at.selectbox(key="launch_model_kind").set_value(choices.OTHER_MODEL).run()
    at.text_input(key="launch_model_path").set_value(str(chat_model)).run()
    ok(at)
    assert f"local folder {chat_model}" in texts(at)
    assert at.toggle(key="launch_reasoning").help == help_text("reasoning")
    at.toggle(key="launch_reasoning").set_value(False)
    at.number_input(key="launch_max_new_tokens").set_value(96)
    at.number_input(key="launch_generation_batch_size").set_value(8)
    at.toggle(key="launch_gradient_checkpointing").set_value(True).run()
    assert "Memory: **about" in at.info[0].value
    at.button(key="launch_go").click().run()
    ok(at)
    (config,) = fake_launch
    assert config.model == str(chat_model) and config.reasoning is False
    assert (config.max_new_tokens, config.generation_batch_size) == (96, 8)
    assert config.gradient_checkpointing and not config.trust_remote_code


def test_upload_with_column_mapping_launches_on_the_stored_copy(runs_dir, fake_launch):
    at = page("launch")
    at.selectbox(key="launch_task").set_value("file").run()
    assert "upload a JSONL or CSV file" in at.error[0].value
    assert at.button(key="launch_go").disabled
    at.file_uploader(key="launch_upload").upload("mine.jsonl", qa_jsonl(q="prompt", a="gold"))
    at.run()
    ok(at)
    # the mapping guessed from the column names, offering every column
    assert at.selectbox(key="launch_question_field").value == "prompt"
    assert at.selectbox(key="launch_answer_field").value == "gold"
    assert set(at.selectbox(key="launch_answer_field").options) == {"prompt", "gold", "id"}
    assert "graded as number" in at.info[0].value
    at.button(key="launch_go").click().run()
    ok(at)
    (config,) = fake_launch
    stored = Path(config.task)
    assert stored.parent == (runs_dir / "datasets").resolve()
    assert stored.name.endswith("-mine.jsonl") and stored.read_bytes() == qa_jsonl(
        q="prompt", a="gold")
    assert (config.question_field, config.answer_field) == ("prompt", "gold")


def test_a_wrong_mapping_is_explained_then_fixed(runs_dir):
    at = page("launch")
    at.selectbox(key="launch_task").set_value("file").run()
    csv = b"id,question,answer\n" + b"".join(
        f"{i},Capital of land {i}?,City {i}\n".encode() for i in range(100))
    at.file_uploader(key="launch_upload").upload("capitals.csv", csv)
    at.run()
    at.selectbox(key="launch_answer_field").set_value("id")
    at.selectbox(key="launch_grader").set_value("number").run()
    ok(at)
    assert not at.error  # ids are numbers: a wrong but valid mapping
    at.selectbox(key="launch_answer_field").set_value("question").run()
    assert "both 'question'" in at.error[0].value
    at.selectbox(key="launch_answer_field").set_value("answer").run()
    errors = at.error[0].value
    assert "line 2: answer 'City 0' is not a number" in errors
    at.selectbox(key="launch_grader").set_value("text").run()
    ok(at)
    assert not at.error and "graded as text" in at.info[0].value


@pytest.mark.parametrize(("name", "data", "message"), [
    ("photo.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "not a text file"),
    ("empty.jsonl", b"", "is empty"),
    ("huge.jsonl", None, "the limit is"),
])
def test_unreadable_uploads_are_refused_in_words(runs_dir, monkeypatch, name, data, message):
    if data is None:
        monkeypatch.setattr(task_data, "MAX_FILE_BYTES", 100)
        data = qa_jsonl(5)
    at = page("launch")
    at.selectbox(key="launch_task").set_value("file").run()
    at.file_uploader(key="launch_upload").upload(name, data)
    at.run()
    ok(at)
    assert message in at.error[0].value
    assert at.button(key="launch_go").disabled
    assert not (runs_dir / "datasets").exists()  # nothing kept from a refused file


def test_row_errors_are_listed_one_per_line(runs_dir):
    rows = qa_jsonl(60).decode().splitlines()
    rows[2] = '{"question": "no answer"}'
    rows[6] = "not json at all"
    at = page("launch")
    at.selectbox(key="launch_task").set_value("file").run()
    at.file_uploader(key="launch_upload").upload("qa.jsonl", "\n".join(rows).encode())
    at.run()
    ok(at)
    error = at.error[0].value
    assert "- qa.jsonl: line 3: no 'answer' field" in error
    assert "- qa.jsonl: line 7: not valid JSON" in error
    assert at.button(key="launch_go").disabled


@pytest.fixture
def fake_datasets(monkeypatch):
    class Dataset(list):
        column_names = ["problem", "solution"]

        def __getitem__(self, key):
            return [r[key] for r in self] if isinstance(key, str) else list.__getitem__(self, key)

    def load_dataset(name, subset=None, split="train"):
        if name != "lab/sums":
            raise FileNotFoundError(f"Dataset '{name}' doesn't exist on the Hub")
        return Dataset({"problem": f"{i}+{i}?", "solution": f"#### {2 * i}"} for i in range(80))

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.setattr(task_data, "_HF_CACHE", {})


def test_a_hugging_face_dataset_by_id_split_and_columns(runs_dir, fake_datasets, fake_launch):
    at = page("launch")
    at.selectbox(key="launch_task").set_value("hf").run()
    assert "give a Hugging Face dataset id" in at.error[0].value
    at.text_input(key="launch_hf_id").set_value("lab/nothing").run()
    assert "could not load dataset 'lab/nothing'" in at.error[0].value
    at.text_input(key="launch_hf_id").set_value("lab/sums")
    at.text_input(key="launch_dataset_split").set_value("train[:80]").run()
    assert "no 'question' column" in at.error[0].value and "problem, solution" in (
        at.error[0].value)
    at.text_input(key="launch_question_field").set_value("problem")
    at.text_input(key="launch_answer_field").set_value("solution").run()
    ok(at)
    assert not at.error
    at.button(key="launch_go").click().run()
    (config,) = fake_launch
    assert (config.task, config.dataset_split) == ("hf:lab/sums", "train[:80]")
    assert (config.question_field, config.answer_field) == ("problem", "solution")


def test_without_the_datasets_package_the_page_says_how_to_install_it(runs_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    monkeypatch.setattr(task_data, "_HF_CACHE", {})
    at = page("launch")
    at.selectbox(key="launch_task").set_value("hf").run()
    at.text_input(key="launch_hf_id").set_value("openai/gsm8k").run()
    ok(at)
    assert "pip install datasets" in at.error[0].value
