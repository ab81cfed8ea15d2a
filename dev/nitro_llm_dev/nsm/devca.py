"""The local dev CA: a Nitro-shaped PKI (root, regional, zonal, instance) that signs emulated documents.

Local mode must exercise the same verifier as production, chain and all, so emulated documents carry
a chain with the AWS structure: a self-signed root, a regional CA (path length 2), a zonal CA (1), an
instance CA (0), and a short-lived leaf (about 3 hours, like AWS's) per document. Names and extensions
follow the real certificates but say "dev" everywhere, so nobody mistakes one for AWS's.

The CA is created once and kept under ``state_dir()/dev-ca`` (keys 0600, directory 0700): every local
process (KMS emulator, enclave, client) must agree on the same root. Creation is atomic (built in a
temporary directory, then renamed), so two processes starting together end up with one CA. The
intermediates are long-lived (10 years) because nothing here rotates them; the root lives 30 years.
Trusting this root anywhere but local mode is unsafe: its keys sit unencrypted on disk.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nitro_llm.attestation.errors import DevCAError
from nitro_llm.paths import state_dir

LEAF_LIFETIME = dt.timedelta(hours=3)
LEAF_BACKDATE = dt.timedelta(seconds=3)  # real leaves start a few seconds before their serial's time
_ROOT_LIFETIME = dt.timedelta(days=365 * 30)
_CA_LIFETIME = dt.timedelta(days=365 * 10)
_LEVELS = ("root", "regional", "zonal", "instance")
_META = "meta.json"
DEFAULT_REGION = "local-1"
_DOMAIN = "dev.nitro-enclaves"


def default_path() -> Path:
    return state_dir() / "dev-ca"


@dataclass(frozen=True)
class _Level:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


class DevCA:
    """A loaded dev CA. Use ``DevCA.load_or_create(path)``; never trust its root outside local mode."""

    def __init__(self, path: Path, levels: dict[str, _Level], instance_id: str, region: str) -> None:
        self.path = path
        self._levels = levels
        self.instance_id = instance_id
        self.region = region

    @property
    def root_certificate(self) -> x509.Certificate:
        return self._levels["root"].cert

    @property
    def root_pem(self) -> bytes:
        return self.root_certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def root_pem_path(self) -> Path:
        """The root as a PEM file: what ``--root`` / ``--trust-root`` options want."""
        return self.path / "root.pem"

    @property
    def cabundle(self) -> list[bytes]:
        """DER certificates root first, as an attestation document carries them."""
        return [self._levels[name].cert.public_bytes(serialization.Encoding.DER) for name in _LEVELS]

    @classmethod
    def load_or_create(cls, path: str | Path | None = None, *, region: str = DEFAULT_REGION) -> DevCA:
        """Load the CA at ``path`` (default ``state_dir()/dev-ca``), creating it first if absent."""
        target = Path(path) if path is not None else default_path()
        if not target.exists():
            _create(target, region)
        return cls._load(target)

    @classmethod
    def _load(cls, path: Path) -> DevCA:
        try:
            meta = json.loads((path / _META).read_text(encoding="utf-8"))
            levels = {}
            for name in _LEVELS:
                key_path = path / f"{name}.key"
                if key_path.stat().st_mode & 0o077:
                    raise DevCAError(
                        f"{key_path} is readable by other users", hint=f"run: chmod 600 {key_path}"
                    )
                cert = x509.load_pem_x509_certificate((path / f"{name}.pem").read_bytes())
                key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
                if not isinstance(key, ec.EllipticCurvePrivateKey):
                    raise DevCAError(f"{key_path} is not an EC private key")
                levels[name] = _Level(cert, key)
            instance_id, region = str(meta["instance_id"]), str(meta["region"])
        except DevCAError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DevCAError(
                f"the dev CA at {path} is incomplete or unreadable ({type(exc).__name__})"
            ) from None
        return cls(path, levels, instance_id, region)

    def issue_leaf(
        self, module_id: str, now: dt.datetime
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A fresh P-384 leaf for one document, valid from ``now`` (minus 3 s) for 3 hours.

        Like AWS's, the serial is the enclave ID's 8 bytes, 4 zero bytes and the issue time in seconds.
        """
        instance = self._levels["instance"]
        key = ec.generate_private_key(ec.SECP384R1())
        seconds = int(now.timestamp())
        enclave_hex = module_id.rpartition("-enc")[2]
        try:
            enclave_id = bytes.fromhex(enclave_hex)[-8:].rjust(8, b"\0")
        except ValueError:
            enclave_id = secrets.token_bytes(8)
        serial = int.from_bytes(enclave_id + bytes(4) + seconds.to_bytes(4, "big"), "big") or 1
        issued = dt.datetime.fromtimestamp(seconds, dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_leaf_name(f"{module_id}.{self.region}.dev"))
            .issuer_name(instance.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(issued - LEAF_BACKDATE)
            .not_valid_after(issued + LEAF_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True, content_commitment=True), critical=False)
            .sign(instance.key, hashes.SHA384())
        )
        return cert, key


