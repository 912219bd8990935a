"""Stage ``clauses``: rule clauses and annotations. Input: ``ctx.rules``, ``ctx.options``,
``ctx.constants``. Diagnostics: E007 (``grant`` on a non-permit, ``by`` missing on
``require approval`` or present elsewhere, a second ``because``/``by``/``grant``, a grant
ttl of zero or over ``option max_ttl``, a CIDR literal or constant in ``in_cidr`` that
does not parse), E006 (a second ``@id`` on one rule); and, in :mod:`.limits`, the ``limit``
clauses: E008, W109."""

from __future__ import annotations

import json

from .. import nodes
from ...evaluation.runtime import cidr_is_valid
from .context import CheckContext, format_duration
from .limits import check_limits

_CLAUSE_WORD = {nodes.Grant: "grant", nodes.By: "by", nodes.Because: "because", nodes.Limit: "limit"}


def stage_clauses(ctx: CheckContext) -> None:
    _clauses_and_ids(ctx)
    _cidr_networks(ctx)
    check_limits(ctx)


def _clauses_and_ids(ctx: CheckContext) -> None:
    max_ttl = ctx.options.max_ttl
    for info in ctx.rules:
        rule = info.rule
        effect = rule.effect
        seen: set[type] = set()
        for clause in rule.clauses:
            kind = type(clause)
            if kind is nodes.Limit:
                continue  # several limits may bound one permit: the limits stage checks them
            word = _CLAUSE_WORD[kind]
            if kind in seen:
                ctx.report("E007", f"a second `{word}` clause on one rule; a rule has at most one "
                                   f"`{word}` (join them into one)", clause.span)
                continue
            seen.add(kind)
            if kind is nodes.Grant:
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
            elif kind is nodes.By and effect != "require_approval":
                ctx.report("E007", f"`by` names approvers and is only allowed on `require approval` rules, "
                                   f"not on a {effect}; remove it", clause.span)
        if effect == "require_approval" and nodes.By not in seen:
            ctx.report("E007", "`require approval` needs a `by` clause naming who may approve, "
                               "e.g. by \"sre-oncall\"", rule.head_span)
        if len(rule.annotations) > 1:
            ids = [a for a in rule.annotations if a.name == "id"]
            for extra in ids[1:]:
                ctx.report("E006", "a second @id on one rule; a rule has one id, keep one", extra.span)


def _cidr_networks(ctx: CheckContext) -> None:
    if ctx.cidr_calls is not None:  # the names stage found them
        for call, bound in ctx.cidr_calls:
            _cidr_network(ctx, call, bound)
        return
    for info in ctx.rules:
        rule = info.rule
        for c in rule.conditions:
            _cidrs(ctx, c.expr, frozenset())
        for clause in rule.clauses:
            if clause.__class__ is nodes.Grant:
                for scope in clause.scopes:
                    _cidrs(ctx, scope, frozenset())


def _cidrs(ctx: CheckContext, n: nodes.Expr, bound: frozenset) -> None:
    """E007 for each ``in_cidr`` whose network is a literal, or a constant (not shadowed
    by a quantifier variable), that does not parse; sub-expressions first."""
    if n.__class__ is nodes.Quantifier:
        _cidrs(ctx, n.collection, bound)
        _cidrs(ctx, n.body, bound | {n.var})
        return
    for child in nodes.children(n):
        _cidrs(ctx, child, bound)
    if n.__class__ is nodes.Call and n.func == "in_cidr":
        _cidr_network(ctx, n, bound)


def _cidr_network(ctx: CheckContext, n: nodes.Call, bound) -> None:
    if len(n.args) != 2:
        return
    net = n.args[1]
    text = None
    if net.__class__ is nodes.Literal and net.kind == "string":
        text = net.value
    elif net.__class__ is nodes.Name and net.name not in bound and isinstance(ctx.constants.get(net.name), str):
        text = ctx.constants[net.name]
    if text is not None and not cidr_is_valid(text):
        via = "" if net.__class__ is nodes.Literal else f" (the value of constant '{net.name}')"
        ctx.report("E007", f"{json.dumps(text)}{via} is not a CIDR network; write an IPv4 or "
                           f"IPv6 network such as \"10.0.0.0/8\" or \"fd00::/8\"", net.span)

