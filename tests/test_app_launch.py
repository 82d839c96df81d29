"""Launch: settings with help texts, validation in words, an estimate, and a (fake) launch."""

from __future__ import annotations

import os

import pytest
from app_helpers import IDS, ok, page, set_status, texts, use_store

from core import api
from core.config import FIELDS, help_text, widget_limits
from core.models.model_source import ModelError


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    return use_store(tmp_path, monkeypatch)


def test_launch_form_starts_from_quick_with_help_texts(runs_dir):
    at = ok(page("launch"))
    assert at.number_input(key="launch_steps").value == 100
    assert at.number_input(key="launch_eval_every").value == 20
    assert at.number_input(key="launch_steps").help == help_text("steps")
    assert at.number_input(key="launch_group_size").help == help_text("group_size")
    assert at.selectbox(key="launch_recipe").help == help_text("recipe")
    assert "Estimated run time" in at.info[0].value
    assert not at.button(key="launch_go").disabled
    assert "CPU only" in texts(at)  # what auto will use


def test_recipe_knobs_appear_with_their_recipe(runs_dir):
    at = page("launch")
    keys = {w.key for w in at.number_input}
    assert "launch_wr_lambda" not in keys and "launch_rlsf_beta" not in keys
    at.selectbox(key="launch_recipe").set_value("w-reinforce").run()
    assert at.number_input(key="launch_wr_lambda").value == pytest.approx(0.1)
    at.selectbox(key="launch_recipe").set_value("rlsf").run()
    assert at.number_input(key="launch_rlsf_beta").value == pytest.approx(0.2)
    assert at.number_input(key="launch_rlsf_threshold").value == pytest.approx(0.9)
    assert at.selectbox(key="launch_rlsf_signal").value == "disparity"
    ok(at)


def test_a_setting_that_clashes_with_another_is_explained_and_blocks_launch(runs_dir):
    at = page("launch")
    at.text_input(key="launch_pass_k").set_value("1, 4")
    at.number_input(key="launch_eval_samples").set_value(2).run()
    ok(at)
    assert "Pass@k needs 1 <= k <= n" in at.error[0].value
    assert at.button(key="launch_go").disabled


def test_number_widgets_offer_only_values_that_validation_accepts(runs_dir):
    """Each widget's limits come from its setting's Bound: G from 2, a temperature above 0."""
    at = page("launch")
    widgets = {}
    for recipe in ("w-reinforce", "rlsf"):  # their own knobs appear with them
        at.selectbox(key="launch_recipe").set_value(recipe).run()
        widgets |= {w.key.removeprefix("launch_"): w for w in at.number_input}
    assert len(widgets) == 16
    assert widgets["group_size"].min == 2 and widgets["temperature"].min > 0
    for name, w in widgets.items():
        limits = widget_limits(name)
        assert (w.min, w.max) == (limits.get("min_value"), limits.get("max_value")), name
        for end in (w.min, w.max):
            if end is not None:  # both ends of every widget pass validation
                _, problems = api.check_config({name: type(FIELDS[name].default)(end)})
                assert not problems, (name, end, problems)


def test_bad_pass_k_text_and_missing_model_folder(runs_dir, tmp_path):
    at = page("launch")
    at.text_input(key="launch_pass_k").set_value("1, two").run()
    assert "whole numbers" in at.error[0].value
    at.text_input(key="launch_pass_k").set_value("").run()
    at.selectbox(key="launch_model_kind").set_value("other: folder or hub id").run()
    at.text_input(key="launch_model_path").set_value(str(tmp_path / "nowhere")).run()
    ok(at)
    assert "does not exist" in at.error[0].value
    assert at.button(key="launch_go").disabled


def test_cuda_without_a_gpu_is_refused(runs_dir):
    at = page("launch")
    at.radio(key="launch_device").set_value("cuda").run()
    assert "no CUDA GPU was detected" in at.error[0].value


def test_cuda_is_offered_when_detected(tmp_path, monkeypatch):
    use_store(tmp_path, monkeypatch, cuda=True)
    at = page("launch")
    at.radio(key="launch_device").set_value("cuda").run()
    ok(at)
    assert not at.error
    assert "Test GPU" in texts(at)


def test_smoke_preset_fills_the_form(runs_dir):
    at = page("launch")
    at.selectbox(key="launch_preset").set_value("smoke").run()
    assert at.number_input(key="launch_steps").value == 4
    assert at.number_input(key="launch_group_size").value == 4
    assert at.number_input(key="launch_eval_prompts").value == 16


