"""Parsed files → a checked policy set (SPEC §5).

The checker is a named, ordered list of stages (like OPA's compiler). Each stage reads
the shared :class:`CheckContext` and appends diagnostics; none stops at the first
problem, and a later stage never repeats what an earlier one reported (an unknown name
has an unknown type, an undeclared kind is not checked for attributes). The loader
sorts the diagnostics by position at the end.

Every stage is linear in the size of the set: each walks every rule's expressions once,
and the two cross-rule lints (W104, W105) look rules up in indexes built in one pass.

Stages, in order:

``collect``
    Declarations: constants, options, schema, rule ids. E005 (unknown schema type),
    E006 (duplicate rule id, constant, option; a constant named like a root),
    E007 (unknown option or a bad option value).
``constants``
    Folds every constant (literals and constants defined before it only). E002, E005.
``names``
    Resolves every name in rule conditions and grant scopes: roots, constants and the
    quantifier variables in scope. E002 (unknown name, unknown function, an attribute of
    ``delegation`` other than ``chain``/``depth``/``root``; each with the closest known
    name), E005 (a function called with the wrong number of arguments).
``schema``
    Only for the categories the set declares (principal kinds, resource types,
    actions, context). E003 (a target kind, resource type or action not declared; an
    action used on a type it is not declared for; an action declared on an undeclared
    type), E004 (an attribute read on ``principal``/``resource``/``action``/``context``,
    ``delegation.root`` or a ``delegation.chain`` entity that is not declared for the
    targeted kinds/types/actions, or under ``*`` on any declared one).
``types``
    Static types from literals, constants, schema attributes, function results and the
    fixed fields (``risk.score``, ``delegation.depth`` …). E005 where the known types
    cannot fit (``<`` between a string and a number, ``matches`` on a non-string, ``in``
    a number, a non-boolean condition or ``and``/``or``/``not`` operand, a grant scope
    that is not a string …). An unknown type never errors.
``clauses``
    Rule clauses and annotations. E007 (``grant`` on a non-permit, ``by`` missing on
    ``require approval`` or present elsewhere, a second ``because``/``by``/``grant``, a
    grant ttl of zero or over ``option max_ttl``, a CIDR literal or constant in
    ``in_cidr`` that does not parse), E006 (a second ``@id`` on one rule).
``lint``
    Warnings, which never stop a set from loading: W101 (no ``@id``), W102 (``permit``
    of ``*`` actions on ``*`` resources), W103 (an optional schema attribute read
    without a ``has`` guard in the same ``when``/``unless``), W104 (a permit or gate
    whose whole target is covered by an unconditional forbid), W105 (a ``high_impact``
    action permitted to kind ``agent`` or ``*`` with no covering approval gate), W106
    (no ``because``), W107 (a constant no rule or other constant uses).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import ast
from .errors import Diagnostic
from .interpreter import Scope, evaluate
from .parser import KEYWORDS, ROOTS
from .policyset import ActionInfo, Options, RuleInfo, Schema
from .runtime import FUNCTIONS, EvalError, cidr_is_valid
from .source import Span

SCALAR_TYPES = frozenset(["string", "number", "bool", "duration"])
COLLECTION_TYPES = frozenset(["set", "list"])
OPTION_NAMES = ("max_ttl", "attenuate_delegation")


@dataclass
class CheckContext:
    files: Sequence[ast.PolicyFile]
    #: display path -> path relative to the set root (for default rule ids)
    rel_paths: Mapping[str, str]
    diagnostics: list[Diagnostic] = field(default_factory=list)
    constants: dict[str, Any] = field(default_factory=dict)
    const_decls: dict[str, ast.Const] = field(default_factory=dict)
    options: Options = field(default_factory=Options)
    option_decls: dict[str, ast.Option] = field(default_factory=dict)
    schema: Schema = field(default_factory=Schema)
    rules: list[RuleInfo] = field(default_factory=list)
    #: constants some rule reads (filled by the names stage)
    used_constants: set[str] = field(default_factory=set)

    def report(self, code: str, message: str, span: Span) -> None:
        self.diagnostics.append(Diagnostic.make(code, message, span))

    def statements(self, kind: type | tuple[type, ...]) -> Iterable[tuple[ast.PolicyFile, Any]]:
        for f in self.files:
            for s in f.statements:
                if isinstance(s, kind):
                    yield f, s


@dataclass(frozen=True)
class CheckResult:
    rules: tuple[RuleInfo, ...]
    constants: Mapping[str, Any]
    options: Options
    schema: Schema
    diagnostics: tuple[Diagnostic, ...]


def suggest(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest candidate, or ``""``."""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


# ------------------------------------------------------------------ stage: collect

def _type_errors(t: ast.TypeRef, ctx: CheckContext) -> None:
    if t.name in COLLECTION_TYPES:
        if t.arg is None:
            ctx.report("E005", f"'{t.name}' needs an element type, e.g. {t.name}<string>", t.span)
        else:
            _type_errors(t.arg, ctx)
    elif t.name in SCALAR_TYPES:
        if t.arg is not None:
            ctx.report("E005", f"'{t.name}' takes no type argument", t.span)
    else:
        known = SCALAR_TYPES | COLLECTION_TYPES
        ctx.report("E005", f"unknown type '{t.name}'{suggest(t.name, known)}", t.span)


def _fields(decl_fields: Sequence[ast.FieldDecl] | None, ctx: CheckContext, into: dict) -> None:
    for f in decl_fields or ():
        _type_errors(f.type, ctx)
        into[f.name] = f.type


