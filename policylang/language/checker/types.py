"""Static types of policy expressions (what the ``types`` stage infers and checks).

A static type is ``None`` (unknown: anything may come at run time, and an unknown type
never produces a diagnostic) or a :data:`StaticType`:

* :class:`Simple` — a scalar (``STRING``, ``NUMBER``, ``BOOL``) or one of the fixed
  objects (``CONTEXT``, ``RISK``, ``DELEGATION``, and ``OBJECT`` for ``intent``);
* :class:`ListType` — a list of ``elem`` (itself a static type or unknown);
* :class:`EntityType` — a principal or resource entity; ``kinds`` is the tuple of the
  declared kinds/types it may be, or ``None`` for "any declared one" (a ``*`` target,
  a delegation entity);
* :class:`ActionType` — the action; ``names`` as for ``kinds``.

All are immutable and hashable (the expression walk caches attribute look-ups by type).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Sequence

from .. import nodes
from ..roots import ROOTS

SCALAR_TYPES = frozenset(["string", "number", "bool", "duration"])
COLLECTION_TYPES = frozenset(["set", "list"])


class Simple(enum.Enum):
    """A type with no parameters. Compared by identity (enum members are singletons)."""

    STRING = "string"
    NUMBER = "number"
    BOOL = "bool"
    CONTEXT = "context"
    RISK = "risk"
    OBJECT = "object"
    DELEGATION = "delegation"


@dataclass(frozen=True, slots=True)
class ListType:
    elem: "StaticType" | None


@dataclass(frozen=True, slots=True)
class EntityType:
    category: str  # "principal" or "resource"
    kinds: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class ActionType:
    names: tuple[str, ...] | None


StaticType = Simple | ListType | EntityType | ActionType

STRING, NUMBER, BOOL = Simple.STRING, Simple.NUMBER, Simple.BOOL
CONTEXT, RISK, OBJECT, DELEGATION = Simple.CONTEXT, Simple.RISK, Simple.OBJECT, Simple.DELEGATION

SCALARS = (STRING, NUMBER, BOOL)
ORDERED = (STRING, NUMBER)
ANY_PRINCIPAL = EntityType("principal", None)
CHAIN = ListType(ANY_PRINCIPAL)
SIGNALS = ListType(STRING)
#: the static type of each root the roots table types by name (policylang/language/roots.py:
#: ``static_type``); "entity" and "action" roots are typed from the schema and the target
_NAMED_TYPES: dict[str, StaticType] = {"context": CONTEXT, "risk": RISK, "delegation": DELEGATION, "object": OBJECT}
ROOT_TYPES: dict[str, StaticType] = {r.name: _NAMED_TYPES[r.static_type] for r in ROOTS
                                     if r.static_type in _NAMED_TYPES}
LITERAL_TYPES = {"string": STRING, "int": NUMBER, "decimal": NUMBER, "duration": NUMBER, "bool": BOOL}
SCHEMA_TYPES = {"string": STRING, "number": NUMBER, "duration": NUMBER, "bool": BOOL}


def is_list(t: StaticType | None) -> bool:
    return t.__class__ is ListType


def type_of_value(v: Any) -> StaticType | None:
    """The static type of a folded constant's value."""
    if isinstance(v, bool):
        return BOOL
    if isinstance(v, (int, float)):
        return NUMBER
    if isinstance(v, str):
        return STRING
    if isinstance(v, (list, tuple)):
        return ListType(common([type_of_value(x) for x in v]))
    return None


def common(types: Sequence[StaticType | None]) -> StaticType | None:
    """The one type all of ``types`` share, else unknown."""
    if not types:
        return None
    first = types[0]
    for t in types[1:]:
        if t != first:
            return None
    return first


def type_of_ref(t: nodes.TypeRef | None) -> StaticType | None:
    """The static type of a schema type reference (``set<string>`` → a list of strings)."""
    if t is None:
        return None
    if t.name in COLLECTION_TYPES:
        return ListType(type_of_ref(t.arg))
    return SCHEMA_TYPES.get(t.name)


def describe_type(t: StaticType | None) -> str:
    """``a string``, ``a list`` … for messages."""
    if t is STRING:
        return "a string"
    if t is NUMBER:
        return "a number"
    if t is BOOL:
        return "a boolean"
    if t is DELEGATION:
        return "the delegation object"
    if t in (CONTEXT, RISK, OBJECT):
        return "an object"
    if t.__class__ is ListType:
        return "a list"
    if t.__class__ is EntityType:
        return "a principal entity" if t.category == "principal" else "a resource entity"
    if t.__class__ is ActionType:
        return "an action"
    return "a value"