def _key_usage(
    *, digital_signature: bool = False, content_commitment: bool = False, ca: bool = False, crl: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=content_commitment,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=crl,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nitro-llm dev CA"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "local mode"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _zonal_name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.LOCALITY_NAME, "localhost"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "dev"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nitro-llm dev CA"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "local mode"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _leaf_name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "dev"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "localhost"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nitro-llm dev CA"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "local mode"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _build_chain(region: str, instance_id: str, now: dt.datetime) -> dict[str, _Level]:
    keys = {name: ec.generate_private_key(ec.SECP384R1()) for name in _LEVELS}
    names = {
        "root": _ca_name(_DOMAIN),
        "regional": _ca_name(f"{secrets.token_hex(8)}.{region}.{_DOMAIN}"),
        "zonal": _zonal_name(f"{secrets.token_hex(8)}.zonal.{region}.{_DOMAIN}"),
        "instance": _leaf_name(f"{instance_id}.{region}.{_DOMAIN}"),
    }
    path_lengths = {"root": None, "regional": 2, "zonal": 1, "instance": 0}
    levels: dict[str, _Level] = {}
    parent: str | None = None
    for name in _LEVELS:
        issuer_name = names[parent] if parent else names[name]
        issuer_key = keys[parent] if parent else keys[name]
        public = keys[name].public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(names[name])
            .issuer_name(issuer_name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + (_ROOT_LIFETIME if name == "root" else _CA_LIFETIME))
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_lengths[name]), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                _key_usage(digital_signature=name != "instance", ca=True, crl=name != "instance"),
                critical=True,
            )
        )
        if parent:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(keys[parent].public_key()), critical=False
            )
        if name in ("regional", "zonal"):  # AWS's carry a CRL URL; ours points into the reserved .invalid TLD
            url = f"http://crl.{region}.{_DOMAIN}.invalid/crl/{secrets.token_hex(16)}.crl"
            point = x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)
            builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
        levels[name] = _Level(builder.sign(issuer_key, hashes.SHA384()), keys[name])
        parent = name
    return levels


def _create(target: Path, region: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = Path(tempfile.mkdtemp(prefix=".dev-ca-", dir=target.parent))
    try:
        os.chmod(staging, 0o700)
        instance_id = "i-" + secrets.token_hex(9)[:17]
        for name, level in _build_chain(region, instance_id, dt.datetime.now(dt.UTC)).items():
            _write(staging / f"{name}.pem", level.cert.public_bytes(serialization.Encoding.PEM), 0o644)
            key_pem = level.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            _write(staging / f"{name}.key", key_pem, 0o600)
        meta = {"instance_id": instance_id, "region": region, "created": dt.datetime.now(dt.UTC).isoformat()}
        _write(staging / _META, json.dumps(meta, indent=2).encode(), 0o644)
        try:
            os.rename(staging, target)
        except OSError:
            if not target.exists():  # a failure other than "someone else created it first"
                raise
    except OSError as exc:
        raise DevCAError(f"cannot create the dev CA at {target} ({exc.strerror})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
