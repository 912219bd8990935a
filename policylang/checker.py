"""Parsed files → a checked policy set (SPEC §5).

The checker is a named, ordered list of stages (like OPA's compiler). Each stage reads
the shared :class:`CheckContext` and appends diagnostics; none stops at the first
problem. The loader sorts the diagnostics by position at the end.

Stages, in order:

``collect``
    Declarations: constants, options, schema, rule ids. E005 (unknown schema type),
    E006 (duplicate rule id, constant, option; a constant named like a root),
    E007 (unknown option or a bad option value).
``constants``
    Folds every constant (literals and constants defined before it only). E002, E005.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import ast
from .errors import Diagnostic
from .interpreter import Scope, evaluate
from .parser import KEYWORDS, ROOTS
from .policyset import ActionInfo, Options, RuleInfo, Schema
from .runtime import EvalError
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


#: the stages in order: (name, function)
STAGES: list[tuple[str, Callable[[CheckContext], None]]] = [
    ("collect", stage_collect),
    ("constants", stage_constants),
]


def check(files: Sequence[ast.PolicyFile], rel_paths: Mapping[str, str]) -> CheckResult:
    ctx = CheckContext(files, rel_paths)
    for _name, stage in STAGES:
        stage(ctx)
    return CheckResult(tuple(ctx.rules), dict(ctx.constants), ctx.options, ctx.schema, tuple(ctx.diagnostics))
