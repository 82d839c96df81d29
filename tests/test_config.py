"""Tests for core.config: RunConfig validation, JSON round trips, presets and help texts."""

from __future__ import annotations

import dataclasses
import json

import pytest

from core.config import (
    FIELDS,
    PRESETS,
    RECIPE_NAMES,
    Bound,
    ConfigError,
    RunConfig,
    build_config,
    help_text,
    widget_limits,
)
from core.engine.recipes import RECIPES

# (overrides, words the message must contain: the field's name, so the user knows what to fix)
IMPOSSIBLE = [
    ({"group_size": 1}, ["group_size"]),
    ({"group_size": 0}, ["group_size"]),
    ({"pass_k": (32,)}, ["Pass@k", "eval_samples", "32"]),  # default n = 16
    ({"pass_k": (0,)}, ["Pass@k"]),
    ({"eval_samples": 4, "pass_k": (1, 8)}, ["Pass@k", "eval_samples", "8"]),
    ({"steps": -1}, ["steps"]),
    ({"lr": 0.0}, ["lr"]),
    ({"lr": -1e-3}, ["lr"]),
    ({"lr": float("nan")}, ["lr", "finite"]),
    ({"lr": float("inf")}, ["lr", "finite"]),
    ({"recipe": "ppo"}, ["recipe", "ppo"]),
    ({"device": "tpu"}, ["device", "tpu"]),
    ({"temperature": 0.0}, ["temperature"]),
    ({"clip_eps": 1.5}, ["clip_eps"]),
    ({"kl_beta": -0.1}, ["kl_beta"]),
    ({"eval_every": -1}, ["eval_every"]),
    ({"rlsf_threshold": 1.5}, ["rlsf_threshold"]),
    ({"rlsf_signal": "entropy"}, ["rlsf_signal"]),
    ({"model": "  "}, ["model"]),
]


IDS = [",".join(o) + "=" + repr(list(o.values())[-1]) for o, _ in IMPOSSIBLE]


@pytest.mark.parametrize(("overrides", "words"), IMPOSSIBLE, ids=IDS)
def test_impossible_settings_raise_config_error_naming_the_field(overrides, words):
    with pytest.raises(ConfigError) as info:
        RunConfig(**overrides)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        RunConfig(group_size=1, steps=-1)
    assert "group_size" in str(info.value) and "steps" in str(info.value)


def test_defaults_are_valid_and_match_the_papers():
    c = RunConfig()
    assert c.recipe == "binary"
    assert c.clip_eps == 0.2  # PPO clip, docs/science.md
    assert c.wr_lambda == 0.1  # W-REINFORCE lambda
    assert c.rlsf_beta == 0.2 and c.rlsf_threshold == 0.9  # RLSF's code
    assert c.kl_beta == 0.0
    assert not c.scale_rewards  # RLCR's code: no / std


def test_edge_values_that_are_allowed():
    # the boundaries of the checks above are legal
    RunConfig(group_size=2, steps=0, pass_k=(1, 16), eval_samples=16, kl_beta=0.0,
              rlsf_threshold=1.0, eval_every=0)


def test_json_round_trip():
    c = RunConfig(recipe="rlcr", seed=7, steps=3, group_size=4, lr=5e-4, pass_k=(1, 4),
                  eval_samples=4, scale_rewards=True, no_eval=True, device="cpu")
    text = c.to_json()
    d = json.loads(text)
    assert d["pass_k"] == [1, 4]  # a list in JSON
    back = RunConfig.from_dict(d)
    assert back == c
    assert back.pass_k == (1, 4) and isinstance(back.pass_k, tuple)
    assert hash(back) == hash(c)  # frozen and hashable after the round trip
    assert set(d) == set(FIELDS)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="bogus"):
        RunConfig.from_dict({"steps": 3, "bogus": 1})


def test_from_dict_validates():
    with pytest.raises(ConfigError, match="group_size"):
        RunConfig.from_dict({"group_size": 1})


def test_replace_validates():
    with pytest.raises(ConfigError, match="lr"):
        RunConfig().replace(lr=0.0)


def test_build_config_preset_and_overrides():
    smoke = build_config("smoke")
    for key, value in PRESETS["smoke"].items():
        assert getattr(smoke, key) == value
    # overrides win over the preset; None means "not given" and keeps the preset's value
    c = build_config("smoke", steps=7, group_size=None, recipe="nsr")
    assert c.steps == 7
    assert c.group_size == PRESETS["smoke"]["group_size"]
    assert c.recipe == "nsr"
    assert c.eval_samples == PRESETS["smoke"]["eval_samples"]


def test_build_config_without_preset_is_the_defaults_plus_overrides():
    assert build_config() == RunConfig()
    assert build_config(None, seed=3) == RunConfig(seed=3)


def test_build_config_unknown_preset():
    with pytest.raises(ConfigError, match="preset.*'huge'"):
        build_config("huge")


def test_build_config_rejects_unknown_overrides():
    with pytest.raises(ConfigError, match="bogus"):
        build_config("smoke", bogus=1)


@pytest.mark.parametrize(("n", "ks"), [
    (16, (1, 2, 4, 8, 16)),
    (12, (1, 2, 4, 8)),
    (1, (1,)),
    (4, (1, 2, 4)),
    (256, (1, 2, 4, 8, 16, 32, 64, 128, 256)),
])
def test_ks_defaults_to_powers_of_two_up_to_n(n, ks):
    assert RunConfig(eval_samples=n).ks == ks


