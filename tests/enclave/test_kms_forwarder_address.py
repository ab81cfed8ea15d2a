"""Where the in-enclave KMS forwarder listens, for local and real endpoints."""

import pytest

from nitro_llm.enclave.runtime import check_kms_name_is_local, forwarder_listen_address
from nitro_llm.errors import ConfigError


@pytest.mark.parametrize(
    ("endpoint", "address"),
    [
        ("http://127.0.0.1:8443", "tcp:127.0.0.1:8443"),
        ("https://kms.eu-west-1.amazonaws.com", "tcp:127.0.0.1:443"),
        ("https://kms-fips.us-gov-west-1.amazonaws.com", "tcp:127.0.0.1:443"),
        ("https://kms.cn-north-1.amazonaws.com.cn:443", "tcp:127.0.0.1:443"),
    ],
)
def test_listen_address(endpoint, address):
    assert forwarder_listen_address(endpoint) == address


@pytest.mark.parametrize(
    "endpoint",
    ["https://evil.example.com", "https://kms.eu-west-1.amazonaws.com.evil.com", "ftp://127.0.0.1:21", ""],
)
def test_other_hosts_refused(endpoint):
    with pytest.raises(ConfigError):
        forwarder_listen_address(endpoint)


def test_kms_name_must_resolve_to_loopback():
    check_kms_name_is_local("http://127.0.0.1:8443")
    with pytest.raises(ConfigError, match=r"does not resolve to 127\.0\.0\.1"):
        check_kms_name_is_local("https://kms.eu-west-1.amazonaws.com")  # no /etc/hosts entry on this host
