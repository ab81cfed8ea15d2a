"""The image's entry module reaches only the enclave's side of the product.

Everything ``nitro_llm.enclave.main`` can import goes into the image and its PCRs; the gateway, the
client side, deployment tooling, the CLI and the development package must not be among it."""

from __future__ import annotations

from nitro_llm.image.modules import DEFAULT_ENTRY, reachable

FORBIDDEN = (
    "nitro_llm.gateway",
    "nitro_llm.client",
    "nitro_llm.proxy",
    "nitro_llm.deploy",
    "nitro_llm.cli",
    "nitro_llm.image",
    "nitro_llm_dev",
)


def test_the_image_entry_is_the_enclave_main():
    assert DEFAULT_ENTRY == "nitro_llm.enclave.main"


def test_enclave_main_reaches_no_gateway_client_deploy_cli_or_dev_module():
    found = reachable("nitro_llm.enclave.main")
    assert {"nitro_llm.enclave.main", "nitro_llm.enclave.boot", "nitro_llm.enclave.runtime"} <= set(
        found.modules
    )
    bad = [m for m in found.modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert bad == []
    assert "typer" not in found.external and "nitro_llm_dev" not in found.external
    assert {"cryptography", "cbor2", "boto3", "llama_cpp"} <= set(found.external)
