import pytest

from nitro_llm_dev.nsm.devca import DevCA


@pytest.fixture(scope="session")
def dev_ca(tmp_path_factory):
    return DevCA.load_or_create(tmp_path_factory.mktemp("dev-ca") / "ca")


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory):
    return DevCA.load_or_create(tmp_path_factory.mktemp("other-ca") / "ca")
