"""The runs-at-once benchmark's bookkeeping: ABBA order, the ratios, the spinners' lifetime."""

from __future__ import annotations

from benchmarks.runs_at_once import Pair, Trial, abba, spinners


def _trial(how: str, wall: float, cpu: float) -> Trial:
    return Trial(2, how, wall, cpu, 0.0, 0.0, [])


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
