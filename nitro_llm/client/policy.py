"""The client's attestation policy: which enclaves this user agrees to send questions to.

A small JSON file the user keeps and can share (it holds no secret): the trust root, the expected
PCRs, whether debug-mode enclaves are acceptable (never, in production), how old a document may be,
and optionally the model and config digests the enclave must announce. In the "attested" protocol
this file, not a KMS key policy, is what stands between a question and an enclave.

Danger is spelled out rather than implied: a root other than AWS's needs ``"unsafe_dev_root": true``
in the file, debug mode needs ``"allow_debug": true``, and both are logged as UNSAFE when loaded and
listed by :meth:`ClientPolicy.unsafe_reasons` for any UI to show; so is a maximum document age over
an hour (allowed, but a recorded document stays acceptable that long). A policy without PCR0 is
refused, because it would accept any enclave image signed by the root.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from nitro_llm.attestation import VerificationPolicy, load_root_pem
from nitro_llm.attestation.errors import TrustRootError
from nitro_llm.errors import ConfigError
from nitro_llm.protocol.hpke_suite import SUITES

log = logging.getLogger(__name__)

FORMAT = "nitro-llm-policy/1"
AWS_ROOT = "aws-nitro"
PCR_HEX_CHARS = 96
MAX_PCR_INDEX = 31
DEFAULT_MAX_AGE_SECONDS = 300
MAX_AGE_LIMIT_SECONDS = 24 * 3600
#: Above this, a loaded policy warns: a recorded document (and its session key) could be replayed that long.
LAX_MAX_AGE_SECONDS = 3600
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX96 = re.compile(r"[0-9a-f]{96}")
_PCR_INDEX = re.compile(r"[0-9]{1,2}")
_FIELDS = frozenset(
    {
        "format",
        "description",
        "trust_root",
        "unsafe_dev_root",
        "expected_pcrs",
        "allow_debug",
        "max_document_age_seconds",
        "model_digest",
        "config_digest",
        "accepted_suites",
    }
)


class PolicyFileError(ConfigError, code="client_policy_invalid"):
    """fix the policy file (see docs/CONTRACTS.md, 'client policy') or write a new one"""


@dataclass(frozen=True)
class TrustRoot:
    """Either the pinned AWS Nitro root (``pem is None``) or one explicitly chosen PEM certificate."""

    pem: str | None = None
    path: str | None = None  # where the PEM was read from, kept so that save() writes the same file back

    @property
    def is_aws(self) -> bool:
        return self.pem is None

    def certificates(self) -> list[x509.Certificate] | None:
        """``None`` means the AWS root, as ``verify_document`` expects."""
        if self.pem is None:
            return None
        try:
            certs = x509.load_pem_x509_certificates(self.pem.encode())
        except ValueError:
            raise PolicyFileError("the policy's trust_root is not a PEM certificate") from None
        if len(certs) != 1:
            raise PolicyFileError(f"the policy's trust_root holds {len(certs)} certificates; use exactly one")
        return certs


@dataclass(frozen=True)
class ClientPolicy:
    expected_pcrs: Mapping[int, bytes]
    trust_root: TrustRoot = field(default_factory=TrustRoot)
    unsafe_dev_root: bool = False
    allow_debug: bool = False
    max_document_age_seconds: int = DEFAULT_MAX_AGE_SECONDS
    model_digest: str | None = None
    config_digest: str | None = None
    accepted_suites: tuple[str, ...] = SUITES
    description: str = ""

    def __post_init__(self) -> None:
        pcrs = dict(self.expected_pcrs)
        if 0 not in pcrs:
            raise PolicyFileError(
                "the policy expects no PCR0, so it would accept any enclave image the root signed",
                hint="add expected_pcrs['0'] (from 'nitro-cli build-enclave' or 'nitro-llm attest pcrs')",
            )
        for index, value in pcrs.items():
            if type(index) is not int or not 0 <= index <= MAX_PCR_INDEX:
                raise PolicyFileError(f"expected PCR index {index!r} is not 0-{MAX_PCR_INDEX}")
            if not isinstance(value, bytes) or len(value) != PCR_HEX_CHARS // 2:
                raise PolicyFileError(
                    f"expected PCR{index} must be 48 bytes ({PCR_HEX_CHARS} hex characters)"
                )
        if not self.allow_debug and all(i in pcrs and not any(pcrs[i]) for i in (0, 1, 2)):
            raise PolicyFileError(
                "the policy expects all-zero PCR0-2, which only a debug-mode enclave reports",
                hint="expect the release measurements, or set allow_debug (UNSAFE) for local debugging",
            )
        object.__setattr__(self, "expected_pcrs", pcrs)
        if not isinstance(self.trust_root, TrustRoot):
            raise PolicyFileError("trust_root must be a TrustRoot")
        if not self.trust_root.is_aws and not self.unsafe_dev_root:
            raise PolicyFileError(
                "the policy trusts a root other than AWS's without saying so",
                hint='set "unsafe_dev_root": true for local mode, or use "trust_root": "aws-nitro"',
            )
        if self.trust_root.is_aws and self.unsafe_dev_root:
            raise PolicyFileError(
                "unsafe_dev_root is set but the trust root is AWS's",
                hint="remove unsafe_dev_root, or give the dev root's PEM",
            )
        self.trust_root.certificates()  # a bad PEM fails at load, not at the first question
        for name in ("unsafe_dev_root", "allow_debug"):
            if not isinstance(getattr(self, name), bool):
                raise PolicyFileError(f"{name} must be true or false")
        age = self.max_document_age_seconds
        if type(age) is not int or not 1 <= age <= MAX_AGE_LIMIT_SECONDS:
            raise PolicyFileError(
                f"max_document_age_seconds must be an integer from 1 to {MAX_AGE_LIMIT_SECONDS}"
            )
        for name in ("model_digest", "config_digest"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not _HEX64.fullmatch(value)):
                raise PolicyFileError(f"{name} must be 64 lowercase hex characters (SHA-256) or null")
        suites = tuple(self.accepted_suites)
        if not suites or any(s not in SUITES for s in suites) or len(set(suites)) != len(suites):
            raise PolicyFileError(f"accepted_suites must list one or more of {', '.join(SUITES)}")
        object.__setattr__(self, "accepted_suites", suites)
        if not isinstance(self.description, str) or len(self.description) > 1000:
            raise PolicyFileError("description must be text of at most 1000 characters")

    # --- what the policy means ---------------------------------------------------------------

    def unsafe_reasons(self) -> list[str]:
        """Why this policy would be wrong in production; empty for a production policy."""
        reasons = []
        if self.unsafe_dev_root:
            reasons.append("UNSAFE dev root: documents signed by a local CA are accepted (local mode only)")
        if self.allow_debug:
            reasons.append("UNSAFE debug mode allowed: a debug enclave's memory is readable by its host")
        if self.max_document_age_seconds > LAX_MAX_AGE_SECONDS:
            reasons.append(
                f"LAX freshness: attestation documents up to {self.max_document_age_seconds} s old are"
                f" accepted, so a recorded one can be replayed that long; use {LAX_MAX_AGE_SECONDS} s or less"
            )
        return reasons

    def roots(self) -> list[x509.Certificate] | None:
        return self.trust_root.certificates()

    def checks(self) -> list[str]:
        """What verifying a document against this policy checks, for people ("PCR0-2 pinned", ...)."""
        out = [f"{pcr_span(sorted(self.expected_pcrs))} pinned", "nonce fresh"]
        out.append(f"document at most {self.max_document_age_seconds} s old")
        if not self.allow_debug:
            out.append("no debug mode")
        if self.model_digest is not None:
            out.append("model pinned")
        out.append(f"root {self.root_name()}")
        return out

    def root_name(self) -> str:
        """The trust root as a person can recognise it: AWS's, or the PEM's name and fingerprint."""
        certs = self.trust_root.certificates()
        if certs is None:
            return "AWS Nitro (pinned)"
        cert = certs[0]
        names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        name = str(names[0].value) if names else cert.subject.rfc4514_string()
        fingerprint = cert.fingerprint(hashes.SHA256()).hex()
        return f"{name[:64]} (SHA-256 {fingerprint[:16]}…)"  # unsafe_reasons() says it is a dev root

    def verification_policy(self, *, nonce: bytes, user_data: bytes) -> VerificationPolicy:
        """The attestation layer's policy for one document: ours plus this exchange's nonce and binding."""
        return VerificationPolicy(
            expected_pcrs=self.expected_pcrs,
            allow_debug=self.allow_debug,
            nonce=nonce,
            max_age=dt.timedelta(seconds=self.max_document_age_seconds),
            user_data=user_data,
        )

    def warn_if_unsafe(self) -> None:
        for reason in self.unsafe_reasons():
            log.warning("client policy: %s", reason)

    # --- the file ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        root: Any = AWS_ROOT
        if self.trust_root.path is not None:
            root = {"pem_file": self.trust_root.path}
        elif self.trust_root.pem is not None:
            root = {"pem": self.trust_root.pem}
        return {
            "format": FORMAT,
            "description": self.description,
            "trust_root": root,
            "unsafe_dev_root": self.unsafe_dev_root,
            "expected_pcrs": {str(i): v.hex() for i, v in sorted(self.expected_pcrs.items())},
            "allow_debug": self.allow_debug,
            "max_document_age_seconds": self.max_document_age_seconds,
            "model_digest": self.model_digest,
            "config_digest": self.config_digest,
            "accepted_suites": list(self.accepted_suites),
        }

    @classmethod
    def from_dict(cls, data: Any, *, base_dir: Path | None = None) -> ClientPolicy:
        """Strict: unknown keys are refused, so a misspelt "allow_debug" cannot silently mean false."""
        if not isinstance(data, Mapping):
            raise PolicyFileError("a policy must be a JSON object")
        if data.get("format") != FORMAT:
            raise PolicyFileError(f'a policy must start with "format": "{FORMAT}"')
        if unknown := sorted(str(k) for k in set(data) - _FIELDS):
            raise PolicyFileError(f"the policy has unknown fields: {', '.join(unknown)}")
        if "expected_pcrs" not in data:
            raise PolicyFileError("the policy has no expected_pcrs")
        return cls(
            expected_pcrs=_pcrs(data["expected_pcrs"]),
            trust_root=_trust_root(data.get("trust_root", AWS_ROOT), base_dir),
            unsafe_dev_root=data.get("unsafe_dev_root", False),
            allow_debug=data.get("allow_debug", False),
            max_document_age_seconds=data.get("max_document_age_seconds", DEFAULT_MAX_AGE_SECONDS),
            model_digest=data.get("model_digest"),
            config_digest=data.get("config_digest"),
            accepted_suites=_suites(data.get("accepted_suites", list(SUITES))),
            description=data.get("description", ""),
        )

    @classmethod
    def load(cls, path: str | Path) -> ClientPolicy:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyFileError(
                f"cannot read the policy file {path} ({exc.strerror})",
                hint="pass --policy with the path of a policy file",
            ) from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            line = getattr(exc, "lineno", "?")
            raise PolicyFileError(f"the policy file {path} is not JSON (line {line})") from None
        policy = cls.from_dict(data, base_dir=path.parent)
        policy.warn_if_unsafe()
        return policy

    def save(self, path: str | Path) -> None:
        """Atomic write; world-readable on purpose: a policy is meant to be shared and holds no secret."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o644)
        tmp.replace(path)


