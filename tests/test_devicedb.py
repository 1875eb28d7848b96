import re
from pathlib import Path

import pytest
import yaml

from storagecarbon.devicedb import DB_ENV, DEFAULT_DB_DIR, DeviceDB, DeviceOverride
from storagecarbon.errors import UnknownKeyError, ValidationError
from storagecarbon.plan import sweep


def test_shipped_db_is_large_sourced_and_covers_required_kinds(shipped_db):
    # GIVEN the shipped device_db  THEN it has >= 30 sourced devices of every required kind
    db = shipped_db
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
def test_required_gpus_present(shipped_db, name):
    assert any(d.key.startswith(name) for d in shipped_db.of_kind("gpu")), name


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


# ------------------------------------------------------------------ the frozen copy the tests read


def test_frozen_copy_validates_and_is_what_tests_read(db, root):
    # GIVEN the frozen copy under tests/data/device_db/ (tests/conftest.py)
    frozen = root / "tests" / "data" / "device_db"
    # WHEN loaded with today's schema THEN every file validates and yields records
    copy = DeviceDB.load(frozen)
    assert len(copy.devices) >= 30 and copy.regions and copy.pue
    # AND it holds the same files as the shipped database (a refresh copies them all)
    assert sorted(p.name for p in frozen.glob("*.yaml")) == sorted(p.name for p in DEFAULT_DB_DIR.glob("*.yaml"))
    # AND the tests' database without --db is that copy, not the shipped one
    assert {Path(f).parent for f in db.files.values()} == {frozen}


def test_load_without_directory_honours_the_env_var(tmp_path, monkeypatch):
    # GIVEN $STORAGECARBON_DEVICE_DB naming a one-record directory
    monkeypatch.setenv(DB_ENV, str(_write_db(tmp_path, GOOD)))
    # WHEN loaded without a directory THEN that directory is read
    assert list(DeviceDB.load().devices) == ["disk-a"]


# ------------------------------------------------------------------ renamed fields (storagecarbon.renames)

OLD_BW = GOOD + """    read_gbps: {best: 6.5, source: "datasheet"}
    write_gbps: {best: 3.5, source: "datasheet"}
"""


def test_old_bandwidth_names_load_as_the_new_ones(tmp_path):
    # GIVEN a device record written with the old names read_gbps / write_gbps
    db = DeviceDB.load(_write_db(tmp_path, OLD_BW))
    # THEN they are read as read_gb_per_s / write_gb_per_s
    dev = db.get("disk-a")
    assert (dev.read_gb_per_s.best, dev.write_gb_per_s.best) == (6.5, 3.5)


def test_old_and_new_name_together_are_refused(tmp_path):
    # GIVEN a record that gives the read bandwidth under both names
    text = OLD_BW + '    read_gb_per_s: {best: 7.0, source: "datasheet"}\n'
    # THEN loading fails with one line naming the file, the record and both names
    with pytest.raises(ValidationError) as e:
        DeviceDB.load(_write_db(tmp_path, text))
    msg = str(e.value)
    assert re.match(r"^.*x\.yaml:2: devices\[0\]: read_gbps and read_gb_per_s both given", msg), msg


def test_bad_value_under_an_old_name_points_at_its_line(tmp_path):
    # GIVEN a negative bandwidth written under the old name, on line 8 of the file
    text = OLD_BW.replace("best: 6.5", "best: -1")
    assert text.splitlines()[7].lstrip().startswith("read_gbps")
    # THEN the error names that line (the field under its new name)
    with pytest.raises(ValidationError, match=r"x\.yaml:8: devices\[0\]\.read_gb_per_s\.best"):
        DeviceDB.load(_write_db(tmp_path, text))


@pytest.mark.parametrize("model,value", [(DeviceOverride, {"best": 2.0}), (sweep.DeviceOverride, 2.0)])
def test_overrides_accept_the_old_name(model, value):
    # GIVEN a scenario's or a sweep's device override written with read_gbps
    ov = model.model_validate({"read_gbps": value, "source": "a sourced figure"})
    # THEN it is the same override as one written with read_gb_per_s
    assert ov == model.model_validate({"read_gb_per_s": value, "source": "a sourced figure"})


def test_scenario_override_with_the_old_name(db, root):
    # GIVEN a shipped scenario whose GPU gets an HBM bandwidth override under the old name
    from storagecarbon.scenario import parse_scenario

    doc = yaml.safe_load((root / "scenarios" / "llama70b_hbm_only.yaml").read_text())
    gpu = doc["hardware"]["gpu"]["device"]
    doc["device_overrides"] = {gpu: {"read_gbps": {"best": 1000.0}, "source": "test: a slower HBM"}}
    scn = parse_scenario(yaml.safe_dump(doc), "old.yaml", db)
    # THEN the override is read as read_gb_per_s
    assert scn.device_overrides[gpu].read_gb_per_s.best == 1000.0

