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
from .parser import ROOTS
from .policyset import ActionInfo, Options, RuleInfo, Schema
from .runtime import FUNCTIONS, EvalError, cidr_is_valid
from .source import Span

SCALAR_TYPES = frozenset(["string", "number", "bool", "duration"])
COLLECTION_TYPES = frozenset(["set", "list"])
OPTION_NAMES = ("max_ttl", "max_approval_ttl", "attenuate_delegation", "authoritative_entities")


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
    #: the shared expression pass (see :class:`_Analysis`), once a stage has run it
    analysis: Any = None
    #: the kinds and types the set's entity data files have records for (for W108)
    entity_types: frozenset[str] = frozenset()

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
    auth_principals: set[str] = set()
    auth_resources: set[str] = set()

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
                    elif s.name == "max_approval_ttl":
                        if (isinstance(value, ast.Literal) and value.kind in ("duration", "int")
                                and value.value > 0):
                            options["max_approval_ttl"] = value.value
                        else:
                            ctx.report("E007", "option max_approval_ttl needs a positive duration such as 24h",
                                       value.span)
                    elif s.name == "authoritative_entities":
                        if isinstance(value, ast.Literal) and value.kind == "bool":
                            options["authoritative_entities"] = value.value
                        else:
                            ctx.report("E007", "option authoritative_entities needs true or false", value.span)
                    elif s.name == "attenuate_delegation":
                        if isinstance(value, ast.Literal) and value.kind == "bool":
                            options["attenuate_delegation"] = value.value
                        else:
                            ctx.report("E007", "option attenuate_delegation needs true or false", value.span)
            elif isinstance(s, ast.EntityDecl):
                target = principals if s.category == "principal" else resources
                _fields(s.fields, ctx, target.setdefault(s.name, {}))
                if s.authoritative:
                    (auth_principals if s.category == "principal" else auth_resources).add(s.name)
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
    ctx.schema = Schema(principals, resources, actions, context,
                        frozenset(auth_principals), frozenset(auth_resources))


# ------------------------------------------------------------------ stage: constants

def stage_constants(ctx: CheckContext) -> None:
    defined: dict[str, Any] = {}
    failed: set[str] = set()
    order = list(ctx.const_decls)
    position = {name: i for i, name in enumerate(order)}
    for i, name in enumerate(order):
        decl = ctx.const_decls[name]
        bad = False
        for node in ast.walk(decl.value):
            if isinstance(node, ast.Name) and node.name not in defined:
                bound = _bound_in(decl.value, node)
                if bound:
                    continue
                bad = True
                if node.name in failed:
                    continue  # that constant has its own diagnostic already
                if node.name == name:
                    msg = f"constant '{name}' refers to itself; a constant's value may use only constants defined before it"
                elif position.get(node.name, -1) > i:
                    msg = f"constant '{node.name}' is used before it is defined"
                elif node.name in ROOTS:
                    msg = f"a constant may use only literals and constants defined before it, not '{node.name}'"
                else:
                    msg = f"unknown name '{node.name}'{suggest(node.name, list(defined))}"
                ctx.report("E002", msg, node.span)
        if bad:
            failed.add(name)
            continue
        try:
            defined[name] = evaluate(decl.value, Scope({}, defined))
        except EvalError as e:
            failed.add(name)
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
    close = difflib.get_close_matches(name, sorted(set(candidates) - {name}), n=1, cutoff=0.6)
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


def _targeted(refs, declared) -> tuple | None:
    """The declared kinds/types of a target entry (``None`` for ``*``)."""
    if refs is None:
        return None
    if not declared:
        return ()  # the category has no schema: attributes are free-form anyway
    if len(refs) == 1:
        name = refs[0].name
        return (name,) if name in declared else ()
    return tuple(dict.fromkeys(r.name for r in refs if r.name in declared))