def pcr_span(indices: list[int]) -> str:
    """``[0, 1, 2]`` -> "PCR0-2"; ``[0, 1, 2, 8]`` -> "PCR0-2, PCR8"."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and index == runs[-1][-1] + 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    return ", ".join(f"PCR{r[0]}-{r[-1]}" if len(r) > 1 else f"PCR{r[0]}" for r in runs)


def _pcrs(raw: Any) -> dict[int, bytes]:
    if not isinstance(raw, Mapping) or not raw:
        raise PolicyFileError('expected_pcrs must be an object like {"0": "<96 hex>", ...}')
    out: dict[int, bytes] = {}
    for key, value in raw.items():
        # ASCII digits only: str.isdigit() and int() would also take "٠" (Arabic-Indic zero) as 0
        if not isinstance(key, str) or not _PCR_INDEX.fullmatch(key) or not 0 <= int(key) <= MAX_PCR_INDEX:
            raise PolicyFileError(f"expected_pcrs key {str(key)[:8]!r} is not a PCR index 0-{MAX_PCR_INDEX}")
        if not isinstance(value, str) or not _HEX96.fullmatch(value.lower()):
            raise PolicyFileError(f"expected PCR{key} must be {PCR_HEX_CHARS} hex characters")
        out[int(key)] = bytes.fromhex(value)
    return out


def _trust_root(raw: Any, base_dir: Path | None) -> TrustRoot:
    if raw == AWS_ROOT:
        return TrustRoot()
    if isinstance(raw, Mapping) and set(raw) == {"pem"} and isinstance(raw["pem"], str):
        return TrustRoot(pem=raw["pem"])
    if isinstance(raw, Mapping) and set(raw) == {"pem_file"} and isinstance(raw["pem_file"], str):
        file = Path(raw["pem_file"])
        if not file.is_absolute() and base_dir is not None:
            file = base_dir / file
        try:
            cert = load_root_pem(file)
        except TrustRootError as exc:
            raise PolicyFileError(f"the policy's trust_root: {exc.message}") from None
        return TrustRoot(pem=cert.public_bytes(Encoding.PEM).decode(), path=raw["pem_file"])
    raise PolicyFileError(f'trust_root must be "{AWS_ROOT}", {{"pem": "..."}} or {{"pem_file": "path"}}')


def _suites(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        raise PolicyFileError("accepted_suites must be a list of suite names")
    return tuple(raw)
