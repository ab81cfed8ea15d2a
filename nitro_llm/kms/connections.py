"""How many connections to KMS the enclave may hold at once: one number for every hop that carries them.

The enclave's KMS calls travel: boto3 in the enclave -> the in-enclave forwarder -> vsock-proxy on the
parent -> KMS. vsock-proxy serves each connection with one of its ``--num_workers`` for the whole life
of the connection, and botocore keeps a connection open in its pool after a call (keep-alive). A
connection opened while every worker is held waits, TLS handshake and all, until one is freed; for
pooled keep-alive connections that is when KMS closes an idle one, long after the request gave up.
So the enclave must never have more connections open than vsock-proxy has workers. We bound the
connections at their source and size every hop from this one constant:

- the enclave makes at most ``MAX_KMS_CONNECTIONS`` KMS calls at once (``KeyRelease``'s slots).
  botocore's ``max_pool_connections`` alone does not bound connections: its urllib3 pool does not
  block, it opens extra connections past its size and only discards them after use;
- its pool keeps that many (``make_kms_client``), so a burst reuses warm connections, and a client
  that is replaced (new credentials) is closed, so its idle connections free their workers at once;
- vsock-proxy gets at least that many workers (deploy config ``kms_proxy.workers``, refused below
  it), and the relays that stand in for vsock-proxy (local mode) and that forward inside the enclave
  are bounded to it, so local mode stalls exactly where production would.

Why raise the workers to the pool rather than cap the pool to the old 4 workers: a vsock-proxy worker
is an idle thread on the parent, nearly free, while 4 connections would serialise a burst of new
conversations into rounds of 4 attested Decrypts (each a TLS round trip plus KMS's verification of the
attestation document). 10 is botocore's default pool size, which is what every KMS client here
already assumed.
"""

from __future__ import annotations

MAX_KMS_CONNECTIONS = 10
