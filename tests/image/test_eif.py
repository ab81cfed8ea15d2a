"""EIF files checked against the image-format spec by a reader written here, not by ours.

Everything is re-derived in this file with ``struct``, ``zlib`` and ``hashlib`` from the facts of
aws-nitro-enclaves-image-format (``src/defs/mod.rs``: big-endian 548-byte header, 12-byte section
headers; ``src/utils/mod.rs``: PCR = SHA384(48 zero bytes || SHA384(sections)), CRC-32 over all but
the header's CRC field) and of linuxkit / gocpio for the bootstrap ramdisk, so a shared mistake in
the code under test cannot make both sides agree.

Published vectors: the header sizes asserted by the spec's own unit tests, and the ES384
COSE_Sign1 of aws-nitro-enclaves-cose. nitro-cli's ``tests/tests.rs`` also pins the PCRs of a sample
image, but they need the real nitro-cli kernel blob, which is not available here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import struct
import zlib
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from nitro_llm.errors import NitroLLMError
from nitro_llm.image.cpio import CpioEntry, write_newc
from nitro_llm.image.eif import (
    EifCrcError,
    EifFormatError,
    EifSignatureError,
    bootstrap_ramdisk,
    build_eif,
    describe_eif,
    measure_eif,
    read_eif,
)
from nitro_llm.image.eif_sign import PcrSignature, verify_pcr0_signature
from nitro_llm.image.errors import InputMissingError, LayoutError

# -- the spec, restated ------------------------------------------------------------------------------

# aws-nitro-enclaves-image-format src/defs/mod.rs tests: test_eif_header_size, test_eif_section_header_size
SPEC_HEADER_SIZE = 548
SPEC_SECTION_HEADER_SIZE = 12
KERNEL, CMDLINE, RAMDISK, SIGNATURE, METADATA = 1, 2, 3, 4, 5
LINUXKIT_MTIME = int(dt.datetime(2017, 4, 18, 16, 30, tzinfo=dt.UTC).timestamp())  # moby/build/dir.go

# aws-nitro-enclaves-cose src/sign.rs, get_ec384_test_key and cose_sign1_ec384_validate ("validated
# against COSE-C"): a P-384 key and a COSE_Sign1 (protected {1: -35}, unprotected {4: '11'}) over TEXT.
COSE_TEXT = (
    b"It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    b"must be in want of a wife."
)
COSE_EC384_D = int(
    "55c6aa815a31741bc37f0ffddea73af2397bad640816ef22bfb689efc1b6cc682a73f7e5a657248e3abad500e46d5afc", 16
)
COSE_EC384_X = int(
    "5a829f62f2f4f095c0e922719285b4b981c677912870a413137a5d7319916fa8584a6036951d06ffeae99ca73ab1a2dc", 16
)
COSE_EC384_SIGNATURE = bytes.fromhex(
    "CD42D27632D5414E4B545C95FDE6E3505B93580F4B7731D14A86523175266CDEB24AFF2DE3364E9CEEE9F9F795A01515"
    "5BC712AA2863E2AAF6078A819093FDFC7059A3F1467F64EC7E221FD163D80B3B552625CF379D1CBB9E5138CCD07A1931"
)
COSE_EC384_VECTOR = (
    bytes.fromhex("8444A1013822A1044231315875") + COSE_TEXT + bytes.fromhex("5860") + COSE_EC384_SIGNATURE
)


def spec_pcr(*parts: bytes) -> str:
    """EifHasher::new_without_cache + tpm_extend_finalize_reset."""
    return hashlib.sha384(bytes(48) + hashlib.sha384(b"".join(parts)).digest()).hexdigest()


def spec_crc(data: bytes) -> int:
    return zlib.crc32(data[:544] + data[548:])


def parse_eif(data: bytes) -> dict:
    """A minimal reader from the spec: every field at its byte offset."""
    magic, version, flags, mem, cpus, reserved, count = struct.unpack_from(">4sHHQQHH", data, 0)
    offsets = struct.unpack_from(">32Q", data, 28)
    sizes = struct.unpack_from(">32Q", data, 28 + 256)
    unused, crc = struct.unpack_from(">II", data, 28 + 512)
    sections = []
    position = SPEC_HEADER_SIZE
    while position < len(data):
        kind, section_flags, size = struct.unpack_from(">HHQ", data, position)
        start = position + SPEC_SECTION_HEADER_SIZE
        sections.append(
            {"offset": position, "type": kind, "flags": section_flags, "data": data[start : start + size]}
        )
        position = start + size
    assert position == len(data)
    return {
        "magic": magic,
        "version": version,
        "flags": flags,
        "mem": mem,
        "cpus": cpus,
        "reserved": reserved,
        "count": count,
        "offsets": offsets,
        "sizes": sizes,
        "unused": unused,
        "crc": crc,
        "sections": sections,
    }


def newc_header(ino: int, mode: int, nlink: int, mtime: int, size: int, name: bytes) -> bytes:
    fields = (ino, mode, 0, 0, nlink, mtime, size, 3, 1, 0, 0, len(name) + 1, 0)
    return b"070701" + b"".join(b"%08x" % value for value in fields) + name + b"\0"


def pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def linuxkit_bootstrap(init: bytes, nsm: bytes) -> bytes:
    """What linuxkit v1.5.2 + gocpio write for nitro-cli's bootstrap YAML (dev, init, nsm.ko)."""
    out = pad4(newc_header(721, 0o040755, 2, LINUXKIT_MTIME, 0, b"dev"))
    out += pad4(newc_header(722, 0o100755, 1, LINUXKIT_MTIME, len(init), b"init")) + pad4(init)
    out += pad4(newc_header(723, 0o100755, 1, LINUXKIT_MTIME, len(nsm), b"nsm.ko")) + pad4(nsm)
    out += pad4(newc_header(724, 0, 1, 0, 0, b"TRAILER!!!"))
    return out + bytes(-len(out) % 512)


