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


# Longest files first (longest-processing-time order): with two xdist workers taking one file
# at a time, the long Flower-backed files then do not end up queued behind each other at the end.
_LONG_FIRST = (
    "test_deploy_federation.py",
    "test_simulation_e2e.py",
    "test_audit.py",
    "test_secure_aggregation.py",
    "test_privacy.py",
    "test_shop_training.py",
    "test_text.py",
)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = item.path.name
        return _LONG_FIRST.index(name) if name in _LONG_FIRST else len(_LONG_FIRST)

    items.sort(key=rank)  # stable: file order and the order inside each file are kept
