"""Stage ``constants``: folds every constant into ``ctx.constants`` (literals and
constants defined before it only). Input: ``ctx.const_decls`` (from ``collect``).
Diagnostics: E002 (a name a constant may not use), E005 (a value that cannot be
evaluated)."""

from __future__ import annotations

from typing import Any

from .. import nodes
from ...evaluation.interpreter import Scope, evaluate
from ..roots import NAMES as ROOTS
from ...evaluation.runtime import EvalError
from .context import CheckContext, suggest

def stage_constants(ctx: CheckContext) -> None:
    defined: dict[str, Any] = {}
    failed: set[str] = set()
    order = list(ctx.const_decls)
    position = {name: i for i, name in enumerate(order)}
    for i, name in enumerate(order):
        decl = ctx.const_decls[name]
        bad = False
        for node in nodes.walk(decl.value):
            if isinstance(node, nodes.Name) and node.name not in defined:
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


def _bound_in(root: nodes.Expr, name_node: nodes.Name) -> bool:
    """True when ``name_node`` refers to a quantifier variable of an enclosing quantifier."""
    stack: list[tuple[nodes.Node, frozenset]] = [(root, frozenset())]
    while stack:
        node, bound = stack.pop()
        if node is name_node:
            return name_node.name in bound
        if isinstance(node, nodes.Quantifier):
            stack.append((node.collection, bound))
            stack.append((node.body, bound | {node.var}))
        else:
            stack.extend((c, bound) for c in nodes.children(node))
    return False