class _Analysis:
    """One walk over every rule's conditions and grant scopes, computing static types.

    The expression checks of five stages (E002/E005 of ``names``, E004 of ``schema``,
    E005 of ``types``, the CIDR E007 of ``clauses`` and W103 of ``lint``) all need the
    same name resolution and type inference, so they are found in a single pass (run by
    the first stage that needs it) and each stage then reports its own share. An
    unknown type (``None``) never produces a diagnostic, and an operand that already has
    an error is unknown from there on, so one mistake gives one diagnostic.
    """

    def __init__(self, ctx: CheckContext) -> None:
        self.ctx = ctx
        self.sch = ctx.schema
        self.out: dict[str, list[Diagnostic]] = {s: [] for s in ("names", "schema", "types", "clauses", "lint")}
        self.const_types = {n: _type_of_value(v) for n, v in ctx.constants.items()}
        self.const_names = ctx.const_decls
        self.used_constants: set[str] = set()
        self.action_attrs = {a: info.attrs for a, info in self.sch.actions.items()}
        self._attr_cache: dict = {}
        #: (node, path, name) of optional schema attributes read in the current condition
        self.reads: list = []
        #: attribute paths tested with `has` in the current condition
        self.guards: set[str] = set()
        self.in_has = 0
        self.principal = self.resource = self.action = None
        #: W108: (rule, node, span, category, kinds or None, name) of entity attributes
        #: read by the conditions of forbid and approval-gate rules; ``gate`` is the rule
        #: being walked when it is one, else None
        self.entity_reads: list = []
        self.gate = None
        self._d = {
            ast.Literal: self._literal, ast.Name: self._name, ast.Attr: self._attr, ast.Index: self._index,
            ast.Call: self._call, ast.Unary: self._unary, ast.Binary: self._binary, ast.BoolOp: self._boolop,
            ast.Matches: self._matches, ast.Has: self._has, ast.Quantifier: self._quantifier,
            ast.ListExpr: self._list,
        }

    def _report(self, stage: str, code: str, message: str, span: Span) -> None:
        self.out[stage].append(Diagnostic.make(code, message, span))

    def _type_error(self, message: str, span: Span) -> None:
        self.out["types"].append(Diagnostic.make("E005", message, span))

    # -- rules --------------------------------------------------------------------
    def run(self) -> None:
        d = self._d
        empty: dict = {}
        for info in self.ctx.rules:
            rule = info.rule
            self.enter_rule(rule.target)
            self.gate = info if rule.effect != "permit" else None
            for c in rule.conditions:
                self.reads = []
                self.guards = set()
                e = c.expr
                t = d[e.__class__](e, empty)
                if t is not None and t != BOOL:
                    self._type_error(f"a `{c.kind}` condition must be a boolean, but this is {describe_type(t)}; "
                                     f"compare it to something (e.g. `== …`)", e.span)
                if self.reads:
                    self._unguarded(c)
            self.gate = None
            self.reads = []
            for clause in rule.clauses:
                if clause.__class__ is ast.Grant:
                    for scope in clause.scopes:
                        t = d[scope.__class__](scope, empty)
                        if t is not None and t != STRING:
                            self._type_error(f"a grant scope must be a string, but this is {describe_type(t)}; "
                                             f"build it with string concatenation, e.g. \"repo:read:\" + resource.id",
                                             scope.span)
            self.reads = []

    def _unguarded(self, c: ast.Condition) -> None:
        for node, path, name in self.reads:
            if path is None or path not in self.guards:
                shown = path or name
                base = shown.rsplit(".", 1)[0] if path else "<entity>"
                self._report("lint", "W103", f"'{shown}' is optional in the schema but is read without a `has` "
                                             f"guard in this `{c.kind}`, so a request without it makes the rule "
                                             f"raise; guard it: `{base} has {name} and …`", node.span)

    def enter_rule(self, target: ast.Target) -> None:
        sch = self.sch
        self.principal = ("entity", "principal", _targeted(target.subjects, sch.principals))
        self.resource = ("entity", "resource", _targeted(target.resources, sch.resources))
        acts = target.actions
        if acts is None or not sch.actions:
            self.action = ("action", None if acts is None else ())
        else:
            self.action = ("action", tuple(dict.fromkeys(a for a in acts if a in sch.actions)))

    # -- expressions --------------------------------------------------------------
    def _literal(self, n: ast.Literal, env):
        return _LITERAL_TYPES.get(n.kind)

    def _name(self, n: ast.Name, env):
        name = n.name
        if env and name in env:
            return env[name]
        if name in self.const_names:
            self.used_constants.add(name)
            return self.const_types.get(name)
        if name == "principal":
            return self.principal
        if name == "resource":
            return self.resource
        if name == "action":
            return self.action
        if name in ROOTS:
            return _ROOT_TYPES[name]
        hint = suggest(name, [*env, *self.const_names, *ROOTS])
        if not hint:
            hint = "; a name must be a root (" + ", ".join(sorted(ROOTS)) + "), a constant or a quantifier variable"
        self._report("names", "E002", f"unknown name '{name}'{hint}", n.span)
        return None

    def _attr(self, n: ast.Attr, env):
        o = n.obj
        obj = self._d[o.__class__](o, env)
        if obj is None:
            return None
        return self.attribute(n, obj, n.name, False)

    def _name_span(self, node, is_index: bool) -> Span:
        if is_index:
            return node.index.span
        return _tail_span(node.span, len(node.name))

    def attribute(self, node, obj, name: str, is_index: bool):
        """The type of ``obj.name`` (or ``obj["name"]``)."""
        if obj.__class__ is tuple:
            if obj[0] == "list":
                self._type_error(f"cannot read attribute '{name}' of a list", self._name_span(node, is_index))
                return None
            key = (obj, name)
            hit = self._attr_cache.get(key)
            if hit is None:
                hit = self._attr_cache[key] = self._entity_attr(obj, name)
            t, optional, problem = hit
            if self.gate is not None and obj[0] == "entity" and name not in _BUILTIN_ATTRS[obj[1]]:
                self._entity_read(node, self._name_span(node, is_index), obj, name)
            if problem is not None:
                self._report("schema", "E004", problem, self._name_span(node, is_index))
            if optional and not self.in_has:
                self.reads.append((node, _path(node), name))
            return t
        if obj == DELEGATION:
            if name == "chain":
                return _CHAIN
            if name == "depth":
                return NUMBER
            if name == "root":
                return _ANY_PRINCIPAL
            self._report("names", "E002", f"'delegation' has no attribute '{name}'"
                                          f"{_did_you_mean(name, _DELEGATION_FIELDS)}; it has only chain, depth "
                                          f"and root", self._name_span(node, is_index))
            return None
        if obj == RISK:
            if name == "score":
                return NUMBER
            if name == "signals":
                return _SIGNALS
            return None
        if obj == OBJECT:
            return None
        if obj == CONTEXT:
            declared = self.sch.context
            if declared is None:
                return None
            ref = declared.get(name)
            if ref is None:
                self._report("schema", "E004", f"context attribute '{name}' is not declared in the schema"
                                               f"{_did_you_mean(name, declared)}; add it to the `context {{ … }}` "
                                               f"declaration or fix the name", self._name_span(node, is_index))
                return None
            if ref.optional and not self.in_has:
                self.reads.append((node, _path(node), name))
            return _type_of_ref(ref)
        self._type_error(f"cannot read attribute '{name}' of {describe_type(obj)}", self._name_span(node, is_index))
        return None

    def _entity_read(self, node, span: Span, obj: tuple, name: str) -> None:
        """Note a read of an entity attribute in a forbid or gate (W108)."""
        target = self.gate.rule.target
        if obj is self.principal:
            refs = target.subjects
        elif obj is self.resource:
            refs = target.resources
        else:
            refs = None  # a delegation-chain entity: any principal kind
        kinds = None if refs is None else tuple(dict.fromkeys(r.name for r in refs))
        self.entity_reads.append((self.gate, node, span, obj[1], kinds, name))

    def _entity_attr(self, obj: tuple, name: str) -> tuple:
        """(type, optional, E004 message or None) of an attribute of an entity or action."""
        if obj[0] == "action":
            if name == "name":
                return (STRING, False, None)
            declared, category, word = self.action_attrs, "action", "action"
            kinds = obj[1]
        else:
            category = obj[1]
            if name in _BUILTIN_ATTRS[category]:
                return (STRING, False, None)
            if category == "principal":
                declared, word = self.sch.principals, "kind"
            else:
                declared, word = self.sch.resources, "resource type"
            kinds = obj[2]
        if not declared:
            return (None, False, None)  # no schema for this category: attributes are free-form
        candidates = list(declared) if kinds is None else kinds
        if not candidates:
            return (None, False, None)  # every targeted kind is undeclared: E003 says so already
        refs = [declared[k][name] for k in candidates if name in declared[k]]
        missing = ([] if refs else candidates) if kinds is None else [k for k in candidates if name not in declared[k]]
        problem = None
        if missing:
            known = {a for k in candidates for a in declared[k]} | set(_BUILTIN_ATTRS.get(category, ("name",)))
            where = f"any declared {word}" if kinds is None else f"{word} {_quoted_list(missing)}"
            problem = (f"{category} attribute '{name}' is not declared for {where}{_did_you_mean(name, known)}; "
                       f"declare it in the schema or fix the name")
        if not refs:
            return (None, False, problem)
        return (_common([_type_of_ref(r) for r in refs]), any(r.optional for r in refs), problem)

    def _index(self, n: ast.Index, env):
        d = self._d
        obj = d[n.obj.__class__](n.obj, env)
        idx = n.index
        key = d[idx.__class__](idx, env)
        if obj is None:
            return None
        lit = idx if idx.__class__ is ast.Literal else None
        if _is_list(obj):
            if key is not None and key != NUMBER:
                self._type_error(f"a list index must be an integer, but this is {describe_type(key)}", idx.span)
            elif lit is not None and lit.kind == "decimal":
                self._type_error("a list index must be an integer, not a decimal", idx.span)
            return obj[1]
        if obj in _SCALARS:
            self._type_error(f"cannot index {describe_type(obj)}; only lists, objects and entities can be indexed",
                             n.span)
            return None
        if lit is not None and lit.kind == "string":
            return self.attribute(n, obj, lit.value, True)
        if key is not None and key != STRING:
            self._type_error(f"an attribute key must be a string, but this is {describe_type(key)}", idx.span)
        return None

    def _call(self, n: ast.Call, env):
        d = self._d
        arg_types = [d[a.__class__](a, env) for a in n.args]
        spec = FUNCTIONS.get(n.func)
        if spec is None:
            hint = suggest(n.func, FUNCTIONS)
            if not hint:
                hint = "; the functions are " + ", ".join(FUNCTIONS)
            self._report("names", "E002", f"unknown function '{n.func}'{hint}", _head_span(n.span, len(n.func)))
            return None
        _fn, arity, result = spec
        if len(n.args) != arity:
            self._report("names", "E005", f"{n.func}() takes {arity} argument{'s' if arity != 1 else ''}, "
                                          f"but {len(n.args)} {'were' if len(n.args) != 1 else 'was'} given", n.span)
            return None
        for i, (arg, t) in enumerate(zip(n.args, arg_types)):
            if t is None:
                continue
            if n.func == "len":
                if t != STRING and not _is_list(t):
                    self._type_error(f"len() needs a list or a string, but this is {describe_type(t)}", arg.span)
            elif t != STRING:
                what = ("an IP address string" if n.func == "in_cidr" and i == 0
                        else "a CIDR string such as \"10.0.0.0/8\"" if n.func == "in_cidr" else "a string")
                self._type_error(f"{n.func}() needs {what}, but this is {describe_type(t)}", arg.span)
        if n.func == "in_cidr":
            net = n.args[1]
            text = None
            if net.__class__ is ast.Literal and net.kind == "string":
                text = net.value
            elif net.__class__ is ast.Name and net.name not in env and isinstance(self.ctx.constants.get(net.name), str):
                text = self.ctx.constants[net.name]
            if text is not None and not cidr_is_valid(text):
                via = "" if net.__class__ is ast.Literal else f" (the value of constant '{net.name}')"
                self._report("clauses", "E007", f"{json.dumps(text)}{via} is not a CIDR network; write an IPv4 or "
                                                f"IPv6 network such as \"10.0.0.0/8\" or \"fd00::/8\"", net.span)
        return _SCHEMA_TYPES.get(result, result)

    def _unary(self, n: ast.Unary, env):
        o = n.operand
        t = self._d[o.__class__](o, env)
        if n.op == "not":
            if t is not None and t != BOOL:
                self._type_error(f"'not' needs a boolean, but its operand is {describe_type(t)}", o.span)
            return BOOL
        if t is not None and t != NUMBER:
            self._type_error(f"unary '-' needs a number, but its operand is {describe_type(t)}", n.span)
            return None
        return NUMBER

    def _boolop(self, n: ast.BoolOp, env):
        d = self._d
        for item in n.items:
            t = d[item.__class__](item, env)
            if t is not None and t != BOOL:
                self._type_error(f"the operands of '{n.op}' must be booleans, but this is {describe_type(t)}; "
                                 f"compare it to something to get a boolean", item.span)
        return BOOL

    def _matches(self, n: ast.Matches, env):
        o = n.operand
        t = self._d[o.__class__](o, env)
        if t is not None and t != STRING:
            self._type_error(f"'matches' needs a string on the left, but this is {describe_type(t)}", o.span)
        return BOOL

    def _has(self, n: ast.Has, env):
        o = n.operand
        self.in_has += 1  # `has` never raises: reads inside it need no guard
        try:
            t = self._d[o.__class__](o, env)
        finally:
            self.in_has -= 1
        if (self.gate is not None and t.__class__ is tuple and t[0] == "entity"
                and n.name not in _BUILTIN_ATTRS[t[1]]):
            self._entity_read(n, n.span, t, n.name)
        p = _path(o)
        if p is not None:
            self.guards.add(f"{p}.{n.name}")
        return BOOL

    def _list(self, n: ast.ListExpr, env):
        d = self._d
        return ("list", _common([d[i.__class__](i, env) for i in n.items]))

    def _quantifier(self, n: ast.Quantifier, env):
        d = self._d
        c = n.collection
        coll = d[c.__class__](c, env)
        if coll is not None and not _is_list(coll):
            self._type_error(f"'{n.kind}' iterates over a list, but this is {describe_type(coll)}", c.span)
        elem = coll[1] if _is_list(coll) else None
        b = n.body
        body = d[b.__class__](b, {**env, n.var: elem})
        if body is not None and body != BOOL:
            self._type_error(f"the body of '{n.kind}' must be a boolean, but it is {describe_type(body)}", b.span)
        return BOOL

    def _binary(self, n: ast.Binary, env):
        d = self._d
        left, right = n.left, n.right
        lt = d[left.__class__](left, env)
        rt = d[right.__class__](right, env)
        op = n.op
        if op == "==" or op == "!=":
            return BOOL
        if op in _ORDER_OPS:
            bad = lt if lt is not None and lt not in _ORDERED else rt if rt is not None and rt not in _ORDERED else None
            if bad is not None:
                self._type_error(f"'{op}' compares two numbers or two strings, but one side is "
                                 f"{describe_type(bad)}", n.span)
            elif lt is not None and rt is not None and lt != rt:
                self._type_error(f"'{op}' compares two numbers or two strings, but this compares "
                                 f"{describe_type(lt)} with {describe_type(rt)}; convert one side or fix the "
                                 f"operand", n.span)
            return BOOL
        if op == "in" or op == "not in":
            if rt is not None:
                if rt == STRING:
                    if lt is not None and lt != STRING:
                        self._type_error(f"'{op}' a string tests for a substring and needs a string on the left, "
                                         f"but this is {describe_type(lt)}", left.span)
                elif not _is_list(rt):
                    self._type_error(f"'{op}' needs a list (or a string) on the right, but this is "
                                     f"{describe_type(rt)}", right.span)
            return BOOL
        if op == "+":
            bad = lt if lt is not None and lt not in _ORDERED else rt if rt is not None and rt not in _ORDERED else None
            if bad is not None:
                self._type_error(f"'+' adds numbers or joins strings, but one side is {describe_type(bad)}", n.span)
                return None
            if lt is not None and rt is not None and lt != rt:
                self._type_error(f"'+' adds two numbers or joins two strings, but this mixes {describe_type(lt)} "
                                 f"and {describe_type(rt)}", n.span)
                return None
            return lt if lt is not None else rt
        # - * /
        bad = lt if lt is not None and lt != NUMBER else rt if rt is not None and rt != NUMBER else None
        if bad is not None:
            self._type_error(f"'{op}' needs two numbers, but one side is {describe_type(bad)}", n.span)
            return None
        return NUMBER


