"""Development tooling for nitro-llm: never deployed, never imported by the product.

Emulators (KMS, NSM and its dev CA), the local stack and demo, the echo engine, fault proxies,
benchmarks and the hostile soak. This package may import ``nitro_llm``; the reverse is forbidden and
checked (``tests/architecture``). The product CLI reaches these commands through entry points.
"""
