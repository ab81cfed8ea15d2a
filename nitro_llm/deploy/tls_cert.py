"""A self-signed TLS certificate for the gateway, made on the instance.

Why self-signed: the gateway is reached by its Elastic IP, for which no public CA issues a
certificate without a domain, and an operator who has a domain can put their own certificate at the
same paths. Clients pin this certificate ('ca_file' in their configuration, fetched over SSM, an
authenticated channel): it is then the only certificate they accept for the gateway, which is
stronger than trusting every public CA. The private key never leaves the instance.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=825)
"""The longest validity TLS clients have accepted for server certificates (CA/B Forum, 2018-2020)."""

LOOPBACK_NAMES = ("127.0.0.1", "localhost")
"""Always in the certificate: the supervisor checks the gateway's /healthz on loopback, verified."""


_SERVER_KEY_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
    key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
)  # fmt: skip


def subject_names(names: Sequence[str]) -> list[x509.GeneralName]:
    """IP addresses as IPAddress entries, everything else as DNS names; duplicates dropped."""
    out: list[x509.GeneralName] = []
    for name in dict.fromkeys([*names, *LOOPBACK_NAMES]):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def self_signed(names: Sequence[str], *, now: dt.datetime) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) for a server answering at ``names`` and on loopback."""
    key = ec.generate_private_key(ec.SECP256R1())
    sans = subject_names(names)
    common = names[0] if names else LOOPBACK_NAMES[0]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"nitro-llm gateway {common}"[:64])])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # a client whose clock is a little behind
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_SERVER_KEY_USAGE, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def covers(cert_pem: bytes, names: Sequence[str], *, now: dt.datetime) -> bool:
    """Whether an existing certificate still serves: valid for another 30 days and naming every
    address asked for (an instance given a new address needs a new certificate)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    if cert.not_valid_after_utc - now < dt.timedelta(days=30):
        return False
    have = set(sans)
    return all(name in have for name in subject_names(names))
