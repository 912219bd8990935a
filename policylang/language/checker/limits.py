"""Part of stage ``clauses``: the ``limit`` clauses of rules (docs/language.md#limits). Input:
``ctx.rules``, ``ctx.constants``, ``ctx.const_decls``. Diagnostics: E008 (a limit on a
``forbid`` or ``require approval`` rule, a bound that is not a non-negative number
known when the set loads, a window of zero, the same limit twice on one rule), W109 (a
limit whose key reads nothing from the request, so that every request the rule applies
to shares one counter). Types of the amount, bound and key are the ``types`` stage's
(E005)."""

from __future__ import annotations

import math

from .. import nodes
from ..roots import NAMES as ROOTS
from ...evaluation.interpreter import Scope, evaluate
from ...evaluation.runtime import EvalError
from .context import CheckContext


def check_limits(ctx: CheckContext) -> None:
    for info in ctx.rules:
        rule = info.rule
        seen: set = set()
        for clause in rule.clauses:
            if clause.__class__ is not nodes.Limit:
                continue
            if rule.effect != "permit":
                what = "a forbid" if rule.effect == "forbid" else "a require approval rule"
                ctx.report("E008", f"`limit` is only allowed on permit rules, not on {what}: a limit bounds "
                                   f"what a permit allows; remove it", clause.span)
                continue
            _bound(ctx, clause)
            if clause.window is not None and clause.window <= 0:
                ctx.report("E008", "a limit window must be longer than 0s; give a duration such as 1h",
                           clause.span)
            same = (clause.measure, clause.amount, clause.key, clause.window)
            if same in seen:
                ctx.report("E008", "the same limit (measure, key and window) twice on one rule; keep the "
                                   "tighter one", clause.span)
            seen.add(same)
            if clause.key is None or not reads_request(clause.key, ctx):
                ctx.report("W109", _W109_KEYLESS if clause.key is None else _W109_CONSTANT, clause.span)


_W109_KEYLESS = ("this limit has no key, so every request the rule applies to shares one counter (every "
                 "principal, task and tenant); key it, e.g. `per principal.id` or `per intent.task_id`")
_W109_CONSTANT = ("this limit's key reads nothing from the request, so every request the rule applies to "
                  "shares one counter; key it by the request, e.g. `per principal.id` or `per intent.task_id`")


def reads_request(e: nodes.Expr, ctx: CheckContext) -> bool:
    """Does ``e`` read a root (not only literals and constants)?"""
    for n in nodes.walk(e):
        if n.__class__ is nodes.Name and n.name in ROOTS and n.name not in ctx.const_decls:
            return True
    return False


def _bound(ctx: CheckContext, clause: nodes.Limit) -> None:
    b = clause.bound
    if reads_request(b, ctx):
        ctx.report("E008", "a limit bound must be known when the set loads (a number or a constant), "
                           "not read from the request", b.span)
        return
    try:
        value = evaluate(b, Scope({}, ctx.constants))
    except (EvalError, KeyError, NameError):
        return  # an unknown name is E002 (names), a bad operand E005 (types)
    except Exception:  # noqa: BLE001 - a bound that cannot be evaluated is reported, never a crash
        value = None
    if value.__class__ is bool or not isinstance(value, (int, float)):
        return  # not a number: the types stage's E005
    if not math.isfinite(value) or value < 0:
        ctx.report("E008", "a limit bound must be a number of at least 0", b.span)


def bound_value(clause: nodes.Limit, constants) -> float | int:
    """The bound of a checked limit (the compiler and the interpreter read it here)."""
    return evaluate(clause.bound, Scope({}, constants))