def stage_collect(ctx: CheckContext) -> None:
    principals: dict[str, dict] = {}
    resources: dict[str, dict] = {}
    actions: dict[str, ActionInfo] = {}
    context: dict | None = None
    options: dict[str, Any] = {}

    for f in ctx.files:
        for s in f.statements:
            if isinstance(s, ast.Const):
                if s.name in ROOTS:
                    ctx.report("E006", f"constant '{s.name}' has the name of a root", s.name_span)
                elif s.name in ctx.const_decls:
                    first = ctx.const_decls[s.name].span
                    ctx.report("E006", f"constant '{s.name}' is already defined at {first.path}:{first.line}",
                               s.name_span)
                else:
                    ctx.const_decls[s.name] = s
            elif isinstance(s, ast.Option):
                if s.name not in OPTION_NAMES:
                    ctx.report("E007", f"unknown option '{s.name}'{suggest(s.name, OPTION_NAMES)}", s.name_span)
                elif s.name in ctx.option_decls:
                    first = ctx.option_decls[s.name].span
                    ctx.report("E006", f"option '{s.name}' is already set at {first.path}:{first.line}",
                               s.name_span)
                else:
                    ctx.option_decls[s.name] = s
                    value = s.value
                    if s.name == "max_ttl":
                        if (isinstance(value, ast.Literal) and value.kind in ("duration", "int")
                                and value.value > 0):
                            options["max_ttl"] = value.value
                        else:
                            ctx.report("E007", "option max_ttl needs a positive duration such as 1h", value.span)
                    elif s.name == "attenuate_delegation":
                        if isinstance(value, ast.Literal) and value.kind == "bool":
                            options["attenuate_delegation"] = value.value
                        else:
                            ctx.report("E007", "option attenuate_delegation needs true or false", value.span)
            elif isinstance(s, ast.EntityDecl):
                target = principals if s.category == "principal" else resources
                _fields(s.fields, ctx, target.setdefault(s.name, {}))
            elif isinstance(s, ast.ActionDecl):
                attrs: dict = {}
                _fields(s.fields, ctx, attrs)
                for name in s.names:
                    prev = actions.get(name)
                    if prev is None:
                        actions[name] = ActionInfo(name, frozenset(s.on), attrs, s.high_impact, s)
                    else:
                        actions[name] = ActionInfo(name, prev.on | frozenset(s.on), {**prev.attrs, **attrs},
                                                   prev.high_impact or s.high_impact, prev.decl)
            elif isinstance(s, ast.ContextDecl):
                context = {} if context is None else context
                _fields(s.fields, ctx, context)
            elif isinstance(s, ast.Rule):
                explicit = s.annotation("id")
                rid = explicit if explicit is not None else f"{ctx.rel_paths.get(f.path, f.path)}:{s.span.line}"
                ctx.rules.append(RuleInfo(rid, s, len(ctx.rules), f.path, explicit is not None))

    seen: dict[str, RuleInfo] = {}
    for r in ctx.rules:
        if r.id in seen:
            first = seen[r.id]
            ann = next((a for a in r.rule.annotations if a.name == "id"), None)
            ctx.report("E006", f"rule id '{r.id}' is already used at {first.location}",
                       ann.span if ann else r.rule.head_span)
        else:
            seen[r.id] = r

    ctx.options = Options(**options)
    ctx.schema = Schema(principals, resources, actions, context)


# ------------------------------------------------------------------ stage: constants

def stage_constants(ctx: CheckContext) -> None:
    defined: dict[str, Any] = {}
    order = list(ctx.const_decls)
    for i, name in enumerate(order):
        decl = ctx.const_decls[name]
        later = set(order[i + 1:])
        bad = False
        for node in ast.walk(decl.value):
            if isinstance(node, ast.Name) and node.name not in defined:
                bound = _bound_in(decl.value, node)
                if bound:
                    continue
                bad = True
                if node.name in later:
                    msg = f"constant '{node.name}' is used before it is defined"
                elif node.name in ROOTS:
                    msg = f"a constant may use only literals and constants defined before it, not '{node.name}'"
                else:
                    msg = f"unknown name '{node.name}'{suggest(node.name, list(defined))}"
                ctx.report("E002", msg, node.span)
        if bad:
            continue
        try:
            defined[name] = evaluate(decl.value, Scope({}, defined))
        except EvalError as e:
            ctx.report("E005", f"constant '{name}' cannot be evaluated: {e}", decl.value.span)
    ctx.constants = defined


def _bound_in(root: ast.Expr, name_node: ast.Name) -> bool:
    """True when ``name_node`` refers to a quantifier variable of an enclosing quantifier."""
    stack: list[tuple[ast.Node, frozenset]] = [(root, frozenset())]
    while stack:
        node, bound = stack.pop()
        if node is name_node:
            return name_node.name in bound
        if isinstance(node, ast.Quantifier):
            stack.append((node.collection, bound))
            stack.append((node.body, bound | {node.var}))
        else:
            stack.extend((c, bound) for c in ast.children(node))
    return False


# ------------------------------------------------------------------ spans and words

def _head_span(span: Span, length: int) -> Span:
    """The first ``length`` characters of ``span`` (a name that starts a node)."""
    return Span(span.path, span.line, span.column, span.line, span.column + length,
                span.start, span.start + length)


def _tail_span(span: Span, length: int) -> Span:
    """The last ``length`` characters of ``span`` (a name that ends a node)."""
    return Span(span.path, span.end_line, max(1, span.end_column - length), span.end_line, span.end_column,
                max(0, span.end - length), span.end)


