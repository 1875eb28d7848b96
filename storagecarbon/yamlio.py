"""YAML loading that remembers where every value came from (file and line), and refuses hostile files.

Validation errors must read ``FILE:LINE: field.path: problem``; pydantic gives the field path,
this module maps the path back to the line of the YAML node.

Every file goes through :func:`parse_yaml`, which composes the node graph once and checks it
before a single Python object is built:

* only safe loading (no Python tags), through libyaml where installed;
* the text is at most :data:`~storagecarbon.limits.YAML_BYTES`;
* an alias that refers to a node containing itself (a recursive structure) is refused;
* the size of the document with every alias expanded is counted without expanding it (one pass
  over the distinct nodes), and must stay under :data:`~storagecarbon.limits.YAML_NODES`; the
  expanded depth under :data:`~storagecarbon.limits.YAML_DEPTH` (alias bombs cost nothing);
* a mapping that gives the same key twice is refused (YAML says keys are unique; PyYAML would keep
  the last one silently).

:class:`StrictModel` is the base of every file schema: unknown fields refused, and numbers strict
(a boolean such as ``yes`` or a string is never taken as a number, a float never as an integer,
``.inf`` / ``.nan`` are refused). A field given under its old name (:mod:`storagecarbon.renames`) is read as
the new one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import yaml

from . import limits
from .errors import ValidationError
from .renames import OLD_NAME, upgrade_keys

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MERGE_TAG = "tag:yaml.org,2002:merge"


class StrictModel(pydantic.BaseModel):
    """Base of the file schemas: no unknown fields, frozen, strict types, finite numbers."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _renamed_fields(cls, data: Any) -> Any:
        """A field under its old name (:mod:`storagecarbon.renames`) is read as the new one."""
        return upgrade_keys(data, cls.model_fields) if isinstance(data, dict) else data


