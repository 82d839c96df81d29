"""The Ray backend on a real two-node Ray cluster on this machine (ray.cluster_utils.Cluster:
a head and a worker node, 1 CPU each, each its own raylet and object store): a 2 x 2 sweep
lands in the launching store with the local backend's metrics, a run on a node that is
removed mid-run finishes on another with every step once, and a remote stop is honoured.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

from core.config import build_config  # noqa: E402
from core.experiments.sweep import plan_sweep, run_sweep  # noqa: E402
from core.runs.ray_backend import RayBackend  # noqa: E402
from core.runs.runner import stop  # noqa: E402
from core.runs.store import RunStore, read_jsonl  # noqa: E402

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
        assert [{k: v for k, v in t.items() if k != "seconds"} for t in record.train] == \
            [{k: v for k, v in t.items() if k != "seconds"} for t in local_train]
    assert (tmp_path / "ray-out" / "report.html").exists()


def test_a_stopped_remote_run_is_stopped_within_seconds(tmp_path: Path, backend: Any) -> None:
    store = RunStore(tmp_path)
    config = build_config("smoke", **TINY, steps=400, checkpoint_every=0, eval_every=0)
    run_id = backend.launch(config, tmp_path)
    _wait(lambda: store.load(run_id, metrics=False).step >= 1, 120, "the run's first step")
    assert stop(run_id, tmp_path)
    asked = time.monotonic()
    _wait(lambda: _ended(store, run_id), 30, "the stop")
    assert store.load(run_id, metrics=False).status == "stopped"
    assert time.monotonic() - asked < 15
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
        config = build_config("smoke", **TINY, steps=8, eval_every=2, checkpoint_every=2)
        run_id = backend.launch(config, tmp_path)
        _wait(lambda: (store.load(run_id, metrics=False).checkpoint_step or 0) >= 2
              and store.load(run_id, metrics=False).step >= 3, 180, "a checkpoint and a step")
        first = store.load(run_id, metrics=False)
        cluster.remove_node(doomed, allow_graceful=False)
        _wait(lambda: _ended(store, run_id), 240, "the run to finish on another node")
    finally:
        backend.run_options = {}
    record = store.load(run_id)
    status = (store.path(run_id) / "status.json").read_text()
    print(f"removed node {doomed.node_id[:8]} at step {first.step} (checkpoint "
          f"{first.checkpoint_step}); ended {record.status}; {status}")
    assert record.status == "finished", record.error
    assert '"attempt": 2' in status and doomed.node_id not in status
    train, evals = _steps(store.path(run_id))
    assert train == Counter(range(1, 9)) and evals == Counter({0: 1, 2: 1, 4: 1, 6: 1, 8: 1})
    assert "continuing from the checkpoint at step" in (store.path(run_id) / "log.txt").read_text()
