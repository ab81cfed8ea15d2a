"""``nitro-llm bench``: how fast the confidential path is, each number beside a baseline from the same run.

Absolute times on a shared 2-core machine say little, so every scenario measures its own baseline
in the same run and reports the ratio: (a) full stack vs a direct llama.cpp call, (b) the protocol
path with the echo engine vs a bare HTTP echo, (c) the seed's transformers stack vs our GGUF engine
on the Bloom-560m shape, (d) many sessions vs one session and vs llama.cpp's own batched decode,
(e) KMS calls per request over a 10-turn chat vs the seed's one per request, (f) a chat's turns
with and without the enclave's KV cache, (g) 1 vs N inference threads, (h) the load balancer's hop in
a local fleet, (i) llama-cpp-python's own OpenAI-compatible server (the peer) vs our proxy and
clients, (j) start-up, from ``nitro-llm up`` to the first answer, phase by phase.
"""

SCENARIOS = "abcdefghij"
"""Every scenario's letter, in report order."""