_ORDER_OPS = frozenset(["<", "<=", ">", ">="])
_ORDERED = (STRING, NUMBER)
_CHAIN = ("list", _ANY_PRINCIPAL)
_SIGNALS = ("list", STRING)
_ROOT_TYPES = {"context": CONTEXT, "risk": RISK, "delegation": DELEGATION, "intent": OBJECT}


def _analysis(ctx: CheckContext) -> _Analysis:
    """The shared expression pass, run once by the first stage that asks."""
    if ctx.analysis is None:
        a = _Analysis(ctx)
        a.run()
        a._d = {}  # drop the bound methods: no reference cycle outlives the pass
        ctx.used_constants |= a.used_constants
        ctx.analysis = a
    return ctx.analysis


def _emit(ctx: CheckContext, stage: str) -> None:
    ctx.diagnostics.extend(_analysis(ctx).out[stage])


# ------------------------------------------------------------------ stage: names

def stage_names(ctx: CheckContext) -> None:
    _emit(ctx, "names")


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
                                       f"which is not declared{_did_you_mean(t, sch.resources)}; add "
                                       f"`resource {t} {{ … }}` or fix the name", decl.span)
    for info in ctx.rules:
        t = info.rule.target
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
                                               f"(only on {_quoted_list(sorted(action.on))}); add '{ref.name}' to "
                                               f"its `action … on` declaration or change the target", span)
    _emit(ctx, "schema")


