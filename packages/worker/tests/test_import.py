from importlib.metadata import version

import byockit.worker


def test_installed_version_matches_module() -> None:
    assert byockit.worker.__version__ == version("byockit-worker")
