"""The training engine: the only part of the lab that imports torch at module level."""

import os

from core.runtime.slots import cores


def _omp_wait_policy() -> None:
    """Idle OpenMP threads sleep when other programs already hold the cores, else spin.

    Read once, when torch loads its OpenMP runtime (libgomp), so it is decided here, before
    any engine module imports torch. A thread that runs out of work spins for a while
    before sleeping. With the cores free that is fastest (quick preset, 2 threads, load
    average 1.6 on 2 cores: 17-19 s spinning, 30-33 s sleeping); with other programs on
    the cores a run's second thread spins on a core its partner needs and every parallel op
    waits on a descheduled thread (load 7-8: a step took 10.6 s spinning, 0.43 s sleeping;
    benchmarks/RESULTS.md, "Performance, 2026-11-29 (evening)"). So: sleep when the load
    average already exceeds the cores. A one-thread run has no second thread to wait for;
    OMP_WAIT_POLICY or GOMP_SPINCOUNT in the environment win.
    """
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return
    try:
        busy = os.getloadavg()[0] > cores()
    except (OSError, AttributeError):  # no load average on this platform
        return
    if busy:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


_omp_wait_policy()
