"""The enclave link: one seam over Unix sockets (local mode), AF_VSOCK (Nitro) and TCP.

``listen(address)``, ``connect(address, timeout)`` and, for asyncio, ``open_connection(address,
timeout)`` take "unix:/path", "vsock:CID:PORT" or "tcp:HOST:PORT"; ``relay.Relay`` pumps bytes
between two addresses (the vsock-proxy stand-in and the in-enclave forwarder to KMS).
"""

from nitro_llm.transport.address import Address, parse_address
from nitro_llm.transport.link import close_listener, connect, listen, open_connection

__all__ = ["Address", "close_listener", "connect", "listen", "open_connection", "parse_address"]
