"""The request roots: every name a policy can read from a request, in one table.

A root is what a condition starts from (``principal.team``, ``context.ip``,
``delegation.depth``). For each root this table says

- the **argument** that holds it in the generated code: every compiled function takes
  the roots in :data:`ROOTS` order, ``def check(P, A, R, C, K, CH, I)`` (:data:`ARGS`);
- its **value** as a Python expression (the delegation root is built from the chain and
  the principal);
- whether it is **optional** (``risk`` and ``intent`` may be absent from a request:
  reading one then raises "the request has no risk");
- how an **attribute is read**: built-in attributes (``principal.id``, ``resource.type``,
  ``delegation.depth``) are direct expressions, the others come from one mapping
  (``P.attrs``, ``C``);
- how it is **keyed** for the decision cache when a rule reads it whole;
- the **static type** the checker gives it (``principal``, ``resource`` and ``action``
  are typed from the schema and the rule's target; see
  :mod:`policylang.language.checker.types`).

The parser, the checker, the compiler's code generator, its cache keys and its index
readers all read this table; docs/language.md#roots describes the roots for authors and
docs/requests.md#fields says where each comes from in a request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True, slots=True)
class Builtin:
    """A built-in attribute: its Python expression; whether it is always present
    (``resource.id`` may be absent; ``principal.id`` never is); whether its value is a
    scalar (a cache key holds it as it is) or a list or entity (the key freezes it)."""

    expr: str
    always: bool = True
    scalar: bool = True


@dataclass(frozen=True, slots=True)
class Root:
    name: str
    #: the generated functions' parameter that holds the root
    arg: str
    #: the root as a value (``delegation`` is built from the chain and the principal)
    value: str
    #: may be absent from a request (then any read raises "the request has no <name>")
    optional: bool
    #: the checker's static type name: "entity" and "action" are typed from the schema and
    #: the rule's target; the others name a fixed type in checker.types.ROOT_TYPES
    static_type: str
    #: built-in attributes by name
    builtins: Mapping[str, Builtin] = field(default_factory=dict)
    #: the Python expression of the mapping other attributes are read from (``.get``),
    #: or None when the root has no such mapping (delegation)
    attrs: str | None = None
    #: the cache-key parts when a rule reads the root whole
    whole_key: str = ""

    def read(self, name: str) -> str | None:
        """A Python expression reading attribute ``name`` that never raises and yields
        None when it is absent; None when the attribute has no direct read."""
        b = self.builtins.get(name)
        if b is not None:
            return b.expr
        if self.attrs is None:
            return None
        if self.optional:
            return f"(None if {self.arg} is None else {self.attrs}.get({name!r}))"
        return f"{self.attrs}.get({name!r})"


ROOTS: tuple[Root, ...] = (
    Root("principal", "P", "P", False, "entity",
         {"id": Builtin("P.id"), "kind": Builtin("P.kind")}, "P.attrs", "_freeze(P)"),
    Root("action", "A", "A", False, "action", {"name": Builtin("A.name")}, "A.attrs", "_freeze(A)"),
    Root("resource", "R", "R", False, "entity",
         {"id": Builtin("R.id", always=False), "type": Builtin("R.kind")}, "R.attrs", "_freeze(R)"),
    Root("context", "C", "C", False, "context", {}, "C", "_freeze(C)"),
    Root("risk", "K", "K", True, "risk", {}, "K", "_freeze(K)"),
    # the delegation root is its chain and its root, which is the principal when the
    # chain is empty; depth, chain and root are its attributes
    Root("delegation", "CH", "_deleg(CH, P)", False, "delegation",
         {"depth": Builtin("len(CH)"), "chain": Builtin("CH", scalar=False),
          "root": Builtin("(CH[0] if CH else P)", scalar=False)},
         None, "_freeze(CH), _freeze(CH[0] if CH else P)"),
    Root("intent", "I", "I", True, "object", {}, "I", "_freeze(I)"),
)

#: the roots by name
BY_NAME: dict[str, Root] = {r.name: r for r in ROOTS}
#: every root's name (the names a policy can read without declaring them)
NAMES: frozenset[str] = frozenset(BY_NAME)
#: the parameter list of every generated function
ARGS: str = ", ".join(r.arg for r in ROOTS)
#: a root's position among the arguments
POSITION: dict[str, int] = {r.name: i for i, r in enumerate(ROOTS)}
