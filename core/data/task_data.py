"""Tasks from your own data: a JSONL or CSV file, or a Hugging Face dataset.

Everything is checked before a run exists: the file's size and kind, its columns, and every
row (line number and what is wrong). Train and held-out questions are split by the built-in
tasks' stable hash of the question text (`core.data.tasks.is_held_out`), so the split depends
neither on row order nor on the seed.

A file task is pinned at launch (`pin_task`): the file is copied into `<runs>/datasets/`
under its content hash and config.json records that copy and its sha256 (`task_hash`).
A Hugging Face dataset records the sha256 of the question/answer rows it gave. Either way
config.json stays the run's only source of truth: a run refuses data that no longer matches.
This module never imports torch.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from core.config import RunConfig
from core.data.grading import final_part, grade_answer, read_number
from core.data.tasks import EVAL_SET_SEED, TASKS, Example, Task, is_held_out
from core.files import write_atomically

MAX_FILE_BYTES = 25 * 2**20  # a JSONL of 100k short questions is about 10 MB
MAX_ROWS = 200_000
HF_PREFIX = "hf:"
DATA_DIR = "datasets"  # inside the runs folder; not a run (no status.json)
FILE_SUFFIXES = (".jsonl", ".csv")
SHOWN_ERRORS = 5  # row errors spelled out in a one-line message
AUTO_NUMBER_SHARE = 0.5  # auto grades by number when at least this share reads as numbers


class TaskError(ValueError):
    """Data that cannot make a task. `problems` lists each one for the app."""

    def __init__(self, message: str, problems: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems) or [message]


@dataclass(frozen=True)
class RowError:
    where: str  # "line 4" (files) or "row 4" (datasets)
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class Table:
    """Rows as read, before any column is chosen."""

    source: str  # a file name or a dataset id, for messages
    columns: tuple[str, ...]  # the CSV header, or every JSONL field name in order of first use
    rows: tuple[tuple[str, dict[str, Any]], ...]  # (where, row)
    errors: tuple[RowError, ...]  # lines that are not rows at all (bad JSON, not an object)


@dataclass(frozen=True)
class DataTask:
    """Questions with reference answers, split once into train and held-out sides."""

    name: str
    train: tuple[Example, ...]
    held_out: tuple[Example, ...]  # in a fixed shuffled order; eval sets are prefixes
    grader: str  # number | math | text (auto already resolved)

    def train_batch(self, rng: np.random.Generator, size: int) -> list[Example]:
        idx = rng.choice(len(self.train), size=size, replace=size > len(self.train))
        return [self.train[int(i)] for i in idx]

    def eval_set(self, size: int) -> list[Example]:
        """The first `size` held-out questions (all of them when there are fewer)."""
        return list(self.held_out[:size])

    def is_correct(self, predicted: str | None, example: Example) -> bool:
        return grade_answer(self.grader, predicted, example.answer)


# --- which kind of task a name is --------------------------------------------------------

def is_dataset_task(task: str) -> bool:
    return task.startswith(HF_PREFIX)


def is_file_task(task: str) -> bool:
    return (task not in TASKS and not is_dataset_task(task)
            and (task.lower().endswith(FILE_SUFFIXES) or os.sep in task))


def unknown_task_message(task: str) -> str:
    return (f"unknown task {task!r}: choose one of {', '.join(TASKS)}, a .jsonl or .csv file "
            "with question and answer columns, or hf:DATASET_ID for a Hugging Face dataset")


# --- reading rows ------------------------------------------------------------------------

def check_bytes(data: bytes, name: str) -> str:
    """The file as text, or a TaskError saying why it cannot be read as JSONL/CSV."""
    if len(data) > MAX_FILE_BYTES:
        raise TaskError(f"{name} is {len(data) / 2**20:.1f} MB; the limit is "
                        f"{MAX_FILE_BYTES // 2**20} MB: use a smaller file or a subset of rows")
    if b"\x00" in data[:8192]:
        raise TaskError(f"{name} is not a text file (it holds binary data): give a UTF-8 JSONL "
                        "file (one JSON object per line) or a CSV file with a header row")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TaskError(f"{name} is not UTF-8 text (byte {e.start} cannot be decoded): save it "
                        "as UTF-8 JSONL or CSV") from e
    if not text.strip():
        raise TaskError(f"{name} is empty: it needs one JSON object per line with 'question' "
                        "and 'answer' fields (or a CSV with those columns)")
    return text


def read_jsonl(text: str, source: str) -> Table:
    columns: dict[str, None] = {}
    rows, errors = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            errors.append(RowError(where, f"not valid JSON ({e.msg} at column {e.colno})"))
            continue
        if not isinstance(row, dict):
            errors.append(RowError(where, f"expected a JSON object, got {type(row).__name__}"))
            continue
        columns.update(dict.fromkeys(row))
        rows.append((where, row))
    return Table(source, tuple(columns), tuple(rows), tuple(errors))


def read_csv(text: str, source: str) -> Table:
    reader = csv.DictReader(io.StringIO(text))
    try:
        header = tuple(c for c in (reader.fieldnames or ()) if c is not None)
        rows = []
        for row in reader:
            # line_num is the last physical line read, so a quoted multi-line field counts.
            rows.append((f"line {reader.line_num}", {k: v for k, v in row.items() if k}))
    except csv.Error as e:
        raise TaskError(f"{source}: line {reader.line_num} is not valid CSV ({e})") from e
    return Table(source, header, tuple(rows), ())


def read_table(data: bytes, name: str) -> Table:
    """A JSONL or CSV file's rows (CSV by its .csv suffix), with file-level checks."""
    text = check_bytes(data, name)
    table = read_csv(text, name) if name.lower().endswith(".csv") else read_jsonl(text, name)
    if len(table.rows) > MAX_ROWS:
        raise TaskError(f"{name} has {len(table.rows)} rows; the limit is {MAX_ROWS}")
    if not table.rows and not table.errors:
        raise TaskError(f"{name} has a header but no rows")
    return table


