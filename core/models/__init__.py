"""Finding, checking and sizing models before any run starts: no torch."""
