"""Parse the three kinds of link address, so the rest of the code never asks which one it has."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Literal

from nitro_llm.transport.errors import AddressError, TransportUnavailableError

Kind = Literal["unix", "vsock", "tcp"]
MAX_PORT = 65535
MAX_VSOCK_PORT = 2**32 - 1


@dataclass(frozen=True)
class Address:
    kind: Kind
    path: str = ""  # unix
    host: str = ""  # tcp
    cid: int = 0  # vsock
    port: int = 0  # tcp, vsock

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "vsock":
            return f"vsock:{self.cid}:{self.port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"

    @property
    def family(self) -> int:
        if self.kind == "unix":
            return socket.AF_UNIX
        if self.kind == "vsock":
            family = getattr(socket, "AF_VSOCK", None)
            if family is None:
                raise TransportUnavailableError("this Python has no AF_VSOCK support")
            return family
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    @property
    def sockaddr(self) -> str | tuple[str, int] | tuple[int, int]:
        if self.kind == "unix":
            return self.path
        if self.kind == "vsock":
            return (self.cid, self.port)
        return (self.host, self.port)


def parse_address(text: str) -> Address:
    kind, sep, rest = text.partition(":")
    if not sep or not rest:
        raise AddressError(f"{text!r} is not an address")
    if kind == "unix":
        if "\x00" in rest:
            raise AddressError("a unix socket path cannot contain NUL")
        return Address("unix", path=rest)
    host, sep, port_text = rest.rpartition(":")
    if not sep or not host:
        raise AddressError(f"{text!r} needs a port after the last ':'")
    if kind == "vsock":
        cid = _vsock_cid(host)
        return Address("vsock", cid=cid, port=_number(port_text, MAX_VSOCK_PORT, text))
    if kind == "tcp":
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return Address("tcp", host=host, port=_number(port_text, MAX_PORT, text))
    raise AddressError(f"unknown address kind {kind!r} in {text!r}")


def _vsock_cid(text: str) -> int:
    if text.lower() == "any":
        return int(getattr(socket, "VMADDR_CID_ANY", 0xFFFFFFFF))
    return _number(text, 2**32 - 1, text)


def _number(text: str, high: int, whole: str) -> int:
    if not text.isdigit() or int(text) > high:
        raise AddressError(f"{text!r} in {whole!r} is not a number from 0 to {high}")
    return int(text)


def is_loopback_host(host: str) -> bool:
    """True for names and addresses that stay on this machine (127.0.0.0/8, ::1, localhost): where our
    servers listen unless told otherwise, and where plain http to KMS is acceptable."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
