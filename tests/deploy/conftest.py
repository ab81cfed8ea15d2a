"""Fixtures for the deploy tests. (The fake EC2 metadata server lives with the gateway tests, whose
IMDS client it serves: tests/gateway/conftest.py.)"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # image_standin and standins, for the tests


@pytest.fixture
def free_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