@dataclass(frozen=True)
class LocatedYaml:
    """Parsed YAML data plus a map from field paths to 1-based line numbers."""

    file: str
    data: Any
    lines: dict[tuple, int] = field(default_factory=dict)

    def line_of(self, path: tuple) -> int | None:
        """Line of the deepest node along ``path`` that exists in the file (a renamed field is also
        looked up under its old name, the one an older file gives)."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            old = tuple(OLD_NAME.get(p, p) if isinstance(p, str) else p for p in path)
            if old in self.lines:
                return self.lines[old]
            path = path[:-1]
        return self.lines.get((), 1)


def _walk(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> None:
    """Line of every path (aliases expanded: bounded by :func:`check_graph` beforehand)."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            if not isinstance(key, str):
                continue
            _walk(value_node, path + (key,), lines)
            lines[path + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), lines)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for kv in node.value for n in kv]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def check_graph(root: yaml.Node, name: str) -> None:
    """Refuse recursive aliases, duplicate keys, and documents too large or deep once expanded.

    Iterative depth-first walk over the distinct nodes (an alias is the same node object as its
    anchor), with the expanded size and depth of every node memoised: linear in the text, however
    many times the aliases multiply it.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        nid = id(node)
        if done:
            kids = _children(node)
            size[nid] = 1 + sum(size[id(k)] for k in kids)
            depth[nid] = 1 + max((depth[id(k)] for k in kids), default=0)
            on_path.discard(nid)
            line = node.start_mark.line + 1
            if size[nid] > limits.YAML_NODES.value:
                raise ValidationError(name, line, "yaml", f"document expands to more than {limits.YAML_NODES.value:,.0f} "
                                      f"nodes ({limits.YAML_NODES.why})")
            if depth[nid] > limits.YAML_DEPTH.value:
                raise ValidationError(name, line, "yaml", f"nested deeper than {limits.YAML_DEPTH.value:g} levels "
                                      f"({limits.YAML_DEPTH.why})")
            continue
        if nid in size:
            continue
        if nid in on_path:
            raise ValidationError(name, node.start_mark.line + 1, "yaml",
                                  "recursive alias: a node refers to itself (not allowed)")
        on_path.add(nid)
        stack.append((node, True))
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, Any], int] = {}
            for k, _ in node.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != MERGE_TAG:
                    key = (k.tag, k.value)
                    if key in seen:
                        raise ValidationError(name, k.start_mark.line + 1, str(k.value),
                                              f"duplicate key (first given on line {seen[key]})")
                    seen[key] = k.start_mark.line + 1
        for k in _children(node):
            kid = id(k)
            if kid in on_path:
                raise ValidationError(name, k.start_mark.line + 1, "yaml",
                                      "recursive alias: a node refers to itself (not allowed)")
            if kid not in size:
                stack.append((k, False))


def load_yaml(path: str | Path) -> LocatedYaml:
    """Read a YAML file; a syntax error becomes a one-line :class:`ValidationError`."""
    path = Path(path)
    name = str(path)
    if path.exists() and not path.is_file() and not path.is_dir():
        raise ValidationError(name, None, "file", "not a regular file (a pipe or device would block or never end)")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(int(limits.YAML_BYTES.value) + 1)
    except FileNotFoundError:
        raise ValidationError(name, None, "file", "does not exist") from None
    except IsADirectoryError:
        raise ValidationError(name, None, "file", "is a directory, not a YAML file") from None
    except OSError as exc:
        raise ValidationError(name, None, "file", f"cannot be read ({exc.__class__.__name__})") from None
    if len(raw) > limits.YAML_BYTES.value:
        raise ValidationError(name, None, "file", f"larger than {limits.YAML_BYTES.value:,.0f} bytes "
                              f"({limits.YAML_BYTES.why})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(name, None, "file", f"not UTF-8 text (byte {exc.start})") from None
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str = "<string>") -> LocatedYaml:
    """Parse one YAML document safely and within bounds (see the module docstring)."""
    if len(text) > limits.YAML_BYTES.value:
        raise ValidationError(name, None, "file", f"larger than {limits.YAML_BYTES.value:,.0f} bytes "
                              f"({limits.YAML_BYTES.why})")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            check_graph(node, name)
            data = loader.construct_document(node)
        else:
            data = None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ValidationError(name, line, "yaml", f"not valid YAML ({exc.problem or exc.context})") from None
    except yaml.YAMLError as exc:
        raise ValidationError(name, None, "yaml", f"not valid YAML ({exc.__class__.__name__}: {exc})") from None
    except (ValueError, TypeError, ArithmeticError, LookupError, AttributeError, RecursionError) as exc:
        # the constructors of PyYAML raise these on odd scalars (bad timestamps, `!!int ""`, ...)
        raise ValidationError(name, None, "yaml", f"not valid YAML ({exc.__class__.__name__}: {exc})") from None
    finally:
        loader.dispose()
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


_STRICT_HINTS = {
    "int_type": "must be a whole number (written without quotes or a decimal point; yes/no/on/off are booleans, not numbers)",
    "float_type": "must be a number (written without quotes; yes/no/on/off are booleans, not numbers)",
    "string_type": "must be text (quote it if YAML reads it as a number, date or boolean)",
    "bool_type": "must be true or false",
    "finite_number": "must be a finite number (.inf and .nan are not allowed)",
    "dict_type": "must be a mapping (key: value)",
    "list_type": "must be a list",
    "model_type": "must be a mapping (key: value)",
}


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
        # pydantic adds union-member names (and type names of strict unions) to locations; keep only real fields
        real = tuple(p for p in loc if isinstance(p, int) or not (str(p).endswith("]") or str(p) in _TYPE_LOCS))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (not allowed; check the spelling against the schema)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] in _STRICT_HINTS:
            msg = f"{_STRICT_HINTS[err['type']]}; got {_shown(err.get('input'))}"
            if err["type"] in ("int_type", "float_type") and _numeric_text(err.get("input")):
                msg += " (YAML 1.1 reads 1e9 as text: write 1.0e9)"
        elif err["type"] == "value_error" and msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        raise ValidationError(doc.file, doc.line_of(real), _fmt_path(real), msg) from None


_TYPE_LOCS = {"str", "float", "int", "bool", "list", "dict", "none", "literal", "nullable"}


def _shown(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _numeric_text(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        float(v)
    except ValueError:
        return False
    return True
