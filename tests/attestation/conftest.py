"""Shared fixtures: the real AWS documents, their facts from SOURCES.md, and a throwaway dev CA."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from vectors import vector

from nitro_llm.attestation.cose import sign_es384
from nitro_llm.attestation.nsm import Nsm
from nitro_llm_dev.nsm import open_emulated_nsm
from nitro_llm_dev.nsm.devca import DevCA


@dataclass(frozen=True)
class RealDoc:
    name: str
    data: bytes
    issued_at: dt.datetime
    debug: bool
    pcrs: dict[int, bytes]
    user_data: bytes | None
    nonce: bytes | None
    public_key: bytes | None


def _h(text: str) -> bytes:
    return bytes.fromhex(text)


# Facts as listed in ../shared/test-vectors/SOURCES.md (times in UTC).
REAL_DOCS = {
    "veracruz-production.cbor": dict(
        issued_at=dt.datetime(2022, 11, 9, 22, 52, 0, 696000, tzinfo=dt.UTC),
        debug=False,
        pcrs={
            0: _h(
                "22f9e1c949208da55eb01b9b9fc88f87454f77ba133f0d82320b509621c92482152a99d0a12335b97178c02d6f977d01"
            ),
            1: _h(
                "bcdf05fefccaa8e55bf2c8d6dee9e79bbff31e34bf28a99aa19e6b29c37ee80b214a414b7607236edf26fcb78654e63f"
            ),
            2: _h(
                "00943ea859140fed74e1025fe41aedb38780eae5656b3f9ef9b4b0e6111350315544db3efcda05725108f72b2ab141f7"
            ),
        },
        user_data=_h("7c37108079b3e8a36d8a7970de1d6d4ff1461e0e35d9557c4d789df5e0576620"),
        nonce=_h("c678c86135de539d183acff58886d98dfb9823041af9f934bf909ac0f8d96245"),
        public_key=None,
    ),
    "sparsity-debug-mode.cbor": dict(
        issued_at=dt.datetime(2024, 8, 16, 9, 11, 49, 167000, tzinfo=dt.UTC),
        debug=True,
        pcrs={0: bytes(48), 1: bytes(48), 2: bytes(48)},
        user_data=b"Automata MPC Demo",
        nonce=b"1234",
        public_key=None,  # holds ASCII text, not a key: checked separately
    ),
    "evervault-debug-mode.cbor": dict(
        issued_at=dt.datetime(2022, 10, 12, 13, 50, 6, 81000, tzinfo=dt.UTC),
        debug=True,
        pcrs={0: bytes(48), 1: bytes(48), 2: bytes(48)},
        user_data=b"hello, world!",
        nonce=None,
        public_key=b"my super secret key",
    ),
}


def _real_doc(name: str) -> RealDoc:
    return RealDoc(name=name, data=vector(f"nitro-attestation/{name}"), **REAL_DOCS[name])


@pytest.fixture(params=sorted(REAL_DOCS))
def each_real_doc(request: pytest.FixtureRequest) -> RealDoc:
    return _real_doc(request.param)


@pytest.fixture
def real_doc() -> Callable[[str], RealDoc]:
    return _real_doc


@pytest.fixture
def veracruz() -> RealDoc:
    return _real_doc("veracruz-production.cbor")


@pytest.fixture(scope="session")
def dev_ca(tmp_path_factory: pytest.TempPathFactory) -> DevCA:
    return DevCA.load_or_create(tmp_path_factory.mktemp("state") / "dev-ca")


@pytest.fixture
def measured_pcrs() -> dict[int, bytes]:
    """Stand-in PCR0-2 for NSM tests (measuring real code and models is test_measure's job)."""
    return {0: b"\x10" * 48, 1: b"\x11" * 48, 2: b"\x12" * 48}


@pytest.fixture
def emulated(dev_ca: DevCA, measured_pcrs: dict[int, bytes]) -> Nsm:
    return open_emulated_nsm(ca=dev_ca, pcrs=measured_pcrs, role_arn=ROLE_ARN)


ROLE_ARN = "arn:aws:iam::123456789012:role/enclave"


@pytest.fixture
def role_arn() -> str:
    return ROLE_ARN


MODULE_ID = "i-0123456789abcdef0-enc0123456789abcdef"


@dataclass
class Forger:
    """Builds documents with the dev CA exactly as the emulated NSM does, but with every part adjustable.

    Tests use it to make documents that are wrong in one way only and correctly signed otherwise, so a
    rejection proves the targeted check works rather than the signature catching everything.
    """

    ca: DevCA
    measured: dict[int, bytes]

    def document(self, now: dt.datetime | None = None, *, signing_key=None, **fields: object) -> bytes:
        """A document issued at ``now``; ``fields`` replace payload fields, ``signing_key`` the leaf's key."""
        when = now or dt.datetime.now(dt.UTC)
        leaf, key = self.ca.issue_leaf(MODULE_ID, when)
        pcrs = {i: bytes(48) for i in range(16)}
        pcrs.update(self.measured)
        payload: dict[str, object] = {
            "module_id": MODULE_ID,
            "digest": "SHA384",
            "timestamp": int(when.timestamp() * 1000),
            "pcrs": pcrs,
            "certificate": leaf.public_bytes(serialization.Encoding.DER),
            "cabundle": self.ca.cabundle,
            "public_key": None,
            "user_data": None,
            "nonce": None,
        }
        payload.update(fields)
        return sign_es384(signing_key or key, cbor2.dumps(payload))


@pytest.fixture
def forger(dev_ca: DevCA, measured_pcrs: dict[int, bytes]) -> Forger:
    return Forger(dev_ca, measured_pcrs)
