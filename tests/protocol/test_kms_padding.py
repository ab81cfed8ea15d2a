"""The "kms" protocol pads like the "attested" one: request and chunk ciphertexts fall on size buckets,
so the gateway cannot read a question's or a token's length off the wire (kms envelope v2)."""

import cbor2
import pytest

from nitro_llm.protocol.errors import EnvelopeError, EnvelopeVersionError
from nitro_llm.protocol.frame_codec import encode_frame
from nitro_llm.protocol.kms_envelope import (
    VERSION,
    KmsEnvelope,
    KmsHeader,
    ResponseOpener,
    ResponseSealer,
    open_request,
    seal_request,
)
from nitro_llm.protocol.padding import CHUNK_BUCKETS, REQUEST_BUCKETS

KEY = bytes(range(32))
EDK = b"\x01\x02" * 100
TAG = 16
HEADER = KmsHeader("ab" * 16, 1_700_000_000_000, "smollm2-135m", "chat", "cd" * 16, "alias/nitro-llm")


def _request(content: str) -> dict:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 8, "temperature": 0.0}


def _sealed(content: str) -> KmsEnvelope:
    return seal_request(KEY, HEADER, _request(content), edk=EDK)


def test_the_wire_version_is_two_and_version_one_is_refused_with_its_own_error():
    assert VERSION == 2 and _sealed("hi").to_map()["v"] == 2
    old = {**_sealed("hi").to_map(), "v": 1}  # an unpadded v1 client
    with pytest.raises(EnvelopeVersionError) as refused:
        KmsEnvelope.from_cbor(cbor2.dumps(old))
    assert refused.value.code == "unsupported_envelope_version"
    assert isinstance(refused.value, EnvelopeError)  # what callers already branch on


def test_requests_in_one_bucket_have_identical_wire_sizes():
    questions = ["hi", "what is my dose?", "a much longer question " * 30]
    envelopes = [_sealed(q) for q in questions]
    assert len({len(e.ct) for e in envelopes}) == 1
    assert len({len(e.to_cbor()) for e in envelopes}) == 1
    assert len(envelopes[0].ct) - TAG == REQUEST_BUCKETS.sizes[0]
    for question, envelope in zip(questions, envelopes, strict=True):
        assert open_request(KEY, envelope) == _request(question)


@pytest.mark.parametrize("length", [1, 900, 1500, 5000, 70_000])
def test_request_ciphertexts_fall_on_buckets(length):
    ct = _sealed("x" * length).ct
    assert len(ct) - TAG in REQUEST_BUCKETS.sizes
    assert len(ct) - TAG == REQUEST_BUCKETS.padded_size(len(ct) - TAG - 4)


def test_a_longer_question_moves_to_the_next_bucket():
    assert len(_sealed("x" * 5000).ct) > len(_sealed("hi").ct)


def _answer(texts, final_text=""):
    sealer = ResponseSealer(KEY, HEADER)
    frames = [sealer.seal(t) for t in texts]
    frames.append(
        sealer.seal(
            {"text": final_text, "finish_reason": "stop", "usage": {"completion_tokens": 7}}, final=True
        )
    )
    return frames


def test_chunks_of_different_length_in_one_bucket_have_identical_wire_sizes():
    """What the gateway sees: frame bytes. Same chunk count, different token and answer lengths."""
    a = _answer(("Yes", "."))
    b = _answer((" Paracetamol", " is an analgesic with a long name"), final_text="and more")
    sizes_a = [len(encode_frame(f)) for f in a]
    assert sizes_a == [len(encode_frame(f)) for f in b]
    assert len(set(sizes_a)) == 1  # the final chunk, with its usage map, is the same size as the others
    assert {len(f["ct"]) - TAG for f in a + b} == {CHUNK_BUCKETS.sizes[0]}
    opener = ResponseOpener(KEY, HEADER)
    assert (
        "".join(opener.open(f)["text"] for f in b) == " Paracetamol is an analgesic with a long nameand more"
    )
    opener.finish()


@pytest.mark.parametrize("length", [0, 300, 2000, 10_000, 40_000, 100_000])
def test_chunk_ciphertexts_fall_on_buckets(length):
    (chunk, _) = _answer(("y" * length,))
    padded = len(chunk["ct"]) - TAG
    assert padded in CHUNK_BUCKETS.sizes or padded % CHUNK_BUCKETS.sizes[-1] == 0
