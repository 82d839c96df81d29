"""core.api, the app's torch-free door into the engine."""

from __future__ import annotations

import json
import sys

import pytest
from app_helpers import GROUP, IDS, set_status, use_store

from core import api, device
from core.config import RunConfig, build_config
from core.device import DeviceInfo
from core.metrics import SIGNALS
from core.runtime.store import TAGS_FILE


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    return use_store(tmp_path, monkeypatch)


def test_list_and_load_the_recorded_runs(runs_dir):
    runs = api.list_runs()
    assert [r.id for r in runs] == sorted(IDS, reverse=True)
    assert all(r.status == "finished" and r.tags == [GROUP] for r in runs)
    rec = api.load_run(IDS[1])
    assert rec.config["recipe"] == "rlcr" and rec.train and rec.evals
    assert tuple(rec.evals[0]["calibration"]) == SIGNALS
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


def test_groups_and_latest_comparison(runs_dir):
    runs = api.list_runs()
    assert api.groups(runs) == {GROUP: IDS}
    api.set_tags(IDS[0], ["compare-later", "mine"])
    set_status(runs_dir, IDS[0], started_at=4e9)  # started after the fixture group
    runs = api.list_runs()
    assert api.latest_comparison(runs) == ("compare-later", [IDS[0]])
    assert api.groups(runs, prefix="") == {"compare-later": [IDS[0]], "mine": [IDS[0]],
                                           GROUP: IDS[1:]}
    assert api.latest_comparison([]) == (None, [])


def test_delete(runs_dir):
    api.delete(IDS[0])
    assert not (runs_dir / IDS[0]).exists()
    assert IDS[0] not in [r.id for r in api.list_runs()]


def test_n_evals_matches_a_recorded_run(runs_dir):
    rec = api.load_run(IDS[0])
    assert RunConfig.from_dict(rec.config).n_evals == len(rec.evals)  # train's own schedule


def test_estimate_learns_from_finished_runs(runs_dir, tmp_path, monkeypatch):
    quick = build_config("quick")
    learned = api.estimate(quick)
    assert "4 finished runs" in learned.basis
    assert 0 < learned.low <= learned.seconds <= learned.high
    use_store(tmp_path / "other", monkeypatch, copy=False)
    measured = api.estimate(quick)
    assert measured.basis.startswith("measured on")
    assert api.estimate(build_config("smoke")).seconds < measured.seconds
    one = api.estimate(api.comparison_config())  # the calibration experiment's 300 steps
    assert one.seconds > measured.seconds
    assert api.estimate_comparison().seconds == pytest.approx(4 * one.seconds)


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
    gpu_less = DeviceInfo(True, cuda=False)
    assert api.check_config({"device": "cuda"}, device=gpu_less)[1]
    config, problems = api.check_config({"steps": 4}, preset="smoke")
    assert problems == [] and config.steps == 4 and config.group_size == 4


def test_device_probe_runs_in_a_subprocess(monkeypatch):
    monkeypatch.setattr(device, "_device", None)
    monkeypatch.setattr(device, "_device_thread", None)
    had_torch = "torch" in sys.modules
    info = api.detected_device(wait=120)
    assert info.known and info.auto in ("cpu", "cuda")
    assert info.describe()
    assert ("torch" in sys.modules) == had_torch


# --- models and data -------------------------------------------------------------------------

def test_model_status_says_what_is_wrong():
    assert "does not exist" in api.model_status("/no/such/model/folder")


def test_memory_estimate_sources(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    embedded = api.memory_estimate(build_config())
    assert embedded and embedded.dtype == "float32" and embedded.total < 1e9
    qwen = build_config("chat", model="Qwen/Qwen2.5-0.5B-Instruct")
    on_gpu = api.memory_estimate(qwen, DeviceInfo(True, cuda=True))
    assert on_gpu.dtype == "bf16" and on_gpu.parts["weights"] == pytest.approx(0.988e9, 0.01)
    assert api.memory_estimate(qwen.replace(model="someone/unknown-model")) is None


def test_task_labels():
    assert api.task_label("add") == "add" and api.task_label("hf:openai/gsm8k") == "hf:openai/gsm8k"
    assert api.task_label("/runs/datasets/0123456789ab-my-data.jsonl") == "my-data.jsonl"
    assert api.task_label("/home/me/plain-name.jsonl") == "plain-name.jsonl"


def test_launch_pins_a_task_file_into_the_store(runs_dir, tmp_path, monkeypatch):
    import core.runtime.runner

    src = tmp_path / "qa.jsonl"
    src.write_text("".join(json.dumps({"question": f"{i}+1?", "answer": str(i + 1)}) + "\n"
                           for i in range(100)))
    seen = []
    monkeypatch.setattr(core.runtime.runner, "launch",
                        lambda config, root, owner=None, **_: seen.append(config) or "id")
    assert api.launch(build_config(task=str(src))) == "id"
    (config,) = seen
    assert config.task.startswith(str((runs_dir / "datasets").resolve()))
    assert len(config.task_hash) == 64
    assert api.task_summary(config).endswith("graded as number")
    assert api.task_summary(build_config()) is None
