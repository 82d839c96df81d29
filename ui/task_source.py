"""The Launch page's own-data inputs: a JSONL/CSV upload with its column mapping, or a
Hugging Face dataset by id, subset, split and columns. Widget keys carry the page's
`launch_` prefix, so they are saved and restored with the rest of the form."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from core import api
from core.config import GRADER_CHOICES, help_text
from core.data.task_data import TaskError, read_table, sha256, store_data

SOURCES = {"file": "your file — JSONL or CSV upload", "hf": "a Hugging Face dataset"}


@dataclass(frozen=True)
class TaskChoice:
    task: str  # the RunConfig.task value: a built-in name, a stored file, or hf:ID
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Upload:
    path: str | None  # the stored copy in <runs>/datasets; None when the file is unreadable
    columns: tuple[str, ...]
    rows: int
    problem: str | None = None


_UPLOADS: dict[tuple[str, str, str], Upload] = {}  # (runs dir, name, sha256) -> stored


def save_upload(name: str, data: bytes, root: Path | str | None = None) -> Upload:
    """Check an uploaded file (size, text, JSONL/CSV rows) and keep a copy in the run store,
    under its content hash; the columns feed the page's column mapping."""
    key = (str(root if root is not None else api.runs_dir()), name, sha256(data))
    if key not in _UPLOADS:
        try:
            table = read_table(data, name)
        except TaskError as e:
            return Upload(None, (), 0, str(e))
        path = store_data(data, name, key[0])
        _UPLOADS[key] = Upload(str(path), table.columns, len(table.rows))
    return _UPLOADS[key]


COLUMN_HINTS = {"question": ("question", "problem", "prompt", "query", "input"),
                "answer": ("answer", "solution", "target", "label", "output", "gold")}


def guess_column(columns: tuple[str, ...] | list[str], role: str) -> str | None:
    """The column most likely to hold the question or answer (exact, then partial names)."""
    lower = {c.lower(): c for c in columns}
    for hint in COLUMN_HINTS[role]:
        if hint in lower:
            return lower[hint]
    for hint in COLUMN_HINTS[role]:
        for c in columns:
            if hint in c.lower():
                return c
    return None


def draw(kind: str) -> TaskChoice:
    """The inputs for a task source (`kind` from the task picker); built-in tasks need none."""
    if kind == "file":
        return _upload()
    if kind == "hf":
        return _dataset()
    return TaskChoice(kind)


def _upload() -> TaskChoice:
    upload = st.file_uploader("Questions and answers (JSONL or CSV)", type=["jsonl", "csv"],
                              key="launch_upload", help="One JSON object per line, or a CSV "
                              "with a header row. The file is copied into the runs folder "
                              "under its hash, so the run's config.json names exactly its data.")
    if upload is None:
        return TaskChoice("file", ["upload a JSONL or CSV file with a question and an answer "
                                   "column"])
    info = save_upload(upload.name, upload.getvalue())
    if info.problem:
        return TaskChoice("file", [info.problem])
    for role in ("question", "answer"):  # a mapping that fits this file's columns
        if st.session_state.get(f"launch_{role}_field") not in info.columns:
            st.session_state[f"launch_{role}_field"] = (guess_column(info.columns, role)
                                                        or info.columns[0])
    m1, m2, m3 = st.columns(3)
    m1.selectbox("Question column", info.columns, key="launch_question_field",
                 help=help_text("question_field"))
    m2.selectbox("Answer column", info.columns, key="launch_answer_field",
                 help=help_text("answer_field"))
    m3.selectbox("Grader", GRADER_CHOICES, key="launch_grader", help=help_text("grader"))
    return TaskChoice(str(info.path))


def _dataset() -> TaskChoice:
    h1, h2, h3 = st.columns(3)
    hf_id = h1.text_input("Dataset id", key="launch_hf_id", placeholder="openai/gsm8k").strip()
    h2.text_input("Subset", key="launch_dataset_subset", help=help_text("dataset_subset"))
    h3.text_input("Split", key="launch_dataset_split", help=help_text("dataset_split"))
    h1.text_input("Question column", key="launch_question_field",
                  help=help_text("question_field"))
    h2.text_input("Answer column", key="launch_answer_field", help=help_text("answer_field"))
    h3.selectbox("Grader", GRADER_CHOICES, key="launch_grader", help=help_text("grader"))
    if not hf_id:
        return TaskChoice("hf:", ["give a Hugging Face dataset id, e.g. openai/gsm8k (subset "
                                  "main)"])
    return TaskChoice(f"hf:{hf_id}")
