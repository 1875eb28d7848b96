import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storagecarbon.errors import StoragecarbonError, ValidationError
from storagecarbon.scenario import load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted(p for p in (ROOT / "scenarios").rglob("*.yaml") if "sweeps" not in p.parts)


def test_required_scenarios_ship():
    names = {p.name for p in SCENARIOS}
    assert {"llama70b_offload.yaml", "llama70b_hbm_only.yaml", "llama70b_old_gpus.yaml"} <= names
    assert any("cpu" in n for n in names)


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: str(p.relative_to(ROOT / "scenarios")))
def test_every_shipped_scenario_validates_and_round_trips(db, path):
    scn = load_scenario(path, db)
    again = parse_scenario(yaml.safe_dump(scn.model_dump(mode="json")), "roundtrip.yaml", db)
    assert again == scn


def test_llama70b_kv_bytes_per_token(db):
    scn = load_scenario(ROOT / "scenarios/llama70b_offload.yaml", db)
    assert scn.model.kv_bytes_per_token() == 320 * 1024


BASE = (ROOT / "scenarios/llama70b_offload.yaml").read_text()


@pytest.mark.parametrize("old,new,field", [
    ("count: 2}", "count: two}", "hardware.gpu.count"),                          # wrong type
    ("size_gb: 256", "size_gb: -256", "placement.kv.local_cpu.size_gb"),        # negative size
    ("  seed: 7\n", "  seed: 7\n  colour: blue\n", "workload.colour"),           # unknown key
    ("weights: {hbm: 1.0}", "weights: {hbm: 0.7, dram: 0.2}", "placement.weights"),  # fractions
    ("device: h100-sxm5-80gb", "device: h100-sxm-80gb", "hardware.gpu.device"),  # unknown device
    ("region: us", "region: atlantis", "carbon.region"),
])
def test_rejections_name_file_line_field(db, old, new, field):
    assert old in BASE
    with pytest.raises(ValidationError) as e:
        parse_scenario(BASE.replace(old, new, 1), "bad.yaml", db)
    msg = str(e.value)
    m = re.match(r"^bad\.yaml:(\d+): ([^:]+): (.+)$", msg)
    assert m, msg
    assert m.group(2) == field
    bad_line = BASE.replace(old, new, 1).splitlines()[int(m.group(1)) - 1]
    assert field.split(".")[-1].split("[")[0] in bad_line or field.split(".")[-2] in bad_line


def test_cli_reports_one_line_error_and_nonzero_exit(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace("size_gb: 256", "size_gb: -1"))
    p = subprocess.run([sys.executable, "-m", "storagecarbon", "scenario", "check", str(bad)],
                       capture_output=True, text=True)
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    assert re.search(r"bad\.yaml:\d+: placement\.kv\.local_cpu\.size_gb:", p.stderr.replace("\n", ""))


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                         st.text(max_size=12))
yaml_values = st.recursive(yaml_scalars, lambda c: st.one_of(st.lists(c, max_size=4),
                                                              st.dictionaries(st.text(max_size=10), c, max_size=4)),
                           max_leaves=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=200), yaml_values.map(lambda v: yaml.safe_dump(v))))
def test_malformed_yaml_only_raises_project_error(db, text):
    try:
        parse_scenario(text, "fuzz.yaml", db)
    except StoragecarbonError as exc:
        assert str(exc) and "\n" not in str(exc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.lists(st.sampled_from(["hardware", "gpu", "count", "model", "placement", "kv", "workload",
                                       "prompt_tokens", "mean", "carbon", "pue", "weights", "hbm"]),
                     min_size=1, max_size=3),
       value=yaml_scalars)
def test_mutated_scenario_only_raises_project_error(db, path, value):
    data = yaml.safe_load(BASE)
    node = data
    for p in path[:-1]:
        if not isinstance(node, dict):
            break
        node = node.setdefault(p, {})
    if isinstance(node, dict):
        node[path[-1]] = value
    try:
        parse_scenario(yaml.safe_dump(data), "mut.yaml", db)
    except StoragecarbonError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=100, deadline=None)
@given(field=st.sampled_from(["capacity_gb", "embodied_kgco2e", "lifetime_years", "aliases", "kind", "key"]),
       value=yaml_values)
def test_malformed_device_records_only_raise_project_error(tmp_path_factory, field, value):
    from storagecarbon.devicedb import DeviceDB

    rec = {"key": "x", "kind": "ssd", "name": "X", "capacity_gb": 10,
           "embodied_kgco2e": {"per": "unit", "best": 1, "method": "lca", "source": "somewhere"},
           "lifetime_years": {"best": 5, "source": "warranty"}}
    rec[field] = value
    d = tmp_path_factory.mktemp("db")
    (d / "a.yaml").write_text(yaml.safe_dump({"devices": [rec]}))
    try:
        DeviceDB.load(d)
    except StoragecarbonError as exc:
        assert "\n" not in str(exc)
