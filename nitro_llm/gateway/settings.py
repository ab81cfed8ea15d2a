"""Gateway configuration, from CLI flags or NITRO_LLM_GATEWAY_* environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from nitro_llm.gateway.credential_timing import MAX_PUSH_PERIOD_SECONDS, PUSH_PERIOD_SECONDS


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NITRO_LLM_GATEWAY_")

    enclave: str = "unix:/run/nitro-llm/enclave.sock"
    """Transport address of the enclave (unix:PATH locally, vsock:CID:PORT on Nitro)."""
    max_body_bytes: int = 8 * 1024 * 1024
    """Largest sealed request accepted; checked before the body is read in full (413)."""
    max_frame_bytes: int = 16 * 1024 * 1024
    connect_timeout: float = 5.0
    first_frame_timeout: float = 300.0
    """Time the enclave may take before its first answer frame (queueing plus prompt processing)."""
    idle_timeout: float = 60.0
    """Longest silence allowed between two answer frames."""
    credentials_refresh_seconds: float = Field(PUSH_PERIOD_SECONDS, gt=0, le=MAX_PUSH_PERIOD_SECONDS)
    """How often the role's credentials are handed to the enclave; at most half the IMDS refresh margin
    (nitro_llm/gateway/credential_timing.py says why)."""
    seed_route: bool = False
    """Accept the AWS sample's request format on POST / (weaker: the client's AWS credentials pass
    through this host). Off by default; for migrating seed clients only."""
