"""`nitro-llm attest fetch` gets the enclave's attestation document from the gateway, with the client
configuration's API token as `ask` sends it, for `nitro-llm attest verify`: no curl, no token
copied by hand, no CBOR surgery. A hostile gateway's endless body is cut off while it streams."""

import subprocess

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from peak_memory import MeasuredCommand
from wire_tools import RunningServer

from nitro_llm.gateway.auth import add_client

NONCE = "5a" * 32


def test_fetch_then_verify_with_the_gateway_token(stack, nitro, tmp_path, home):
    tokens = tmp_path / "tokens.json"
    add_client(tokens, "someone-else")  # the gateway requires a token from now on
    deployment = stack(tokens_file=tokens)
    refused = nitro("attest", "fetch", "--out", str(tmp_path / "none.cbor"))
    assert refused.returncode == 1 and "[unauthorized]" in refused.stderr
    deployment.write_client_files(api_token=add_client(tokens, "me"))

    out = tmp_path / "doc.cbor"
    fetched = nitro("attest", "fetch", "--nonce", NONCE, "--out", str(out))
    assert fetched.returncode == 0, fetched.stderr
    assert "unverified" in fetched.stderr and f"--nonce {NONCE}" in fetched.stderr
    assert out.read_bytes()[:1] in (b"\x84", b"\xd2")  # COSE_Sign1, as the NSM returns it

    root = tmp_path / "root.pem"
    root.write_bytes(deployment.ca.root_pem)
    expect = [arg for i, v in deployment.enclave.pcrs.items() for arg in ("--expect-pcr", f"{i}={v.hex()}")]
    verified = nitro(
        "attest", "verify", str(out), "--root", str(root), "--nonce", NONCE, "--max-age", "60", *expect
    )
    assert verified.returncode == 0, verified.stderr
    wrong_nonce = nitro("attest", "verify", str(out), "--root", str(root), "--nonce", "00" * 32)
    assert wrong_nonce.returncode == 1


def test_fetch_takes_a_gateway_url_and_writes_to_stdout(stack, nitro_command):
    deployment = stack()
    command, env = nitro_command
    result = subprocess.run(
        [command, "attest", "fetch", "--gateway", deployment.gateway_url, "--out", "-"],
        capture_output=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout[:1] in (b"\x84", b"\xd2") and len(result.stdout) > 1000


def test_fetch_refuses_a_bad_nonce(nitro):
    short = nitro("attest", "fetch", "--gateway", "http://127.0.0.1:9", "--nonce", "abcd")
    assert short.returncode == 2 and "--nonce must be" in short.stderr
    not_hex = nitro("attest", "fetch", "--gateway", "http://127.0.0.1:9", "--nonce", "zz" * 32)
    assert not_hex.returncode == 2 and "Traceback" not in not_hex.stderr


def test_an_endless_attestation_body_is_cut_off_while_it_streams(nitro_command, tmp_path):
    """600 MB offered; the command stops reading after its cap and never holds the body."""
    hostile = FastAPI()
    served = {"bytes": 0}

    @hostile.get("/v1/attestation")
    def endless() -> StreamingResponse:
        def body():
            block = b"\0" * (1 << 20)
            for _ in range(600):
                served["bytes"] += len(block)
                yield block

        return StreamingResponse(body(), media_type="application/cbor")

    _command, env = nitro_command
    with RunningServer(hostile) as server:
        fetch = ["attest", "fetch", "--gateway", server.url, "--out", str(tmp_path / "d.cbor")]
        status, peak, stderr = MeasuredCommand(fetch, env, tmp_path / "peak").finish()
    assert status == 1, stderr
    assert "attestation_too_large" in stderr
    assert peak < 200 * 1024, f"peak {peak} KiB"  # far below the 600 MB offered
    assert served["bytes"] < 600 << 20  # the command hung up early
    assert not (tmp_path / "d.cbor").exists()