# --- rows into examples ------------------------------------------------------------------

def _text(value: Any) -> str | None:
    """A cell as text: strings and numbers are; lists, objects, booleans and nulls are not."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int | float):
        return str(value)
    return None


def _cell(row: dict[str, Any], field: str, what: str) -> tuple[str | None, str | None]:
    """(text, None) or (None, what is wrong)."""
    if field not in row:
        return None, f"no {field!r} field (the {what})"
    value = _text(row[field])
    if value is None:
        kind = "null" if row[field] is None else type(row[field]).__name__
        return None, f"{field!r} (the {what}) must be text or a number, got {kind}"
    if not value:
        return None, f"{field!r} (the {what}) is empty"
    return value, None


def resolve_grader(grader: str, answers: list[str]) -> str:
    """auto: 'number' when at least half the answers read as numbers (the others are then
    reported as bad rows), else 'text'."""
    if grader != "auto":
        return grader
    numeric = sum(read_number(a) is not None for a in answers)
    return "number" if answers and numeric >= AUTO_NUMBER_SHARE * len(answers) else "text"


def _summary(source: str, errors: list[RowError], unit: str) -> TaskError:
    shown = "; ".join(map(str, errors[:SHOWN_ERRORS]))
    more = f" (and {len(errors) - SHOWN_ERRORS} more)" if len(errors) > SHOWN_ERRORS else ""
    plural = "s" if len(errors) > 1 else ""
    return TaskError(f"{source}: {len(errors)} bad {unit}{plural}: {shown}{more}",
                     [f"{source}: {e}" for e in errors[:50]])


def _missing_column(table: Table, field: str, what: str, flag: str) -> TaskError:
    seen = ", ".join(table.columns) or "none"
    return TaskError(f"{table.source} has no {field!r} column (the {what}); its columns: {seen}. "
                     f"Choose the {what} column with {flag} (or the column mapping on the "
                     "Launch page)")


def build_task(table: Table, name: str, question_field: str, answer_field: str,
               grader: str, unit: str = "line") -> DataTask:
    """Check every row and split the questions; raises TaskError listing the bad rows."""
    for field, what, flag in ((question_field, "question", "--question-field"),
                              (answer_field, "answer", "--answer-field")):
        if field not in table.columns:
            raise _missing_column(table, field, what, flag)
    errors = list(table.errors)
    good: list[tuple[str, str, str]] = []  # (where, question, answer)
    for where, row in table.rows:
        question, q_err = _cell(row, question_field, "question")
        answer, a_err = _cell(row, answer_field, "answer")
        errors += [RowError(where, e) for e in (q_err, a_err) if e]
        if question is not None and answer is not None:
            good.append((where, question, answer))
    resolved = resolve_grader(grader, [a for _, _, a in good])
    if resolved == "number":
        for where, _, answer in good:
            if read_number(answer) is None:
                short = answer if len(answer) <= 40 else answer[:37] + "..."
                errors.append(RowError(where, f"answer {short!r} is not a number (grader "
                                       f"'number' wants a plain number or GSM8K's '#### 42'; "
                                       "choose grader 'text' for short answers)"))
    if errors:
        raise _summary(table.source, sorted(errors, key=_where_key), unit)
    examples = [Example(q, final_part(a) if resolved != "text" else a) for _, q, a in good]
    return split_examples(examples, name, resolved, table.source)


def _where_key(e: RowError) -> int:
    return int(e.where.split()[-1])


def split_examples(examples: list[Example], name: str, grader: str, source: str) -> DataTask:
    """The hash split; the held-out side in a fixed shuffled order, one per question."""
    held: dict[str, Example] = {}
    train = []
    for ex in examples:
        if is_held_out(ex.question):
            held.setdefault(ex.question, ex)
        else:
            train.append(ex)
    n = len(examples)
    if not held:
        raise TaskError(f"{source}: none of its {n} questions fell on the held-out side (about "
                        "1 in 8 does, by a hash of the question): add rows, a few dozen at "
                        "least, so there is something to evaluate on")
    if not train:
        raise TaskError(f"{source}: all {n} questions fell on the held-out side: add rows")
    order = np.random.default_rng(EVAL_SET_SEED).permutation(len(held))
    held_list = list(held.values())
    return DataTask(name, tuple(train), tuple(held_list[int(i)] for i in order), grader)


# --- files -------------------------------------------------------------------------------

def check_path(path: Path) -> os.stat_result:
    """The file's stat, once it is known to exist and to be within the size limit."""
    if not path.is_file():
        raise TaskError(f"task file {path} does not exist: give an existing .jsonl or .csv "
                        "file, or a built-in task (" + ", ".join(TASKS) + ")")
    st = path.stat()
    if st.st_size > MAX_FILE_BYTES:
        raise TaskError(f"{path.name} is {st.st_size / 2**20:.1f} MB; the limit is "
                        f"{MAX_FILE_BYTES // 2**20} MB: use a smaller file or a subset of rows")
    return st


