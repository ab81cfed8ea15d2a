"""The one way nitro-llm builds a KMS client, for AWS and for the emulator alike.

Only the endpoint differs between the two (``endpoint_url=None`` means AWS), so every caller runs
the same boto3 code path in tests, in the demo and in production. Timeouts are short and retries
bounded: a caller waiting on KMS is usually holding a user's request. A caller with its own retry
policy and total deadline (the enclave) asks for ``single_attempt``: botocore then never retries, and
each call's read timeout is the one its policy sets through ``attempt_budget``, so exactly one layer
retries and its deadline bounds every wait. The connection pool holds ``MAX_KMS_CONNECTIONS``
(nitro_llm/kms/connections.py says why every hop to KMS is sized from that one number).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config

from nitro_llm.kms import attempt_budget
from nitro_llm.kms.connections import MAX_KMS_CONNECTIONS
from nitro_llm.kms.errors import KmsConfigError
from nitro_llm.transport.address import is_loopback_host

CONNECT_TIMEOUT_S = 3
READ_TIMEOUT_S = 15
MAX_ATTEMPTS = 3


def make_kms_client(
    endpoint_url: str | None,
    credentials: Mapping[str, Any] | None,
    region: str,
    *,
    single_attempt: bool = False,
) -> Any:
    """Return a boto3 KMS client.

    ``credentials`` is an entry of the emulator's ``credentials.json`` (or any mapping with
    ``access_key_id``, ``secret_access_key`` and optionally ``session_token``; other fields such as
    ``arn`` are ignored). ``None`` uses boto3's default chain (environment, IMDS on EC2).
    ``single_attempt``: one HTTP attempt per call, a 1 s connect timeout and the read timeout of the
    enclosing ``attempt_budget.read_timeout`` block; for callers that retry themselves.
    """
    if not region:
        raise KmsConfigError("a region is required for KMS", hint="pass --region (e.g. us-east-1)")
    session_args: dict[str, Any] = {"region_name": region}
    if credentials is not None:
        try:
            session_args["aws_access_key_id"] = str(credentials["access_key_id"])
            session_args["aws_secret_access_key"] = str(credentials["secret_access_key"])
        except (KeyError, TypeError):
            raise KmsConfigError(
                "KMS credentials need access_key_id and secret_access_key",
                hint="pass one entry of the emulator's credentials.json, e.g. credentials['client']",
            ) from None
        token = credentials.get("session_token")
        if token:
            session_args["aws_session_token"] = str(token)
    config_args: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "read_timeout": READ_TIMEOUT_S,
        # total attempts, first one included (botocore's "max_attempts" would count retries only)
        "retries": {"total_max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        "max_pool_connections": MAX_KMS_CONNECTIONS,
    }
    if single_attempt:
        config_args["connect_timeout"] = attempt_budget.ATTEMPT_CONNECT_TIMEOUT_S
        config_args["retries"] = {"total_max_attempts": 1, "mode": "standard"}
    if endpoint_url is not None:
        _check_endpoint(endpoint_url)
        if is_loopback_host(urlsplit(endpoint_url).hostname or ""):
            config_args["proxies"] = {}  # a loopback emulator or relay must never go through an HTTP proxy
    session = boto3.session.Session(**session_args)
    client = session.client("kms", endpoint_url=endpoint_url, config=Config(**config_args))
    if single_attempt:
        client.meta.events.register("before-call.kms", _apply_attempt_read_timeout)
    return client


def _apply_attempt_read_timeout(context: dict[str, Any], **_kwargs: Any) -> None:
    """botocore reads a per-request ``read_timeout`` from the request context (``URLLib3Session``)."""
    timeout = attempt_budget.current_read_timeout()
    if timeout is not None:
        context["read_timeout"] = timeout


def _check_endpoint(endpoint_url: str) -> None:
    parts = urlsplit(endpoint_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise KmsConfigError(
            "the KMS endpoint must be an http(s) URL", hint="e.g. http://127.0.0.1:PORT for the emulator"
        )
    if parts.scheme == "http" and not is_loopback_host(urlsplit(endpoint_url).hostname or ""):
        raise KmsConfigError(
            "plain-http KMS endpoints are only allowed on loopback",
            hint="use https for a remote KMS; the emulator listens on 127.0.0.1",
        )
