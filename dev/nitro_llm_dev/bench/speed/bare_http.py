"""The baseline of scenario (b): the same HTTP server stack answering with the request body.

FastAPI on uvicorn with the gateway's own uvicorn options (its h11 protocol class with header
timeouts), no token check, no enclave hop, no cryptography: the floor any Python HTTP relay on
this machine stands on. Run as ``python -m nitro_llm_dev.bench.speed.bare_http PORT``.
"""

from __future__ import annotations

import sys

from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI(docs_url=None, redoc_url=None)


@app.post("/v1/infer")
async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/octet-stream")


def main() -> None:
    import uvicorn

    from nitro_llm.gateway.slow_clients import uvicorn_options

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        access_log=False,
        log_level="warning",
        **uvicorn_options(),
    )


if __name__ == "__main__":
    main()
