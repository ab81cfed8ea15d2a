"""The /dev/nsm driver path, exercised through a fake ioctl that reads and writes real memory."""

from __future__ import annotations

import ctypes
import errno
import os
import struct

import cbor2
import pytest

from nitro_llm.attestation import NsmError, NsmUnavailableError, VerificationPolicy, verify_document
from nitro_llm.attestation.nsm import Nsm, messages, open_nsm
from nitro_llm.attestation.nsm.device import NSM_IOCTL_RAW, NSM_RAW, DeviceTransport
from nitro_llm_dev.nsm import open_emulated_nsm

FAKE_FD = 1234


class FakeDevice:
    """Plays the kernel: decodes ``struct nsm_raw``, reads the request, writes a response back."""

    def __init__(self, answer) -> None:
        self.answer = answer  # request bytes -> response bytes (or an OSError to raise)
        self.requests: list[bytes] = []
        self.closed: list[int] = []

    def open(self, path: str, flags: int) -> int:
        assert flags & os.O_RDWR
        return FAKE_FD

    def ioctl(self, fd: int, request: int, arg: bytearray, mutate: bool) -> int:
        assert fd == FAKE_FD and request == NSM_IOCTL_RAW and mutate
        assert isinstance(arg, bytearray) and len(arg) == 32
        req_addr, req_len, resp_addr, resp_cap = NSM_RAW.unpack(arg)
        request_bytes = ctypes.string_at(req_addr, req_len)
        self.requests.append(request_bytes)
        response = self.answer(request_bytes)
        if isinstance(response, OSError):
            raise response
        assert len(response) <= resp_cap
        ctypes.memmove(resp_addr, response, len(response))
        struct.pack_into("=Q", arg, 24, len(response))
        return 0

    def close(self, fd: int) -> None:
        self.closed.append(fd)

    def nsm(self) -> Nsm:
        return Nsm(DeviceTransport("/dev/nsm", opener=self.open, ioctl=self.ioctl, closer=self.close))


def test_ioctl_number_and_struct_layout_match_the_linux_driver():
    assert NSM_IOCTL_RAW == 0xC0200A00  # _IOWR(0x0A, 0, struct nsm_raw), sizeof = 32
    assert NSM_RAW.size == 32


def test_request_encodings_are_the_nsm_apis():
    assert messages.describe_nsm_request() == b"\x6bDescribeNSM"
    assert messages.get_random_request() == b"\x69GetRandom"
    assert cbor2.loads(messages.describe_pcr_request(3)) == {"DescribePCR": {"index": 3}}
    assert cbor2.loads(messages.attestation_request()) == {
        "Attestation": {"user_data": None, "nonce": None, "public_key": None}
    }
    request = messages.attestation_request(user_data=b"u", nonce=b"n", public_key=b"k")
    assert list(cbor2.loads(request)["Attestation"].items()) == [
        ("user_data", b"u"),
        ("nonce", b"n"),
        ("public_key", b"k"),
    ]


def test_attest_through_the_device_path_returns_the_document(dev_ca, measured_pcrs):
    emulator = open_emulated_nsm(ca=dev_ca, pcrs=measured_pcrs)._transport
    device = FakeDevice(emulator.exchange)  # the fake kernel forwards to the emulated NSM
    with device.nsm() as nsm:
        assert nsm.kind == "device"
        document = nsm.attest(nonce=b"N" * 32, user_data=b"U")
        description = nsm.describe()
        pcr2 = nsm.describe_pcr(2)
        random = nsm.get_random()
    assert device.closed == [FAKE_FD]
    assert cbor2.loads(device.requests[0]) == {
        "Attestation": {"user_data": b"U", "nonce": b"N" * 32, "public_key": None}
    }
    policy = VerificationPolicy(expected_pcrs=measured_pcrs, nonce=b"N" * 32, user_data=b"U")
    assert verify_document(document, roots=[dev_ca.root_certificate], policy=policy).ok
    assert description.max_pcrs == 32 and pcr2.data == measured_pcrs[2] and len(random) == 256


def test_error_responses_become_typed_errors():
    device = FakeDevice(lambda request: cbor2.dumps({"Error": "InvalidIndex"}))
    with pytest.raises(NsmError, match="InvalidIndex"):
        device.nsm().describe_pcr(99)


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (b"\xff\xff", "not CBOR"),
        (cbor2.dumps({"GetRandom": {"random": b"x"}}), "something else"),
        (cbor2.dumps({"Attestation": {"doc": b"x"}}), "lacks document"),
        (cbor2.dumps({"Error": 7}), "unknown"),
    ],
)
def test_unexpected_responses_are_typed_errors(response, message):
    device = FakeDevice(lambda request: response)
    with pytest.raises(NsmError, match=message):
        device.nsm().attest()


def test_ioctl_failures_are_typed_errors():
    too_big = FakeDevice(lambda request: OSError(errno.EMSGSIZE, "Message too long"))
    with pytest.raises(NsmError, match="InputTooLarge"):
        too_big.nsm().get_random()
    broken = FakeDevice(lambda request: OSError(errno.EIO, "I/O error"))
    with pytest.raises(NsmError, match="EIO"):
        broken.nsm().get_random()


def test_oversized_inputs_are_refused_before_the_ioctl():
    device = FakeDevice(lambda request: pytest.fail("must not reach the device"))
    with pytest.raises(NsmError, match="at most 1024"):
        device.nsm().attest(public_key=b"k" * 1025)
    with pytest.raises(NsmError, match="16-bit"):
        device.nsm().describe_pcr(70000)


def test_missing_device_raises_unavailable_with_a_hint(tmp_path):
    with pytest.raises(NsmUnavailableError) as caught:
        open_nsm("device", device_path=str(tmp_path / "nsm"))
    assert "not a Nitro Enclave" in caught.value.message
    assert "emulated" in caught.value.hint


def test_unknown_kind_is_refused():
    with pytest.raises(NsmError, match="unknown NSM kind"):
        open_nsm("auto")  # type: ignore[arg-type]
