"""Tests for the command line, run as a user runs it: `python -m core ...` in a subprocess.

Every `train` here fails in preflight, before any weights load, so nothing trains.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import RunConfig, help_text
from core.paths import EMBEDDED_DIR
from core.runtime.store import RUNS_DIR_ENV

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, runs_dir: Path | None = None,
            env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "10000", **(env_extra or {})}  # no help wrapping
    env.pop(RUNS_DIR_ENV, None)
    if runs_dir is not None:
        env[RUNS_DIR_ENV] = str(runs_dir)  # belt and braces: --runs-dir is passed too
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=240)  # a hang, not a slow machine


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def squash(text: str) -> str:
    return " ".join(text.split())


def model_without_config(tmp_path: Path) -> list[str]:
    folder = tmp_path / "empty-model"
    folder.mkdir()
    return ["--model", str(folder)]


def model_without_weights(tmp_path: Path) -> list[str]:
    folder = tmp_path / "no-weights"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "tokenizer.json").write_text("{}")
    return ["--model", str(folder)]


def model_with_damaged_weights(tmp_path: Path) -> list[str]:
    """The embedded model with its weight file cut short, as an interrupted copy leaves it."""
    folder = tmp_path / "damaged"
    shutil.copytree(EMBEDDED_DIR, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    return ["--model", str(folder)]


def task_file(name: str, text: str, *flags: str):
    def build(tmp_path: Path) -> list[str]:
        path = tmp_path / name
        path.write_text(text)
        return ["--task", str(path), *flags]
    return build


QA = "".join(f'{{"question": "What is {i} + 1?", "answer": "{i + 1}"}}\n' for i in range(100))


# (test id, argv after `train`, a word the one-line error must contain)
BAD_INPUTS = [
    ("unknown-recipe", ["--recipe", "ppo"], "recipe"),
    ("unknown-preset", ["--preset", "huge"], "preset"),
    ("group-size-1", ["--group-size", "1"], "group_size"),
    ("pass-k-above-n", ["--pass-k", "32"], "Pass@k"),
    ("negative-steps", ["--steps", "-1"], "steps"),
    ("zero-lr", ["--lr", "0"], "lr"),
    ("nan-lr", ["--lr", "nan"], "lr"),
    ("unknown-device", ["--device", "tpu"], "device"),
    ("unknown-task", ["--task", "calculus"], "task"),
    ("missing-model-path", ["--model", "/nonexistent/path"], "/nonexistent/path"),
    ("model-without-config", [model_without_config], "config.json"),
    ("model-without-weights", [model_without_weights], "weights"),
    ("model-damaged-weights", [model_with_damaged_weights], "model.safetensors is damaged"),
    ("task-missing-column", [task_file("qa.jsonl", QA.replace('"answer"', '"solution"'))],
     "no 'answer' column"),
    ("task-empty-file", [task_file("qa.jsonl", "")], "is empty"),
    ("task-non-numeric-answer", [task_file("qa.jsonl", QA.replace('"5"', '"five"'),
                                           "--grader", "number")],
     "line 5: answer 'five' is not a number"),
    ("task-missing-file", ["--task", "/nonexistent/qa.jsonl"], "does not exist"),
    ("unknown-grader", ["--grader", "fuzzy"], "grader"),
]


@pytest.mark.parametrize(("argv", "word"), [(a, w) for _, a, w in BAD_INPUTS],
                         ids=[i for i, _, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line_and_no_run_folder(tmp_path, argv, word):
    if callable(argv[0]):  # a model folder or task file built for this test
        argv = argv[0](tmp_path)
    runs = tmp_path / "runs"
    proc = run_cli("train", *argv, "--runs-dir", str(runs), runs_dir=runs)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # one line, not a traceback or argparse usage
    assert lines[0].startswith("error: "), lines[0]
    assert word in lines[0], lines[0]
    assert proc.stdout == ""
    assert not runs.exists() or not any(runs.iterdir()), list(runs.iterdir())


@pytest.mark.parametrize("argv", [["train", "--steps", "many"], ["resume"], ["frobnicate"]])
def test_usage_mistakes_are_one_line_too(tmp_path, argv):
    proc = run_cli(*argv, "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "--help" in proc.stderr


def test_train_help_documents_every_field():
    proc = run_cli("train", "--help")
    assert proc.returncode == 0, proc.stderr
    out = squash(proc.stdout)
    for name in ("--group-size", "--kl-beta", "--eval-every", "--no-eval", "--pass-k",
                 "--preset", "--runs-dir"):
        assert name in out, name
    for f in dataclasses.fields(RunConfig):
        assert flag(f.name) in out, f.name
        # each flag's help is the field's own help text, word for word
        assert squash(help_text(f.name)) in out, f.name


@pytest.mark.parametrize(("argv", "no_eval", "merged"), [
    ([], None, None), (["--no-eval"], True, None), (["--no-no-eval"], False, None),
    (["--merged-sampling"], None, True), (["--no-merged-sampling"], None, False)])
def test_bool_flags_set_their_field_also_when_its_name_starts_with_no(argv, no_eval, merged):
    from core.cli import build_parser

    args = build_parser().parse_args(["train", *argv])
    assert (args.no_eval, args.merged_sampling) == (no_eval, merged)


def test_list_json_on_an_empty_runs_dir(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    proc = run_cli("list", "--json", "--runs-dir", str(runs))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
    assert proc.stdout.strip() == "[]"


def test_list_json_shows_a_run_folder(tmp_path):
    from core.runtime.store import RunStore

    runs = tmp_path / "runs"
    writer = RunStore(runs).create(RunConfig(recipe="psr", seed=4, steps=9))
    writer.update_status(status="finished", step=9)
    proc = run_cli("list", "--json", "--runs-dir", str(runs))
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [(r["id"], r["status"], r["recipe"], r["seed"], r["step"], r["total_steps"])
            for r in rows] == [(writer.run_id, "finished", "psr", 4, 9, 9)]


def test_unknown_hub_id_offline_is_refused_with_how_to_download(tmp_path):
    runs = tmp_path / "runs"
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}  # an empty cache
    proc = run_cli("train", "--model", "nobody-here/NoSuchModel-0.5B", "--runs-dir", str(runs),
                   runs_dir=runs, env_extra=offline)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "nobody-here/NoSuchModel-0.5B is not in the Hugging Face cache" in line
    assert "offline" in line and "hf download nobody-here/NoSuchModel-0.5B" in line
    assert not runs.exists() or not any(runs.iterdir())


def test_init_from_is_a_flag_and_a_missing_run_is_refused_before_anything_starts(
        tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = run_cli("train", "--help")
    assert squash(help_text("init_from")) in squash(proc.stdout)
    proc = run_cli("train", "--init-from", "20990101-000000-binary-s0-zzzz", "--runs-dir",
                   str(runs), runs_dir=runs)
    assert proc.returncode == 2
    assert "init_from: no run '20990101-000000-binary-s0-zzzz'" in proc.stderr
    assert not any(runs.glob("*-binary-*"))  # no run folder was made
    proc = run_cli("experiment", "--help")
    assert "--init-from" not in proc.stdout  # the experiment sets it per chained run
    assert "calibration is another name for classic" in squash(proc.stdout)