def read_file(path: Path) -> bytes:
    check_path(path)
    return path.read_bytes()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@lru_cache(maxsize=8)
def _file_task(path: str, stamp: tuple[int, int], question_field: str, answer_field: str,
               grader: str, expected_hash: str) -> DataTask:
    """Cached by the file's (mtime, size): the app re-checks the form on every rerun."""
    data = read_file(Path(path))
    if expected_hash and sha256(data) != expected_hash:
        raise TaskError(f"{path} changed since this run was configured (sha256 "
                        f"{expected_hash[:12]}… expected, {sha256(data)[:12]}… found): launch "
                        "a new run on the new data")
    table = read_table(data, display_name(path))
    return build_task(table, path, question_field, answer_field, grader)


def load_file_task(config: RunConfig) -> DataTask:
    path = Path(config.task).expanduser()
    st = check_path(path)
    return _file_task(str(path), (st.st_mtime_ns, st.st_size), config.question_field,
                      config.answer_field, config.grader, config.task_hash)


def display_name(path: str | Path) -> str:
    """A file's name as its owner knows it: a pinned copy loses its hash prefix."""
    name = Path(path).name
    head, _, rest = name.partition("-")
    pinned = len(head) == 12 and all(c in "0123456789abcdef" for c in head) and rest
    return rest if pinned else name


def safe_name(name: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in Path(name).name)
    return keep[-80:] or "data.jsonl"


def store_data(data: bytes, name: str, runs_dir: Path | str) -> Path:
    """Copy data into `<runs>/datasets/<sha256[:12]>-<name>`: identical data is kept once."""
    folder = Path(runs_dir) / DATA_DIR
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"{sha256(data)[:12]}-{safe_name(name)}"
    if not dest.exists():
        write_atomically(dest, data)
    return dest.resolve()


# --- Hugging Face datasets (optional: `datasets` is not a requirement) ---------------------

_HF_CACHE: dict[tuple[str, str, str], Any] = {}  # rows or the TaskError, per dataset/split


