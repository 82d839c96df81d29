"""The training engine: the only part of the lab that imports torch at module level."""

import os

from core.runtime.slots import omp_wait_policy

# Read once, when torch loads its OpenMP runtime, so it is decided here, before any engine
# module imports torch (the rule and its measurements: slots.omp_wait_policy).
if (_policy := omp_wait_policy()) is not None:
    os.environ["OMP_WAIT_POLICY"] = _policy
