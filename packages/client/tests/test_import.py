from importlib.metadata import version

import byockit.client


def test_installed_version_matches_module() -> None:
    assert byockit.client.__version__ == version("byockit-client")
