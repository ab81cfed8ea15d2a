"""The proxy follows the client configuration 'nitro-llm up' rewrites on every start: a replaced file
with a new configuration gets a new backend (nothing carried over); the same configuration, or a
missing or unreadable file (a stack being set up), keeps the last one. tests/cli covers the same on
real processes (test_proxy_follows_the_stack.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nitro_llm.client.config import ClientConfig
from nitro_llm.client.errors import NoLocalStack
from nitro_llm.proxy.config_following import ConfigFollowingBackend


class StubBackend:
    """Says which configuration it was built for."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.model_id = config.model

    def stream(self, messages, **options):
        yield from ()

    def describe(self):
        return {"gateway": self.config.gateway_url, "token": self.config.api_token}


def _write(path: Path, port: int, token: str, model: str = "default") -> None:
    ClientConfig(gateway_url=f"http://127.0.0.1:{port}", key_id="alias/k", api_token=token, model=model).save(
        path
    )


def test_a_new_configuration_gets_a_new_backend_and_a_broken_file_keeps_the_last(tmp_path):
    path = tmp_path / "client.json"
    _write(path, 4001, "first")
    built: list[StubBackend] = []

    def build(config: ClientConfig) -> StubBackend:
        built.append(StubBackend(config))
        return built[-1]

    following = ConfigFollowingBackend(path, build)
    assert following.describe() == {"gateway": "http://127.0.0.1:4001", "token": "first"}
    _write(path, 4001, "first")  # rewritten with the same content: nothing to follow
    assert following.describe()["token"] == "first" and len(built) == 1

    _write(path, 4001, "second", model="other")  # 'up' restarted: same port, new token
    assert following.describe() == {"gateway": "http://127.0.0.1:4001", "token": "second"}
    assert len(built) == 2 and following.switches == 1 and following.model_id == "other"

    path.write_text("{half a file")
    assert following.describe()["token"] == "second"
    path.unlink()
    assert following.describe()["token"] == "second" and following.probe() is None
    _write(path, 4002, "third")
    assert following.describe() == {"gateway": "http://127.0.0.1:4002", "token": "third"}
    assert len(built) == 3


def test_without_a_configuration_the_proxy_still_fails_at_start(tmp_path):
    with pytest.raises(NoLocalStack):
        ConfigFollowingBackend(tmp_path / "client.json", StubBackend)
