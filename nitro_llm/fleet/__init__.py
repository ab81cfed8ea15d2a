"""The fleet key: one HPKE key pair shared by every enclave with the pinned measurements.

Behind a load balancer, ``GET /v1/attestation`` and ``POST /v1/infer`` land on different replicas,
so a client that sealed to one replica's own key would be refused by the next. Every replica
therefore holds the same key pair, derived from a 32-byte secret that KMS generated
(``GenerateDataKeyWithoutPlaintext``) and releases only to an attested enclave with the pinned PCRs
(``Decrypt`` with ``Recipient``). The secret never exists in plaintext outside KMS and the enclaves:
the operator, the parent hosts and this file hold only its KMS ciphertext.

This package is what every party may read: the fleet key file and its frame (no secret in either),
the errors, the KMS key policy and the operator's create/rotate/retire. Deriving the key pair from
the released secret is the enclave's alone (``nitro_llm.enclave.fleet_key``).
"""
