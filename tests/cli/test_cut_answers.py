"""`nitro-llm ask` prints an answer as it arrives, so an answer that stops early must say so where it
is printed: on standard output, as its last line, not only in an error on standard error. Real
processes: the installed command against a gateway on a loopback port and the real enclave server."""

from nitro_llm.protocol.frame_codec import encode_frame

CUT = "[answer cut off: "


def test_an_answer_cut_by_max_tokens_is_marked_on_stdout(stack, nitro):
    stack()
    result = nitro("ask", "--max-tokens", "3", "one two three four five")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "one two three \n[answer cut off: it reached max_tokens (3)]\n"
    assert "--max-tokens" in result.stderr
    whole = nitro("ask", "--max-tokens", "9", "one two three")
    assert whole.returncode == 0 and whole.stdout == "one two three\n"  # no notice on a whole answer


def cut_after(frames_kept: int):
    """A hostile gateway: relays the answer's first frames, then ends the HTTP body cleanly, as if the
    answer were complete. Only the protocol (no final chunk) can tell."""

    def wrap(app):
        async def hostile(scope, receive, send):
            if scope["type"] != "http" or scope["path"] != "/v1/infer":
                return await app(scope, receive, send)
            buffer = bytearray()
            kept = 0
            ended = False

            async def relay(message):
                nonlocal kept, ended
                if message["type"] != "http.response.body":
                    return await send(message)
                if ended:
                    return None
                buffer.extend(message.get("body", b""))
                out = bytearray()
                while len(buffer) >= 4 and kept < frames_kept:
                    size = 4 + int.from_bytes(buffer[:4], "big")
                    if len(buffer) < size:
                        break
                    out += buffer[:size]
                    del buffer[:size]
                    kept += 1
                ended = kept >= frames_kept or not message.get("more_body", False)
                await send({"type": "http.response.body", "body": bytes(out), "more_body": not ended})
                return None

            await app(scope, receive, relay)

        return hostile

    return wrap


def test_an_answer_cut_mid_stream_is_marked_on_stdout(stack, nitro):
    stack(wrap=cut_after(3))
    result = nitro("ask", "alpha beta gamma delta epsilon zeta eta theta")
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert lines[0].startswith("alpha")  # some of the answer was printed before the cut ...
    assert lines[-1].startswith(CUT) and lines[-1].endswith("]")  # ... and stdout says it is cut
    code = lines[-1][len(CUT) : -1]
    assert code == "response_truncated" and f"error [{code}]" in result.stderr  # as on stderr
    assert "theta" not in result.stdout


def test_frames_are_length_prefixed_as_the_hostile_gateway_assumes():
    assert encode_frame({"t": "x"})[:4] == (len(encode_frame({"t": "x"})) - 4).to_bytes(4, "big")