def rewrite(path: Path, data: bytes, *, fix_crc: bool = True) -> None:
    data = bytearray(data)
    if fix_crc:
        struct.pack_into(">I", data, 544, spec_crc(bytes(data)))
    path.write_bytes(bytes(data))


# -- inputs ------------------------------------------------------------------------------------------

KERNEL_BYTES = b"MZ" + bytes(range(256)) * 41 + b"fake bzImage"
INIT_BYTES = b"\x7fELF fake init " * 97
NSM_BYTES = b"\x7fELF nsm.ko " * 33 + b"x"
CMDLINE_TEXT = "reboot=k panic=30 pci=off nomodules console=ttyS0 random.trust_cpu=on"


@pytest.fixture
def blobs(tmp_path: Path) -> Path:
    directory = tmp_path / "blobs"
    directory.mkdir()
    (directory / "bzImage").write_bytes(KERNEL_BYTES)
    (directory / "bzImage.config").write_text(
        "#\n# Automatically generated file; DO NOT EDIT.\n# Linux/x86_64 6.1.102-111.182.amzn2023.x86_64 "
        "Kernel Configuration\n#\n"
    )
    (directory / "cmdline").write_text(CMDLINE_TEXT + "\n")
    (directory / "init").write_bytes(INIT_BYTES)
    (directory / "nsm.ko").write_bytes(NSM_BYTES)
    return directory


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """Larger than the 1 MiB streaming chunk, and not a multiple of it."""
    path = tmp_path / "app.cpio"
    path.write_bytes(hashlib.shake_256(b"application ramdisk").digest(2_500_001))
    return path


@pytest.fixture
def signer(tmp_path: Path) -> tuple[Path, Path, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nitro-llm"),
            x509.NameAttribute(NameOID.COMMON_NAME, "nitro-llm test signer"),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2035, 11, 22, 13, 14, 15, tzinfo=dt.UTC))
        .sign(key, hashes.SHA384())
    )
    cert_path = tmp_path / "cert.pem"
    key_path = tmp_path / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path, certificate


# -- layout ------------------------------------------------------------------------------------------


