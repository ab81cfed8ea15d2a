"""The real local stack (KMS emulator, enclave, gateway processes) started for a benchmark.

Benchmarks measure the product as deployed locally, not an in-process shortcut: requests cross the
gateway's HTTP server, the Unix socket standing in for vsock, and the enclave process. The bench
client gets its own API token without rate limits (the stack's default client is limited to 100
requests/s, which would measure the limiter instead of the path).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from nitro_llm.errors import NitroLLMError
from nitro_llm.paths import state_dir
from nitro_llm_dev.local.stack import EnclaveOptions, LocalStack

BENCH_CLIENT = "bench"


class BenchStackError(NitroLLMError, code="bench_stack_failed"):
    """see the stack's logs under the bench directory; run 'nitro-llm up' to check the stack alone"""


def bench_dir() -> Path:
    path = state_dir() / "bench"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


@contextlib.contextmanager
def running_stack(
    *,
    engine: str,
    threads: int,
    batch_size: int = 8,
    max_waiting: int = 8,
    ctx: int = 8192,
    progress: Callable[[str], None] = lambda _m: None,
) -> Iterator[LocalStack]:
    root = Path(tempfile.mkdtemp(prefix=f"stack-{engine}-", dir=bench_dir()))
    options = EnclaveOptions(
        engine=engine, threads=threads, batch_size=batch_size, max_waiting=max_waiting, ctx=ctx
    )
    try:
        # The llama engine runs from the enclave image, as shipped; the echo engine (development
        # tooling, never in the image) from the source tree.
        enclave_from = "image" if engine == "llama" else "source"
        with LocalStack(root=root, enclave=options, enclave_from=enclave_from, progress=progress) as stack:
            yield stack
    finally:
        shutil.rmtree(root, ignore_errors=True)


def unlimited_token(stack: LocalStack, *, timeout: float = 15.0) -> str:
    """A token with no practical rate or concurrency limit, usable once the gateway reloaded its file."""
    from nitro_llm.gateway.auth import ClientLimits, add_client

    # Explicit, far-off limits: a client without its own gets the gateway's (low) defaults.
    limits = ClientLimits(rate_per_second=1e6, burst=1_000_000, max_concurrent=10_000)
    token = add_client(stack.api_tokens_file, BENCH_CLIENT, limits)
    deadline = time.monotonic() + timeout
    headers = {"authorization": f"Bearer {token}", "content-type": "application/cbor"}
    while time.monotonic() < deadline:
        # An empty body is refused as a bad request once the token is known, as unauthorized before.
        reply = httpx.post(f"{stack.gateway_url}/v1/infer", content=b"", headers=headers, timeout=5)
        if reply.status_code != 401:
            return token
        time.sleep(0.2)
    raise BenchStackError("the gateway did not pick up the bench's API token")


def enclave_stats(stack: LocalStack) -> dict[str, object]:
    reply = httpx.get(
        f"{stack.gateway_url}/v1/enclave/stats", headers=stack.client_config().auth_headers(), timeout=10
    )
    reply.raise_for_status()
    return dict(reply.json())