# ------------------------------------------------------------------ stage: types

def stage_types(ctx: CheckContext) -> None:
    _emit(ctx, "types")


# ------------------------------------------------------------------ stage: clauses

_CLAUSE_WORD = {ast.Grant: "grant", ast.By: "by", ast.Because: "because"}


def stage_clauses(ctx: CheckContext) -> None:
    max_ttl = ctx.options.max_ttl
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
        if len(rule.annotations) > 1:
            ids = [a for a in rule.annotations if a.name == "id"]
            for extra in ids[1:]:
                ctx.report("E006", "a second @id on one rule; a rule has one id, keep one", extra.span)
    _emit(ctx, "clauses")


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


def _lint_w108(ctx: CheckContext) -> None:
    """W108: a forbid or gate reads an entity attribute that the request can set, for a
    kind/type the set's entity data has records for and that is not authoritative."""
    data = ctx.entity_types
    if not data or ctx.options.authoritative_entities:
        return
    sch = ctx.schema
    seen: set = set()
    for info, node, span, category, kinds, name in _analysis(ctx).entity_reads:
        if category == "principal":
            declared, authoritative, word = sch.principals, sch.authoritative_principals, "principal kind"
        else:
            declared, authoritative, word = sch.resources, sch.authoritative_resources, "resource type"
        candidates = kinds if kinds is not None else (tuple(declared) if declared else tuple(sorted(data)))
        exposed = [k for k in candidates if k in data and k not in authoritative]
        if not exposed:
            continue
        if isinstance(node, ast.Has):
            base = _path(node.operand)
            shown = f"{base}.{name}" if base else name
        else:
            shown = _path(node) or name
        key = (info.index, shown)
        if key in seen:
            continue
        seen.add(key)
        what = "this forbid" if info.effect == "forbid" else "this approval gate"
        ctx.report("W108", f"{what} reads '{shown}', which the caller can set: request attributes override the "
                           f"stored entity data of {word} {_quoted_list(exposed)}; declare "
                           f"`{category} {exposed[0]} authoritative {{ … }}` or set "
                           f"`option authoritative_entities = true`", span)


def stage_lint(ctx: CheckContext) -> None:
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
    _emit(ctx, "lint")  # W103
    _lint_w104(ctx)
    _lint_w105(ctx)
    _lint_w108(ctx)
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


def check(files: Sequence[ast.PolicyFile], rel_paths: Mapping[str, str],
          entity_types: Iterable[str] = ()) -> CheckResult:
    """Check a parsed set. ``entity_types``: the kinds and types its entity data has
    records for (W108 warns only about those)."""
    ctx = CheckContext(files, rel_paths, entity_types=frozenset(entity_types))
    for _name, stage in STAGES:
        stage(ctx)
    return CheckResult(tuple(ctx.rules), dict(ctx.constants), ctx.options, ctx.schema, tuple(ctx.diagnostics))
