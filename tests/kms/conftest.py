"""Shared fixtures for the KMS tests: dev CAs, a recipient key, emulator processes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parent))  # make kms_testing importable from the tests

import kms_testing  # noqa: F401  (imported here so its path is in place for the tests)

from nitro_llm_dev.nsm.devca import DevCA


@pytest.fixture(scope="session")
def dev_ca(tmp_path_factory: pytest.TempPathFactory) -> DevCA:
    return DevCA.load_or_create(tmp_path_factory.mktemp("trusted") / "dev-ca")


@pytest.fixture(scope="session")
def rogue_ca(tmp_path_factory: pytest.TempPathFactory) -> DevCA:
    """A CA of the same shape that the emulator was not told to trust."""
    return DevCA.load_or_create(tmp_path_factory.mktemp("rogue") / "dev-ca")


@pytest.fixture(scope="session")
def recipient_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
