"""Parsers under fuzz: one function per input kind, shared by the hypothesis tests, the corpus
replay and the coverage-guided (atheris) runs.

Each target takes the raw input (text or bytes, exactly as a file would hold it) and returns a
short outcome (``"ok"`` or ``"error"``). The only exception allowed to escape a parser is the
project's own :class:`~storagecarbon.errors.StoragecarbonError`; anything else propagates and is a
bug. :func:`keep` saves an input that broke a parser into ``tests/corpus/<kind>/`` so that it is
replayed by every later run (``test_fuzz_corpus.py``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from functools import lru_cache
from pathlib import Path

from storagecarbon.errors import StoragecarbonError

CORPUS = Path(__file__).resolve().parent / "corpus"
ROOT = Path(__file__).resolve().parent.parent
KINDS = {"scenario": ".yaml", "device": ".yaml", "sweep": ".yaml", "yaml": ".yaml", "trace": ".arrows", "csv": ".csv"}


@lru_cache(maxsize=1)
def db():
    from storagecarbon.devicedb import DeviceDB

    return DeviceDB.load()


@lru_cache(maxsize=1)
def workdir() -> Path:
    """One scratch directory per process (in /dev/shm where it exists: no disk IO per input)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    d = Path(tempfile.mkdtemp(prefix="storagecarbon-fuzz-", dir=base))
    (d / "grid").mkdir()
    (d / "grid" / "ok.csv").write_text("timestamp,gco2e_per_kwh\n2024-01-01T00:00Z,100\n2024-01-01T01:00Z,120\n")
    (d / "db").mkdir()
    return d


def _text(data: bytes | str) -> str:
    return data if isinstance(data, str) else data.decode("utf-8", "replace")


def scenario(data: bytes | str) -> str:
    from storagecarbon.scenario import parse_scenario

    try:
        scn = parse_scenario(_text(data), "fuzz.yaml", db())
    except StoragecarbonError:
        return "error"
    scn.workload.num_requests()  # derived sizes stay computable
    scn.model.dims().param_count()
    return "ok"


def device(data: bytes | str) -> str:
    """A device_db directory holding this one file (what ``--db DIR`` reads)."""
    from storagecarbon.devicedb import DeviceDB

    d = workdir() / "db"
    (d / "fuzz.yaml").write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
    try:
        loaded = DeviceDB.load(d)
    except StoragecarbonError:
        return "error"
    for dev in loaded.devices.values():
        dev.embodied_total_triple()
    return "ok"


def sweep(data: bytes | str) -> str:
    from storagecarbon.plan.sweep import sweep_from_doc
    from storagecarbon.yamlio import parse_yaml

    try:
        sweep_from_doc(parse_yaml(_text(data), "fuzz-sweep.yaml"), db(), base_dir=workdir())
    except StoragecarbonError:
        return "error"
    return "ok"


def yaml_text(data: bytes | str) -> str:
    from storagecarbon.yamlio import parse_yaml

    try:
        doc = parse_yaml(_text(data), "fuzz.yaml")
    except StoragecarbonError:
        return "error"
    doc.line_of(("a", 0, "b"))
    return "ok"


def trace(data: bytes) -> str:
    from storagecarbon.trace import read_trace
    from storagecarbon.carbon.usage import aggregate

    p = workdir() / "fuzz.arrows"
    p.write_bytes(data)
    try:
        t = read_trace(p)
        aggregate(p)
    except StoragecarbonError:
        return "error"
    t.gaps  # noqa: B018 - parses gap markers
    return "ok"


def csv(data: bytes) -> str:
    from storagecarbon.carbon.grid import load_intensity_csv

    p = workdir() / "fuzz.csv"
    p.write_bytes(data)
    try:
        load_intensity_csv(p)
    except StoragecarbonError:
        return "error"
    return "ok"


TARGETS = {"scenario": scenario, "device": device, "sweep": sweep, "yaml": yaml_text, "trace": trace, "csv": csv}


def keep(kind: str, data: bytes | str) -> Path:
    """Save an input that broke a parser into the corpus (replayed by every later run)."""
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    path = CORPUS / kind / f"found-{hashlib.sha1(raw).hexdigest()[:16]}{KINDS[kind]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(raw)
    return path


def run(kind: str, data: bytes | str) -> str:
    """Run one target; an exception other than the project's own is kept in the corpus, then re-raised."""
    try:
        return TARGETS[kind](data)
    except Exception:
        keep(kind, data)
        raise
