"""The KMS path of local mode, in one test process, for tests that need KMS to behave like KMS.

Real pieces on loopback: the KMS emulator (HTTP on 127.0.0.1, SigV4, key policies with attestation
conditions, CMS answers), a key whose policy names the emulated NSM's PCRs, and an enclave server
(echo engine) whose key release is the product's own (``runtime.open_key_release``: boto3, one
attempt per call, the retry policy). Optionally the two relays between them, as in local mode: the
gateway's KMS relay (the vsock-proxy stand-in, bounded like vsock-proxy's workers) and the
in-enclave forwarder.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from nitro_llm.enclave.config import EnclaveConfig
from nitro_llm.enclave.key_release import KeyRelease
from nitro_llm.enclave.runtime import KmsSettings, open_key_release
from nitro_llm.enclave.server import EnclaveServer
from nitro_llm.kms.client import make_kms_client
from nitro_llm.kms.connections import MAX_KMS_CONNECTIONS
from nitro_llm.kms.key_policy import build_key_policy
from nitro_llm.protocol import frame_kinds
from nitro_llm.protocol.frame_codec import encode_frame, read_frame
from nitro_llm.protocol.kms_envelope import KmsHeader, ResponseOpener, new_id, seal_request
from nitro_llm.transport import close_listener, connect, listen
from nitro_llm.transport.relay import Relay
from nitro_llm_dev.engines.echo import EchoEngine
from nitro_llm_dev.kms_emulator.server import EmulatorConfig, EmulatorServer
from nitro_llm_dev.nsm import open_emulated_nsm
from nitro_llm_dev.nsm.devca import DevCA

REGION = "us-east-1"
ALIAS = "alias/kms-path"
PCRS = {0: b"\x11" * 48, 1: b"\x22" * 48, 2: b"\x33" * 48}


@dataclass
class KmsPath:
    emulator: EmulatorServer
    server: EnclaveServer
    key_release: KeyRelease
    address: str
    key_arn: str
    relay: Relay | None = None
    forwarder: Relay | None = None
    _closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def credentials_file(self) -> Path:
        return self.emulator.config.state_dir / "credentials.json"

    @property
    def enclave_role_file(self) -> Path:
        """What a gateway is given: the enclave role's credentials alone."""
        return self.emulator.config.state_dir / "enclave-role.json"

    def credentials(self) -> dict[str, Any]:
        return json.loads(self.credentials_file.read_text())

    def kms(self, who: str) -> Any:
        return make_kms_client(self.emulator.url, self.credentials()[who], REGION)

    def give_credentials(self) -> None:
        role = self.credentials()["enclave_role"]
        creds = frame_kinds.Credentials(
            role["access_key_id"],
            role["secret_access_key"],
            role.get("session_token"),
            role.get("expiration"),
        )
        assert call(self.address, frame_kinds.credentials_frame(creds)) == [{"t": "ok"}]

    def create_key(self, alias: str) -> str:
        """Another key the enclave may use (same policy); returns its ARN."""
        admin = self.kms("admin")
        arn = admin.create_key(Policy=json.dumps(self._policy()))["KeyMetadata"]["Arn"]
        admin.create_alias(AliasName=alias, TargetKeyId=arn)
        return str(arn)

    def _policy(self) -> dict[str, Any]:
        creds = self.credentials()
        return build_key_policy(
            account=creds["account"],
            admin_arn=creds["admin"]["arn"],
            client_arns=[creds["client"]["arn"]],
            enclave_role_arn=creds["enclave_role"]["arn"],
            pcrs={i: v.hex() for i, v in PCRS.items()},
        )

    def close(self) -> None:
        for closer in reversed(self._closers):
            closer()


