"""Inference engines for tests and benchmarks, offered to the enclave through the ``nitro_llm.engines`` entry points."""
