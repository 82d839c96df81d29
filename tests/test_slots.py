"""Sharing the cores: a run's torch threads follow the runs training beside it."""

from __future__ import annotations

import pytest
import torch

from core.config import build_config
from core.engine import train as train_module
from core.runtime import slots
from core.runtime.runner import execute
from core.runtime.store import RunStore


@pytest.mark.parametrize(("cores", "training", "cap", "threads"), [
    (2, 1, 2, 2),  # alone: every core
    (2, 2, 2, 1),  # two at once on 2 cores: one each, never 2 + 2
    (2, 4, 4, 1),  # more runs than cores: never below one thread
    (16, 3, 2, 8),  # the cap bounds the count (a stray lock beyond it is not a run)
    (16, 3, 4, 5),  # 16 // 3, rounded down: never more threads than cores
    (4, 0, 2, 4),  # asked before its own slot shows: as if alone
])
def test_threads_share_the_cores_among_the_runs_training(monkeypatch, cores, training, cap,
                                                         threads):
    monkeypatch.setattr(slots, "cores", lambda: cores)
    assert slots.threads_for(training, cap) == threads


def test_training_now_counts_the_held_slots_and_frees_them_on_release(tmp_path):
    assert slots.training_now(tmp_path, 4) == 0  # no slot folder yet
    first = slots.try_slot(tmp_path, 4)
    second = slots.try_slot(tmp_path, 4)
    assert (first.index, second.index) == (0, 1)
    assert slots.training_now(tmp_path, 4) == 2
    assert slots.training_now(tmp_path, 1) == 1  # only the first `cap` slots count
    assert slots.try_slot(tmp_path, 2) is None  # counting took nothing
    first.release()
    assert slots.training_now(tmp_path, 4) == 1
    second.release()
    assert slots.training_now(tmp_path, 4) == 0


def test_execute_gives_train_a_share_that_follows_the_other_runs(tmp_path, monkeypatch):
    """Every way a run starts (CLI, app, experiment, resume) trains through execute."""
    monkeypatch.setattr(slots, "cores", lambda: 2)
    monkeypatch.setenv(slots.MAX_RUNS_ENV, "2")
    seen = []

    def fake_train(config, writer, should_stop=None, loaded=None, threads=None):
        seen.append(threads())  # alone: its own slot only
        other = slots.try_slot(tmp_path, 2)  # a second run starts training
        seen.append(threads())
        other.release()  # and ends
        seen.append(threads())
        return "finished"

    monkeypatch.setattr(train_module, "train", fake_train)
    store = RunStore(tmp_path)
    config = build_config("smoke")
    assert execute(config, store.create(config)) == "finished"
    assert seen == [2, 1, 2]
    seen.clear()
    pinned = build_config("smoke", threads=3)  # a count set in the config is kept
    assert execute(pinned, store.create(pinned)) == "finished"
    assert seen == [3, 3, 3]


def test_train_asks_for_its_thread_count_before_every_step(tmp_path):
    asked = []
    before = torch.get_num_threads()

    def threads() -> int:
        asked.append(torch.get_num_threads())  # what the previous answer set
        return 1 if len(asked) % 2 else 2

    config = build_config("smoke", steps=3, no_eval=True, checkpoint_every=0)
    try:
        assert train_module.train(config, RunStore(tmp_path).create(config),
                                  threads=threads) == "finished"
    finally:
        torch.set_num_threads(before)
    assert len(asked) == 1 + config.steps  # once at the start, then before each step
    assert asked[1:] == [1, 2, 1]


def test_the_openmp_spin_count_is_set_unless_the_environment_sets_the_wait(monkeypatch):
    for name in slots.OMP_WAIT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert slots.omp_settings() == {"GOMP_SPINCOUNT": "10000"}
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # a person's own choice wins
    assert slots.omp_settings() == {}
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setenv("GOMP_SPINCOUNT", "0")
    assert slots.omp_settings() == {}