def format_duration(seconds: int) -> str:
    """``5400`` → ``1h30m`` (the policy language's own duration form)."""
    if seconds <= 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(out)


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or ``""`` (mid-sentence form)."""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _quoted_list(names: Iterable[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


# ------------------------------------------------------------------ static types
#
# A static type is None (unknown: anything may come at run time), one of the strings
# below, or a tuple:
#   ("list", elem)                  elem is a static type
#   ("entity", category, kinds)     category "principal" or "resource"; kinds is a tuple
#                                   of the declared kinds/types it may be, or None for
#                                   "any declared one" (a `*` target, delegation entities)
#   ("action", names)               names as for kinds
STRING, NUMBER, BOOL = "string", "number", "bool"
CONTEXT, RISK, OBJECT, DELEGATION = "context", "risk", "object", "delegation"

_LITERAL_TYPES = {"string": STRING, "int": NUMBER, "decimal": NUMBER, "duration": NUMBER, "bool": BOOL}
_SCHEMA_TYPES = {"string": STRING, "number": NUMBER, "duration": NUMBER, "bool": BOOL}
_BUILTIN_ATTRS = {"principal": ("id", "kind"), "resource": ("id", "type")}
_DELEGATION_FIELDS = ("chain", "depth", "root")
_ANY_PRINCIPAL = ("entity", "principal", None)
_SCALARS = (STRING, NUMBER, BOOL)


def _type_of_value(v: Any):
    if isinstance(v, bool):
        return BOOL
    if isinstance(v, (int, float)):
        return NUMBER
    if isinstance(v, str):
        return STRING
    if isinstance(v, (list, tuple)):
        return ("list", _common([_type_of_value(x) for x in v]))
    return None


def _common(types: Sequence) -> Any:
    """The one type all of ``types`` share, else unknown."""
    if not types:
        return None
    first = types[0]
    for t in types[1:]:
        if t != first:
            return None
    return first


def _type_of_ref(t: ast.TypeRef | None):
    if t is None:
        return None
    if t.name in COLLECTION_TYPES:
        return ("list", _type_of_ref(t.arg))
    return _SCHEMA_TYPES.get(t.name)


def describe_type(t) -> str:
    """``a string``, ``a list`` … for messages."""
    if t == STRING:
        return "a string"
    if t == NUMBER:
        return "a number"
    if t == BOOL:
        return "a boolean"
    if t == DELEGATION:
        return "the delegation object"
    if t in (CONTEXT, RISK, OBJECT):
        return "an object"
    if isinstance(t, tuple):
        if t[0] == "list":
            return "a list"
        if t[0] == "entity":
            return "a principal entity" if t[1] == "principal" else "a resource entity"
        if t[0] == "action":
            return "an action"
    return "a value"


def _is_list(t) -> bool:
    return isinstance(t, tuple) and t[0] == "list"


def _path(node: ast.Expr) -> str | None:
    """``principal.trust`` for an attribute path (W103 matches reads with guards)."""
    parts = []
    while True:
        if isinstance(node, ast.Name):
            parts.append(node.name)
            return ".".join(reversed(parts))
        if isinstance(node, ast.Attr):
            parts.append(node.name)
            node = node.obj
        elif isinstance(node, ast.Index) and isinstance(node.index, ast.Literal) and node.index.kind == "string":
            parts.append(node.index.value)
            node = node.obj
        else:
            return None


class _Walker:
    """One walk over a rule's expressions, computing static types.

    Each stage makes its own walker and switches on only the reports it owns, so the
    same inference serves every stage and nothing is reported twice.
    """

    def __init__(self, ctx: CheckContext, *, names: bool = False, schema: bool = False,
                 types: bool = False, cidr: bool = False, optional_reads: bool = False) -> None:
        self.ctx = ctx
        self.sch = ctx.schema
        self.report_names = names
        self.report_schema = schema
        self.report_types = types
        self.report_cidr = cidr
        self.track_reads = optional_reads
        self.const_types = {n: _type_of_value(v) for n, v in ctx.constants.items()}
        self.const_names = ctx.const_decls
        self.known_functions = tuple(FUNCTIONS)
        #: (attr node, path) of optional schema attributes read in the current condition
        self.reads: list[tuple[ast.Node, str | None, str]] = []
        #: attribute paths tested with `has` in the current condition
        self.guards: set[str] = set()
        self.used_constants: set[str] = set()
        self.principal = self.resource = self.action = None

    # -- per rule -----------------------------------------------------------------
    def enter_rule(self, rule: ast.Rule) -> None:
        t = rule.target
        sch = self.sch
        self.principal = ("entity", "principal", self._targeted(t.subjects, sch.principals))
        self.resource = ("entity", "resource", self._targeted(t.resources, sch.resources))
        names = None if t.actions is None else tuple(a for a in t.actions if a in sch.actions)
        self.action = ("action", names)

    @staticmethod
    def _targeted(refs, declared) -> tuple | None:
        if refs is None:
            return None
        return tuple(dict.fromkeys(r.name for r in refs if r.name in declared))

    def root_type(self, name: str):
        if name == "principal":
            return self.principal
        if name == "resource":
            return self.resource
        if name == "action":
            return self.action
        if name == "context":
            return CONTEXT
        if name == "risk":
            return RISK
        if name == "delegation":
            return DELEGATION
        return OBJECT  # intent

    def _err(self, message: str, span: Span) -> None:
        self.ctx.report("E005", message, span)

    # -- expressions --------------------------------------------------------------
    def expr(self, n: ast.Expr, env: Mapping[str, Any]):
        k = type(n)
        if k is ast.Literal:
            return _LITERAL_TYPES.get(n.kind)
        if k is ast.Name:
            return self.name(n, env)
        if k is ast.Attr:
            obj = self.expr(n.obj, env)
            return self.attribute(n, obj, n.name, _tail_span(n.span, len(n.name)))
        if k is ast.BoolOp:
            for item in n.items:
                t = self.expr(item, env)
                if self.report_types and t is not None and t != BOOL:
                    self._err(f"the operands of '{n.op}' must be booleans, but this is {describe_type(t)}; "
                              f"compare it to something to get a boolean", item.span)
            return BOOL
        if k is ast.Binary:
            return self.binary(n, env)
        if k is ast.Call:
            return self.call(n, env)
        if k is ast.Unary:
            t = self.expr(n.operand, env)
            if n.op == "not":
                if self.report_types and t is not None and t != BOOL:
                    self._err(f"'not' needs a boolean, but its operand is {describe_type(t)}", n.operand.span)
                return BOOL
            if t is not None and t != NUMBER:
                if self.report_types:
                    self._err(f"unary '-' needs a number, but its operand is {describe_type(t)}", n.span)
                return None
            return NUMBER
        if k is ast.Matches:
            t = self.expr(n.operand, env)
            if self.report_types and t is not None and t != STRING:
                self._err(f"'matches' needs a string on the left, but this is {describe_type(t)}", n.operand.span)
            return BOOL
        if k is ast.Has:
            saved = self.track_reads
            self.track_reads = False  # `has` never raises: reads inside it need no guard
            self.expr(n.operand, env)
            self.track_reads = saved
            if saved:
                p = _path(n.operand)
                if p is not None:
                    self.guards.add(f"{p}.{n.name}")
            return BOOL
        if k is ast.Index:
            return self.index(n, env)
        if k is ast.ListExpr:
            return ("list", _common([self.expr(i, env) for i in n.items]))
        if k is ast.Quantifier:
            coll = self.expr(n.collection, env)
            if self.report_types and coll is not None and not _is_list(coll):
                self._err(f"'{n.kind}' iterates over a list, but this is {describe_type(coll)}", n.collection.span)
            elem = coll[1] if _is_list(coll) else None
            body = self.expr(n.body, {**env, n.var: elem})
            if self.report_types and body is not None and body != BOOL:
                self._err(f"the body of '{n.kind}' must be a boolean, but it is {describe_type(body)}", n.body.span)
            return BOOL
        return None  # pragma: no cover - every node kind is handled above

    def name(self, n: ast.Name, env: Mapping[str, Any]):
        name = n.name
        if name in env:
            return env[name]
        if name in self.const_names:
            self.used_constants.add(name)
            return self.const_types.get(name)
        if name in ROOTS:
            return self.root_type(name)
        if self.report_names:
            known = [*env, *self.const_names, *ROOTS]
            hint = suggest(name, known)
            if not hint:
                hint = ("; a name must be a root (" + ", ".join(sorted(ROOTS)) +
                        "), a constant or a quantifier variable")
            self.ctx.report("E002", f"unknown name '{name}'{hint}", n.span)
        return None

    def attribute(self, node: ast.Node, obj, name: str, name_span: Span):
        """The type of ``obj.name`` (also ``obj["name"]``)."""
        if obj is None:
            return None
        if obj == DELEGATION:
            if name == "chain":
                return ("list", _ANY_PRINCIPAL)
            if name == "depth":
                return NUMBER
            if name == "root":
                return _ANY_PRINCIPAL
            if self.report_names:
                self.ctx.report("E002", f"'delegation' has no attribute '{name}'{_did_you_mean(name, _DELEGATION_FIELDS)}; "
                                        f"it has only chain, depth and root", name_span)
            return None
        if obj == RISK:
            if name == "score":
                return NUMBER
            if name == "signals":
                return ("list", STRING)
            return None
        if obj == OBJECT:
            return None
        if obj == CONTEXT:
            if self.sch.context is None:
                return None
            ref = self.sch.context.get(name)
            if ref is None:
                if self.report_schema:
                    self.ctx.report("E004", f"context attribute '{name}' is not declared in the schema"
                                            f"{_did_you_mean(name, self.sch.context)}; add it to the context {{ … }} "
                                            f"declaration or fix the name", name_span)
                return None
            return self._read(node, ref.optional, _type_of_ref(ref), name)
        if isinstance(obj, tuple) and obj[0] == "entity":
            category, kinds = obj[1], obj[2]
            if name in _BUILTIN_ATTRS[category]:
                return STRING
            declared = self.sch.principals if category == "principal" else self.sch.resources
            word = "kind" if category == "principal" else "resource type"
            return self._schema_attr(node, declared, kinds, name, name_span, category, word)
        if isinstance(obj, tuple) and obj[0] == "action":
            if name == "name":
                return STRING
            declared = {a: info.attrs for a, info in self.sch.actions.items()} if self.sch.actions else {}
            return self._schema_attr(node, declared, obj[1], name, name_span, "action", "action")
        if self.report_types:
            self._err(f"cannot read attribute '{name}' of {describe_type(obj)}", name_span)
        return None

    def _schema_attr(self, node, declared: Mapping[str, Mapping[str, ast.TypeRef]], kinds, name: str,
                     name_span: Span, category: str, word: str):
        if not declared:
            return None  # no schema for this category: attributes are free-form
        candidates = list(declared) if kinds is None else kinds
        if not candidates:
            return None  # every targeted kind is undeclared: E003 says so already
        refs = [declared[k][name] for k in candidates if name in declared[k]]
        if kinds is None:
            missing = [] if refs else candidates
        else:
            missing = [k for k in candidates if name not in declared[k]]
        if missing:
            if self.report_schema:
                known = {a for k in candidates for a in declared[k]} | set(_BUILTIN_ATTRS.get(category, ("name",)))
                where = (f"any declared {word}" if kinds is None
                         else f"{word} {_quoted_list(missing)}")
                self.ctx.report("E004", f"{category} attribute '{name}' is not declared for {where}"
                                        f"{_did_you_mean(name, known)}; declare it in the schema or fix the name",
                                name_span)
            if not refs:
                return None
        return self._read(node, any(r.optional for r in refs), _common([_type_of_ref(r) for r in refs]), name)

    def _read(self, node, optional: bool, t, name: str):
        if optional and self.track_reads:
            self.reads.append((node, _path(node), name))
        return t

    def index(self, n: ast.Index, env):
        obj = self.expr(n.obj, env)
        key = self.expr(n.index, env)
        lit = n.index if isinstance(n.index, ast.Literal) else None
        if lit is not None and lit.kind == "string" and obj is not None and not _is_list(obj) \
                and obj not in _SCALARS:
            return self.attribute(n, obj, lit.value, lit.span)
        if obj is None:
            return None
        if _is_list(obj):
            if self.report_types:
                if key is not None and key != NUMBER:
                    self._err(f"a list index must be an integer, but this is {describe_type(key)}", n.index.span)
                elif lit is not None and lit.kind == "decimal":
                    self._err("a list index must be an integer, not a decimal", n.index.span)
            return obj[1]
        if obj in _SCALARS:
            if self.report_types:
                self._err(f"cannot index {describe_type(obj)}; only lists, objects and entities can be indexed",
                          n.span)
            return None
        if self.report_types and key is not None and key != STRING:
            self._err(f"an attribute key must be a string, but this is {describe_type(key)}", n.index.span)
        return None

    def call(self, n: ast.Call, env):
        arg_types = [self.expr(a, env) for a in n.args]
        spec = FUNCTIONS.get(n.func)
        if spec is None:
            if self.report_names:
                hint = suggest(n.func, self.known_functions)
                if not hint:
                    hint = "; the functions are " + ", ".join(self.known_functions)
                self.ctx.report("E002", f"unknown function '{n.func}'{hint}", _head_span(n.span, len(n.func)))
            return None
        _fn, arity, result = spec
        if len(n.args) != arity:
            if self.report_names:
                self._err(f"{n.func}() takes {arity} argument{'s' if arity != 1 else ''}, "
                          f"but {len(n.args)} {'were' if len(n.args) != 1 else 'was'} given", n.span)
            return None
        if self.report_types:
            for i, (arg, t) in enumerate(zip(n.args, arg_types)):
                if t is None:
                    continue
                if n.func == "len":
                    if t != STRING and not _is_list(t):
                        self._err(f"len() needs a list or a string, but this is {describe_type(t)}", arg.span)
                elif t != STRING:
                    what = ("an IP address string" if n.func == "in_cidr" and i == 0
                            else "a CIDR string such as \"10.0.0.0/8\"" if n.func == "in_cidr" else "a string")
                    self._err(f"{n.func}() needs {what}, but this is {describe_type(t)}", arg.span)
        if self.report_cidr and n.func == "in_cidr":
            net = n.args[1]
            text = None
            if isinstance(net, ast.Literal) and net.kind == "string":
                text = net.value
            elif isinstance(net, ast.Name) and net.name not in env and isinstance(self.ctx.constants.get(net.name), str):
                text = self.ctx.constants[net.name]
            if text is not None and not cidr_is_valid(text):
                via = "" if isinstance(net, ast.Literal) else f" (the value of constant '{net.name}')"
                self.ctx.report("E007", f"{json.dumps(text)}{via} is not a CIDR network; write an IPv4 or IPv6 "
                                        f"network such as \"10.0.0.0/8\" or \"fd00::/8\"", net.span)
        return _SCHEMA_TYPES.get(result, result)

    def binary(self, n: ast.Binary, env):
        lt = self.expr(n.left, env)
        rt = self.expr(n.right, env)
        op = n.op
        if op in ("==", "!="):
            return BOOL
        check = self.report_types
        if op in ("<", "<=", ">", ">="):
            if check:
                bad = next((t for t in (lt, rt) if t is not None and t not in (STRING, NUMBER)), None)
                if bad is not None:
                    self._err(f"'{op}' compares two numbers or two strings, but one side is {describe_type(bad)}",
                              n.span)
                elif lt is not None and rt is not None and lt != rt:
                    self._err(f"'{op}' compares two numbers or two strings, but this compares "
                              f"{describe_type(lt)} with {describe_type(rt)}; convert one side or fix the operand",
                              n.span)
            return BOOL
        if op in ("in", "not in"):
            if check and rt is not None:
                if rt == STRING:
                    if lt is not None and lt != STRING:
                        self._err(f"'{op}' a string tests for a substring and needs a string on the left, "
                                  f"but this is {describe_type(lt)}", n.left.span)
                elif not _is_list(rt):
                    self._err(f"'{op}' needs a list (or a string) on the right, but this is {describe_type(rt)}",
                              n.right.span)
            return BOOL
        if op == "+":
            if check:
                bad = next((t for t in (lt, rt) if t is not None and t not in (STRING, NUMBER)), None)
                if bad is not None:
                    self._err(f"'+' adds numbers or joins strings, but one side is {describe_type(bad)}", n.span)
                    return None
                if lt is not None and rt is not None and lt != rt:
                    self._err(f"'+' adds two numbers or joins two strings, but this mixes {describe_type(lt)} "
                              f"and {describe_type(rt)}", n.span)
                    return None
            if lt == STRING or rt == STRING:
                return STRING if lt in (STRING, None) and rt in (STRING, None) else None
            if lt == NUMBER or rt == NUMBER:
                return NUMBER if lt in (NUMBER, None) and rt in (NUMBER, None) else None
            return None
        # - * /
        if check:
            bad = next((t for t in (lt, rt) if t is not None and t != NUMBER), None)
            if bad is not None:
                self._err(f"'{op}' needs two numbers, but one side is {describe_type(bad)}", n.span)
                return None
        return NUMBER


def _rule_exprs(rule: ast.Rule):
    """(expression, role) for every condition and grant scope of ``rule``."""
    for c in rule.conditions:
        yield c.expr, c
    for clause in rule.clauses:
        if isinstance(clause, ast.Grant):
            for scope in clause.scopes:
                yield scope, clause


# ------------------------------------------------------------------ stage: names

def stage_names(ctx: CheckContext) -> None:
    w = _Walker(ctx, names=True)
    empty: dict = {}
    for info in ctx.rules:
        w.enter_rule(info.rule)
        for expr, _role in _rule_exprs(info.rule):
            w.expr(expr, empty)
    ctx.used_constants |= w.used_constants


# ------------------------------------------------------------------ stage: schema

def stage_schema(ctx: CheckContext) -> None:
    sch = ctx.schema
    if sch.empty:
        return
    # an action declared on a resource type the schema does not declare
    if sch.resources:
        for _f, decl in ctx.statements(ast.ActionDecl):
            for t in decl.on:
                if t not in sch.resources:
                    ctx.report("E003", f"action {_quoted_list(decl.names)} is declared on resource type '{t}', "
                                       f"which is not declared{_did_you_mean(t, sch.resources)}; add `resource {t} {{ … }}`",
                               decl.span)
    w = _Walker(ctx, schema=True)
    empty: dict = {}
    for info in ctx.rules:
        rule = info.rule
        t = rule.target
        if sch.principals and t.subjects is not None:
            for ref in t.subjects:
                if ref.name not in sch.principals:
                    ctx.report("E003", f"principal kind '{ref.name}' is not declared in the schema"
                                       f"{_did_you_mean(ref.name, sch.principals)}; declare it with "
                                       f"`principal {ref.name} {{ … }}` or fix the name",
                               _head_span(ref.span, len(ref.name)))
        if sch.resources and t.resources is not None:
            for ref in t.resources:
                if ref.name not in sch.resources:
                    ctx.report("E003", f"resource type '{ref.name}' is not declared in the schema"
                                       f"{_did_you_mean(ref.name, sch.resources)}; declare it with "
                                       f"`resource {ref.name} {{ … }}` or fix the name",
                               _head_span(ref.span, len(ref.name)))
        if sch.actions and t.actions is not None:
            for name, span in zip(t.actions, t.action_spans):
                action = sch.actions.get(name)
                if action is None:
                    ctx.report("E003", f"action '{name}' is not declared in the schema"
                                       f"{_did_you_mean(name, sch.actions)}; declare it with "
                                       f"`action {name} on <type>` or fix the name", span)
                elif t.resources is not None:
                    for ref in t.resources:
                        if ref.name not in action.on and (not sch.resources or ref.name in sch.resources):
                            ctx.report("E003", f"action '{name}' is not declared on resource type '{ref.name}' "
                                               f"(it is declared on {_quoted_list(sorted(action.on))}); add "
                                               f"'{ref.name}' to its `action … on` declaration or change the target",
                                       span)
        w.enter_rule(rule)
        for expr, _role in _rule_exprs(rule):
            w.expr(expr, empty)


# ------------------------------------------------------------------ stage: types

def stage_types(ctx: CheckContext) -> None:
    w = _Walker(ctx, types=True)
    empty: dict = {}
    for info in ctx.rules:
        rule = info.rule
        w.enter_rule(rule)
        for c in rule.conditions:
            t = w.expr(c.expr, empty)
            if t is not None and t != BOOL:
                ctx.report("E005", f"a `{c.kind}` condition must be a boolean, but this is {describe_type(t)}; "
                                   f"compare it to something (e.g. `== …`)", c.expr.span)
        for clause in rule.clauses:
            if isinstance(clause, ast.Grant):
                for scope in clause.scopes:
                    t = w.expr(scope, empty)
                    if t is not None and t != STRING:
                        ctx.report("E005", f"a grant scope must be a string, but this is {describe_type(t)}; "
                                           f"build the scope with string concatenation, e.g. \"repo:read:\" + "
                                           f"resource.id", scope.span)


# ------------------------------------------------------------------ stage: clauses

_CLAUSE_WORD = {ast.Grant: "grant", ast.By: "by", ast.Because: "because"}


def stage_clauses(ctx: CheckContext) -> None:
    max_ttl = ctx.options.max_ttl
    w = _Walker(ctx, cidr=True)
    empty: dict = {}
    for info in ctx.rules:
        rule = info.rule
        effect = rule.effect
        seen: set[type] = set()
        for clause in rule.clauses:
            kind = type(clause)
            word = _CLAUSE_WORD[kind]
            if kind in seen:
                ctx.report("E007", f"a second `{word}` clause on one rule; a rule has at most one "
                                   f"`{word}` (join them into one)", clause.span)
                continue
            seen.add(kind)
            if kind is ast.Grant:
                if effect != "permit":
                    what = "a forbid" if effect == "forbid" else "a require approval rule"
                    ctx.report("E007", f"`grant` is only allowed on permit rules, not on {what}; "
                                       f"remove the grant clause", clause.span)
                elif clause.ttl <= 0:
                    ctx.report("E007", "a grant ttl must be longer than 0s; give a duration such as 10m",
                               clause.span)
                elif clause.ttl > max_ttl:
                    ctx.report("E007", f"grant ttl {format_duration(clause.ttl)} is longer than the set's max_ttl "
                                       f"({format_duration(max_ttl)}); shorten it or raise `option max_ttl`",
                               clause.span)
            elif kind is ast.By and effect != "require_approval":
                ctx.report("E007", f"`by` names approvers and is only allowed on `require approval` rules, "
                                   f"not on a {effect}; remove it", clause.span)
        if effect == "require_approval" and ast.By not in seen:
            ctx.report("E007", "`require approval` needs a `by` clause naming who may approve, "
                               "e.g. by \"sre-oncall\"", rule.head_span)
        ids = [a for a in rule.annotations if a.name == "id"]
        for extra in ids[1:]:
            ctx.report("E006", "a second @id on one rule; keep one", extra.span)
        w.enter_rule(rule)
        for expr, _role in _rule_exprs(rule):
            w.expr(expr, empty)


# ------------------------------------------------------------------ glob coverage

def _glob_tokens(pattern: str) -> tuple[str, ...]:
    """``*``, ``**``, ``?`` or one literal character per token (SPEC §4.2 globs)."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append("**")
            i += 2
        else:
            out.append(pattern[i] if pattern[i] not in "*?" else pattern[i])
            i += 1
    return tuple(out)


