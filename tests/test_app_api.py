"""core.api, the app's torch-free door into the engine."""

from __future__ import annotations

import json
import sys

import pytest
from app_helpers import GROUP, IDS, set_status, use_store

from core import api
from core.config import RunConfig, build_config
from core.runs.store import TAGS_FILE


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    return use_store(tmp_path, monkeypatch)


def test_list_and_load_the_recorded_runs(runs_dir):
    runs = api.list_runs()
    assert [r.id for r in runs] == sorted(IDS, reverse=True)
    assert all(r.status == "finished" and r.tags == [GROUP] for r in runs)
    rec = api.load_run(IDS[1])
    assert rec.config["recipe"] == "rlcr" and rec.train and rec.evals
    assert set(rec.evals[0]["calibration"]) == set(api.SIGNALS)
    assert api.load_run("missing-run") is None
    assert api.load_samples(IDS[1]) and api.load_samples("missing-run") == []


def test_broken_folders_come_back_damaged_never_raise(runs_dir):
    (runs_dir / IDS[0] / "status.json").write_text("[")
    (runs_dir / IDS[1] / "config.json").write_text('"a string"')
    (runs_dir / IDS[2] / "metrics.jsonl").write_text('{"step": 1, "train/x": 1}\n{"nostep"}\n')
    (runs_dir / ".tmp-half-made").mkdir()
    by_id = {r.id: r for r in api.list_runs()}
    assert by_id[IDS[0]].status == "damaged"
    assert by_id[IDS[1]].status == "damaged"
    assert api.load_run(IDS[2]).train == [{"step": 1, "x": 1}]
    assert ".tmp-half-made" not in by_id


def test_tags_live_beside_status_and_survive_the_writer(runs_dir):
    assert api.set_tags(IDS[0], " a, b ,a,, c ") == ["a", "b", "c"]
    set_status(runs_dir, IDS[0], tags=[], step=4)  # what a training process rewrites
    assert api.load_run(IDS[0]).tags == ["a", "b", "c"]
    assert api.add_tag(IDS[0], "d") == ["a", "b", "c", "d"]
    assert json.loads((runs_dir / IDS[0] / TAGS_FILE).read_text()) == ["a", "b", "c", "d"]
    with pytest.raises(KeyError):
        api.set_tags("missing-run", ["x"])


def test_groups_and_latest_classic(runs_dir):
    runs = api.list_runs()
    assert api.groups(runs) == {GROUP: IDS}
    api.set_tags(IDS[0], ["classic-later", "mine"])
    set_status(runs_dir, IDS[0], started_at=4e9)  # started after the fixture group
    runs = api.list_runs()
    assert api.latest_classic(runs) == ("classic-later", [IDS[0]])
    assert api.groups(runs, prefix="") == {"classic-later": [IDS[0]], "mine": [IDS[0]],
                                           GROUP: IDS[1:]}
    assert api.latest_classic([]) == (None, [])


def test_delete(runs_dir):
    api.delete(IDS[0])
    assert not (runs_dir / IDS[0]).exists()
    assert IDS[0] not in [r.id for r in api.list_runs()]


@pytest.mark.parametrize(("steps", "every", "expected"),
                         [(100, 20, 6), (4, 2, 3), (5, 2, 4), (10, 0, 2), (0, 5, 1)])
def test_n_evals_matches_the_training_schedule(steps, every, expected):
    assert api.n_evals(RunConfig(steps=steps, eval_every=every)) == expected
    assert api.n_evals(RunConfig(steps=steps, eval_every=every, no_eval=True)) == 0


def test_n_evals_matches_a_recorded_run(runs_dir):
    rec = api.load_run(IDS[0])
    assert api.n_evals(RunConfig.from_dict(rec.config)) == len(rec.evals)


def test_estimate_learns_from_finished_runs(runs_dir, tmp_path, monkeypatch):
    quick = build_config("quick")
    learned = api.estimate(quick)
    assert "4 finished runs" in learned.basis and learned.seconds > 0
    use_store(tmp_path / "other", monkeypatch, copy=False)
    guess = api.estimate(quick)
    assert "rough guess" in guess.basis
    assert api.estimate(build_config("smoke")).seconds < guess.seconds
    assert api.estimate_classic().seconds >= guess.seconds


def test_eta_of_a_running_run(runs_dir):
    set_status(runs_dir, IDS[0], status="running", pid=__import__("os").getpid(), step=2)
    rec = api.load_run(IDS[0])
    assert rec.status == "running"
    assert api.eta(rec) > 0
    assert api.eta(api.load_run(IDS[1])) is None  # finished


