"""The typed, immutable syntax tree.

Every node carries a :class:`~policylang.language.source.Span` as the keyword-only ``span``
field. Spans are excluded from equality, hashing and repr: two policies that differ only
in layout have equal trees (the formatter's round-trip tests rely on it).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, fields
from typing import Callable

from .source import SourceMap, Span

_SPAN = dict(compare=False, repr=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class Node:
    span: Span = field(**_SPAN)
    #: the file's :class:`~policylang.language.source.SourceMap` when ``span`` is stored
    #: packed (the fast parser's nodes); ``None`` when it is a :class:`Span`
    _src: SourceMap | None = field(default=None, compare=False, repr=False, kw_only=True)


def _span_property(slot, doc: str) -> property:
    """A Span field read through its slot: a packed value (an int, source.SourceMap) is
    made into its Span with the node's ``_src``; a Span is returned as it is."""
    def read(node: Node, _get=slot.__get__) -> Span:
        sp = _get(node)
        return node._src.span(sp) if sp.__class__ is int else sp
    return property(read, slot.__set__, doc=doc)


# ``span`` reads the slot and makes the Span from packed offsets where the parser stored
# them (source.SourceMap): equality, hashing and repr never see it, as before
_SPAN_SLOT = Node.__dict__["span"]  # what the slot holds: a Span, or packed offsets
Node.span = _span_property(_SPAN_SLOT, "Where the node is in its file (a Span).")


# ------------------------------------------------------------------ expressions

@dataclass(frozen=True, slots=True)
class Literal(Node):
    """A string, integer, decimal, duration (its seconds, an int) or boolean.

    ``kind`` is one of ``string``, ``int``, ``decimal``, ``duration``, ``bool``; the
    formatter prints a duration back in ``1h30m`` form.
    """

    value: object
    kind: str


@dataclass(frozen=True, slots=True)
class ListExpr(Node):
    items: tuple["Expr", ...]


@dataclass(frozen=True, slots=True)
class Name(Node):
    """A root (principal, action, …), a constant or a quantifier variable."""

    name: str


@dataclass(frozen=True, slots=True)
class Attr(Node):
    obj: "Expr"
    name: str


@dataclass(frozen=True, slots=True)
class Index(Node):
    obj: "Expr"
    index: "Expr"


@dataclass(frozen=True, slots=True)
class Call(Node):
    func: str
    args: tuple["Expr", ...]


@dataclass(frozen=True, slots=True)
class Unary(Node):
    op: str  # "-" or "not"
    operand: "Expr"


@dataclass(frozen=True, slots=True)
class Binary(Node):
    """Arithmetic (``+ - * /``), comparison (``== != < <= > >=``), ``in`` and ``not in``."""

    op: str
    left: "Expr"
    right: "Expr"


@dataclass(frozen=True, slots=True)
class BoolOp(Node):
    """An ``and`` / ``or`` chain, flattened: ``a or b or c`` is one node of three items."""

    op: str  # "and" or "or"
    items: tuple["Expr", ...]


@dataclass(frozen=True, slots=True)
class Matches(Node):
    operand: "Expr"
    pattern: str


@dataclass(frozen=True, slots=True)
class Has(Node):
    operand: "Expr"
    name: str


@dataclass(frozen=True, slots=True)
class Quantifier(Node):
    kind: str  # "any" or "all"
    var: str
    collection: "Expr"
    body: "Expr"


Expr = Literal | ListExpr | Name | Attr | Index | Call | Unary | Binary | BoolOp | Matches | Has | Quantifier

# ------------------------------------------------------------------ schema


@dataclass(frozen=True, slots=True)
class TypeRef(Node):
    """``string``, ``set<string>``, ``number?`` …"""

    name: str
    arg: "TypeRef | None" = None
    optional: bool = False


@dataclass(frozen=True, slots=True)
class FieldDecl(Node):
    name: str
    type: TypeRef


@dataclass(frozen=True, slots=True)
class EntityDecl(Node):
    """``principal agent { … }`` or ``resource repo { … }``.

    ``authoritative`` (``resource doc authoritative { … }``): stored entity data of this
    kind / type replaces the request's attributes (docs/language.md#authoritative-entity-data).
    """

    category: str  # "principal" or "resource"
    name: str
    fields: tuple[FieldDecl, ...]
    authoritative: bool = False


@dataclass(frozen=True, slots=True)
class ActionDecl(Node):
    """``[high_impact] action read, list on repo [{ … }]``."""

    names: tuple[str, ...]
    on: tuple[str, ...]
    fields: tuple[FieldDecl, ...] | None
    high_impact: bool = False


@dataclass(frozen=True, slots=True)
class ContextDecl(Node):
    fields: tuple[FieldDecl, ...]


@dataclass(frozen=True, slots=True)
class Const(Node):
    name: str
    value: Expr
    name_span: Span = field(**_SPAN)


@dataclass(frozen=True, slots=True)
class Option(Node):
    name: str
    value: Expr
    name_span: Span = field(**_SPAN)


# ------------------------------------------------------------------ rules


@dataclass(frozen=True, slots=True)
class Annotation(Node):
    name: str
    value: str | None


@dataclass(frozen=True, slots=True)
class EntityRef(Node):
    """A principal kind or resource type in a target, with an optional id glob."""

    name: str
    glob: str | None = None


@dataclass(frozen=True, slots=True)
class Target(Node):
    """``None`` stands for ``*``."""

    subjects: tuple[EntityRef, ...] | None
    actions: tuple[str, ...] | None
    resources: tuple[EntityRef, ...] | None
    #: spans of the action names, in order (for diagnostics)
    action_spans: tuple[Span, ...] = field(default=(), **_SPAN)


