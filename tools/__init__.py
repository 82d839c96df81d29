"""Build tools, not runtime code: the embedded model's builder and random chat models for tests."""
