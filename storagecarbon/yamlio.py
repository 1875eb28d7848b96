"""YAML loading that remembers where every value came from (file and line).

Validation errors must read ``FILE:LINE: field.path: problem``; pydantic gives the field path,
this module maps the path back to the line of the YAML node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import yaml

from .errors import ValidationError


@dataclass(frozen=True)
class LocatedYaml:
    """Parsed YAML data plus a map from field paths to 1-based line numbers."""

    file: str
    data: Any
    lines: dict[tuple, int] = field(default_factory=dict)

    def line_of(self, path: tuple) -> int | None:
        """Line of the deepest node along ``path`` that exists in the file."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)


def _walk(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            lines[path + (key,)] = key_node.start_mark.line + 1
            _walk(value_node, path + (key,), lines)
            lines[path + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), lines)


def load_yaml(path: str | Path) -> LocatedYaml:
    """Read a YAML file; a syntax error becomes a one-line :class:`ValidationError`."""
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValidationError(name, None, "file", "does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(name, None, "file", f"cannot be read ({exc.__class__.__name__})") from None
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str = "<string>") -> LocatedYaml:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ValidationError(name, line, "yaml", f"not valid YAML ({exc.problem or exc.context})") from None
    except yaml.YAMLError as exc:
        raise ValidationError(name, None, "yaml", f"not valid YAML ({exc.__class__.__name__})") from None
    except (ValueError, TypeError, RecursionError) as exc:  # e.g. bad timestamps, deep nesting
        raise ValidationError(name, None, "yaml", f"not valid YAML ({exc.__class__.__name__}: {exc})") from None
    lines: dict[tuple, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return LocatedYaml(name, data, lines)


def _fmt_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def validate(model: type[pydantic.BaseModel], doc: LocatedYaml, *, prefix: tuple = ()) -> Any:
    """Validate ``doc.data`` (or the sub-node at ``prefix``) against ``model``.

    The first pydantic error becomes a :class:`ValidationError` naming file, line and field.
    """
    data = doc.data
    for p in prefix:
        data = data[p]
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = prefix + tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        # pydantic adds union-member names to locations; keep only real fields
        real = tuple(p for p in loc if isinstance(p, int) or not str(p).endswith("]"))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (not allowed; check the spelling against the schema)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        raise ValidationError(doc.file, doc.line_of(real), _fmt_path(real), msg) from None
