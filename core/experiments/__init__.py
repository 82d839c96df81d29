"""Named experiments: running many runs, aggregating them, the HTML report: no torch."""
