"""nitro-llm: confidential LLM inference on AWS Nitro Enclaves.

The package layout mirrors the trust boundaries: ``client`` (data owner), ``gateway`` (untrusted
parent host, never sees plaintext), ``enclave`` (the only place a question is decrypted), and the
libraries they share: ``attestation``, ``kms``, ``protocol``, ``inference``, ``transport``.
"""

__version__ = "0.1.0"
