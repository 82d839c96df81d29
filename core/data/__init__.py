"""Tasks, task files, prompt formats and grading: plain Python and numpy, no torch."""
