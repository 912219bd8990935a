"""The reference interpreter: a plain, direct reading of SPEC §4.2, §6 and §7 over the
AST. It is the oracle the compiled engine is tested against (same cases, generated
policies and requests: the whole decision must agree), so it favours obviousness over
speed: no index, no folding, no caching.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from . import ast
from . import runtime as rt
from .runtime import EvalError


class Scope:
    """Names visible to an expression: quantifier variables, then constants, then roots."""

    __slots__ = ("roots", "constants", "vars")

    def __init__(self, roots: Mapping[str, Any], constants: Mapping[str, Any], vars: Mapping[str, Any] | None = None):
        self.roots = roots
        self.constants = constants
        self.vars = vars or {}

    def lookup(self, name: str) -> Any:
        if name in self.vars:
            return self.vars[name]
        if name in self.constants:
            return self.constants[name]
        if name in self.roots:
            v = self.roots[name]
            if v is None:
                raise EvalError(f"the request has no {name}")
            return v
        raise EvalError(f"unknown name '{name}'")

    def bind(self, name: str, value: Any) -> "Scope":
        return Scope(self.roots, self.constants, {**self.vars, name: value})


def describe(node: ast.Expr) -> str:
    """A short source-like rendering of an attribute path (for messages)."""
    if isinstance(node, ast.Name):
        return node.name
    if isinstance(node, ast.Attr):
        return f"{describe(node.obj)}.{node.name}"
    if isinstance(node, ast.Index):
        return f"{describe(node.obj)}[…]"
    if isinstance(node, ast.Call):
        return f"{node.func}(…)"
    return "value"


def evaluate(node: ast.Expr, scope: Scope) -> Any:
    """The value of ``node``; raises :class:`EvalError` as SPEC §7 says."""
    if isinstance(node, ast.Literal):
        return node.value
    if isinstance(node, ast.ListExpr):
        return [evaluate(i, scope) for i in node.items]
    if isinstance(node, ast.Name):
        return scope.lookup(node.name)
    if isinstance(node, ast.Attr):
        obj = evaluate(node.obj, scope)
        return rt.get_attr(obj, node.name, describe(node.obj))
    if isinstance(node, ast.Index):
        obj = evaluate(node.obj, scope)
        key = evaluate(node.index, scope)
        return rt.index(obj, key)
    if isinstance(node, ast.Call):
        fn, arity, _ = rt.FUNCTIONS[node.func] if node.func in rt.FUNCTIONS else (None, 0, "")
        if fn is None:
            raise EvalError(f"unknown function '{node.func}'")
        if len(node.args) != arity:
            raise EvalError(f"{node.func}() takes {arity} argument(s), got {len(node.args)}")
        return fn(*[evaluate(a, scope) for a in node.args])
    if isinstance(node, ast.Unary):
        v = evaluate(node.operand, scope)
        if node.op == "not":
            return not rt.boolean(v, "operand of 'not'")
        return rt.negate(v)
    if isinstance(node, ast.BoolOp):
        if node.op == "and":
            for item in node.items:
                if not rt.boolean(evaluate(item, scope), "operand of 'and'"):
                    return False
            return True
        for item in node.items:
            if rt.boolean(evaluate(item, scope), "operand of 'or'"):
                return True
        return False
    if isinstance(node, ast.Binary):
        a = evaluate(node.left, scope)
        b = evaluate(node.right, scope)
        op = node.op
        if op == "==":
            return rt.equals(a, b)
        if op == "!=":
            return not rt.equals(a, b)
        if op in ("<", "<=", ">", ">="):
            return rt.compare(op, a, b)
        if op == "in":
            return rt.contains(a, b)
        if op == "not in":
            return not rt.contains(a, b)
        return rt.arith(op, a, b)
    if isinstance(node, ast.Matches):
        return rt.matches(evaluate(node.operand, scope), node.pattern)
    if isinstance(node, ast.Has):
        try:
            obj = evaluate(node.operand, scope)
        except EvalError:
            return False
        return rt.has_attr(obj, node.name)
    if isinstance(node, ast.Quantifier):
        coll = rt.iterable(evaluate(node.collection, scope))
        if node.kind == "any":
            for item in coll:
                if rt.boolean(evaluate(node.body, scope.bind(node.var, item)), "quantifier body"):
                    return True
            return False
        for item in coll:
            if not rt.boolean(evaluate(node.body, scope.bind(node.var, item)), "quantifier body"):
                return False
        return True
    raise EvalError(f"cannot evaluate {type(node).__name__}")  # pragma: no cover
