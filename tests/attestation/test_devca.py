"""The dev CA is created once, kept private, reloaded unchanged, and issues AWS-shaped leaves."""

from __future__ import annotations

import datetime as dt
import itertools
import stat
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from nitro_llm.attestation import DevCAError, load_root_pem
from nitro_llm_dev.nsm.devca import LEAF_LIFETIME, DevCA, default_path


def test_created_once_then_reloaded_with_the_same_root(tmp_path):
    path = tmp_path / "dev-ca"
    first = DevCA.load_or_create(path)
    second = DevCA.load_or_create(path)
    assert first.root_certificate == second.root_certificate
    assert first.cabundle == second.cabundle
    assert first.instance_id == second.instance_id
    assert load_root_pem(first.root_pem_path) == first.root_certificate


def test_key_files_are_private(tmp_path):
    ca = DevCA.load_or_create(tmp_path / "dev-ca")
    assert stat.S_IMODE(ca.path.stat().st_mode) == 0o700
    keys = sorted(ca.path.glob("*.key"))
    assert len(keys) == 4
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_default_location_is_under_the_state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NITRO_LLM_HOME", str(tmp_path / "home"))
    assert default_path() == tmp_path / "home" / "dev-ca"
    ca = DevCA.load_or_create()
    assert ca.path == tmp_path / "home" / "dev-ca"


def test_concurrent_creation_ends_with_one_ca(tmp_path):
    path = tmp_path / "dev-ca"
    results: list[DevCA] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            results.append(DevCA.load_or_create(path))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert (
        len({r.root_certificate.fingerprint(r.root_certificate.signature_hash_algorithm) for r in results})
        == 1
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dev-ca-")]  # no staging left behind


def test_chain_levels_and_lifetimes(tmp_path):
    ca = DevCA.load_or_create(tmp_path / "dev-ca")
    certs = [x509.load_der_x509_certificate(der) for der in ca.cabundle]
    path_lengths = [
        c.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length for c in certs
    ]
    assert path_lengths == [None, 2, 1, 0]
    assert certs[0].subject == certs[0].issuer
    for parent, child in itertools.pairwise(certs):
        child.verify_directly_issued_by(parent)
    now = dt.datetime.now(dt.UTC)
    assert all(c.not_valid_after_utc - now > dt.timedelta(days=365 * 9) for c in certs)
    assert ca.instance_id in certs[3].subject.rfc4514_string()


def test_leaf_lives_three_hours_and_is_issued_by_the_instance_ca(tmp_path):
    ca = DevCA.load_or_create(tmp_path / "dev-ca")
    now = dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    leaf, key = ca.issue_leaf("i-0123456789abcdef0-enc0123456789abcdef", now)
    assert leaf.not_valid_after_utc == now + LEAF_LIFETIME
    assert leaf.not_valid_before_utc == now - dt.timedelta(seconds=3)
    leaf.verify_directly_issued_by(x509.load_der_x509_certificate(ca.cabundle[-1]))
    assert leaf.public_key() == key.public_key()
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_incomplete_directory_is_a_typed_error(tmp_path):
    path = tmp_path / "dev-ca"
    DevCA.load_or_create(path)
    (path / "zonal.key").unlink()
    with pytest.raises(DevCAError, match="incomplete"):
        DevCA.load_or_create(path)


def test_key_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "dev-ca"
    DevCA.load_or_create(path)
    (path / "root.key").chmod(0o644)
    with pytest.raises(DevCAError, match="readable by other users") as caught:
        DevCA.load_or_create(path)
    assert "chmod 600" in caught.value.hint


def test_root_pem_is_the_certificate_not_the_key(tmp_path):
    ca = DevCA.load_or_create(tmp_path / "dev-ca")
    assert b"PRIVATE KEY" not in ca.root_pem and b"PRIVATE KEY" not in ca.root_pem_path.read_bytes()
    assert (
        x509.load_pem_x509_certificate(ca.root_pem).public_bytes(serialization.Encoding.DER) == ca.cabundle[0]
    )