def _glob_closure(tokens: tuple[str, ...], states: Iterable[int]) -> frozenset:
    out, stack = set(states), list(states)
    while stack:
        s = stack.pop()
        if s < len(tokens) and tokens[s] in ("*", "**") and s + 1 not in out:
            out.add(s + 1)
            stack.append(s + 1)
    return frozenset(out)


def _glob_step(tokens: tuple[str, ...], states: frozenset, ch: str | None) -> frozenset:
    """``ch`` None is a character that is neither ``/`` nor in any pattern."""
    nxt = []
    for s in states:
        if s >= len(tokens):
            continue
        tok = tokens[s]
        if tok == "**":
            nxt.append(s)
        elif tok == "*":
            if ch != "/":
                nxt.append(s)
        elif tok == "?":
            if ch != "/":
                nxt.append(s + 1)
        elif tok == ch:
            nxt.append(s + 1)
    return _glob_closure(tokens, nxt)


def glob_covers(outer: str, inner: str, limit: int = 5000) -> bool:
    """True when every string ``inner`` matches is matched by ``outer`` (both globs).

    The product of the two patterns' automata, determinised on the fly over the
    characters that matter (each literal, ``/`` and "any other"). Patterns are short;
    past ``limit`` states it answers False, which only costs a missed warning.
    """
    if outer == inner or outer.strip("*") == "" and "**" in outer:
        return True
    a, b = _glob_tokens(inner), _glob_tokens(outer)
    alphabet = sorted({t for t in a + b if len(t) == 1 and t not in "*?"} | {"/"}) + [None]
    start = (_glob_closure(a, [0]), _glob_closure(b, [0]))
    seen = {start}
    stack = [start]
    while stack:
        sa, sb = stack.pop()
        if len(a) in sa and len(b) not in sb:
            return False
        for ch in alphabet:
            na = _glob_step(a, sa, ch)
            if not na:
                continue
            nb = _glob_step(b, sb, ch)
            pair = (na, nb)
            if pair not in seen:
                if len(seen) >= limit:
                    return False
                seen.add(pair)
                stack.append(pair)
    return True


