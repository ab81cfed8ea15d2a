"""Micro-benchmarks that return numbers (for tests, docs and `nitro-llm` commands), not prints."""
