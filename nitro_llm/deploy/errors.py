"""Errors of the deployment tools. Each hint says what to install, fix or run next; none carries
secrets (deployment handles none: measurements, ARNs and sizes are public)."""

from __future__ import annotations

from nitro_llm.errors import ConfigError, NitroLLMError


class DeployError(NitroLLMError, code="deploy_error"):
    pass


class DeployConfigError(ConfigError, code="deploy_config_error"):
    """fix the deployment config (see deploy/nitro-llm.toml for every key and its meaning)"""


class ToolMissing(DeployError, code="tool_missing"):
    pass


class ToolFailed(DeployError, code="tool_failed"):
    pass


class MeasurementsError(DeployError, code="measurements_invalid"):
    """pass the JSON that 'nitro-cli build-enclave' or 'nitro-cli describe-eif' printed, or the file
    'nitro-llm deploy build-eif' saved"""


class EnclaveMemoryTooSmall(DeployError, code="enclave_memory_too_small"):
    pass


class EifRejected(DeployError, code="eif_rejected"):
    """do not run this EIF: download the published EIF and manifest again, or rebuild from the
    manifest's inputs ('nitro-llm image build') and compare"""


class GatewayFilesError(DeployError, code="gateway_files_error"):
    """run 'sudo nitro-llm deploy gateway-files --config /etc/nitro-llm/deploy.toml' on the instance;
    it creates the gateway's folder, tokens file and TLS pair with the owner and modes the gateway needs"""


class SupervisorError(DeployError, code="supervisor_error"):
    """see the supervisor's log (journalctl -u nitro-llm-enclave) for the step that failed"""
