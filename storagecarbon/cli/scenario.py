"""``scenario``: check scenario files, their schema and reference."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import StoragecarbonError
from .app import DbOpt, _db, _print_json, out, scenario_app


# ----------------------------------------------------------------------------------- scenario
@scenario_app.command("check")
def scenario_check(files: list[Path] = typer.Argument(..., help="scenario YAML files"),
                   db_dir: Optional[Path] = DbOpt) -> None:
    """Validate scenario files (errors read FILE:LINE: field: problem)."""
    from ..scenario import load_scenario

    db = _db(db_dir)
    for f in files:
        s = load_scenario(f, db)
        out.print(f"{f}: OK ({s.model.dims().name}, {s.workload.num_requests()} requests, engine {s.engine.kind})")


@scenario_app.command("schema")
def scenario_schema() -> None:
    """Print the scenario JSON Schema (for editors: yaml-language-server, VS Code)."""
    from ..scenario_doc import json_schema

    _print_json(json_schema())


@scenario_app.command("reference")
def scenario_reference(write: Optional[Path] = typer.Option(None, "--write", help="write the Markdown here "
                                                                                  "(docs/scenario-reference.md)")) -> None:
    """Print (or write) the scenario reference: every field with its type, unit, default and meaning."""
    from ..scenario_doc import render_reference, undocumented

    missing = undocumented()
    if missing:
        raise StoragecarbonError(f"scenario fields without a meaning: {', '.join(missing)} "
                                 "(add a description in scenario.py or an entry in scenario_doc.FIELD_DOCS)")
    text = render_reference()
    if write is None:
        sys.stdout.write(text)
        return
    write.write_text(text, encoding="utf-8")
    out.print(f"wrote {write}")
