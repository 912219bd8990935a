"""Stage ``names``: resolves every name in rule conditions, grant scopes and limits — roots,
constants and the quantifier variables in scope — in a walk of its own (no types).
Input: ``ctx.rules``, ``ctx.const_decls``. Output: its diagnostics and
``ctx.used_constants`` (the constants rules read, for W107). Diagnostics: E002 (unknown
name, unknown function, an attribute of ``delegation`` other than
``chain``/``depth``/``root``; each with the closest known name), E005 (a function called
with the wrong number of arguments).

An attribute of the delegation object reached other than through the name
``delegation`` (``[delegation][0].x``) is known only from its type: the types stage
reports that one (see :mod:`.expressions`)."""

from __future__ import annotations

from .. import nodes
from ..roots import NAMES as ROOTS
from ...evaluation.runtime import FUNCTIONS
from .context import CheckContext, did_you_mean, head_span, suggest, tail_span
from .memo import UNSET

DELEGATION_FIELDS = ("chain", "depth", "root")


def stage_names(ctx: CheckContext) -> None:
    # the in_cidr calls of conditions and grant scopes, with their quantifier variables in
    # scope, for the clauses stage's network check (so it needs no walk of its own)
    cidr = ctx.cidr_calls = []
    memo, out = ctx.memo, ctx.new_memo
    diags = ctx.diagnostics
    all_used = ctx.used_constants
    for info in ctx.rules:
        rule = info.rule
        hit = memo.entry(rule) if memo is not None else None
        if hit is not None and hit[1] is not UNSET:  # same rule node, same declarations
            results = hit[1]
            if results is not None:
                diags.extend(results[0])
                all_used.update(results[1])
                cidr.extend(results[2])
            if out is not None:
                out.record(info.index, rule, results, stage="names")
            continue
        d0, c0 = len(diags), len(cidr)
        ctx.used_constants = used = set()
        _rule_names(ctx, rule, cidr)
        ctx.used_constants = all_used
        all_used.update(used)
        if out is not None:
            found = (tuple(diags[d0:]), frozenset(used), tuple(cidr[c0:]))
            out.record(info.index, rule, found if any(found) else None, stage="names")


def _rule_names(ctx: CheckContext, rule: nodes.Rule, cidr: list) -> None:
    for c in rule.conditions:
        _resolve(ctx, c.expr, ())
    for clause in rule.clauses:
        if clause.__class__ is nodes.Grant:
            for scope in clause.scopes:
                _resolve(ctx, scope, ())
        elif clause.__class__ is nodes.Limit:
            ctx.cidr_calls = []  # limits are not checked for networks
            for e in limit_exprs(clause):
                _resolve(ctx, e, ())
            ctx.cidr_calls = cidr


def limit_exprs(limit: nodes.Limit) -> tuple[nodes.Expr, ...]:
    """The expressions of a limit clause: its amount, bound and key (those it has)."""
    return tuple(e for e in (limit.amount, limit.bound, limit.key) if e is not None)


def _is_delegation(n: nodes.Expr, bound: tuple[str, ...]) -> bool:
    return n.__class__ is nodes.Name and n.name == "delegation" and n.name not in bound


def _resolve(ctx: CheckContext, n: nodes.Expr, bound: tuple[str, ...]) -> None:
    """Sub-expressions first, then ``n`` itself (the order the diagnostics come in)."""
    cls = n.__class__
    # the commonest nodes first, without the generic walk (children() and the tests
    # below cost as much as the work; the order of the diagnostics is the same)
    if cls is nodes.Literal:
        return
    if cls is nodes.Attr:
        obj = n.obj
        if obj.__class__ is nodes.Name:
            _name(ctx, obj, bound)
            if _is_delegation(obj, bound):
                _delegation_field(ctx, n.name, tail_span(n.span, len(n.name)))
            return
    elif cls is nodes.Binary:
        _resolve(ctx, n.left, bound)
        _resolve(ctx, n.right, bound)
        return
    elif cls is nodes.BoolOp:
        for item in n.items:
            _resolve(ctx, item, bound)
        return
    elif cls is nodes.Name:
        _name(ctx, n, bound)
        return
    if cls is nodes.Quantifier:
        _resolve(ctx, n.collection, bound)
        _resolve(ctx, n.body, bound + (n.var,))
        return
    for child in nodes.children(n):
        _resolve(ctx, child, bound)
    if cls is nodes.Call:
        _call(ctx, n)
        if n.func == "in_cidr" and ctx.cidr_calls is not None:
            ctx.cidr_calls.append((n, bound))
    elif cls is nodes.Attr and _is_delegation(n.obj, bound):
        _delegation_field(ctx, n.name, tail_span(n.span, len(n.name)))
    elif (cls is nodes.Index and _is_delegation(n.obj, bound) and n.index.__class__ is nodes.Literal
          and n.index.kind == "string"):
        _delegation_field(ctx, n.index.value, n.index.span)


def _name(ctx: CheckContext, n: nodes.Name, bound: tuple[str, ...]) -> None:
    name = n.name
    if name in bound:
        return
    if name in ctx.const_decls:
        ctx.used_constants.add(name)
        return
    if name in ROOTS:
        return
    hint = suggest(name, [*bound, *ctx.const_decls, *ROOTS])
    if not hint:
        hint = "; a name must be a root (" + ", ".join(sorted(ROOTS)) + "), a constant or a quantifier variable"
    ctx.report("E002", f"unknown name '{name}'{hint}", n.span)


def _call(ctx: CheckContext, n: nodes.Call) -> None:
    spec = FUNCTIONS.get(n.func)
    if spec is None:
        hint = suggest(n.func, FUNCTIONS)
        if not hint:
            hint = "; the functions are " + ", ".join(FUNCTIONS)
        ctx.report("E002", f"unknown function '{n.func}'{hint}", head_span(n.span, len(n.func)))
        return
    arity = spec[1]
    if len(n.args) != arity:
        ctx.report("E005", f"{n.func}() takes {arity} argument{'s' if arity != 1 else ''}, "
                           f"but {len(n.args)} {'were' if len(n.args) != 1 else 'was'} given", n.span)


def _delegation_field(ctx: CheckContext, name: str, span) -> None:
    if name not in DELEGATION_FIELDS:
        ctx.report("E002", f"'delegation' has no attribute '{name}'{did_you_mean(name, DELEGATION_FIELDS)}; "
                           f"it has only chain, depth and root", span)