def test_ks_explicit_list_is_sorted_and_deduplicated():
    assert RunConfig(pass_k=(8, 1, 8, 3)).ks == (1, 3, 8)


def test_every_field_has_a_help_text():
    assert FIELDS  # not vacuous
    for f in dataclasses.fields(RunConfig):
        text = help_text(f.name)
        assert isinstance(text, str) and text.strip(), f.name
        assert "%" not in text, f"{f.name}: argparse would choke on a bare %"


def test_recipe_help_names_every_recipe():
    assert set(RECIPE_NAMES) == set(RECIPES)
    for name in RECIPE_NAMES:
        assert name in help_text("recipe")


def test_learning_rate_schedules_by_hand() -> None:
    from core.config import learning_rate

    flat = RunConfig(steps=5, lr=1e-3)
    assert [learning_rate(flat, s) for s in (1, 3, 5)] == [1e-3] * 3
    cos = RunConfig(steps=5, lr=1e-3, lr_schedule="cosine")
    # progress 0, 1/2, 1: cos -> 1, 0, -1: factor 1, 0.1 + 0.45 = 0.55, 0.1
    assert [round(learning_rate(cos, s), 9) for s in (1, 3, 5)] == [1e-3, 5.5e-4, 1e-4]
    with pytest.raises(ConfigError, match="lr_schedule must be one of"):
        RunConfig(lr_schedule="x")


@pytest.mark.parametrize(("bound", "inside", "outside", "rule"), [
    (Bound(2), [2, 3], [1, 0], "be >= 2"),
    (Bound(0.0, open_low=True), [1e-9, 5.0], [0.0, -1.0], "be > 0"),
    (Bound(0.0, 1.0), [0.0, 1.0], [-0.01, 1.01], "lie in [0, 1]"),
    (Bound(0.0, 1.0, open_low=True, open_high=True), [0.5], [0.0, 1.0], "lie in (0, 1)"),
])
def test_a_bound_allows_its_range_and_says_it(bound, inside, outside, rule):
    assert all(bound.allows(v) for v in inside) and not any(bound.allows(v) for v in outside)
    assert bound.rule() == rule


def test_widget_limits_follow_the_bounds_by_hand():
    assert widget_limits("group_size") == {"min_value": 2}
    assert widget_limits("steps") == {"min_value": 0}
    assert widget_limits("temperature") == {"min_value": 0.01}  # > 0, moved in by its nudge
    assert widget_limits("lr") == {"min_value": 1e-8}
    assert widget_limits("rlsf_threshold") == {"min_value": 0.0, "max_value": 1.0}
    assert widget_limits("clip_eps") == {"min_value": 0.01, "max_value": 0.99}
    assert isinstance(widget_limits("steps")["min_value"], int)  # the setting's own kind


BOUNDED = [name for name, f in FIELDS.items() if "bound" in f.metadata]


@pytest.mark.parametrize("name", BOUNDED)
def test_every_widget_limit_is_valid_and_the_next_value_out_is_not(name):
    """The one home of a range: what a widget offers at its ends passes validation, and
    validation refuses what lies just beyond (or exactly on an open end)."""
    bound, kind = FIELDS[name].metadata["bound"], type(FIELDS[name].default)
    for key, end, open_end, sign in (("min_value", bound.low, bound.open_low, -1),
                                     ("max_value", bound.high, bound.open_high, 1)):
        if end is None:
            continue
        RunConfig(**{name: widget_limits(name)[key]})  # no ConfigError
        beyond = end if open_end else end + sign * (1 if kind is int else 1e-9)
        with pytest.raises(ConfigError, match=name):
            RunConfig(**{name: kind(beyond)})


def test_every_number_setting_declares_its_range():
    numbers = {name for name, f in FIELDS.items() if str(f.type) in ("int", "float")}
    assert numbers and numbers == set(BOUNDED)


@pytest.mark.parametrize(("steps", "every", "expected"),
                         [(100, 20, 6), (4, 2, 3), (5, 2, 4), (10, 0, 2), (0, 5, 1)])
def test_n_evals_matches_the_training_schedule(steps, every, expected):
    assert RunConfig(steps=steps, eval_every=every).n_evals == expected
    assert RunConfig(steps=steps, eval_every=every, no_eval=True).n_evals == 0


@pytest.mark.parametrize(("values", "message"), [
    ({"judge": "oracle"}, "unknown judge 'oracle': choose one of exact, random-judge"),
    ({"judge": "llm-judge"}, "llm-judge needs judge_model"),
    ({"judge": "rlcr-strict"}, "the embedded model does not write"),
    ({"judge": "rlcr-strict", "model": "some/chat-model", "reasoning": False},
     "rlcr-strict needs reasoning on"),
])
def test_a_judge_that_cannot_work_is_refused_with_how_to_fix_it(values, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**values)


def test_every_judge_that_can_work_is_accepted():
    assert RunConfig(judge="random-judge", judge_fn_rate=0.1, judge_fp_rate=0.2).judge_fp_rate
    assert RunConfig(judge="shortcut-judge", judge_fn_rate=0.1).judge == "shortcut-judge"
    assert RunConfig(judge="llm-judge", judge_model="Qwen/Qwen2.5-0.5B-Instruct").judge_model
    assert RunConfig(judge="rlcr-strict", model="some/chat-model").judge == "rlcr-strict"