def test_header_and_sections_sit_at_the_spec_offsets(blobs: Path, app: Path, tmp_path: Path) -> None:
    out = tmp_path / "image.eif"
    build_eif(blobs, [app], out)
    data = out.read_bytes()
    eif = parse_eif(data)

    assert data[:4] == b".eif" == eif["magic"]
    assert (eif["version"], eif["flags"], eif["reserved"], eif["unused"]) == (4, 0, 0, 0)
    assert (eif["mem"], eif["cpus"]) == (1024**3, 2)
    assert eif["crc"] == spec_crc(data)

    # EifBuilder order: kernel, cmdline, metadata, ramdisks (bootstrap, then the application)
    sections = eif["sections"]
    assert [s["type"] for s in sections] == [KERNEL, CMDLINE, METADATA, RAMDISK, RAMDISK]
    assert eif["count"] == 5
    assert sections[0]["offset"] == SPEC_HEADER_SIZE
    assert list(eif["offsets"][:5]) == [s["offset"] for s in sections]
    assert list(eif["sizes"][:5]) == [len(s["data"]) for s in sections]
    assert eif["offsets"][5:] == eif["sizes"][5:] == (0,) * 27
    assert all(s["flags"] == 0 for s in sections)

    assert sections[0]["data"] == KERNEL_BYTES
    assert sections[1]["data"] == CMDLINE_TEXT.encode()  # trimmed, no NUL terminator
    assert sections[3]["data"] == linuxkit_bootstrap(INIT_BYTES, NSM_BYTES)
    assert sections[4]["data"] == app.read_bytes()
    assert sections[1]["offset"] == SPEC_HEADER_SIZE + 12 + len(KERNEL_BYTES)


def test_pcrs_are_the_spec_extension_of_the_section_data(blobs: Path, app: Path, tmp_path: Path) -> None:
    second = tmp_path / "second.cpio"
    second.write_bytes(b"second application ramdisk" * 1000)
    out = tmp_path / "image.eif"
    built = build_eif(blobs, [app, second], out)

    kernel, cmdline = KERNEL_BYTES, CMDLINE_TEXT.encode()
    bootstrap = linuxkit_bootstrap(INIT_BYTES, NSM_BYTES)
    first, other = app.read_bytes(), second.read_bytes()
    expected = {
        "HashAlgorithm": "Sha384 { ... }",
        "PCR0": spec_pcr(kernel, cmdline, bootstrap, first, other),
        "PCR1": spec_pcr(kernel, cmdline, bootstrap),
        "PCR2": spec_pcr(first, other),
    }
    assert built.to_dict() == expected
    assert measure_eif(out) == expected
    assert list(measure_eif(out)) == ["HashAlgorithm", "PCR0", "PCR1", "PCR2"]
    # the metadata section is in the file but in no PCR
    metadata = parse_eif(out.read_bytes())["sections"][2]["data"]
    assert metadata not in (kernel, cmdline, bootstrap)


def test_bootstrap_ramdisk_is_the_linuxkit_cpio(blobs: Path) -> None:
    ramdisk = bootstrap_ramdisk(INIT_BYTES, NSM_BYTES)
    assert ramdisk == linuxkit_bootstrap(INIT_BYTES, NSM_BYTES)
    assert len(ramdisk) % 512 == 0
    assert ramdisk[:6] == b"070701" and b"TRAILER!!!\0" in ramdisk


def test_metadata_is_compact_eif_identity_json(blobs: Path, app: Path, tmp_path: Path) -> None:
    out = tmp_path / "image.eif"
    build_eif(blobs, [app], out, metadata={"zeta": 1, "alpha": {"b": [1, "x"], "a": None}})
    raw = parse_eif(out.read_bytes())["sections"][2]["data"]
    assert raw == (
        b'{"ImageName":"nitro-llm","ImageVersion":"0.1.0","BuildMetadata":{"BuildTime":'
        b'"1970-01-01T00:00:00+00:00","BuildTool":"nitro-llm","BuildToolVersion":"0.1.0",'
        b'"OperatingSystem":"Linux","KernelVersion":"6.1.102"},"DockerInfo":null,'
        b'"CustomMetadata":{"alpha":{"a":null,"b":[1,"x"]},"zeta":1}}'
    )


def test_same_inputs_give_the_same_bytes(blobs: Path, app: Path, tmp_path: Path) -> None:
    build_eif(blobs, [app], tmp_path / "one.eif")
    build_eif(blobs, [app], tmp_path / "two.eif")
    assert (tmp_path / "one.eif").read_bytes() == (tmp_path / "two.eif").read_bytes()
    assert not list(tmp_path.glob(".*partial"))


