import os

import pytest

# Tests never touch the user's cache or the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")


@pytest.fixture(scope="session")
def text_cache(tmp_path_factory):
    """One text-embedding cache directory shared by the whole test session."""
    return tmp_path_factory.mktemp("text-cache")
