"""One KMS retry layer with a total deadline: botocore makes one attempt per call, the enclave's
RetryPolicy decides how many and how long each may wait. Fake clocks throughout, except one real
botocore client against a silent socket (under a second of real waiting, no sleeping)."""

from __future__ import annotations

import random
import socket
import threading
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from nitro_llm.enclave.errors import KeyReleaseDeniedError, KmsSignatureRejectedError, KmsUnavailableError
from nitro_llm.enclave.key_release import KeyRelease, translate_kms_error
from nitro_llm.enclave.kms_retry import RetryPolicy, with_retries
from nitro_llm.enclave.runtime import KmsSettings, open_key_release
from nitro_llm.kms import attempt_budget
from nitro_llm.kms.client import make_kms_client
from nitro_llm.protocol.frame_kinds import Credentials

CREDS = {"access_key_id": "AKIAX", "secret_access_key": "s"}


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeKms:
    """Fails ``failures`` times, then answers. A failure is fast (connection refused) or, with
    ``hang``, waits out the attempt's connect and read timeouts on the fake clock (a silent relay)."""

    def __init__(self, fake_time: FakeTime, *, failures: int = 0, hang: bool = False, code: str = "") -> None:
        self.time, self.failures, self.hang, self.code = fake_time, failures, hang, code
        self.calls = 0
        self.attempts: list[tuple[float, float]] = []  # (start, end) of every attempt

    def decrypt(self, **_kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        start = self.time.now
        read_timeout = attempt_budget.current_read_timeout()
        assert read_timeout is not None and read_timeout > 0  # every attempt runs under the budget
        try:
            if self.code:
                raise ClientError({"Error": {"Code": self.code, "Message": "no"}}, "Decrypt")
            if self.calls <= self.failures:
                if self.hang:
                    self.time.now += RetryPolicy().connect_timeout + read_timeout
                    raise ReadTimeoutError(endpoint_url="https://kms.local")
                raise EndpointConnectionError(endpoint_url="https://kms.local")
            return {"CiphertextForRecipient": b"blob", "KeyId": "k"}
        finally:
            self.attempts.append((start, self.time.now))


def run(kms: FakeKms, fake_time: FakeTime, policy: RetryPolicy, seed: int = 1) -> dict[str, Any]:
    """What KeyRelease.release does around one Decrypt, with the fake clock injected."""

    def attempt() -> dict[str, Any]:
        try:
            return kms.decrypt(CiphertextBlob=b"edk")
        except Exception as exc:
            raise translate_kms_error(exc, "r") from None

    return with_retries(
        attempt, policy, request_id="r", sleep=fake_time.sleep, clock=fake_time.clock, rng=random.Random(seed)
    )


@pytest.mark.parametrize("failures", range(7))
def test_attempts_are_exactly_what_the_policy_says(failures):
    fake_time = FakeTime()
    kms = FakeKms(fake_time, failures=failures)
    policy = RetryPolicy()  # 4 attempts
    if failures < policy.attempts:
        assert run(kms, fake_time, policy)["KeyId"] == "k"
        assert kms.calls == failures + 1
    else:
        with pytest.raises(KmsUnavailableError) as info:
            run(kms, fake_time, policy)
        assert kms.calls == policy.attempts == 4
        assert info.value.code == "kms_unavailable" and info.value.retryable
        assert "gave up after 4 attempts" in info.value.message
    assert len(fake_time.sleeps) == kms.calls - 1
    assert all(0 <= s <= min(2.0, 0.25 * 2**i) for i, s in enumerate(fake_time.sleeps))  # jittered backoff


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize(
    "policy",
    [
        RetryPolicy(),
        RetryPolicy(deadline=3.0),
        RetryPolicy(attempts=10, deadline=20.0, max_delay=5.0),
        RetryPolicy(deadline=8.0, max_read_timeout=8.0),
    ],
    ids=["default", "short", "long", "uncapped-read"],
)
def test_a_silent_kms_never_holds_the_request_past_the_deadline(policy, seed):
    fake_time = FakeTime()
    kms = FakeKms(fake_time, failures=100, hang=True)
    with pytest.raises(KmsUnavailableError):
        run(kms, fake_time, policy, seed)
    assert fake_time.now <= policy.deadline + 1e-9  # the total, timeouts and pauses included
    assert all(end <= policy.deadline + 1e-9 for _start, end in kms.attempts)
    assert 1 <= kms.calls <= policy.attempts


def test_default_policy_numbers_for_a_silent_kms():
    """Deadline 8 s: attempt 1 waits 1 s connect + 4 s read, attempt 2 what is left; then no room."""
    fake_time = FakeTime()
    kms = FakeKms(fake_time, failures=100, hang=True)
    with pytest.raises(KmsUnavailableError):
        run(kms, fake_time, RetryPolicy())
    assert kms.calls == 2
    assert kms.attempts[0] == (0.0, 5.0)
    assert kms.attempts[1][1] == pytest.approx(8.0)


@pytest.mark.parametrize(
    "code", ["AccessDeniedException", "InvalidCiphertextException", "ValidationException"]
)
def test_a_final_error_is_not_retried(code):
    fake_time = FakeTime()
    kms = FakeKms(fake_time, code=code)
    with pytest.raises(KeyReleaseDeniedError) as info:
        run(kms, fake_time, RetryPolicy(attempts=5))
    assert kms.calls == 1 and fake_time.sleeps == [] and not info.value.retryable
    assert info.value.code == "kms_denied"


@pytest.mark.parametrize(
    "code",
    [
        "InvalidSignatureException",
        "UnrecognizedClientException",
        "IncompleteSignatureException",
        "MissingAuthenticationTokenException",
        "ExpiredTokenException",
    ],
)
def test_a_rejected_signature_is_final_and_about_credentials_not_pcrs(code):
    """KMS refused who signed, before reading any key policy: the PCR hint would mislead."""
    fake_time = FakeTime()
    kms = FakeKms(fake_time, code=code)
    with pytest.raises(KmsSignatureRejectedError) as info:
        run(kms, fake_time, RetryPolicy(attempts=5))
    assert kms.calls == 1 and fake_time.sleeps == [] and not info.value.retryable
    assert info.value.code == "kms_signature_rejected" and code in info.value.message
    assert "credentials" in info.value.hint and "PCR" not in info.value.hint


def test_throttling_is_retried_as_unavailable():
    fake_time = FakeTime()
    kms = FakeKms(fake_time, code="ThrottlingException")
    with pytest.raises(KmsUnavailableError):
        run(kms, fake_time, RetryPolicy())
    assert kms.calls == 4


def test_policy_refuses_a_deadline_without_room_for_one_attempt():
    with pytest.raises(ValueError, match="deadline"):
        RetryPolicy(deadline=1.2)  # 1 s connect + 0.5 s minimum read do not fit
    with pytest.raises(ValueError):
        RetryPolicy(min_read_timeout=0)


class _Nsm:
    def attest(self, user_data=None, nonce=None, public_key=None) -> bytes:
        return b"document"


def test_key_release_counts_attempts_through_the_policy():
    """The real KeyRelease path, zero pauses (no sleeping): 4 calls for an outage, 1 for a refusal."""
    outage = FakeKms(FakeTime(), failures=100)
    release = KeyRelease(
        nsm=_Nsm(),
        kms_client_factory=lambda _creds: outage,
        open_envelope=lambda blob, key: b"k" * 32,
        retry=RetryPolicy(base_delay=0, max_delay=0),
    )
    release.set_credentials(Credentials("AKIAX", "s"))
    with pytest.raises(KmsUnavailableError):
        release.decrypt(b"edk", {}, request_id="r")
    assert outage.calls == 4
    denied = FakeKms(FakeTime(), code="AccessDeniedException")
    with pytest.raises(KeyReleaseDeniedError):
        release.release(b"edk", None, request_id="r", kms=denied)
    assert denied.calls == 1


def test_the_enclave_builds_single_attempt_clients(monkeypatch):
    seen: list[dict[str, Any]] = []

    def fake_make(endpoint, credentials, region, **kwargs):
        seen.append(kwargs)
        return FakeKms(FakeTime(), code="AccessDeniedException")

    monkeypatch.setattr("nitro_llm.kms.client.make_kms_client", fake_make)
    release = open_key_release(KmsSettings(endpoint="http://127.0.0.1:9", region="us-east-1"), _Nsm())
    release.set_credentials(Credentials("AKIAX", "s"))
    with pytest.raises(KeyReleaseDeniedError):
        release.decrypt(b"edk", {}, request_id="r")
    assert seen == [{"single_attempt": True}]


def test_single_attempt_client_config():
    client = make_kms_client("http://127.0.0.1:9", CREDS, "us-east-1", single_attempt=True)
    config = client.meta.config
    assert config.retries == {"total_max_attempts": 1, "mode": "standard"}  # botocore never retries
    assert config.connect_timeout == attempt_budget.ATTEMPT_CONNECT_TIMEOUT_S == RetryPolicy().connect_timeout


def test_real_botocore_against_a_silent_kms_one_layer_within_the_deadline():
    """A listener that accepts and never answers. Each botocore call is one connection (no hidden
    retries) and waits exactly its budgeted read timeout; the whole call ends inside the deadline."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    client = make_kms_client(
        f"http://127.0.0.1:{listener.getsockname()[1]}", CREDS, "us-east-1", single_attempt=True
    )
    calls = 0

    def attempt() -> Any:
        nonlocal calls
        calls += 1
        try:
            return client.decrypt(CiphertextBlob=b"edk")
        except Exception as exc:
            raise translate_kms_error(exc, "r") from None

    # 2 s deadline, 1 s connect reserved, 0.3 s reads, no pauses: attempts at ~0, 0.3, 0.6; at 0.9
    # less than the 0.2 s minimum read is left after the connect reserve, so no fourth attempt
    policy = RetryPolicy(deadline=2.0, max_read_timeout=0.3, min_read_timeout=0.2, base_delay=0, max_delay=0)
    started = time.monotonic()
    try:
        with pytest.raises(KmsUnavailableError, match="ReadTimeoutError"):
            with_retries(attempt, policy, request_id="r", sleep=lambda _s: None)
        elapsed = time.monotonic() - started
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
    assert calls == 3 and len(accepted) == 3
    assert 0.85 <= elapsed < policy.deadline
