"""The runs-at-once benchmark's bookkeeping: ABBA order, the ratios, the spinners' lifetime."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.runs_at_once import Pair, Trial, _steps, abba, spinners


def _trial(how: str, wall: float, cpu: float) -> Trial:
    return Trial(2, how, wall, cpu, 0.0, 0.0, [], [], [])


def test_steps_reads_each_runs_step_time_share_of_the_cores_and_threads(tmp_path: Path
                                                                        ) -> None:
    def run(name: str, rows: list[dict]) -> None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows))

    # a: 3 steps on 2 then 1 threads; b: 1 step; an evaluation row carries no step time
    run("a", [{"step": 1, "train/seconds": 0.2, "train/cpu_seconds": 0.4, "train/threads": 2},
              {"step": 2, "train/seconds": 0.5, "train/cpu_seconds": 0.25, "train/threads": 1},
              {"step": 3, "train/seconds": 0.4, "train/cpu_seconds": 0.3, "train/threads": 1},
              {"step": 3, "eval/accuracy": 0.5}])
    run("b", [{"step": 1, "train/seconds": 0.1, "train/cpu_seconds": 0.05, "train/threads": 1}])
    logged = _steps(str(tmp_path))
    assert logged.step_s == [0.1, 0.4]  # medians, runs ordered by them: b, a
    assert logged.cores == [0.5, 0.75]  # b: 0.05 / 0.1; a: median of 2.0, 0.5, 0.75
    assert logged.threads == [[1], [1, 2]]
    assert abs(logged.cpu_s - 1.0) < 1e-12  # 0.4 + 0.25 + 0.3 + 0.05


def test_abba_alternates_which_side_runs_first() -> None:
    order = abba(6)
    assert [o[0] for o in order] == ["together", "sequence", "sequence", "together",
                                     "together", "sequence"]
    assert all(sorted(o) == ["sequence", "together"] for o in order)
    # over four pairs each side runs first twice, and the trial positions 0..7 read ABBA BAAB
    flat = [how for o in abba(4) for how in o]
    assert flat == ["together", "sequence", "sequence", "together",
                    "sequence", "together", "together", "sequence"]


def test_pair_ratio_is_together_over_sequence() -> None:
    pair = Pair(_trial("together", 12.0, 20.0), _trial("sequence", 16.0, 25.0), "together")
    assert pair.wall_ratio == 0.75  # 12 / 16: together faster
    assert pair.cpu_ratio == 0.8  # 20 / 25
    assert pair.together.cores_used == 20.0 / 12.0


def test_spinners_run_inside_the_block_and_are_killed_after() -> None:
    with spinners(2) as procs:
        assert len(procs) == 2
        assert all(p.poll() is None for p in procs)  # still running
    assert all(p.returncode is not None for p in procs)  # waited for: gone, not zombies
