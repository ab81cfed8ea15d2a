"""``nitro-llm proxy`` survives restarts of the local stack: while the stack is down it claims no
current verification and refuses requests with a 503 that says why; once ``up`` runs again in the
same home (same gateway URL, new token and enclave) or on another port, the same proxy verifies the
new enclave afresh and answers. It used to keep the first stack's address and token for good (503
"start it with 'nitro-llm up'" while a stack ran). Real processes: ``up`` (echo engine, source-tree
enclave) and the proxy in the attested protocol, as a user starts them."""

from __future__ import annotations

from cli_processes import ProxyProcess, free_port


def _answer(proxy: ProxyProcess, question: str) -> str:
    reply = proxy.chat(question)
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]["message"]["content"]


def test_the_proxy_reconnects_to_a_restarted_stack_and_verifies_it_anew(up, nitro_command):
    first = up()
    proxy = ProxyProcess(*nitro_command)  # attested: 'up' wrote the client policy
    try:
        assert _answer(proxy, "hello through the proxy") == "hello through the proxy"
        before = proxy.verification()
        assert before["protocol"] == "attested" and before["state"] == "verified"
        assert before["gateway"] == first.gateway_url

        first.stop()
        down = proxy.verification()
        assert down["state"] == "unreachable" and down["verified"] is None and not down["reachable"]
        assert down["verified_at"] is None and down["valid_until"] is None  # no current verification
        assert down["last_verified_at"] == before["verified_at"]  # what was checked, and when
        assert down["checks"] == before["checks"] and down["checked_at"] >= before["verified_at"]
        assert down["unreachable_reason"].startswith(f"no gateway answers at {first.gateway_url}")
        refused = proxy.chat("anyone there?")
        assert refused.status_code == 503, refused.text
        error = refused.json()["error"]
        assert error["code"] == "gateway_unreachable" and "nitro-llm up" in error["message"]

        second = up()  # the same home: the gateway comes back at its URL, with a new token and enclave
        assert second.gateway_url == first.gateway_url
        assert _answer(proxy, "back again") == "back again"
        again = proxy.verification()
        assert again["state"] == "verified" and again["verified_at"] > before["verified_at"]
        assert again["descriptor_sha256"] != before["descriptor_sha256"]  # the new enclave's key

        second.stop()
        moved = up("--gateway-port", str(free_port()))  # elsewhere: followed through client.json
        assert moved.gateway_url != first.gateway_url
        assert _answer(proxy, "over here") == "over here"
        there = proxy.verification()
        assert there["state"] == "verified" and there["gateway"] == moved.gateway_url
        assert there["verified_at"] >= again["verified_at"]
        assert there["descriptor_sha256"] not in (before["descriptor_sha256"], again["descriptor_sha256"])
    finally:
        proxy.stop()
    assert "following the gateway at" in proxy.stderr
