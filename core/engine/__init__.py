"""The training engine: the only part of the lab that imports torch at module level."""