def _hf_dataset(dataset_id: str, subset: str, split: str) -> Any:
    key = (dataset_id, subset, split)
    if key not in _HF_CACHE:
        try:
            import datasets
        except ImportError:
            _HF_CACHE[key] = TaskError(
                "Hugging Face datasets need the optional `datasets` package: "
                ".venv/bin/pip install datasets (or export the rows to a JSONL file)")
        else:
            try:
                _HF_CACHE[key] = datasets.load_dataset(dataset_id, subset or None, split=split)
            except Exception as e:  # offline, unknown id, wrong split: say which and why
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                _HF_CACHE[key] = TaskError(
                    f"could not load dataset {dataset_id!r} (subset {subset or 'default'}, "
                    f"split {split!r}): {type(e).__name__}: {first}. Check the id, subset and "
                    "split; offline, only datasets already in the Hugging Face cache load")
    found = _HF_CACHE[key]
    if isinstance(found, TaskError):
        raise found
    return found


def dataset_table(dataset_id: str, subset: str, split: str, question_field: str,
                  answer_field: str) -> Table:
    ds = _hf_dataset(dataset_id, subset, split)
    columns = tuple(ds.column_names)
    source = f"{HF_PREFIX}{dataset_id} ({split})"
    if len(ds) > MAX_ROWS:
        raise TaskError(f"{source} has {len(ds)} rows; the limit is {MAX_ROWS}: choose a "
                        f"slice of the split, e.g. {split}[:10000]")
    fields = [f for f in (question_field, answer_field) if f in columns]
    cols = {f: ds[f] for f in fields}
    rows = tuple((f"row {i + 1}", {f: cols[f][i] for f in fields}) for i in range(len(ds)))
    return Table(source, columns, rows, ())


def rows_hash(task: DataTask) -> str:
    """The content of a dataset task, as the lab reads it: every (question, answer)."""
    pairs = [[ex.question, ex.answer] for ex in (*task.train, *task.held_out)]
    return sha256(json.dumps(pairs, ensure_ascii=False).encode())


def load_dataset_task(config: RunConfig, check_hash: bool = True) -> DataTask:
    dataset_id = config.task[len(HF_PREFIX):].strip()
    if not dataset_id:
        raise TaskError("hf: needs a dataset id, e.g. hf:openai/gsm8k")
    table = dataset_table(dataset_id, config.dataset_subset, config.dataset_split,
                          config.question_field, config.answer_field)
    task = build_task(table, config.task, config.question_field, config.answer_field,
                      config.grader, unit="row")
    if check_hash and config.task_hash and rows_hash(task) != config.task_hash:
        raise TaskError(f"{config.task} gives different rows than when this run was "
                        "configured (the dataset changed upstream): launch a new run")
    return task


# --- the entry points --------------------------------------------------------------------

def load_task(config: RunConfig) -> DataTask:
    """The file or dataset task a config names; TaskError says what is wrong."""
    if is_dataset_task(config.task):
        return load_dataset_task(config)
    if is_file_task(config.task):
        return load_file_task(config)
    raise TaskError(unknown_task_message(config.task))


def pin_task(config: RunConfig, runs_dir: Path | str) -> RunConfig:
    """The config with its data pinned: a file copied into the run store under its hash,
    a dataset's rows hashed. Built-in tasks come back unchanged. Checks every row."""
    if config.task in TASKS:
        return config
    if is_dataset_task(config.task):
        task = load_dataset_task(config, check_hash=False)
        return config.replace(task_hash=rows_hash(task))
    load_task(config)  # every check, before anything is copied
    path = Path(config.task).expanduser()
    data = read_file(path)
    digest = sha256(data)
    if config.task_hash and config.task_hash != digest:
        raise TaskError(f"{path} changed since its hash was recorded: clear task_hash or "
                        "restore the file")
    # A pinned copy's name starts with its own hash; pinning it again keeps that one name.
    prefix = digest[:12] + "-"
    name = path.name.removeprefix(prefix)
    return config.replace(task=str(store_data(data, name, runs_dir)), task_hash=digest)


def task_for(config: RunConfig) -> Task:
    """The task a run trains on: a built-in one by name, else a file or a Hugging Face
    dataset (checked row by row; a bad one raises TaskError, a ValueError)."""
    if config.task in TASKS:
        return TASKS[config.task]
    return load_task(config)
