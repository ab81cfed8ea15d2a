"""Which protocol `ask`, `chat` and `proxy` speak, as a user meets it: a mistyped --policy is an
error (never a silent fallback to the kms protocol), the fallback without any policy is said out
loud, and options the chosen protocol would ignore (--hybrid, --policy with kms) are usage errors."""

import subprocess

import pytest


@pytest.mark.parametrize("command", ["ask", "chat"])
def test_a_policy_that_does_not_exist_fails_and_nothing_is_sent(nitro, recorder, command):
    args = [command, "--policy", "/nonexistent/policy.json"] + (["hi"] if command == "ask" else [])
    result = nitro(*args, stdin="hi\n/exit\n")
    assert result.returncode == 2, result
    assert "client_policy_missing" in result.stderr
    assert "/nonexistent/policy.json" in result.stderr
    assert recorder.requests == []  # neither the gateway nor KMS heard of this question
    assert "llm>" not in result.stdout


def test_attested_with_a_missing_policy_fails_the_same_way(nitro, home, recorder):
    result = nitro("ask", "--protocol", "attested", "--policy", "/nonexistent.json", "hi")
    assert result.returncode == 2 and "/nonexistent.json" in result.stderr
    assert recorder.requests == []


def test_without_any_policy_the_kms_fallback_is_said_on_stderr(nitro, home, recorder):
    result = nitro("ask", "hi")
    policy = home / "local" / "policy.json"
    assert f"no client policy at {policy}: using the kms protocol" in result.stderr
    assert "not this machine, checks the enclave" in result.stderr
    assert recorder.requests  # today's fallback is kept: the kms protocol went ahead (to KMS)


def test_an_explicit_protocol_says_nothing_about_a_fallback(nitro, home, recorder):
    result = nitro("ask", "--protocol", "kms", "hi")
    assert "no client policy" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["ask", "--protocol", "kms", "--hybrid", "hi"],
        ["ask", "--hybrid", "hi"],  # no policy anywhere: kms would be chosen, and --hybrid dropped
        ["chat", "--protocol", "kms", "--hybrid"],
        ["proxy", "--protocol", "kms", "--hybrid", "--port", "0"],
    ],
)
def test_hybrid_with_the_kms_protocol_is_a_usage_error(nitro, recorder, args):
    try:
        result = nitro(*args, stdin="hi\n/exit\n", timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{args[0]} ignored --hybrid and started")
    assert result.returncode == 2, result
    assert "--hybrid" in result.stderr and "attested" in result.stderr
    assert recorder.requests == []


@pytest.mark.parametrize(
    "args",
    [
        ["ask", "--protocol", "kms", "--policy", "p.json", "hi"],
        ["proxy", "--protocol", "kms", "--policy", "p.json", "--port", "0"],
    ],
)
def test_a_policy_with_the_kms_protocol_is_a_usage_error(nitro, recorder, args):
    try:
        result = nitro(*args, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{args[0]} ignored --policy and started")
    assert result.returncode == 2, result
    assert "--policy" in result.stderr
    assert recorder.requests == []
