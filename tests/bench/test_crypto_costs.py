"""The per-request cryptography numbers shown beside scenario (a): both HPKE suites, and a real
AWS attestation document verified first time and cached."""

from vectors import vectors_dir

from nitro_llm_dev.bench.speed.crypto_costs import crypto_costs


def test_crypto_costs_cover_both_suites_and_a_real_document(monkeypatch):
    monkeypatch.setenv("NITRO_LLM_TEST_VECTORS", str(vectors_dir()))
    costs = crypto_costs(iterations=5)
    assert set(costs["hpke_seal_open_us"]) == {"x25519", "mlkem768-x25519"}
    assert all(0 < v < 1_000_000 for v in costs["hpke_seal_open_us"].values())
    verify = costs["attestation_verify_ms"]
    assert 0 < verify["cached_ca_bundle"] and 0 < verify["first_document"]
