"""The user's local OpenAI-compatible proxy and web chat: any OpenAI client becomes confidential.

Runs on the data owner's machine (it sees plaintext, like ``nitro-llm chat``) and talks to the
enclave through a :class:`~nitro_llm.proxy.backend_seam.ConfidentialBackend` ("kms" or "attested"), so
the HTTP surface never knows which protocol carries the question.
"""
