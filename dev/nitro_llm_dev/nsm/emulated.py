"""The emulated NSM for local mode: answers the NSM's CBOR requests with real-format documents.

It behaves like the device from the caller's side (same request and response bytes) and issues
documents a verifier cannot tell apart by structure from AWS's: the NSM's field order, 16 PCRs of 48
bytes, a root-first cabundle, an untagged ES384 COSE_Sign1. Only the trust root differs, which is the
point: verifiers accept these documents only when told to trust the dev root.

PCR0-2 come from ``measure_enclave`` (what this enclave process really runs), PCR3 from the IAM role
ARN if one is given, PCR4 from the dev CA's instance ID, all others zero, as on hardware. The module
ID has the real shape, ``i-<instance>-enc<16 hex>``, with a fresh enclave ID per emulated boot.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping

import cbor2
from cryptography.hazmat.primitives import serialization

from nitro_llm import cbor_strict
from nitro_llm.attestation.cose import sign_es384
from nitro_llm.attestation.document import MAX_USER_FIELD_SIZE, PCR_LENGTH, encode_payload
from nitro_llm.attestation.errors import NsmError
from nitro_llm.attestation.nsm import messages
from nitro_llm.attestation.pcr import ZERO_PCR, pcr3_for_role_arn, pcr4_for_instance_id
from nitro_llm_dev.nsm.devca import DevCA

log = logging.getLogger(__name__)

#: PCRs a document lists: 0-15, all locked at boot on real enclaves.
DOCUMENT_PCRS = range(16)
MAX_PCRS = 32
RANDOM_BYTES = 256
VERSION = (1, 0, 0)


class EmulatedTransport:
    """Answers NSM requests in-process, signing with the dev CA."""

    kind = "emulated"

    def __init__(
        self,
        ca: DevCA,
        measured_pcrs: Mapping[int, bytes],
        *,
        role_arn: str | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        pcrs = {i: ZERO_PCR for i in range(MAX_PCRS)}
        for index, value in measured_pcrs.items():
            if index not in (0, 1, 2) or len(value) != PCR_LENGTH:
                raise NsmError(f"measured PCR{index} must be one of PCR0-2 and {PCR_LENGTH} bytes")
            pcrs[index] = bytes(value)
        if role_arn:
            pcrs[3] = pcr3_for_role_arn(role_arn)
        pcrs[4] = pcr4_for_instance_id(ca.instance_id)
        self._pcrs = pcrs
        self._ca = ca
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        boot_ms = int(time.time() * 1000) & 0xFFFF_FFFF_FFFF
        enclave_id = (boot_ms << 16) | secrets.randbits(16)
        self.module_id = f"{ca.instance_id}-enc{enclave_id:016x}"
        self._lock = threading.Lock()
        self._closed = False
        if all(not any(pcrs[i]) for i in (0, 1, 2)):
            log.warning("UNSAFE: emulated NSM in debug mode: PCR0-2 are zero, production verifiers reject it")

    @property
    def pcrs(self) -> dict[int, bytes]:
        return dict(self._pcrs)

    def exchange(self, request: bytes) -> bytes:
        if self._closed:
            raise NsmError("the emulated NSM was closed")
        if len(request) > messages.REQUEST_MAX_SIZE:
            return messages.error_response("InputTooLarge")
        try:
            decoded = cbor_strict.decode(
                request, what="NSM request", error=NsmError, max_size=messages.REQUEST_MAX_SIZE, max_depth=4
            )
            name, fields = messages.request_name(decoded)
        except Exception:
            return messages.error_response("InvalidArgument")
        handler = {
            "Attestation": self._attestation,
            "DescribeNSM": self._describe_nsm,
            "DescribePCR": self._describe_pcr,
            "GetRandom": self._get_random,
        }.get(name)
        if handler is None:
            return messages.error_response("InvalidOperation")
        return handler(fields)

    def close(self) -> None:
        self._closed = True

    def _attestation(self, fields: object) -> bytes:
        if not isinstance(fields, dict) or set(fields) - {"user_data", "nonce", "public_key"}:
            return messages.error_response("InvalidArgument")
        values = {k: fields.get(k) for k in ("user_data", "nonce", "public_key")}
        for value in values.values():
            if value is not None and type(value) is not bytes:
                return messages.error_response("InvalidArgument")
            if value is not None and len(value) > MAX_USER_FIELD_SIZE:
                return messages.error_response("InputTooLarge")
        return cbor2.dumps({"Attestation": {"document": self.sign_document(**values)}})

    def sign_document(
        self, *, user_data: bytes | None = None, nonce: bytes | None = None, public_key: bytes | None = None
    ) -> bytes:
        """A COSE_Sign1 document with a fresh 3-hour leaf, exactly in the NSM's format."""
        with self._lock:  # documents from one NSM are ordered; their leaves are independent
            now = self._clock()
            leaf, key = self._ca.issue_leaf(self.module_id, now)
            payload = encode_payload(
                module_id=self.module_id,
                timestamp=int(now.timestamp() * 1000),
                pcrs={i: self._pcrs[i] for i in DOCUMENT_PCRS},
                certificate=leaf.public_bytes(serialization.Encoding.DER),
                cabundle=self._ca.cabundle,
                public_key=public_key,
                user_data=user_data,
                nonce=nonce,
            )
            return sign_es384(key, payload)

    def _describe_nsm(self, _fields: object) -> bytes:
        major, minor, patch = VERSION
        body = {
            "version_major": major,
            "version_minor": minor,
            "version_patch": patch,
            "module_id": self.module_id,
            "max_pcrs": MAX_PCRS,
            "locked_pcrs": list(DOCUMENT_PCRS),
            "digest": "SHA384",
        }
        return cbor2.dumps({"DescribeNSM": body})

    def _describe_pcr(self, fields: object) -> bytes:
        index = fields.get("index") if isinstance(fields, dict) else None
        if type(index) is not int:
            return messages.error_response("InvalidArgument")
        if not 0 <= index < MAX_PCRS:
            return messages.error_response("InvalidIndex")
        return cbor2.dumps({"DescribePCR": {"lock": index in DOCUMENT_PCRS, "data": self._pcrs[index]}})

    def _get_random(self, _fields: object) -> bytes:
        return cbor2.dumps({"GetRandom": {"random": os.urandom(RANDOM_BYTES)}})
