"""Run folders, the queue, starting/stopping/continuing runs, workshop rules: no torch."""
