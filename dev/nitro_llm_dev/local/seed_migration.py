"""What a client of the AWS sample needs to talk to ``nitro-llm up --seed-compat``, printed once.

Migrating used to take eight hand steps (emulator, measuring with --seed-compat, a measurements file,
the policy, the key, a gateway and an enclave with sixteen flags). ``up --seed-compat`` runs the
stack; this module says what the sample's ``chatbot.py`` must point at: the gateway's ``POST /``, the
KMS emulator's endpoint, the region, the key, and which credentials to sign with. Those are the
emulator's client principal's: they go to a 0600 file in the state directory and are never printed
(a terminal's scrollback and a CI log are not places for a secret access key). The example is a
complete client in the sample's request shape, so what is printed is also what is tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nitro_llm_dev.kms_emulator.storage import write_json_atomic
from nitro_llm_dev.local.stack import KEY_ALIAS, LocalStack

SEED_CREDENTIALS_FILE = "seed-client-credentials.json"
"""In the state directory, mode 0600: ``{access_key_id, secret_access_key, token}``, the seed's own
field names, so that the sample's ``credential`` dict is built from it unchanged."""

SNIPPET_START = "----- 8< ----- example client (Python, boto3) -----"
SNIPPET_END = "----- >8 -----"

WEAKER = (
    "WEAKER than nitro-llm's own protocols: the client's AWS credentials pass through this host (the "
    "gateway), which could use them to call KMS Decrypt on the questions itself; a captured request "
    "can be replayed (no request id or timestamp); questions and answers are capped at 4 KB. Use it "
    "to migrate, then move to 'nitro-llm ask' / 'chat' / 'proxy' (kms or attested protocol), which "
    "this same stack serves."
)


@dataclass(frozen=True)
class SeedInstructions:
    """Where the sample's client points, one labelled line each (``label: value``)."""

    seed_url: str
    """The sample's ``url``: the gateway's seed-compatible ``POST /``."""
    kms_endpoint: str
    """boto3's ``endpoint_url`` (the sample used AWS's, so it passed none)."""
    region: str
    key_id: str
    key_arn: str
    credentials_file: Path

    def fields(self) -> list[tuple[str, str]]:
        return [
            ("seed url", self.seed_url),
            ("kms endpoint", self.kms_endpoint),
            ("region", self.region),
            ("key id", self.key_id),
            ("key arn", self.key_arn),
            ("credentials file", str(self.credentials_file)),
        ]

    def snippet(self) -> str:
        """The sample's chatbot.py, cut to its request: encrypt with KMS, POST /, decrypt the answer.
        Standard library for HTTP (the sample's ``requests.post(url, json=...)`` does the same)."""
        return "\n".join(
            [
                "import base64, json, urllib.request",
                "import boto3",
                "",
                f'creds = json.load(open("{self.credentials_file}"))  # 0600: never printed',
                "kms = boto3.client(",
                f'    "kms", region_name="{self.region}", endpoint_url="{self.kms_endpoint}",',
                '    aws_access_key_id=creds["access_key_id"],',
                '    aws_secret_access_key=creds["secret_access_key"],',
                '    aws_session_token=creds["token"] or None,',
                ")",
                'question = input("Your Question: ")',
                f'blob = kms.encrypt(KeyId="{self.key_id}", Plaintext=question)["CiphertextBlob"]',
                "server_request = {  # the sample's request, field for field",
                '    "access_key_id": creds["access_key_id"],',
                '    "secret_access_key": creds["secret_access_key"],',
                '    "token": creds["token"],',
                f'    "region": "{self.region}",',
                '    "ciphertext": base64.b64encode(blob).decode(),',
                "}",
                "post = urllib.request.Request(",
                f'    "{self.seed_url}", data=json.dumps(server_request).encode(),',
                '    headers={"Content-Type": "application/json"},',
                ")",
                "reply = json.load(urllib.request.urlopen(post, timeout=300))",
                'answer = kms.decrypt(CiphertextBlob=base64.b64decode(reply["EncryptedData"]))["Plaintext"]',
                "print(answer.decode())",
            ]
        )

    def text(self) -> str:
        """Everything ``up --seed-compat`` prints after 'ready', as plain text (no markup)."""
        width = max(len(label) for label, _ in self.fields())
        rows = [f"  {label + ':':<{width + 1}} {value}" for label, value in self.fields()]
        return "\n".join(
            [
                "seed-compatible mode: the AWS sample's client format (POST / with its AWS credentials)",
                WEAKER,
                "The enclave was measured with --seed-compat (other PCRs), and the key's policy names them.",
                "Point the sample's chatbot.py at:",
                *rows,
                "  (the credentials are the KMS emulator's client principal: access_key_id, "
                "secret_access_key, token)",
                SNIPPET_START,
                self.snippet(),
                SNIPPET_END,
            ]
        )


def write_seed_credentials(path: Path, client: dict[str, Any]) -> Path:
    """The client principal's keys under the seed's field names, 0600 (atomically, never wider)."""
    write_json_atomic(
        path,
        {
            "access_key_id": client["access_key_id"],
            "secret_access_key": client["secret_access_key"],
            "token": client.get("session_token") or "",  # an IAM user's long-term keys have none
        },
    )
    return path


def seed_instructions(stack: LocalStack) -> SeedInstructions:
    """For a started stack: write the credentials file in its state directory, say where all is."""
    credentials = write_seed_credentials(stack.root / SEED_CREDENTIALS_FILE, stack.credentials()["client"])
    return SeedInstructions(
        seed_url=stack.gateway_url.rstrip("/") + "/",
        kms_endpoint=stack.kms_url,
        region=stack.region,
        key_id=KEY_ALIAS,
        key_arn=stack.key_arn,
        credentials_file=credentials,
    )