def start_kms_path(
    root: Path,
    *,
    relay_workers: int | None = None,
    session_lifetime: timedelta | None = None,
    kms_clock: Callable[[], datetime] | None = None,
    nsm_clock: Callable[[], datetime] | None = None,
    clock_ms: Callable[[], int] | None = None,
    config: EnclaveConfig | None = None,
) -> KmsPath:
    """Start it all under ``root``. ``relay_workers``: put the two relays between the enclave and the
    emulator, the gateway's bounded to that many connections (None: the enclave talks to the emulator
    directly). ``kms_clock``: the emulator's now; ``nsm_clock``: the NSM's; ``clock_ms``: the
    enclave server's freshness clock (default: the real wall clock)."""
    closers: list[Callable[[], None]] = []
    try:
        ca = DevCA.load_or_create(root / "dev-ca")
        emulator_config = EmulatorConfig(
            state_dir=root / "kms",
            region=REGION,
            trust_roots=[ca.root_certificate],
            session_lifetime=session_lifetime,
        )
        if kms_clock is not None:
            emulator_config.clock = kms_clock
        emulator = EmulatorServer(emulator_config).start()
        closers.append(emulator.shutdown)
        endpoint, relay, forwarder = emulator.url, None, None
        if relay_workers is not None:
            relay = Relay(
                f"unix:{root / 'kms-relay.sock'}",
                "tcp:" + emulator.url.removeprefix("http://"),
                max_connections=relay_workers,
            ).start()
            closers.append(relay.stop)
            forwarder = Relay(
                "tcp:127.0.0.1:0", relay.bound_address, max_connections=MAX_KMS_CONNECTIONS
            ).start()
            closers.append(forwarder.stop)
            endpoint = "http://" + forwarder.bound_address.removeprefix("tcp:")
        nsm = open_emulated_nsm(ca=ca, pcrs=PCRS, clock=nsm_clock)
        closers.append(nsm.close)
        key_release = open_key_release(KmsSettings(endpoint=endpoint, region=REGION), nsm)
        extra = {"clock_ms": clock_ms} if clock_ms is not None else {}
        server = EnclaveServer(
            engine=EchoEngine(),
            key_release=key_release,
            config=config or EnclaveConfig(engine="echo"),
            io_timeout=30.0,
            **extra,
        )
        address = f"unix:{root / 'enclave.sock'}"
        listener = listen(address)
        closers.append(lambda: close_listener(listener, address))
        server.start(listener)
        closers.append(server.stop)
        path = KmsPath(emulator, server, key_release, address, "", relay, forwarder, closers)
        path.key_arn = path.create_key(ALIAS)
        path.give_credentials()
        return path
    except BaseException:
        for closer in reversed(closers):
            closer()
        raise


def call(address: str, frame: Mapping[str, Any], timeout: float = 60.0) -> list[dict[str, Any]]:
    """One frame on a new connection to the enclave; every frame it answers, until it hangs up."""
    with connect(address, timeout) as sock:
        sock.sendall(encode_frame(dict(frame)))
        sock.shutdown(socket.SHUT_WR)
        out = []
        while (reply := read_frame(sock)) is not None:
            out.append(reply)
        return out


class Conversation:
    """The data owner's side of the kms protocol, against the emulator: one data key (so one cold
    Decrypt in the enclave) per conversation. ``key_id`` is what the header names."""

    def __init__(self, kms: Any, *, key_id: str = ALIAS, data_key_from: str = ALIAS) -> None:
        self.conversation_id = new_id()
        self.key_id = key_id
        context = {"nitro-llm:conversation": self.conversation_id}
        reply = kms.generate_data_key(KeyId=data_key_from, KeySpec="AES_256", EncryptionContext=context)
        self.data_key, self.edk = reply["Plaintext"], reply["CiphertextBlob"]

    def seal(self, text: str, *, timestamp_ms: int | None = None) -> tuple[KmsHeader, bytes]:
        header = KmsHeader.new(
            model="default", conversation_id=self.conversation_id, key_id=self.key_id, now_ms=timestamp_ms
        )
        request = {"messages": [{"role": "user", "content": text}], "max_tokens": 64, "temperature": 0.0}
        return header, seal_request(self.data_key, header, request, edk=self.edk).to_cbor()

    def ask(self, address: str, text: str, *, timestamp_ms: int | None = None) -> str:
        """Straight to the enclave's socket; an error frame is raised as the enclave's typed error."""
        header, envelope = self.seal(text, timestamp_ms=timestamp_ms)
        replies = call(address, frame_kinds.infer_frame(envelope))
        if replies and replies[-1]["t"] == "error":
            raise frame_kinds.read_error(replies[-1])
        opener = ResponseOpener(self.data_key, header)
        answer = "".join(opener.open(frame)["text"] for frame in replies)
        opener.finish()
        return answer
