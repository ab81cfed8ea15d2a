"""A local AWS KMS that speaks the real JSON protocol, checks SigV4 and enforces key policies.

Run it with ``nitro-llm kms-emulator``; talk to it with boto3 via ``endpoint_url``. It exists so the
whole system, including the attestation-gated key release, runs and is tested on one machine.
"""

from nitro_llm_dev.kms_emulator.server import EmulatorConfig, EmulatorServer

__all__ = ["EmulatorConfig", "EmulatorServer"]