def test_check_config_explains_every_problem(runs_dir):
    config, problems = api.check_config({"group_size": 1, "temperature": 0.0})
    assert config is None
    assert any("group_size must be >= 2" in p for p in problems)
    assert any("temperature must be > 0" in p for p in problems)
    config, problems = api.check_config({"model": "/no/such/folder"})
    assert config is None and "does not exist" in problems[0]
    gpu_less = api.DeviceInfo(True, cuda=False)
    assert api.check_config({"device": "cuda"}, device=gpu_less)[1]
    config, problems = api.check_config({"steps": 4}, preset="smoke")
    assert problems == [] and config.steps == 4 and config.group_size == 4


def test_launch_classic_tags_four_quick_runs(runs_dir, monkeypatch):
    from core.runs.store import RunStore

    made = []

    def fake(config, root=None, user=None):
        made.append(config)
        return RunStore(root or api.runs_dir()).create(config).run_id

    monkeypatch.setattr(api, "launch", fake)
    tag, ids = api.launch_classic(now=0)
    assert tag.startswith(api.CLASSIC_PREFIX) and len(ids) == 4
    assert [c.recipe for c in made] == list(api.CLASSIC_RECIPES)
    assert all(c.steps == 100 and c.threads >= 1 for c in made)
    assert api.groups(api.list_runs())[tag] == ids  # in launch order


def test_fmt_duration():
    assert api.fmt_duration(None) == "unknown"
    assert api.fmt_duration(42.4) == "42 s"
    assert api.fmt_duration(125) == "2 min 05 s"
    assert api.fmt_duration(3 * 3600 + 120) == "3 h 02 min"


def test_device_probe_runs_in_a_subprocess(monkeypatch):
    monkeypatch.setattr(api, "_device", None)
    monkeypatch.setattr(api, "_device_thread", None)
    had_torch = "torch" in sys.modules
    info = api.detected_device(wait=120)
    assert info.known and info.auto in ("cpu", "cuda")
    assert info.describe()
    assert ("torch" in sys.modules) == had_torch


# --- models and data -------------------------------------------------------------------------

def test_model_choices_and_what_each_choice_means():
    choices = api.model_choices()
    assert list(choices)[0] == api.EMBEDDED_CHOICE and list(choices)[-1] == api.OTHER_MODEL
    assert "494 M params · weights 1.0 GB in bf16" in choices["Qwen/Qwen2.5-0.5B-Instruct"]
    assert "362 M params" in choices["HuggingFaceTB/SmolLM2-360M-Instruct"]
    assert api.model_for_choice(api.EMBEDDED_CHOICE) == "embedded"
    assert api.model_for_choice("Qwen/Qwen3-0.6B") == "Qwen/Qwen3-0.6B"
    assert api.model_for_choice(api.OTHER_MODEL, " /models/x ") == "/models/x"
    assert "does not exist" in api.model_status("/no/such/model/folder")


def test_memory_estimate_sources(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    embedded = api.memory_estimate(build_config())
    assert embedded and embedded.dtype == "float32" and embedded.total < 1e9
    qwen = build_config("chat", model="Qwen/Qwen2.5-0.5B-Instruct")
    on_gpu = api.memory_estimate(qwen, api.DeviceInfo(True, cuda=True))
    assert on_gpu.dtype == "bf16" and on_gpu.parts["weights"] == pytest.approx(0.988e9, 0.01)
    assert api.memory_estimate(qwen.replace(model="someone/unknown-model")) is None


def test_task_labels_and_column_guesses():
    assert api.task_label("add") == "add" and api.task_label("hf:openai/gsm8k") == "hf:openai/gsm8k"
    assert api.task_label("/runs/datasets/0123456789ab-my-data.jsonl") == "my-data.jsonl"
    assert api.task_label("/home/me/plain-name.jsonl") == "plain-name.jsonl"
    assert api.guess_column(("id", "Problem", "solution"), "question") == "Problem"
    assert api.guess_column(("id", "Problem", "solution"), "answer") == "solution"
    assert api.guess_column(("input_text", "gold_answer"), "answer") == "gold_answer"
    assert api.guess_column(("a", "b"), "question") is None


def test_launch_pins_a_task_file_into_the_store(runs_dir, tmp_path, monkeypatch):
    import core.runs.runner

    src = tmp_path / "qa.jsonl"
    src.write_text("".join(json.dumps({"question": f"{i}+1?", "answer": str(i + 1)}) + "\n"
                           for i in range(100)))
    seen = []
    monkeypatch.setattr(core.runs.runner, "launch",
                        lambda config, root, owner=None: seen.append(config) or "id")
    assert api.launch(build_config(task=str(src))) == "id"
    (config,) = seen
    assert config.task.startswith(str((runs_dir / "datasets").resolve()))
    assert len(config.task_hash) == 64
    assert api.task_summary(config).endswith("graded as number")
    assert api.task_summary(build_config()) is None
