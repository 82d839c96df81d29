"""The Ray backend on a real two-node Ray cluster on this machine (ray.cluster_utils.Cluster:
a head and a worker node, 1 CPU each, each its own raylet and object store): a 2 x 2 sweep
lands in the launching store with the local backend's metrics, a run on a node that is
removed mid-run finishes on another with every step once, and a remote stop is honoured.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

from core.config import build_config  # noqa: E402
from core.experiments.sweep import plan_sweep, run_sweep  # noqa: E402
from core.runtime.ray_backend import RayBackend  # noqa: E402
from core.runtime.runner import stop  # noqa: E402
from core.runtime.store import RunStore, read_jsonl  # noqa: E402
from tests.test_checkpoint import without_timing  # noqa: E402

NODE = {"num_cpus": 1, "include_dashboard": False, "object_store_memory": 80 * 2**20}
TINY = {"eval_prompts": 8, "eval_samples": 2, "keep_samples": 4, "threads": 1}


@pytest.fixture(scope="module")
def cluster() -> Any:
    c = cluster_utils.Cluster(initialize_head=True, head_node_args=NODE)
    c.add_node(**NODE)
    c.wait_for_nodes()
    try:
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()


@pytest.fixture(scope="module")
def backend(cluster: Any) -> Any:
    b = RayBackend(cluster.address)  # ships this checkout to the nodes as its working_dir
    try:
        yield b
    finally:
        b.close()


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def _ended(store: RunStore, run_id: str) -> bool:
    return store.load(run_id, metrics=False).status not in ("queued", "running")


def _steps(path: Path) -> tuple[Counter, Counter]:
    rows = read_jsonl(path / "metrics.jsonl")
    return (Counter(r["step"] for r in rows if "train/loss" in r),
            Counter(r["step"] for r in rows if "eval/accuracy" in r))


def test_a_2x2_sweep_on_two_nodes_matches_the_local_backend(
        tmp_path: Path, cluster: Any, backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import core.experiments.orchestrator as orchestrator

    monkeypatch.setattr(orchestrator, "POLL_SECONDS", 0.3)
    plan = plan_sweep({"lr": [1e-3, 3e-3], "recipe": ["binary", "rlcr"]}, [0], "smoke",
                      {**TINY, "steps": 2, "eval_every": 1})
    # The sweep joins the fixture's connection (RayBackend leaves a Ray it did not start).
    remote = run_sweep(plan, "ray", ray_address=cluster.address, runs_dir=tmp_path / "ray",
                       out=tmp_path / "ray-out", tag="t")
    local = run_sweep(plan, "local", runs_dir=tmp_path / "local", out=tmp_path / "local-out",
                      tag="t")
    store = RunStore(tmp_path / "ray")
    for r_ray, r_local in zip(remote.summary["runs"], local.summary["runs"], strict=True):
        assert r_ray["status"] == r_local["status"] == "finished", r_ray
        assert r_ray["params"] == r_local["params"]
        record = store.load(r_ray["id"])
        assert record.tags == ["t"] and record.backend == "ray"
        train, evals = _steps(store.path(r_ray["id"]))
        assert train == Counter({1: 1, 2: 1}) and evals == Counter({0: 1, 1: 1, 2: 1})
        assert store.samples(r_ray["id"])  # samples came back too
        # Same seeds, same thread count, same machine: bit-identical metrics.
        assert r_ray["end"] == r_local["end"]
        local_train = RunStore(tmp_path / "local").load(r_local["id"]).train
        assert without_timing(record.train) == without_timing(local_train)
    assert (tmp_path / "ray-out" / "report.html").exists()


def test_a_stopped_remote_run_is_stopped_within_seconds(tmp_path: Path, backend: Any) -> None:
    store = RunStore(tmp_path)
    config = build_config("smoke", **TINY, steps=400, checkpoint_every=0, eval_every=0)
    run_id = backend.launch(config, tmp_path)
    _wait(lambda: store.load(run_id, metrics=False).step >= 1, 120, "the run's first step")
    assert stop(run_id, tmp_path)
    asked = time.monotonic()
    _wait(lambda: _ended(store, run_id), 30, "the stop")
    took = time.monotonic() - asked
    print(f"remote run stopped {took:.1f} s after the stop was asked")
    assert store.load(run_id, metrics=False).status == "stopped"
    assert took < 15
    assert backend.wait_recorded(30)


def test_a_run_on_a_removed_node_finishes_elsewhere_with_every_step_once(
        tmp_path: Path, cluster: Any, backend: Any) -> None:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    doomed = cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    # soft: on the doomed node while it lives, anywhere once it is gone
    backend.run_options = {"scheduling_strategy": NodeAffinitySchedulingStrategy(
        doomed.node_id, soft=True)}
    try:
        store = RunStore(tmp_path)
        # Long enough that the node goes while the run is mid-way: at 8 steps a fast, idle
        # machine had finished the run before the node could be removed.
        config = build_config("smoke", **TINY, steps=40, eval_every=8, checkpoint_every=2)
        run_id = backend.launch(config, tmp_path)
        def past_a_checkpoint() -> bool:  # rows after it exist: the resume must drop them
            record = store.load(run_id, metrics=False)
            return bool(record.checkpoint_step) and record.step > record.checkpoint_step

        _wait(past_a_checkpoint, 180, "a step after a checkpoint")
        first = store.load(run_id, metrics=False)
        cluster.remove_node(doomed, allow_graceful=False)
        assert first.step < config.steps, "the run ended before its node could be removed"
        _wait(lambda: _ended(store, run_id), 240, "the run to finish on another node")
    finally:
        backend.run_options = {}
    record = store.load(run_id)
    status = json.loads((store.path(run_id) / "status.json").read_text())
    train, evals = _steps(store.path(run_id))
    print(f"removed node {doomed.node_id[:8]} at step {first.step} (checkpoint "
          f"{first.checkpoint_step}); ended {record.status} on node {status['node'][:8]}, "
          f"attempt {status['attempt']}; train rows per step {dict(train)}; eval rows per "
          f"step {dict(evals)}")
    assert record.status == "finished", record.error
    assert status["attempt"] == 2 and status["node"] != doomed.node_id
    assert train == Counter(range(1, 41)) and evals == Counter(range(0, 41, 8))
    assert "continuing from the checkpoint at step" in (store.path(run_id) / "log.txt").read_text()


def test_a_named_experiment_runs_on_the_ray_backend_too(tmp_path: Path, cluster: Any,
                                                        backend: Any) -> None:
    from core.experiments.orchestrator import run_experiment

    result = run_experiment("classic", recipes=["binary"], seeds=[0], out=tmp_path / "out",
                            runs_dir=tmp_path / "runs", backend="ray",
                            ray_address=cluster.address,
                            overrides={**TINY, "steps": 1, "eval_every": 0,
                                       "prompts_per_step": 2, "group_size": 2})
    (run,) = result.summary["runs"]
    assert run["status"] == "finished"
    assert RunStore(tmp_path / "runs").load(run["id"]).backend == "ray"
    assert (tmp_path / "out" / "report.html").exists()
