import re
from pathlib import Path

import pytest

from storagecarbon.devicedb import DeviceDB
from storagecarbon.errors import UnknownKeyError, ValidationError


def test_shipped_db_is_large_sourced_and_covers_required_kinds(db):
    # GIVEN the shipped device_db  THEN it has >= 30 sourced devices of every required kind
    assert len(db.devices) >= 30
    kinds = {d.kind for d in db.devices.values()}
    assert {"gpu", "dram", "ssd", "hdd"} <= kinds and ({"host", "cpu"} & kinds)
    for d in db.devices.values():
        if d.embodied_kgco2e is not None:
            assert len(d.embodied_kgco2e.source) > 10, d.key
            lo, c, hi = d.embodied_total_triple()
            assert 0 <= lo <= c <= hi, d.key
        assert d.lifetime_years.source
    assert len(db.regions) >= 15
    assert db.pue


@pytest.mark.parametrize("name", ["h100-sxm5", "h200", "a100-sxm4-80gb", "a100-40gb", "v100", "l4-", "t4-"])
def test_required_gpus_present(db, name):
    assert any(d.key.startswith(name) for d in db.of_kind("gpu")), name


def test_nvml_alias_lookup_is_exact(db):
    dev = db.get("NVIDIA H100 80GB HBM3")
    assert dev.kind == "gpu" and dev.capacity_gb == 80
    assert db.resolve("NVIDIA H100 80GB") is None  # no fuzzy matching


def test_unknown_key_lists_closest(db):
    with pytest.raises(UnknownKeyError) as e:
        db.get("h100-sxm-80gb")
    assert "closest known" in str(e.value) and "h100-sxm5-80gb" in str(e.value)


def _write_db(tmp_path: Path, text: str) -> Path:
    d = tmp_path / "db"
    d.mkdir()
    (d / "x.yaml").write_text(text)
    return d


GOOD = """devices:
  - key: disk-a
    kind: ssd
    name: Disk A
    capacity_gb: 100
    embodied_kgco2e: {per: gb, low: 0.005, best: 0.01, high: 0.16, method: per-gb-factor, source: "ACT ssd_western.yaml"}
    lifetime_years: {best: 5, source: "vendor warranty"}
"""


def test_tmp_db_loads_and_per_gb_scales(tmp_path):
    db = DeviceDB.load(_write_db(tmp_path, GOOD))
    assert db.get("disk-a").embodied_total_triple() == pytest.approx((0.5, 1.0, 16.0))


@pytest.mark.parametrize("mutation,field", [
    (("best: 0.01", "best: -1"), "embodied_kgco2e.best"),
    (("low: 0.005", "low: 0.5"), "embodied_kgco2e"),            # low > best
    (("capacity_gb: 100", "capacity_gb: 100\n    colour: red"), "colour"),
    (("kind: ssd", "kind: tape"), "kind"),
    (('source: "vendor warranty"', 'source: ""'), "lifetime_years.source"),
])
def test_bad_records_name_file_line_field(tmp_path, mutation, field):
    text = GOOD.replace(*mutation)
    with pytest.raises(ValidationError) as e:
        DeviceDB.load(_write_db(tmp_path, text))
    msg = str(e.value)
    assert re.match(r"^.*x\.yaml:\d+: devices\[0\]\.", msg), msg
    assert field in msg and "\n" not in msg


def test_duplicate_key_rejected(tmp_path):
    with pytest.raises(ValidationError, match="duplicate key"):
        DeviceDB.load(_write_db(tmp_path, GOOD + GOOD.replace("devices:\n", "")))