def test_describe_has_the_nitro_cli_shape(blobs: Path, app: Path, tmp_path: Path) -> None:
    out = tmp_path / "image.eif"
    measurements = build_eif(blobs, [app], out, metadata={"model": "qwen", "revision": 3})
    info = describe_eif(out)
    assert list(info) == [
        "EifVersion",
        "Measurements",
        "IsSigned",
        "CheckCRC",
        "ImageName",
        "ImageVersion",
        "Metadata",
    ]
    assert info["EifVersion"] == 4
    assert info["Measurements"] == measurements.to_dict()
    assert info["IsSigned"] is False and info["CheckCRC"] is True
    assert (info["ImageName"], info["ImageVersion"]) == ("nitro-llm", "0.1.0")
    assert info["Metadata"] == {
        "BuildTime": "1970-01-01T00:00:00+00:00",
        "BuildTool": "nitro-llm",
        "BuildToolVersion": "0.1.0",
        "OperatingSystem": "Linux",
        "KernelVersion": "6.1.102",
        "DockerInfo": None,
        "model": "qwen",
        "revision": 3,
    }
    json.dumps(info)  # printable as nitro-cli prints it


def test_read_exposes_the_parsed_file(blobs: Path, app: Path, tmp_path: Path) -> None:
    out = tmp_path / "image.eif"
    build_eif(blobs, [app], out)
    eif = read_eif(out)
    assert eif.crc_ok and not eif.is_signed and eif.arch == "x86_64"
    assert eif.cmdline == CMDLINE_TEXT
    assert [s.offset for s in eif.sections] == [s["offset"] for s in parse_eif(out.read_bytes())["sections"]]
    assert eif.sections[-1].data_offset + eif.sections[-1].size == out.stat().st_size


def test_arm64_sets_the_header_flag(blobs: Path, app: Path, tmp_path: Path) -> None:
    (blobs / "Image").write_bytes(KERNEL_BYTES)
    out = tmp_path / "arm.eif"
    build_eif(blobs, [app], out, arch="aarch64")
    assert parse_eif(out.read_bytes())["flags"] == 1  # EIF_HDR_ARCH_ARM64
    assert read_eif(out).arch == "aarch64"


# -- signing -----------------------------------------------------------------------------------------


def test_signed_eif_has_pcr8_and_a_cose_signature_over_pcr0(
    blobs: Path, app: Path, tmp_path: Path, signer: tuple[Path, Path, x509.Certificate]
) -> None:
    cert_path, key_path, certificate = signer
    unsigned = build_eif(blobs, [app], tmp_path / "plain.eif")
    out = tmp_path / "signed.eif"
    signed = build_eif(blobs, [app], out, signing_cert=cert_path, signing_key=key_path)

    der = certificate.public_bytes(serialization.Encoding.DER)
    assert signed.pcr8 == spec_pcr(der)  # the cert hasher is fed the DER, then extended
    # the recipe a nitro-cli maintainer gave in aws-nitro-enclaves-cli issue #446
    fingerprint = certificate.fingerprint(hashes.SHA384())
    assert signed.pcr8 == hashlib.sha384(b"\0" * 48 + fingerprint).hexdigest()
    assert (signed.pcr0, signed.pcr1, signed.pcr2) == (unsigned.pcr0, unsigned.pcr1, unsigned.pcr2)

    data = out.read_bytes()
    eif = parse_eif(data)
    assert eif["crc"] == spec_crc(data)
    assert [s["type"] for s in eif["sections"]] == [KERNEL, CMDLINE, METADATA, RAMDISK, RAMDISK, SIGNATURE]

    # serde_cbor of Vec<PcrSignature>: field-named maps, Vec<u8> as arrays of integers
    (entry,) = cbor2.loads(eif["sections"][-1]["data"])
    assert list(entry) == ["signing_certificate", "signature"]
    assert bytes(entry["signing_certificate"]) == cert_path.read_bytes()
    protected, unprotected, payload, signature = cbor2.loads(bytes(entry["signature"]))
    assert protected == bytes.fromhex("a1013822") and unprotected == {}  # {1: -35}: ES384
    pcr0 = bytes.fromhex(signed.pcr0)
    assert payload == cbor2.dumps({"register_index": 0, "register_value": list(pcr0)})
    r, s = int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big")
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload])
    certificate.public_key().verify(encode_dss_signature(r, s), to_be_signed, ec.ECDSA(hashes.SHA384()))

    assert measure_eif(out) == signed.to_dict()
    info = describe_eif(out)
    assert list(info) == [
        "EifVersion",
        "Measurements",
        "IsSigned",
        "SigningCertificate",
        "CheckCRC",
        "SignatureCheck",
        "ImageName",
        "ImageVersion",
        "Metadata",
    ]
    assert info["IsSigned"] is True and info["SignatureCheck"] is True and info["CheckCRC"] is True
    assert info["Measurements"]["PCR8"] == signed.pcr8
    assert info["SigningCertificate"] == {
        "IssuerName": {
            "commonName": "nitro-llm test signer",
            "countryName": "US",
            "organizationName": "nitro-llm",
        },
        "Algorithm": "ecdsa-with-SHA384",
        "NotBefore": "Jan  2 03:04:05 2025 GMT",
        "NotAfter": "Nov 22 13:14:15 2035 GMT",
        "Signature": ":".join(f"{b:02X}" for b in certificate.signature),
    }


