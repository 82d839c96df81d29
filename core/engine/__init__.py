"""The training engine: the only part of the lab that imports torch at module level."""

import os

from core.runtime.slots import omp_settings

# Read once, when torch loads its OpenMP runtime, so it is set here, before any engine
# module imports torch (the setting and its measurements: slots.OMP_SPIN_COUNT).
os.environ.update(omp_settings())
