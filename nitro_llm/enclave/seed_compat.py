"""The seed's wire format, for users migrating from the AWS sample. Off unless enabled, and weaker.

The seed's client sends ``{access_key_id, secret_access_key, token, region, ciphertext}`` where
``ciphertext`` is a KMS ``Encrypt`` blob of the question (so at most 4 KB), and expects
``{"EncryptedData": <KMS Encrypt blob of the answer>}``. What stays true here: the enclave's own
Decrypt asks for the question with ``Recipient``, so on this path it never crosses the parent in the
clear. What is lost, and why this mode is documented as weaker: the client's AWS credentials travel
through the parent, which can use them for anything they allow (calling Decrypt on the question
itself, for one); there is no request id or timestamp, so a captured request can be replayed; and the
question and answer are capped at KMS Encrypt's 4 KB.
Enabling it is part of the enclave's measured configuration, so it changes the PCRs.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from nitro_llm.enclave.errors import EnclaveError, KmsSignatureRejectedError
from nitro_llm.enclave.key_release import KeyRelease, close_client, translate_kms_error
from nitro_llm.enclave.kms_retry import RetryPolicy, with_retries
from nitro_llm.errors import NitroLLMError
from nitro_llm.protocol.frame_kinds import Credentials
from nitro_llm.protocol.messages import Message

MAX_BODY_BYTES = 64 * 1024
KMS_ENCRYPT_LIMIT = 4096
"""KMS Encrypt takes at most 4096 bytes of plaintext: the seed's protocol inherits that cap."""
SEED_MAX_TOKENS = 256
_FIELDS = frozenset({"access_key_id", "secret_access_key", "token", "region", "ciphertext"})


class SeedRequestError(EnclaveError, code="bad_seed_request"):
    """send the seed JSON: access_key_id, secret_access_key, token, region, base64 ciphertext"""


class SeedAnswerTooLargeError(EnclaveError, code="seed_answer_too_large"):
    """the seed's protocol caps answers at 4 KB (KMS Encrypt); use the kms or attested protocol"""


class SeedDisabledError(EnclaveError, code="seed_route_disabled"):
    """start the enclave with --seed-compat (this changes its PCRs) to accept the seed's format"""


SEED_SIGNATURE_HINT = (
    "KMS checks the seed request's own credentials: send access_key_id, secret_access_key and token as one "
    "current set (the credentials that encrypted the question); a wrong or altered secret, an unknown key "
    "id or an expired token fails KMS's signature check before any key policy is read"
)
"""Here the enclave signs with the client's credentials, not the gateway's: the hint says so."""


@dataclass(frozen=True)
class SeedRequest:
    credentials: Credentials
    region: str
    ciphertext: bytes = field(repr=False)


def parse_seed_request(body: bytes) -> SeedRequest:
    """Strictly the seed's JSON; every deviation is a typed error that names the field, not its value."""
    if len(body) > MAX_BODY_BYTES:
        raise SeedRequestError(f"the seed request is larger than {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise SeedRequestError("the seed request is not JSON") from None
    if not isinstance(data, dict) or set(data) != _FIELDS:
        raise SeedRequestError(f"the seed request must have exactly the fields {', '.join(sorted(_FIELDS))}")
    for name in _FIELDS:
        value = data[name]
        if not isinstance(value, str) or len(value) > 8192 or (name != "token" and not value):
            raise SeedRequestError(f"field {name!r} must be a string (non-empty, except 'token')")
    try:
        ciphertext = base64.b64decode(data["ciphertext"], validate=True)
    except (binascii.Error, ValueError):
        raise SeedRequestError("field 'ciphertext' is not base64") from None
    return SeedRequest(
        credentials=Credentials(
            access_key_id=data["access_key_id"],
            secret_access_key=data["secret_access_key"],
            session_token=data["token"] or None,  # long-term user keys have no session token
        ),
        region=data["region"],
        ciphertext=ciphertext,
    )


Complete = Callable[[Sequence[Message], int, str], str]
"""Generates a whole answer: (messages, max_tokens, request_id) -> text."""


class SeedHandler:
    def __init__(
        self,
        *,
        release: KeyRelease,
        kms_client_for: Callable[[Credentials], Any],
        region: str,
    ) -> None:
        self._release = release
        self._kms_client_for = kms_client_for
        self._region = region

    def handle(self, body: bytes, complete: Complete) -> dict[str, Any]:
        """One seed request -> the ``seed_result`` frame. The request id is ours, for logs only."""
        request_id = secrets.token_hex(16)
        request = parse_seed_request(body)
        if request.region != self._region:
            raise SeedRequestError(
                f"this enclave uses KMS in {self._region}, not the request's region",
                hint="send the region of the key the question was encrypted under",
            )
        # A client per KMS call, closed after it: no connection to KMS stays open (holding one of
        # vsock-proxy's workers, nitro_llm/kms/connections.py) while the answer is generated.
        kms = self._kms_client_for(request.credentials)
        try:
            with _seed_credentials_hint():
                released = self._release.release(request.ciphertext, None, request_id=request_id, kms=kms)
        finally:
            close_client(kms)
        try:
            question = released.plaintext.decode("utf-8")
        except UnicodeDecodeError:
            raise SeedRequestError("the decrypted question is not UTF-8 text") from None
        answer = complete([Message(role="user", content=question)], SEED_MAX_TOKENS, request_id)
        data = answer.encode("utf-8")
        if len(data) > KMS_ENCRYPT_LIMIT:
            raise SeedAnswerTooLargeError(f"the answer to request {request_id} exceeds 4096 bytes")

        def encrypt() -> Any:
            kms = self._kms_client_for(request.credentials)
            try:
                answer = self._release.in_slot(
                    lambda: kms.encrypt(KeyId=released.key_id, Plaintext=data), request_id
                )
                return answer["CiphertextBlob"]
            except NitroLLMError:
                raise
            except Exception as exc:
                raise translate_kms_error(exc, request_id) from None
            finally:
                close_client(kms)

        # the client makes one attempt per call (single_attempt): the policy is the only retry layer
        with _seed_credentials_hint():
            blob = with_retries(encrypt, RetryPolicy(), request_id=request_id)
        return {"t": "seed_result", "encrypted_data": base64.b64encode(blob).decode("ascii")}


@contextmanager
def _seed_credentials_hint() -> Iterator[None]:
    """A signature KMS rejected is the seed client's (its credentials sign the call): say so."""
    try:
        yield
    except KmsSignatureRejectedError as exc:
        raise KmsSignatureRejectedError(exc.message, hint=SEED_SIGNATURE_HINT) from None