def test_a_tampered_signature_fails_describe(
    blobs: Path, app: Path, tmp_path: Path, signer: tuple[Path, Path, x509.Certificate]
) -> None:
    cert_path, key_path, _ = signer
    out = tmp_path / "signed.eif"
    build_eif(blobs, [app], out, signing_cert=cert_path, signing_key=key_path)
    data = bytearray(out.read_bytes())
    data[-1] ^= 0x01  # the last byte of the COSE signature: still valid CBOR, a different s
    rewrite(out, bytes(data))
    assert read_eif(out).crc_ok  # the structure is fine ...
    with pytest.raises(EifSignatureError):
        describe_eif(out)  # ... but the signature no longer verifies


def test_signing_refuses_a_key_that_is_not_the_certificates(
    blobs: Path, app: Path, tmp_path: Path, signer: tuple[Path, Path, x509.Certificate]
) -> None:
    cert_path, _, _ = signer
    other = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(EifSignatureError, match="does not belong"):
        build_eif(blobs, [app], tmp_path / "x.eif", signing_cert=cert_path, signing_key=other)
    with pytest.raises(EifSignatureError, match="both"):
        build_eif(blobs, [app], tmp_path / "x.eif", signing_cert=cert_path)
    assert not (tmp_path / "x.eif").exists()


def test_published_cose_es384_vector_verifies() -> None:
    """The COSE verification path, on aws-nitro-enclaves-cose's published ES384 COSE_Sign1."""
    key = ec.derive_private_key(COSE_EC384_D, ec.SECP384R1())
    assert key.public_key().public_numbers().x == COSE_EC384_X
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cose test key")])
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA384())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    # verifies, but its payload is the book's first sentence, not a PcrInfo: SignatureCheck false
    assert verify_pcr0_signature(PcrSignature(pem, COSE_EC384_VECTOR), bytes(48)) is False
    tampered = COSE_EC384_VECTOR[:-1] + bytes([COSE_EC384_VECTOR[-1] ^ 1])
    with pytest.raises(EifSignatureError, match="does not verify"):
        verify_pcr0_signature(PcrSignature(pem, tampered), bytes(48))


# -- damaged files -----------------------------------------------------------------------------------


@pytest.fixture
def built(blobs: Path, app: Path, tmp_path: Path) -> Path:
    out = tmp_path / "image.eif"
    build_eif(blobs, [app], out)
    return out


def test_a_flipped_byte_is_a_crc_error(built: Path) -> None:
    data = bytearray(built.read_bytes())
    data[SPEC_HEADER_SIZE + 12 + 100] ^= 0x40  # inside the kernel
    rewrite(built, bytes(data), fix_crc=False)
    with pytest.raises(EifCrcError) as caught:
        read_eif(built)
    assert isinstance(caught.value, EifFormatError) and isinstance(caught.value, NitroLLMError)
    assert caught.value.hint
    with pytest.raises(EifCrcError):
        measure_eif(built)
    assert describe_eif(built)["CheckCRC"] is False  # describe-eif reports it instead


