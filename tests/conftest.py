import os
from pathlib import Path

import pytest

# Every test keeps traffic on loopback and telemetry off.
for k, v in {"VLLM_HOST_IP": "127.0.0.1", "DO_NOT_TRACK": "1", "VLLM_NO_USAGE_STATS": "1",
             "LMCACHE_TRACK_USAGE": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}.items():
    os.environ[k] = v

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def db():
    from storagecarbon.devicedb import DeviceDB

    return DeviceDB.load()


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite tests/golden/*.txt from the current reporters (same as STORAGECARBON_UPDATE_GOLDEN=1)")


@pytest.fixture(scope="session")
def update_golden(request) -> bool:
    return bool(request.config.getoption("--update-golden")) or os.environ.get("STORAGECARBON_UPDATE_GOLDEN") == "1"
