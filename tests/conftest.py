"""Shared test setup.

Device data: tests read a frozen copy of the device database, ``tests/data/device_db/``, not the one
that ships in ``storagecarbon/device_db/``, so that correcting a device figure does not change the
expected numbers of unrelated tests. ``$STORAGECARBON_DEVICE_DB`` (honoured by ``DeviceDB.load()``
and so by every command run without ``--db``, in-process or as a subprocess) points at it. Tests about
the shipped database itself (its size, coverage and sources) use the ``shipped_db`` fixture.
``tests/data/device_db/README.md`` says how to refresh the copy.
"""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FROZEN_DB_DIR = ROOT / "tests" / "data" / "device_db"

# Every test keeps traffic on loopback and telemetry off.
for k, v in {"VLLM_HOST_IP": "127.0.0.1", "DO_NOT_TRACK": "1", "VLLM_NO_USAGE_STATS": "1",
             "LMCACHE_TRACK_USAGE": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}.items():
    os.environ[k] = v
# The frozen device data (set it beforehand to run the suite on another copy, e.g. the shipped one).
os.environ.setdefault("STORAGECARBON_DEVICE_DB", str(FROZEN_DB_DIR))


@pytest.fixture(scope="session")
def db():
    """The device data tests compute with: the frozen copy."""
    from storagecarbon.devicedb import DeviceDB

    return DeviceDB.load()


@pytest.fixture(scope="session")
def shipped_db():
    """The device database that ships with storagecarbon (for tests about that data itself)."""
    from storagecarbon.devicedb import DEFAULT_DB_DIR, DeviceDB

    return DeviceDB.load(DEFAULT_DB_DIR)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite tests/golden/*.txt from the current reporters (same as STORAGECARBON_UPDATE_GOLDEN=1)")


@pytest.fixture(scope="session")
def update_golden(request) -> bool:
    return bool(request.config.getoption("--update-golden")) or os.environ.get("STORAGECARBON_UPDATE_GOLDEN") == "1"
