"""The training engine: the only part of the lab that imports torch at module level."""

import os

# Read once, when torch loads its OpenMP runtime (libgomp), so it is set here, before any
# engine module imports torch. By default a thread that runs out of work spins for a while
# before sleeping; when other programs hold the cores, a run's second thread then spins on a
# core its partner needs, and every parallel op waits on a descheduled thread. On this
# project's shared 2-core machine (load average 7-8) a 2-thread step took 10.6 s spinning
# against 0.43 s with waiting threads asleep (benchmarks/RESULTS.md, "Performance,
# 2026-11-29 (evening)"). A run with one thread has no second thread to wait for. Set
# OMP_WAIT_POLICY=ACTIVE in the environment to keep the spinning.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