def _ref_covers(outer: ast.EntityRef, inner: ast.EntityRef | None, category: str, kind: str | None = None) -> bool:
    """Does target entry ``outer`` match every request that ``inner`` matches?

    ``inner`` None stands for a ``*`` target restricted to ``kind``. A glob-less resource
    entry also matches requests without a ``resource.id``, which no glob matches.
    """
    name = inner.name if inner is not None else kind
    if outer.name != name:
        return False
    if outer.glob is None:
        return True
    inner_glob = inner.glob if inner is not None else None
    if inner_glob is None:
        return category == "principal" and glob_covers(outer.glob, "**")
    return glob_covers(outer.glob, inner_glob)


def _refs_cover(outer, inner, category: str) -> bool:
    if outer is None:
        return True
    if inner is None:
        return False
    return all(any(_ref_covers(o, i, category) for o in outer) for i in inner)


def _target_covers(outer: ast.Target, inner: ast.Target) -> bool:
    if outer.actions is not None and (inner.actions is None or not set(inner.actions) <= set(outer.actions)):
        return False
    return (_refs_cover(outer.subjects, inner.subjects, "principal")
            and _refs_cover(outer.resources, inner.resources, "resource"))


# ------------------------------------------------------------------ stage: lint

def _lint_w104(ctx: CheckContext) -> None:
    """Permits and gates whose target an unconditional forbid covers."""
    by_subject: dict[str, list[RuleInfo]] = {}
    by_action: dict[str, list[RuleInfo]] = {}
    by_resource: dict[str, list[RuleInfo]] = {}
    seen_targets: set[ast.Target] = set()
    for info in ctx.rules:
        rule = info.rule
        if rule.effect != "forbid" or rule.conditions or rule.target in seen_targets:
            continue
        seen_targets.add(rule.target)
        t = rule.target
        for key in ({"*"} if t.subjects is None else {r.name for r in t.subjects}):
            by_subject.setdefault(key, []).append(info)
        for key in ({"*"} if t.actions is None else set(t.actions)):
            by_action.setdefault(key, []).append(info)
        for key in ({"*"} if t.resources is None else {r.name for r in t.resources}):
            by_resource.setdefault(key, []).append(info)
    if not seen_targets:
        return

    def bucket(index, refs_first):
        out = index.get("*", [])
        if refs_first is not None:
            out = out + index.get(refs_first, [])
        return out

    for info in ctx.rules:
        rule = info.rule
        if rule.effect == "forbid":
            continue
        t = rule.target
        candidates = min(
            bucket(by_subject, None if t.subjects is None else t.subjects[0].name),
            bucket(by_action, None if t.actions is None else t.actions[0]),
            bucket(by_resource, None if t.resources is None else t.resources[0].name),
            key=len,
        )
        covering = [f for f in candidates if _target_covers(f.rule.target, t)]
        if covering:
            f = min(covering, key=lambda r: r.index)
            which = f"'{f.id}' ({f.location})" if f.explicit_id else f"at {f.location}"
            what = "permit" if rule.effect == "permit" else "require approval rule"
            ctx.report("W104", f"this {what} can never determine a decision: the unconditional forbid "
                               f"{which} denies every request its target matches; narrow the "
                               f"forbid with a condition, or remove this rule", rule.head_span)


