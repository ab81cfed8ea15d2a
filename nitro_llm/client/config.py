"""What a client needs to reach a deployment: the gateway, KMS, its own credentials and the key.

`nitro-llm up` writes this for the local stack (``stack.json``) so that `ask` and `chat` work with
no flags; on AWS the same fields come from flags or the standard AWS credential chain.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from nitro_llm.client.errors import NoLocalStack
from nitro_llm.errors import ConfigError
from nitro_llm.paths import state_dir

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class ClientConfig:
    gateway_url: str
    key_id: str
    region: str = "us-east-1"
    kms_endpoint: str | None = None
    """None means real AWS KMS; the local stack points this at its emulator."""
    credentials: dict[str, str] | None = field(default=None, repr=False)
    """Access key, secret and optional session token; None means boto3's default chain."""
    model: str = "default"
    api_token: str | None = field(default=None, repr=False)
    """Bearer token for a gateway that requires one ('nitro-llm gateway-token'); never in reprs or logs."""
    ca_file: str | None = None
    """PEM certificate(s) to trust for the gateway's TLS instead of the system's CAs: a deployment
    whose gateway has its own certificate (deploy/README.md) hands clients that certificate. A
    relative path is taken from the configuration file's folder."""
    failover_attempts: int = 1
    """Tries per question when a replica is lost mid-request (``nitro_llm.client.failover``): more than 1
    behind a load balancer, where another replica can answer; 1 (no retry) for a single gateway."""

    def auth_headers(self) -> dict[str, str]:
        """The Authorization header for the gateway, or none if this client has no token."""
        return {"authorization": f"Bearer {self.api_token}"} if self.api_token else {}

    def gateway_http(self, *, read_timeout: float = 300.0) -> httpx.Client:
        """An HTTP client for this configuration's gateway: its API token, and its certificate as the
        only trust anchor when ``ca_file`` is set (a token is never sent over an unverified TLS)."""
        import httpx

        timeout = httpx.Timeout(10.0, read=read_timeout)
        return httpx.Client(timeout=timeout, headers=self.auth_headers(), verify=self.tls_verify())

    def tls_verify(self) -> ssl.SSLContext | bool:
        if self.ca_file is None:
            return True
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot use ca_file {self.ca_file} ({type(exc).__name__})",
                hint="point ca_file at the gateway's certificate (PEM), as deploy/README.md fetches it",
            ) from None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        data = asdict(self)
        if data["failover_attempts"] == 1:  # the default: left out, so older clients read the file too
            del data["failover_attempts"]
        tmp.write_text(json.dumps(data, indent=2))
        tmp.chmod(0o600)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ClientConfig:
        try:
            config = cls(**json.loads(path.read_text()))
            if config.ca_file is not None and not Path(config.ca_file).is_absolute():
                config = replace(config, ca_file=str(path.parent / config.ca_file))
            return config
        except FileNotFoundError:
            raise NoLocalStack(f"no client configuration at {path}") from None
        except (ValueError, TypeError) as exc:
            raise NoLocalStack(
                f"the client configuration at {path} is unreadable ({type(exc).__name__})",
                hint="restart the local stack with 'nitro-llm up' to rewrite it",
            ) from None


def local_stack_dir() -> Path:
    return state_dir() / "local"


def default_config_path() -> Path:
    return local_stack_dir() / "client.json"