def test_launch_starts_the_configured_run_and_opens_its_page(runs_dir, fake_launch):
    at = page("launch")
    at.selectbox(key="launch_recipe").set_value("rlcr")
    at.selectbox(key="launch_task").set_value("mix")
    at.number_input(key="launch_steps").set_value(4)
    at.number_input(key="launch_group_size").set_value(4)
    at.number_input(key="launch_eval_every").set_value(2)
    at.number_input(key="launch_eval_prompts").set_value(16)
    at.number_input(key="launch_eval_samples").set_value(4)
    at.number_input(key="launch_seed").set_value(3)
    at.number_input(key="launch_kl_beta").set_value(0.05)
    at.text_input(key="launch_pass_k").set_value("1,2,4").run()
    at.button(key="launch_go").click().run()
    ok(at)
    (config,) = fake_launch
    assert (config.recipe, config.task, config.steps, config.group_size) == ("rlcr", "mix", 4, 4)
    assert (config.eval_every, config.eval_prompts, config.eval_samples) == (2, 16, 4)
    assert (config.seed, config.kl_beta, config.pass_k) == (3, 0.05, (1, 2, 4))
    assert at.session_state["run_id"] == IDS[1]
    assert at.query_params["run"] == IDS[1]
    assert "rlcr" in at.title[0].value  # the Run page of the launched run


def test_a_refused_launch_is_shown_in_words(runs_dir, monkeypatch):
    def refuse(config, root=None, user=None):
        raise ModelError("the embedded model is missing")

    monkeypatch.setattr(api, "launch", refuse)
    at = page("launch")
    at.button(key="launch_go").click().run()
    ok(at)
    assert "Could not start the run: the embedded model is missing" in at.error[0].value


def test_a_full_machine_says_the_run_will_wait_in_the_queue(runs_dir, monkeypatch):
    monkeypatch.setenv("CALIBRATION_LAB_MAX_RUNS", "2")
    for run_id in IDS[:2]:
        set_status(runs_dir, run_id, status="running", pid=os.getpid())
    set_status(runs_dir, IDS[2], status="queued", pid=os.getpid())
    at = ok(page("launch"))
    assert "2 of 2 runs are training now, 1 waiting" in at.warning[0].value


def test_launch_offers_finished_runs_with_an_adapter_as_a_starting_point(runs_dir, fake_launch):
    """init_from: only finished runs of the same model that kept their final adapter are
    offered; the chosen one is recorded in the launched config."""
    from core.runtime.store import ADAPTER_FILE

    with_adapter = IDS[0]
    (runs_dir / with_adapter / ADAPTER_FILE).write_bytes(b"weights")
    at = ok(page("launch"))
    box = at.selectbox(key="launch_init_from")
    assert len(box.options) == 2 and box.options[0] == "the model itself (a fresh adapter)"
    assert with_adapter[-4:] in box.options[1]  # labelled like every run picker
    assert box.help == help_text("init_from")
    box.set_value(with_adapter).run()
    at.button(key="launch_go").click().run()
    ok(at)
    (config,) = fake_launch
    assert config.init_from == with_adapter


def test_judge_knobs_appear_with_their_judge_and_an_llm_judge_is_estimated(runs_dir, tmp_path):
    at = page("launch")
    keys = {w.key for w in at.number_input}
    assert "launch_judge_fn_rate" not in keys and "launch_judge_fp_rate" not in keys
    assert at.selectbox(key="launch_judge").help == help_text("judge")
    at.selectbox(key="launch_judge").set_value("shortcut-judge").run()
    keys = {w.key for w in at.number_input}
    assert "launch_judge_fn_rate" in keys and "launch_judge_fp_rate" not in keys
    at.selectbox(key="launch_judge").set_value("random-judge").run()
    at.number_input(key="launch_judge_fp_rate").set_value(0.3).run()
    ok(at)
    assert "truth is logged beside it" in texts(at)
    at.selectbox(key="launch_judge").set_value("llm-judge").run()
    assert "llm-judge needs judge_model" in at.error[0].value  # no model yet: explained
    from tools.tiny_chat import write_chat_model

    judge = write_chat_model(tmp_path / "judge", "qwen2")
    at.text_input(key="launch_judge_model").set_value(str(judge)).run()
    ok(at)
    warning = " ".join(w.value for w in at.warning)
    assert "needs a GPU or patience" in warning and "per step on this CPU" in warning