def _action_spans(node: Target, _get=Target.__dict__["action_spans"].__get__) -> tuple[Span, ...]:
    spans = _get(node)
    if spans and spans[0].__class__ is int:  # packed by the fast parser (source.SourceMap)
        span = node._src.span
        return tuple(span(s) if s.__class__ is int else s for s in spans)
    return spans


Target.action_spans = property(_action_spans, Target.__dict__["action_spans"].__set__,
                               doc="The spans of the action names, in order (for diagnostics).")


@dataclass(frozen=True, slots=True)
class Condition(Node):
    kind: str  # "when" or "unless"
    expr: Expr


@dataclass(frozen=True, slots=True)
class Grant(Node):
    scopes: tuple[Expr, ...]
    ttl: int  # seconds


@dataclass(frozen=True, slots=True)
class By(Node):
    approvers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Because(Node):
    text: str


@dataclass(frozen=True, slots=True)
class Limit(Node):
    """``limit count <= 20 per principal.id per 1h`` / ``limit sum(action.amount) <= 500 per intent.task_id``
    (docs/language.md#limits).

    ``measure`` is ``count`` (each allowed request counts 1) or ``sum`` (of ``amount``);
    ``bound`` the most the key may use in one window; ``key`` the expression whose value
    names the counter (``None``: one counter for every request the rule applies to);
    ``window`` the window in seconds, or ``None`` for the key's lifetime (no window).
    """

    measure: str
    amount: "Expr | None"
    bound: "Expr"
    key: "Expr | None"
    window: int | None


Clause = Grant | By | Because | Limit


@dataclass(frozen=True, slots=True)
class Rule(Node):
    effect: str  # "permit", "forbid" or "require_approval"
    annotations: tuple[Annotation, ...]
    target: Target
    conditions: tuple[Condition, ...]
    clauses: tuple[Clause, ...]
    #: span of the head keyword(s)
    head_span: Span = field(**_SPAN)

    def annotation(self, name: str) -> str | None:
        for a in self.annotations:
            if a.name == name:
                return a.value
        return None

    # (plain loops testing the class: the compiler reads these for every rule of a set,
    # and a generator with isinstance costs several times as much; node classes have no
    # subclasses)
    @property
    def grant(self) -> Grant | None:
        for c in self.clauses:
            if c.__class__ is Grant:
                return c
        return None

    @property
    def by(self) -> By | None:
        for c in self.clauses:
            if c.__class__ is By:
                return c
        return None

    @property
    def limits(self) -> tuple[Limit, ...]:
        found = ()
        for c in self.clauses:
            if c.__class__ is Limit:
                found += (c,)
        return found

    @property
    def because(self) -> str | None:
        for c in self.clauses:
            if c.__class__ is Because:
                return c.text
        return None


Rule.head_span = _span_property(Rule.__dict__["head_span"], "The span of the head keyword(s).")

Statement = Const | Option | EntityDecl | ActionDecl | ContextDecl | Rule


@dataclass(frozen=True, slots=True)
class PolicyFile(Node):
    path: str
    statements: tuple[Statement, ...]


def children(node: Node) -> tuple[Node, ...]:
    """The direct sub-expressions of an expression node (for generic walks)."""
    cls = node.__class__  # the node classes have no subclasses: tests by identity, commonest first
    if cls is Attr:
        return (node.obj,)
    if cls is Name or cls is Literal:
        return ()
    if cls is Binary:
        return (node.left, node.right)
    if cls is BoolOp or cls is ListExpr:
        return node.items
    if cls is Index:
        return (node.obj, node.index)
    if cls is Call:
        return node.args
    if cls is Unary:
        return (node.operand,)
    if cls is Matches or cls is Has:
        return (node.operand,)
    if cls is Quantifier:
        return (node.collection, node.body)
    return ()


def walk(node: Node):
    """Every expression node below and including ``node``, pre-order, iteratively."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(children(n)))


# ------------------------------------------------------------------ fast construction

def maker(cls: type) -> "Callable[..., Node]":
    """A function making ``cls`` nodes: the very object ``cls(...)`` makes, without the
    frozen dataclass ``__init__`` (one ``object.__setattr__`` per field through a Python
    frame: ~730 ns for an :class:`Attr`, against ~280 ns for the slots set directly). The
    fast parser makes every node with these (a 10,000-rule set is ~250,000 nodes).

    Its parameters are positional, all required: the fields ``__init__`` takes
    positionally, in order, then ``span`` and ``_src``, then any other keyword-only field
    (``head_span``, ``name_span``, ``action_spans``). The code is generated in a fresh
    namespace; each slot is set through its member descriptor (for a field a property
    reads, the property's setter, which is that descriptor's)."""
    fs = fields(cls)
    order = [f.name for f in fs if not f.kw_only] + ["span", "_src"]
    order += [f.name for f in fs if f.kw_only and f.name not in order]
    namespace: dict = {"_new": object.__new__, "_cls": cls}
    lines = [f"def make_{cls.__name__}({', '.join(order)}):", "    o = _new(_cls)"]
    for i, name in enumerate(order):
        attr = inspect.getattr_static(cls, name)
        namespace[f"_s{i}"] = attr.fset if isinstance(attr, property) else attr.__set__
        lines.append(f"    _s{i}(o, {name})")
    lines.append("    return o")
    exec(compile("\n".join(lines), f"<nodes.maker {cls.__name__}>", "exec"), namespace)  # noqa: S102 - our own text
    return namespace[f"make_{cls.__name__}"]