def _lint_w105(ctx: CheckContext) -> None:
    """High-impact actions permitted to agents (or to anyone) with no covering gate."""
    high = {name: a for name, a in ctx.schema.actions.items() if a.high_impact}
    if not high:
        return
    gates: dict[str, list[ast.Target]] = {}
    seen: set[ast.Target] = set()
    for info in ctx.rules:
        t = info.rule.target
        if info.rule.effect != "require_approval" or t in seen:
            continue
        seen.add(t)
        for key in (["*"] if t.actions is None else t.actions):
            gates.setdefault(key, []).append(t)

    def gated(agent_ref, action: str, res_ref, res_type: str) -> bool:
        for g in gates.get("*", []) + gates.get(action, []):
            if g.subjects is not None and not any(_ref_covers(s, agent_ref, "principal", "agent") for s in g.subjects):
                continue
            if g.resources is not None and not any(_ref_covers(r, res_ref, "resource", res_type)
                                                   for r in g.resources):
                continue
            return True
        return False

    for info in ctx.rules:
        rule = info.rule
        t = rule.target
        if rule.effect != "permit":
            continue
        if t.subjects is None:
            agents: list = [None]
        else:
            agents = [r for r in t.subjects if r.name == "agent"]
            if not agents:
                continue
        if t.actions is None:
            acts = [(name, t.span) for name in high]
        else:
            acts = [(name, span) for name, span in zip(t.actions, t.action_spans) if name in high]
        for name, span in acts:
            on = high[name].on
            if t.resources is None:
                res = [(None, typ) for typ in sorted(on)]
            else:
                res = [(r, r.name) for r in t.resources if r.name in on]
            missing = sorted({typ for agent in agents for ref, typ in res if not gated(agent, name, ref, typ)})
            if missing:
                ctx.report("W105", f"high-impact action '{name}' is permitted to "
                                   f"{'any principal' if t.subjects is None else 'agents'} on "
                                   f"{_quoted_list(missing)} with no `require approval` rule covering it; add "
                                   f"`require approval for agent to {name} on {missing[0]} by \"…\"`", span)


