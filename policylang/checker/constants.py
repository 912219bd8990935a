"""Stage ``constants``: folds every constant into ``ctx.constants`` (literals and
constants defined before it only). Input: ``ctx.const_decls`` (from ``collect``).
Diagnostics: E002 (a name a constant may not use), E005 (a value that cannot be
evaluated)."""

from __future__ import annotations

from typing import Any

from .. import ast
from ..interpreter import Scope, evaluate
from ..parser import ROOTS
from ..runtime import EvalError
from .context import CheckContext, suggest

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

