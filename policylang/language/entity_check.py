"""Entity data checked against the schema (docs/diagnostics.md#e009, #w110, #w111).

A set's ``*.entities.json`` files hold ``{"<kind or type>": {"<id>": {attrs}}}``. With a
schema, each file is checked the way Cedar validates entities:

- **E009** an attribute whose value does not have its declared type (``"total": "480"``
  for a ``number``); ``null`` is accepted only for an optional (``T?``) field;
- **W110** a kind or type the schema does not declare (checked once the set declares
  both principal kinds and resource types, since either could be meant);
- **W111** an attribute the kind or type does not declare (``regoin`` for ``region``),
  with the closest declared name.

The data is checked as parsed (fast, also for large files); only a file with a problem
is parsed again with positions, so each diagnostic points at the JSON key or value
(file:line:column) it is about.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from . import nodes
from .errors import Diagnostic
from .policyset import Schema
from .source import Span
from ..evaluation.runtime import type_name
from .words import did_you_mean

#: a problem found in the data: code, message, JSON path of the key/value, and whether
#: it points at the key (True) or at the value (False)
_Problem = tuple[str, str, tuple, bool]


def check_entities(schema: Schema, files: Iterable[tuple[str, str, Any]]) -> list[Diagnostic]:
    """Diagnostics for entity files ``(display path, text, parsed data)`` against ``schema``."""
    if not (schema.principals or schema.resources):
        return []
    out: list[Diagnostic] = []
    for display, text, data in files:
        problems = list(_problems(schema, data))
        if problems:
            spans = _Positions(text, display)
            out.extend(Diagnostic.make(code, message, spans.span(path, key))
                       for code, message, path, key in problems)
    return out


def _problems(schema: Schema, data: Mapping) -> Iterable[_Problem]:
    declared = {**schema.resources, **schema.principals}
    both = bool(schema.principals) and bool(schema.resources)
    for kind, entities in data.items():
        fields: dict[str, nodes.TypeRef] = {}
        known = False
        for table in (schema.principals, schema.resources):
            if kind in table:
                known = True
                fields.update(table[kind])
        if not known:
            if both:
                yield ("W110", f"entity data for '{kind}', which the schema declares as neither a "
                               f"principal kind nor a resource type{did_you_mean(kind, declared)}",
                       (kind,), True)
            continue
        for eid, attrs in entities.items():
            if not isinstance(attrs, Mapping):
                continue  # the loader's shape check reports it
            for name, value in attrs.items():
                t = fields.get(name)
                if t is None:
                    yield ("W111", f"'{kind}' declares no attribute '{name}'{did_you_mean(name, fields)}",
                           (kind, eid, name), True)
                    continue
                wrong = _type_error(value, t)
                if wrong is not None:
                    yield ("E009", f"{kind} '{eid}': '{name}' is declared {_show_type(t)}, but {wrong}",
                           (kind, eid, name), False)


def _show_type(t: nodes.TypeRef) -> str:
    text = t.name if t.arg is None else f"{t.name}<{_show_type(t.arg)}>"
    return text + ("?" if t.optional else "")


def _json_type(v: Any) -> str:
    kind = type_name(v)  # the runtime's names, as in evaluation errors
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def _type_error(value: Any, t: nodes.TypeRef) -> str | None:
    """Why ``value`` is not of type ``t`` (``it is a string ("480")``), or None when it is."""
    if value is None:
        return None if t.optional else "it is null (only an optional field, T?, may be null)"
    name = t.name
    if name == "string":
        ok = isinstance(value, str)
    elif name in ("number", "duration"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif name == "bool":
        ok = isinstance(value, bool)
    elif name in ("set", "list"):
        if not isinstance(value, list):
            ok = False
        else:
            for i, item in enumerate(value):
                inner = _type_error(item, t.arg) if t.arg is not None else None
                if inner is not None:
                    return inner.replace("it is", f"item {i} is", 1) if inner.startswith("it is") else inner
            return None
    else:  # a type the checker reports itself (E005)
        return None
    if ok:
        return None
    shown = json.dumps(value, ensure_ascii=False)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"it is {_json_type(value)} ({shown})"


# ------------------------------------------------------------------ positions

_GRAMMAR = r"""
?value: object | array | STRING | NUMBER | "true" -> true | "false" -> false | "null" -> null
array: "[" [value ("," value)*] "]"
object: "{" [pair ("," pair)*] "}"
pair: STRING ":" value
STRING: /"(\\.|[^"\\])*"/
NUMBER: /-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/
%import common.WS
%ignore WS
"""
_parser = None


def _json_parser():
    global _parser
    if _parser is None:
        from lark import Lark
        _parser = Lark(_GRAMMAR, start="value", parser="lalr", propagate_positions=True)
    return _parser


class _Positions:
    """Spans of the keys and values of one JSON text, found by JSON path."""

    def __init__(self, text: str, path: str):
        self.path = path
        self.tree = None
        try:
            self.tree = _json_parser().parse(text)
        except Exception:  # noqa: BLE001 - the text parsed as JSON already; never fail here
            self.tree = None

    def span(self, path: tuple, key: bool) -> Span:
        node, key_token = self.tree, None
        for step in path:
            if node is None or getattr(node, "data", None) != "object":
                node = None
                break
            found = None
            for pair in node.children:
                if pair is not None and json.loads(pair.children[0]) == step:
                    found = pair  # the last one wins, as in json.loads
            if found is None:
                node = None
                break
            key_token, node = found.children[0], found.children[1]
        target = key_token if key else node
        if target is None:
            return Span(self.path, 1, 1, 1, 1)
        if hasattr(target, "meta"):
            m = target.meta
            return Span(self.path, m.line, m.column, m.end_line, m.end_column, m.start_pos, m.end_pos)
        return Span(self.path, target.line, target.column, target.end_line, target.end_column,
                    target.start_pos, target.end_pos)
