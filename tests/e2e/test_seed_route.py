"""Users of the AWS sample keep their client: its exact request and response shapes work through the
seed-compatible route, which is off unless both the gateway and the (measured) enclave enable it."""

from __future__ import annotations

import base64
import os

import httpx
import pytest

from nitro_llm.kms.client import make_kms_client
from nitro_llm_dev.local.stack import KEY_ALIAS, EnclaveOptions, LocalStack

pytestmark = [pytest.mark.slow, pytest.mark.model]


@pytest.fixture(scope="module")
def seed_stack(tmp_path_factory):
    threads = int(os.environ.get("NITRO_LLM_TEST_THREADS", "1"))
    options = EnclaveOptions(engine="llama", threads=threads, seed_compat=True)
    with LocalStack(root=tmp_path_factory.mktemp("seed-stack"), enclave=options, seed_route=True) as stack:
        yield stack


def seed_chatbot_round_trip(stack: LocalStack, question: str) -> httpx.Response:
    """What the seed's chatbot.py does, step by step, with the same field names."""
    creds = stack.credentials()["client"]
    kms = make_kms_client(stack.kms_url, creds, stack.region)
    blob = kms.encrypt(KeyId=KEY_ALIAS, Plaintext=question)["CiphertextBlob"]
    server_request = {
        "access_key_id": creds["access_key_id"],
        "secret_access_key": creds["secret_access_key"],
        "token": creds.get("session_token") or "",
        "region": stack.region,
        "ciphertext": base64.b64encode(blob).decode(),
    }
    return httpx.post(stack.gateway_url + "/", json=server_request, timeout=300)


def test_seed_client_gets_an_answer(seed_stack):
    response = seed_chatbot_round_trip(seed_stack, "What color is the sky on a clear day?")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"EncryptedData"}
    kms = make_kms_client(seed_stack.kms_url, seed_stack.credentials()["client"], seed_stack.region)
    answer = kms.decrypt(CiphertextBlob=base64.b64decode(body["EncryptedData"]))["Plaintext"].decode()
    assert "blue" in answer.lower()
    assert "What color" not in seed_stack.gateway.log_path.read_text()


def test_seed_route_rejects_malformed_requests(seed_stack):
    r = httpx.post(seed_stack.gateway_url + "/", json={"ciphertext": "x"}, timeout=30)
    assert r.status_code == 400
    assert r.json()["code"] == "bad_seed_request"


def test_seed_route_is_off_by_default(stack):
    r = httpx.post(stack.gateway_url + "/", json={"ciphertext": "x"}, timeout=30)
    assert r.status_code in (404, 405)


def test_seed_enclave_has_other_pcrs(seed_stack, stack):
    assert seed_stack.pcrs["0"] != stack.pcrs["0"]
