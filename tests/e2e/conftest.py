"""One real local stack (KMS emulator, enclave with the real model, gateway) shared by the e2e tests.

Starting it costs seconds (model load, measurement), so the tests share one; each test uses its own
conversation and so its own data key.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nitro_llm_dev.local.image_enclave import image_enclave_available
from nitro_llm_dev.local.stack import EnclaveOptions, LocalStack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    root: Path = tmp_path_factory.mktemp("stack")
    threads = int(os.environ.get("NITRO_LLM_TEST_THREADS", "1"))
    # The enclave image, as 'nitro-llm up' runs it; without root (namespaces, chroot) the source tree,
    # and the image's own tests (test_image_enclave.py) skip.
    enclave_from = "image" if image_enclave_available() else "source"
    options = EnclaveOptions(engine="llama", threads=threads)
    with LocalStack(root=root, enclave=options, enclave_from=enclave_from) as s:
        yield s
