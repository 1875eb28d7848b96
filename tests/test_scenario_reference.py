"""docs/scenario-reference.md is generated from the scenario schema and must be current; every
field has a meaning; `storagecarbon scenario schema` prints a JSON Schema that the shipped
scenarios satisfy."""

import json

import pytest
import yaml

from storagecarbon.cli import main
from storagecarbon.scenario_doc import render_reference, undocumented


def test_every_field_has_a_meaning():
    assert undocumented() == [], "document these in scenario.py (description=) or scenario_doc.FIELD_DOCS"


def test_reference_doc_is_current(root):
    doc = root / "docs" / "scenario-reference.md"
    assert doc.read_text(encoding="utf-8") == render_reference(), (
        "docs/scenario-reference.md is stale: run `storagecarbon scenario reference --write docs/scenario-reference.md`")


def test_schema_command_validates_shipped_scenarios(root, capsys):
    jsonschema = pytest.importorskip("jsonschema")
    assert main(["scenario", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["properties"]["slo"]["description"]
    assert "unit: ms" in schema["$defs"]["Slo"]["properties"]["tpot_ms"]["description"]
    files = sorted((root / "scenarios").glob("*.yaml"))
    assert files
    for f in files:
        jsonschema.validate(yaml.safe_load(f.read_text()), schema)
    # and it rejects what the loader rejects: an unknown key
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**yaml.safe_load(files[0].read_text()), "nonsense": 1}, schema)