def stage_lint(ctx: CheckContext) -> None:
    w = _Walker(ctx, optional_reads=True)
    empty: dict = {}
    for info in ctx.rules:
        rule = info.rule
        t = rule.target
        if not info.explicit_id:
            ann = next((a for a in rule.annotations if a.name == "id"), None)
            if ann is not None:
                ctx.report("W101", f"@id has no value, so this rule gets the default id '{info.id}'; "
                                   f"write @id(\"a-stable-name\")", ann.span)
            else:
                ctx.report("W101", f"rule has no @id, so its id is '{info.id}', which changes when lines move; "
                                   f"add @id(\"a-stable-name\")", rule.head_span)
        if rule.effect == "permit" and t.actions is None and t.resources is None:
            ctx.report("W102", "permit of every action (*) on every resource (*) is over-broad authority; "
                               "name the actions and resource types", t.span)
        if rule.because is None:
            ctx.report("W106", "rule has no `because`; add because \"…\" so decisions can say why",
                       rule.head_span)
        w.enter_rule(rule)
        for c in rule.conditions:
            w.reads = []
            w.guards = set()
            w.expr(c.expr, empty)
            for node, path, name in w.reads:
                if path is None or path not in w.guards:
                    shown = path or name
                    base = shown.rsplit(".", 1)[0] if path else "…"
                    ctx.report("W103", f"'{shown}' is optional in the schema and is read without a `has` guard "
                                       f"in this `{c.kind}`, so a request without it makes the rule raise; "
                                       f"guard it: `{base} has {name} and …`", node.span)
    _lint_w104(ctx)
    _lint_w105(ctx)
    # W107: constants that no rule (see stage names) and no other constant uses
    used = set(ctx.used_constants)
    for name, decl in ctx.const_decls.items():
        for node in ast.walk(decl.value):
            if isinstance(node, ast.Name) and node.name != name:
                used.add(node.name)
    for name, decl in ctx.const_decls.items():
        if name not in used:
            ctx.report("W107", f"constant '{name}' is never used; remove it or use it in a rule", decl.name_span)


#: the stages in order: (name, function)
STAGES: list[tuple[str, Callable[[CheckContext], None]]] = [
    ("collect", stage_collect),
    ("constants", stage_constants),
    ("names", stage_names),
    ("schema", stage_schema),
    ("types", stage_types),
    ("clauses", stage_clauses),
    ("lint", stage_lint),
]


def check(files: Sequence[ast.PolicyFile], rel_paths: Mapping[str, str]) -> CheckResult:
    ctx = CheckContext(files, rel_paths)
    for _name, stage in STAGES:
        stage(ctx)
    return CheckResult(tuple(ctx.rules), dict(ctx.constants), ctx.options, ctx.schema, tuple(ctx.diagnostics))