def test_a_changed_crc_field_is_a_crc_error(built: Path) -> None:
    data = bytearray(built.read_bytes())
    data[547] ^= 0xFF
    rewrite(built, bytes(data), fix_crc=False)
    with pytest.raises(EifCrcError):
        read_eif(built)


@pytest.mark.parametrize("keep", [0, 100, SPEC_HEADER_SIZE, SPEC_HEADER_SIZE + 5, -1, -2_000_000])
def test_a_truncated_file_is_refused(built: Path, keep: int) -> None:
    data = built.read_bytes()
    built.write_bytes(data[:keep] if keep >= 0 else data[: len(data) + keep])
    with pytest.raises(EifFormatError):
        read_eif(built)


def test_bad_magic_is_refused(built: Path) -> None:
    data = bytearray(built.read_bytes())
    data[:4] = b"EIF."
    rewrite(built, bytes(data))
    with pytest.raises(EifFormatError, match="magic"):
        read_eif(built)


@pytest.mark.parametrize("version", [0, 1, 5, 0xFFFF])
def test_unknown_versions_are_refused(built: Path, version: int) -> None:
    data = bytearray(built.read_bytes())
    struct.pack_into(">H", data, 4, version)
    rewrite(built, bytes(data))
    with pytest.raises(EifFormatError, match="version"):
        read_eif(built)


@pytest.mark.parametrize("count", [0, 4, 6, 33])
def test_a_wrong_section_count_is_refused(built: Path, count: int) -> None:
    data = bytearray(built.read_bytes())
    struct.pack_into(">H", data, 26, count)
    rewrite(built, bytes(data))  # a valid CRC: the structure itself must be caught
    with pytest.raises(EifFormatError) as caught:
        read_eif(built)
    assert not isinstance(caught.value, EifCrcError)


def test_a_section_table_that_disagrees_is_refused(built: Path) -> None:
    data = bytearray(built.read_bytes())
    struct.pack_into(">Q", data, 28 + 8, struct.unpack_from(">Q", data, 28 + 8)[0] + 1)  # cmdline offset
    rewrite(built, bytes(data))
    with pytest.raises(EifFormatError, match="table"):
        read_eif(built)


@pytest.mark.parametrize("kind", [0, 6, 0xFFFF])
def test_an_invalid_section_type_is_refused(built: Path, kind: int) -> None:
    data = bytearray(built.read_bytes())
    struct.pack_into(">H", data, SPEC_HEADER_SIZE, kind)
    rewrite(built, bytes(data))
    with pytest.raises(EifFormatError, match="type"):
        read_eif(built)


def test_sections_out_of_order_are_refused(built: Path) -> None:
    data = bytearray(built.read_bytes())
    struct.pack_into(">H", data, SPEC_HEADER_SIZE, CMDLINE)  # the kernel section claims to be a cmdline
    rewrite(built, bytes(data))
    with pytest.raises(EifFormatError, match="kernel"):
        read_eif(built)


def test_a_missing_blob_names_it(blobs: Path, app: Path, tmp_path: Path) -> None:
    (blobs / "nsm.ko").unlink()
    with pytest.raises(InputMissingError, match=r"nsm\.ko"):
        build_eif(blobs, [app], tmp_path / "x.eif")


# -- the cpio writer, as the EIF uses it --------------------------------------------------------------


def test_write_newc_sorts_and_refuses_unsafe_paths(tmp_path: Path) -> None:
    entries = [
        CpioEntry("b/c", 0o644, b"data"),
        CpioEntry("a", 0o755, is_dir=True),
        CpioEntry("b", 0o755, is_dir=True),
    ]
    with (tmp_path / "one").open("wb") as first, (tmp_path / "two").open("wb") as second:
        write_newc(entries, first)
        write_newc(reversed(entries), second)
    one = (tmp_path / "one").read_bytes()
    assert one == (tmp_path / "two").read_bytes()
    assert one.index(b"a\0") < one.index(b"b\0") < one.index(b"b/c\0")
    for bad in ("/etc/passwd", "../x", "a//b", ""):
        with pytest.raises(LayoutError):
            write_newc([CpioEntry(bad, 0o644)], (tmp_path / "bad").open("wb"))
    with pytest.raises(LayoutError):
        write_newc([CpioEntry("x", 0o644), CpioEntry("x", 0o644)], (tmp_path / "dup").open("wb"))
