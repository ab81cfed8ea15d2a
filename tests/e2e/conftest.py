"""One real local stack (KMS emulator, enclave with the real model, gateway) shared by the e2e tests.

Starting it costs seconds (model load, measurement), so the tests share one; each test uses its own
conversation and so its own data key.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nitro_llm_dev.local.stack import EnclaveOptions, LocalStack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    root: Path = tmp_path_factory.mktemp("stack")
    threads = int(os.environ.get("NITRO_LLM_TEST_THREADS", "1"))
    with LocalStack(root=root, enclave=EnclaveOptions(engine="llama", threads=threads)) as s:
        yield s
