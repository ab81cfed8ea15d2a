"""Inference engines for tests and benchmarks, offered to the enclave through ``nitro_llm.engines``."""
