"""File and dataset tasks: size, schema and row-level errors; the split; pinning."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from core.config import build_config
from core.data import task_data
from core.data.task_data import TaskError, pin_task, read_table, store_data, task_for
from core.data.tasks import is_held_out


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def qa_rows(n: int = 200, answer=lambda i: str(i * 3)) -> list[dict]:
    return [{"question": f"What is {i} times 3?", "answer": answer(i)} for i in range(n)]


def config_for(path: Path | str, **kw):
    return build_config(task=str(path), **kw)


def test_a_good_jsonl_file_splits_by_question_hash(tmp_path):
    task = task_for(config_for(write_jsonl(tmp_path / "qa.jsonl", qa_rows())))
    assert task.grader == "number"  # auto: every answer is a number
    assert all(is_held_out(ex.question) for ex in task.held_out)
    assert not any(is_held_out(ex.question) for ex in task.train)
    assert len(task.train) + len(task.held_out) == 200
    assert task.eval_set(5) == task.eval_set(50)[:5]  # eval sets are prefixes of one order
    batch = task.train_batch(np.random.default_rng(0), 8)
    assert batch == task.train_batch(np.random.default_rng(0), 8) and len(batch) == 8
    ex = task.held_out[0]
    assert task.is_correct(f"The answer is {ex.answer}", ex)
    assert not task.is_correct("-1", ex)


def test_gsm8k_answers_keep_the_number_after_the_marks(tmp_path):
    rows = qa_rows(400, answer=lambda i: f"{i} * 3 = <<{i}*3={i * 3}>>{i * 3}\n#### {i * 3:,}")
    task = task_for(config_for(write_jsonl(tmp_path / "gsm.jsonl", rows)))
    assert task.grader == "number"
    every = {e.question: e for e in (*task.train, *task.held_out)}
    ex = every["What is 350 times 3?"]
    assert ex.answer == "1,050"  # the final answer only: what the completion browser shows
    assert task.is_correct("1050", ex) and not task.is_correct("350", ex)


def test_csv_with_a_column_mapping(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("id,prompt,gold\n" + "".join(
        f'{i},"Capital of country {i}, please?",City {i}\n' for i in range(120)))
    task = task_for(config_for(path, question_field="prompt", answer_field="gold"))
    assert task.grader == "text"  # auto: the answers are words
    ex = task.held_out[0]
    assert task.is_correct(ex.answer.lower() + ".", ex)  # SQuAD normalisation


@pytest.mark.parametrize(("content", "message"), [
    (b"", "is empty"),
    (b"\n\n  \n", "is empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "not a text file"),
    (b"\xff\xfe\xfaq", "not UTF-8 text"),
])
def test_unreadable_files_give_one_clear_error(tmp_path, content, message):
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    with pytest.raises(TaskError, match=message):
        task_for(config_for(path))


def test_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(task_data, "MAX_FILE_BYTES", 1000)
    path = write_jsonl(tmp_path / "big.jsonl", qa_rows(100))
    with pytest.raises(TaskError, match="the limit is"):
        task_for(config_for(path))
    with pytest.raises(TaskError, match="the limit is"):
        read_table(path.read_bytes(), "big.jsonl")


def test_missing_column_names_the_columns_it_has(tmp_path):
    rows = [{"q": r["question"], "answer": r["answer"]} for r in qa_rows()]
    with pytest.raises(TaskError) as e:
        task_for(config_for(write_jsonl(tmp_path / "qa.jsonl", rows)))
    msg = str(e.value)
    assert "no 'question' column" in msg and "its columns: q, answer" in msg
    assert "--question-field" in msg


def test_row_level_errors_name_each_line(tmp_path):
    rows = qa_rows(30)
    rows[1] = '{"question": "broken", "answer": '  # line 2: bad JSON
    rows[4] = {"question": "no answer here"}  # line 5
    rows[6] = [1, 2]  # line 7: not an object
    rows[9] = {"question": "", "answer": "3"}  # line 10: empty question
    rows[11] = {"question": "list?", "answer": ["1", "2"]}  # line 12
    rows[14] = {"question": "null?", "answer": None}  # line 15
    with pytest.raises(TaskError) as e:
        task_for(config_for(write_jsonl(tmp_path / "qa.jsonl", rows)))
    msg = str(e.value)
    assert msg.startswith("qa.jsonl: 6 bad lines: line 2: not valid JSON")
    for expected in ("line 5: no 'answer' field", "line 7: expected a JSON object, got list",
                     "line 10: 'question' (the question) is empty"):
        assert expected in msg, msg
    assert "(and 1 more)" in msg  # the one-line message shows five
    assert len(e.value.problems) == 6  # the app lists all of them
    assert "line 15" in e.value.problems[-1] and "got null" in e.value.problems[-1]


def test_non_numeric_answer_in_a_numeric_task(tmp_path):
    rows = qa_rows(60)
    rows[3] = {"question": "Capital of France?", "answer": "Paris"}
    path = write_jsonl(tmp_path / "qa.jsonl", rows)
    for grader in ("number", "auto"):  # auto: most answers are numbers, so this one is bad
        with pytest.raises(TaskError, match=r"line 4: answer 'Paris' is not a number"):
            task_for(config_for(path, grader=grader))
    assert task_for(config_for(path, grader="text")).grader == "text"


def test_too_few_rows_for_a_held_out_side(tmp_path):
    rows = [r for r in qa_rows(200) if not is_held_out(r["question"])][:10]
    with pytest.raises(TaskError, match="none of its 10 questions fell on the held-out side"):
        task_for(config_for(write_jsonl(tmp_path / "few.jsonl", rows)))


def test_unknown_task_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown task 'calculus'"):
        task_for(config_for("calculus"))
    with pytest.raises(TaskError, match="does not exist"):
        task_for(config_for(tmp_path / "nowhere.jsonl"))


def test_pin_copies_the_file_under_its_hash_and_refuses_changes(tmp_path):
    src = write_jsonl(tmp_path / "qa.jsonl", qa_rows())
    runs = tmp_path / "runs"
    pinned = pin_task(config_for(src), runs)
    stored = Path(pinned.task)
    assert stored.parent == (runs / "datasets").resolve()
    assert stored.read_bytes() == src.read_bytes()
    assert stored.name == f"{pinned.task_hash[:12]}-qa.jsonl" and len(pinned.task_hash) == 64
    assert pin_task(pinned, runs) == pinned  # pinning a pinned copy changes nothing
    assert task_for(pinned).train  # the hash matches
    stored.write_text(stored.read_text().replace("times", "plus"))
    with pytest.raises(TaskError, match="changed since"):
        task_for(pinned)
    assert pin_task(build_config(task="add"), runs).task == "add"


def test_store_data_keeps_identical_uploads_once(tmp_path):
    a = store_data(b'{"question": "q", "answer": "1"}\n', "my data?.jsonl", tmp_path)
    b = store_data(b'{"question": "q", "answer": "1"}\n', "my data?.jsonl", tmp_path)
    assert a == b and a.name.endswith("-my_data_.jsonl")
    assert len(list((tmp_path / "datasets").iterdir())) == 1


@pytest.fixture
def fake_datasets(monkeypatch):
    """A stand-in for the optional `datasets` package."""

    class Dataset:
        def __init__(self, rows):
            self.rows = rows
            self.column_names = list(rows[0])

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, column):
            return [r[column] for r in self.rows]

    calls = []

    def load_dataset(name, subset=None, split="train"):
        calls.append((name, subset, split))
        if name != "lab/qa":
            raise FileNotFoundError(f"Dataset '{name}' doesn't exist on the Hub")
        return Dataset([{"problem": f"{i} + {i}?", "solution": f"#### {2 * i}"}
                        for i in range(100)])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.setattr(task_data, "_HF_CACHE", {})
    return calls


def test_a_hugging_face_dataset_by_id_split_and_columns(fake_datasets, tmp_path):
    config = build_config(task="hf:lab/qa", dataset_subset="main", dataset_split="train[:100]",
                          question_field="problem", answer_field="solution")
    task = task_for(config)
    assert fake_datasets == [("lab/qa", "main", "train[:100]")]
    assert task.grader == "number" and len(task.train) + len(task.held_out) == 100
    pinned = pin_task(config, tmp_path)
    assert pinned.task == "hf:lab/qa" and len(pinned.task_hash) == 64
    assert task_for(pinned).held_out == task.held_out
    with pytest.raises(TaskError, match="changed upstream"):
        task_for(pinned.replace(task_hash="0" * 64))


def test_dataset_errors_are_clear(fake_datasets):
    with pytest.raises(TaskError, match="could not load dataset 'nobody/nothing'"):
        task_for(build_config(task="hf:nobody/nothing"))
    with pytest.raises(TaskError, match="no 'question' column.*its columns: problem, solution"):
        task_for(build_config(task="hf:lab/qa"))


def test_datasets_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import raises ImportError
    monkeypatch.setattr(task_data, "_HF_CACHE", {})
    with pytest.raises(TaskError, match="optional `datasets` package"):
        task_for(build_config(task="hf:openai/gsm8k"))
