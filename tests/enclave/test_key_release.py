"""Key release details from issue 12: Decrypt names the header's key, an expired token asks the
gateway for fresh credentials instead of being a denial, and KMS calls stay within the enclave's
connection bound (replaced clients are closed, so their idle connections free vsock-proxy workers)."""

from __future__ import annotations

import threading

import pytest

from nitro_llm.enclave.errors import KmsSignatureRejectedError, KmsUnavailableError
from nitro_llm.enclave.key_release import KeyRelease, translate_kms_error
from nitro_llm.enclave.kms_retry import RetryPolicy
from nitro_llm.protocol.errors import EnclaveReportedError
from nitro_llm.protocol.frame_kinds import Credentials


def test_decrypt_names_the_key_the_header_names(enclave, conversation):
    enclave.give_credentials()
    header, _ = conversation.seal([{"role": "user", "content": "hi"}])
    assert conversation.ask(enclave, "hi") == "hi"
    assert enclave.kms.calls[0]["KeyId"] == header.key_id == "alias/test"


def test_expired_token_asks_for_fresh_credentials_once(enclave, conversation):
    enclave.give_credentials()
    enclave.kms.deny = "ExpiredTokenException"
    with pytest.raises(EnclaveReportedError) as err:
        conversation.ask(enclave, "hi")
    assert err.value.code == "credentials_expired" and err.value.retryable
    assert len(enclave.kms.calls) == 1  # not retried inside the enclave: the same token cannot work


def test_an_expired_token_someone_else_sent_is_theirs_to_renew():
    """The seed route signs with the client's own credentials: the gateway cannot renew those, so it
    is the client's credentials problem (not retryable here), never the key policy's."""

    expired = Exception("expired")
    expired.response = {"Error": {"Code": "ExpiredTokenException"}}  # type: ignore[attr-defined]
    theirs = translate_kms_error(expired, "r")
    assert isinstance(theirs, KmsSignatureRejectedError) and not theirs.retryable
    assert translate_kms_error(expired, "r", own_credentials=True).code == "credentials_expired"


class ClosableClient:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_a_replaced_client_is_closed():
    made: list[ClosableClient] = []

    def factory(_creds):
        made.append(ClosableClient())
        return made[-1]

    release = KeyRelease(nsm=None, kms_client_factory=factory, open_envelope=lambda b, k: b)  # type: ignore[arg-type]
    release.set_credentials(Credentials("AKIA1", "s"))
    release._kms()
    release.set_credentials(Credentials("AKIA1", "s"))  # the same: kept
    assert not made[0].closed
    release.set_credentials(Credentials("AKIA2", "s"))
    assert made[0].closed


def test_calls_beyond_the_connection_bound_wait_for_a_slot_within_the_deadline():
    release = KeyRelease(
        nsm=None,  # type: ignore[arg-type]
        kms_client_factory=lambda _c: None,
        open_envelope=lambda b, k: b,
        max_connections=1,
        retry=RetryPolicy(attempts=1, deadline=2.0, max_read_timeout=1.0, min_read_timeout=0.5),
    )
    inside, leave = threading.Event(), threading.Event()

    def hold() -> str:
        inside.set()
        assert leave.wait(30)
        return "first"

    holder = threading.Thread(target=lambda: release.in_slot(hold, "r1"))
    holder.start()
    assert inside.wait(30)
    with pytest.raises(KmsUnavailableError, match="connections to KMS stayed busy"):
        release.in_slot(lambda: "second", "r2")  # no attempt budget set: waits max_read_timeout at most
    leave.set()
    holder.join(30)
    assert release.in_slot(lambda: "third", "r3") == "third"  # the slot is free again
