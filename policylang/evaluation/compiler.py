"""Checked policy set → compiled decision tree (docs/language.md#combining-rules; ARCHITECTURE "the house").

Two things happen here, both once per policy set:

1. **Conditions become Python.** Each rule's conditions and grant scopes are generated
   as the source of small Python functions and compiled with ``exec`` into a *fresh
   namespace* that holds only the runtime helpers and the policy's own constants.
   Nothing from a request is ever spliced into code: requests only flow in as the
   functions' arguments. Policy strings enter the source through ``repr()`` only, and no
   policy text appears in comments.
   Constants are folded, attribute paths become direct dict reads, and comparisons with
   a literal get an inline fast path; everything else calls :mod:`policylang.evaluation.runtime`,
   the very functions the reference interpreter uses, so both agree on every value
   and every error message.

2. **Rules are indexed.** A request reaches a *plan* through three dict lookups (its
   principal kind, action name and resource type; names no rule mentions share one
   "other" slot, and ``*`` targets are merged in). Within a plan, rules whose first
   test is ``path == literal`` (``principal.dept == "d07"``) are grouped by that path
   and looked up by the request's value, so a plan of 10,000 rules costs about what one
   of 1,000 does. A rule's first test is safe to skip by index: it is a pure equality of
   a value that is present, and when the value is absent the rules of that group are
   evaluated in full (so they raise, and their errors are listed, exactly as docs/language.md#evaluation-errors-fail-closed
   says).

Each plan also carries a cache-key function: the values of every attribute path that
any of its rules reads (typed, so ``true``, ``1`` and ``1.0`` never share a key).
Requests that differ only in values no applicable rule reads share a cache entry.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from math import copysign as _copysign
from typing import Any
from types import FunctionType as _FunctionType

from ..language import nodes
from ..language.policyset import PolicySet, RuleInfo
from ..language.roots import ARGS, BY_NAME, NAMES, POSITION
from . import runtime as rt
from .interpreter import Scope, describe, evaluate
from .limits import specs_of
from .runtime import EvalError

_NUM = frozenset([int, float])
#: literal classes a rule's skeleton leaves open (see _skeleton); booleans are spelled
#: into the code (``is True``), so they are part of the skeleton
_PLACEABLE = frozenset([str, int, float])
MISSING = object()


def _missing(where: str, name: str):
    raise EvalError(f"{where} has no attribute '{name}'")


def _noroot(name: str):
    raise EvalError(f"the request has no {name}")


def _raise(message: str):
    raise EvalError(message)


def _truth(v, what: str):
    if v is True or v is False:
        return v
    return rt.boolean(v, what)


def _has_safe(thunk, name: str) -> bool:
    try:
        obj = thunk()
    except EvalError:
        return False
    return rt.has_attr(obj, name)


def _any(coll, body) -> bool:
    for item in rt.iterable(coll):
        if rt.boolean(body(item), "quantifier body"):
            return True
    return False


def _all(coll, body) -> bool:
    for item in rt.iterable(coll):
        if not rt.boolean(body(item), "quantifier body"):
            return False
    return True


def _call(name: str):
    fn, arity, _ = rt.FUNCTIONS[name]

    def call(*args):
        if len(args) != arity:
            raise EvalError(f"{name}() takes {arity} argument(s), got {len(args)}")
        return fn(*args)
    return call


def _read(obj, name: str):
    """Read for cache keys and index lookups: never raises; MISSING when unreadable."""
    if obj is MISSING:
        return MISSING
    if isinstance(obj, (dict, rt.Entity, rt.Action, rt.Delegation)):
        v = obj.get(name)
    else:
        return MISSING
    return MISSING if v is None else v


def freeze(v):
    """A hashable, type-tagged image of a value (for cache keys)."""
    cls = v.__class__
    if cls is str or cls is int or cls is float or cls is bool:
        return (cls, v)
    if v is None or v is MISSING:
        return (None,)
    if isinstance(v, (list, tuple)):
        return ("l", tuple(freeze(x) for x in v))
    if isinstance(v, dict):
        return ("d", tuple(sorted((k, freeze(x)) for k, x in v.items() if x is not None)))
    if isinstance(v, rt.Entity):
        return ("e", v.category, v.kind, v.id, freeze(v.attrs))
    if isinstance(v, rt.Action):
        return ("a", v.name, freeze(v.attrs))
    if isinstance(v, rt.Delegation):
        return ("g", freeze(v.chain), freeze(v.root))
    return ("?", repr(v))


#: the names every generated module starts with (its fresh namespace)
HELPERS: dict[str, Any] = {
    "_missing": _missing, "_noroot": _noroot, "_raise": _raise, "_truth": _truth,
    "_has": rt.has_attr, "_has_safe": _has_safe, "_any": _any, "_all": _all,
    "_attr": rt.get_attr, "_index": rt.index, "_eq": rt.equals, "_cmp": rt.compare,
    "_arith": rt.arith, "_neg": rt.negate, "_in": rt.contains, "_match": rt.matches,
    "_NUM": _NUM, "_read": _read, "_freeze": freeze, "_MISSING": MISSING, "EvalError": EvalError,
    "_deleg": rt.Delegation,
    "_scope": None,  # set below
}


def _scope_value(v):
    if v.__class__ is str:
        return v
    raise EvalError(f"a grant scope must be a string, got {rt.type_name(v)}")


HELPERS["_scope"] = _scope_value
for _fname in rt.FUNCTIONS:
    HELPERS[f"_f_{_fname}"] = _call(_fname)


# ------------------------------------------------------------------ expressions → Python

class ExpressionCodegen:
    """Generates the Python expression for one AST expression."""

    def __init__(self, constants: dict[str, Any]):
        self.constants = constants
        self.temps = 0
        #: literal values of the function being generated, in order: the code refers to
        #: them as _p0, _p1 … so rules that differ only in literals share one shape
        self.params: list[Any] = []
        self._memo: dict = {}
        #: when a dict: id(literal node) -> the indices of the parameters made of its value
        #: (compile_rules uses it to reuse one rule's shape for rules of the same skeleton)
        self.track: dict | None = None

    def param(self, value: Any) -> str:
        self.params.append(value)
        return f"_p{len(self.params) - 1}"

    def temp(self) -> str:
        self.temps += 1
        return f"_t{self.temps}"

    def _free(self, node: nodes.Expr, bound: frozenset) -> bool:
        """Does the expression depend on the request (a root or a quantifier variable)?
        Memoised per node, so generating a rule stays linear in its size."""
        key = (id(node), bound) if bound else id(node)
        found = self._memo.get(key)
        if found is None:
            if isinstance(node, nodes.Name):
                found = node.name in bound or node.name not in self.constants
            elif isinstance(node, nodes.Quantifier):
                found = self._free(node.collection, bound) or self._free(node.body, bound | {node.var})
            else:
                found = any(self._free(c, bound) for c in nodes.children(node))
            self._memo[key] = found
        return found

    def expr(self, node: nodes.Expr, bound: frozenset = frozenset()) -> tuple[str, str | None]:
        """(python source, static kind): kind is "bool" when always a boolean, "str" for
        a string literal, "num" for a number literal, else None."""
        if node.__class__ is not nodes.Literal and not self._free(node, bound):
            # constant subexpression: fold it now (an error becomes a runtime raise)
            try:
                value = evaluate(node, Scope({}, self.constants))
            except EvalError as e:
                return f"_raise({str(e)!r})", None
            return self.value(value)
        method = self._BY_NODE.get(node.__class__)
        if method is None:  # pragma: no cover - the checker admits no other node
            raise TypeError(f"cannot compile {type(node).__name__}")
        return method(self, node, bound)

    # one method per expression node, in the order of docs/language.md#expressions
    def _literal(self, node: nodes.Literal, bound: frozenset) -> tuple[str, str | None]:
        if self.track is not None and node.value.__class__ in _PLACEABLE:
            self.track.setdefault(id(node), []).append(len(self.params))
        return self.value(node.value)

    def _name(self, node: nodes.Name, bound: frozenset) -> tuple[str, str | None]:
        if node.name in bound:
            return f"v_{node.name}", None
        root = BY_NAME.get(node.name)
        if root is None:
            return f"_raise({f'unknown name {node.name!r}'!r})", None
        if root.optional:
            return f"({root.value} if {root.value} is not None else _noroot({root.name!r}))", None
        return root.value, None

    def _attr(self, node: nodes.Attr, bound: frozenset) -> tuple[str, str | None]:
        return self.attr(node, bound), None

    def _index(self, node: nodes.Index, bound: frozenset) -> tuple[str, str | None]:
        o, _ = self.expr(node.obj, bound)
        i, _ = self.expr(node.index, bound)
        return f"_index({o}, {i})", None

    def _call(self, node: nodes.Call, bound: frozenset) -> tuple[str, str | None]:
        if node.func not in rt.FUNCTIONS:
            return f"_raise({f'unknown function {node.func!r}'!r})", None
        args = [self.expr(a, bound)[0] for a in node.args]
        if node.func == "in_cidr" and len(node.args) == 2 and isinstance(node.args[1], nodes.Literal):
            cidr = node.args[1].value
            if isinstance(cidr, str) and rt.cidr_is_valid(cidr):
                args[1] = self.param(rt.parse_cidr(cidr))  # parsed once, at compile time
        kind = "bool" if rt.FUNCTIONS[node.func][2] == "bool" else None
        return f"_f_{node.func}({', '.join(args)})", kind

    def _unary(self, node: nodes.Unary, bound: frozenset) -> tuple[str, str | None]:
        x, k = self.expr(node.operand, bound)
        if node.op == "not":
            return (f"(not {x})" if k == "bool" else f"(not _truth({x}, \"operand of 'not'\"))"), "bool"
        return f"_neg({x})", None

    def _boolop(self, node: nodes.BoolOp, bound: frozenset) -> tuple[str, str | None]:
        what = f"operand of '{node.op}'"
        parts = []
        for item in node.items:
            x, k = self.expr(item, bound)
            parts.append(x if k == "bool" else f"_truth({x}, {what!r})")
        return "(" + f" {node.op} ".join(parts) + ")", "bool"

    def _matches(self, node: nodes.Matches, bound: frozenset) -> tuple[str, str | None]:
        x, _ = self.expr(node.operand, bound)
        return f"_match({x}, {self.param(rt.glob(node.pattern))})", "bool"

    def _has(self, node: nodes.Has, bound: frozenset) -> tuple[str, str | None]:
        root = BY_NAME.get(node.operand.name) if isinstance(node.operand, nodes.Name) else None
        if root is not None and not root.optional and node.operand.name not in bound:
            return f"_has({root.value}, {node.name!r})", "bool"
        x, _ = self.expr(node.operand, bound)
        return f"_has_safe(lambda: {x}, {node.name!r})", "bool"

    def _quantifier(self, node: nodes.Quantifier, bound: frozenset) -> tuple[str, str | None]:
        coll, _ = self.expr(node.collection, bound)
        body, _ = self.expr(node.body, bound | {node.var})
        fn = "_any" if node.kind == "any" else "_all"
        return f"{fn}({coll}, lambda v_{node.var}: {body})", "bool"

    def _list(self, node: nodes.ListExpr, bound: frozenset) -> tuple[str, str | None]:
        return "[" + ", ".join(self.expr(i, bound)[0] for i in node.items) + "]", None

    def value(self, v: Any) -> tuple[str, str | None]:
        if v is True or v is False:
            return repr(v), "bool"
        if v.__class__ is str:
            return self.param(v), "str"
        if v.__class__ in _NUM:
            return self.param(v), "num"
        return self.param(v), None

    def attr(self, node: nodes.Attr, bound: frozenset) -> str:
        obj, name = node.obj, node.name
        root = BY_NAME.get(obj.name) if isinstance(obj, nodes.Name) and obj.name not in bound else None
        if root is not None:
            builtin = root.builtins.get(name)
            if builtin is not None and builtin.always:
                return builtin.expr
            t = self.temp()
            if builtin is not None:
                read = builtin.expr
            elif root.attrs is not None:
                mapping = root.attrs
                if root.optional:
                    mapping = f"({mapping} if {root.arg} is not None else _noroot({root.name!r}))"
                read = f"{mapping}.get({name!r})"
            else:
                read = None  # not an attribute the root has: the general path says so
            if read is not None:
                return f"({t} if ({t} := {read}) is not None else _missing({root.name!r}, {name!r}))"
        o, _ = self.expr(obj, bound)
        return f"_attr({o}, {name!r}, {describe(obj)!r})"

    def binary(self, node: nodes.Binary, bound: frozenset) -> tuple[str, str | None]:
        op = node.op
        left, lk = self.expr(node.left, bound)
        right, rk = self.expr(node.right, bound)
        if op in ("==", "!="):
            if lk == "str" or rk == "str":
                return f"({left} {op} {right})", "bool"
            if lk is None and rk is None:
                # two request values: plain == when both are strings (both operands are
                # evaluated first, left then right, as everywhere)
                t1, t2 = self.temp(), self.temp()
                slow = f"_eq({t1}, {t2})" if op == "==" else f"not _eq({t1}, {t2})"
                return (f"({t1} {op} {t2} if ({t1} := {left}).__class__ is ({t2} := {right}).__class__ is str "
                        f"else {slow})"), "bool"
            if rk == "bool" and isinstance(node.right, nodes.Literal):
                return (f"({left} is {right})" if op == "==" else f"({left} is not {right})"), "bool"
            return (f"_eq({left}, {right})" if op == "==" else f"(not _eq({left}, {right}))"), "bool"
        if op in ("<", "<=", ">", ">="):
            if rk == "num":
                t = self.temp()
                return (f"({t} {op} {right} if ({t} := {left}).__class__ in _NUM "
                        f"else _cmp({op!r}, {t}, {right}))"), "bool"
            if lk == "num":
                t = self.temp()
                return (f"({left} {op} {t} if ({t} := {right}).__class__ in _NUM "
                        f"else _cmp({op!r}, {left}, {t}))"), "bool"
            return f"_cmp({op!r}, {left}, {right})", "bool"
        if op in ("in", "not in"):
            neg = "not " if op == "not in" else ""
            if isinstance(node.right, (nodes.ListExpr, nodes.Name)) and not self._free(node.right, bound):
                try:
                    coll = evaluate(node.right, Scope({}, self.constants))
                except EvalError:
                    coll = None
                if isinstance(coll, list) and coll and all(x.__class__ is str for x in coll):
                    t = self.temp()
                    fs = self.param(frozenset(coll))
                    return f"({neg}(({t} := {left}).__class__ is str and {t} in {fs}))", "bool"
            return f"({neg}_in({left}, {right}))", "bool"
        return f"_arith({op!r}, {left}, {right})", None



ExpressionCodegen._BY_NODE = {
    nodes.Literal: ExpressionCodegen._literal, nodes.Name: ExpressionCodegen._name,
    nodes.Attr: ExpressionCodegen._attr, nodes.Index: ExpressionCodegen._index,
    nodes.Call: ExpressionCodegen._call, nodes.Unary: ExpressionCodegen._unary,
    nodes.BoolOp: ExpressionCodegen._boolop, nodes.Binary: ExpressionCodegen.binary,
    nodes.Matches: ExpressionCodegen._matches, nodes.Has: ExpressionCodegen._has,
    nodes.Quantifier: ExpressionCodegen._quantifier, nodes.ListExpr: ExpressionCodegen._list,
}

# ------------------------------------------------------------------ rules

@dataclass(eq=False, slots=True)
class CompiledRule:
    # the fields every decision that holds this rule reads come first, so that they share
    # the object's first cache line with its header (a set of 10,000 rules does not stay
    # in a core's cache; docs/engine.md#memory-locality)
    order: int
    effect: str
    id: str
    reason: str | None
    info: RuleInfo
    check: Callable
    #: the check without its first test (when that test is indexed), else None
    rest: Callable | None
    grant: Callable | None
    ttl: int
    #: (path, python-type-tag, value) of an indexable first test, else None
    index_key: tuple | None
    #: kind -> None (no glob) or tuple of globs; same for resource types
    subjects: dict | None
    resources: dict | None
    #: attribute paths this rule reads (for cache keys); ("principal",) = the whole root
    reads: frozenset
    approvers: tuple[str, ...] = ()
    #: the rule's limits (docs/language.md#limits), :class:`~policylang.evaluation.limits.LimitSpec`
    limits: tuple = ()
    #: ``[(amount, key), …]`` of those limits for a request (raises EvalError), else None
    limit_values: Callable | None = None
    #: the key of the rule's shape (:func:`compile_rules`; a reload finds its factory by it)
    shape: str = ""


def _tests(rule: nodes.Rule) -> list[tuple[str, nodes.Expr, str]]:
    """(kind, expr, what) in evaluation order; a `when a and b` splits into two tests
    (same order, same short-circuit, same error messages)."""
    out = []
    for cond in rule.conditions:
        if cond.kind == "when" and isinstance(cond.expr, nodes.BoolOp) and cond.expr.op == "and":
            out.extend(("when", item, "operand of 'and'") for item in cond.expr.items)
        else:
            out.append((cond.kind, cond.expr, "condition"))
    return out


def _static_path(node: nodes.Expr, constants) -> tuple[str, ...] | None:
    names = []
    while isinstance(node, nodes.Attr):
        names.append(node.name)
        node = node.obj
    if isinstance(node, nodes.Name) and node.name in NAMES and node.name not in constants:
        return (node.name, *reversed(names))
    return None


def _index_key(test, constants) -> tuple | None:
    kind, expr, _what = test
    if kind != "when" or not isinstance(expr, nodes.Binary) or expr.op != "==":
        return None
    for path_side, lit_side in ((expr.left, expr.right), (expr.right, expr.left)):
        path = _static_path(path_side, constants)
        if path is None or len(path) < 2:
            continue
        if isinstance(lit_side, nodes.Literal):
            value = lit_side.value
        elif isinstance(lit_side, nodes.Name) and lit_side.name in constants:
            value = constants[lit_side.name]
        else:
            continue
        if value.__class__ in (str, int, float, bool):
            tag = "b" if value.__class__ is bool else "n" if value.__class__ in _NUM else "s"
            return (path, tag, value)
    return None


def _reads(rule: nodes.Rule, constants, memo: dict | None = None) -> frozenset:
    """Every attribute path the rule's conditions and grant read (with ``memo``, one object
    per distinct path and per distinct set of them: most rules read the same ones)."""
    reads: set[tuple[str, ...]] = set()
    exprs = [c.expr for c in rule.conditions]
    if rule.grant is not None:
        exprs.extend(rule.grant.scopes)
    for e in exprs:
        stack: list[nodes.Expr] = [e]
        while stack:
            node = stack.pop()
            if isinstance(node, nodes.Attr):
                path = _static_path(node, constants)
                if path is not None:
                    reads.add(path)
                    continue
                stack.append(node.obj)
            elif isinstance(node, nodes.Name):
                if node.name in NAMES and node.name not in constants:
                    reads.add((node.name,))
            else:
                stack.extend(nodes.children(node))
    for s in rule.target.subjects or ():
        if s.glob is not None:
            reads.add(("principal", "id"))
    for s in rule.target.resources or ():
        if s.glob is not None:
            reads.add(("resource", "id"))
    if memo is None:
        return frozenset(reads)
    found = frozenset(memo.setdefault(p, p) for p in reads)
    return memo.setdefault(found, found)


def _globs(refs) -> dict | None:
    if refs is None:
        return None
    out: dict[str, Any] = {}
    for ref in refs:
        if ref.name in out and out[ref.name] is None:
            continue  # an unglobbed entry already admits every id of this kind
        if ref.glob is None:
            out[ref.name] = None
        else:
            out[ref.name] = (out.get(ref.name) or ()) + (rt.glob(ref.glob),)
    return out


def _globs_memo(refs, memo: dict) -> dict | None:
    """:func:`_globs`, one table per distinct list of references (the tables are only read)."""
    if refs is None:
        return None
    key = tuple([(r.name, r.glob) for r in refs])
    out = memo.get(key)
    if out is None:
        out = memo[key] = _globs(refs)
    return out


def _test_lines(gen: ExpressionCodegen, tests, instrument: bool, indent: str) -> list[str]:
    lines = []
    for kind, expr, what in tests:
        gen.temps = 0
        code, k = gen.expr(expr)
        if instrument:
            lines.append(f"{indent}_n[0] += 1")
        if k != "bool":
            code = f"_truth({code}, {what!r})"
        lines.append(f"{indent}if not {code}: return False" if kind == "when" else f"{indent}if {code}: return False")
    lines.append(f"{indent}return True")
    return lines


def _typed(value: Any) -> Any:
    """``value`` with every scalar tagged by its class, so ``1``, ``1.0`` and ``true`` differ
    (constants are compared this way before compiled code is reused)."""
    if isinstance(value, (list, tuple)):
        return (value.__class__, tuple(_typed(v) for v in value))
    if isinstance(value, dict):
        return (dict, tuple(sorted((k, _typed(v)) for k, v in value.items())))
    if isinstance(value, (set, frozenset)):
        return (value.__class__, frozenset(_typed(v) for v in value))
    return (value.__class__, value)


def constants_signature(constants) -> tuple:
    """What generated code depends on besides the rule itself: the folded constants."""
    return tuple(sorted((name, _typed(v)) for name, v in constants.items()))


@dataclass(eq=False, slots=True)
class RuleCode:
    """What code generation made of one rule (its AST node), while :func:`compile_rules`
    runs: its shape, the shape's parameters for this rule, its index key and read set.
    Not kept: the compiled rule holds what a reload reuses (its functions, index key,
    globs and reads, and its shape's key)."""

    rule: nodes.Rule
    shape_key: str
    params: tuple
    index_key: tuple | None
    reads: frozenset


# ------------------------------------------------------------------ skeletons (one codegen per shape)

def _exact(lit: nodes.Literal) -> tuple:
    v = lit.value
    return ("L", v.__class__, repr(v) if v.__class__ is float else v)


def _open(lit: nodes.Literal, ok: bool, lits: list) -> tuple:
    """The key of a literal operand: open (its value a parameter of the shape) when ``ok``
    and its class is placeable, else the literal itself."""
    v = lit.value
    if ok and v.__class__ in _PLACEABLE:
        lits.append(lit)
        return ("P", v.__class__)
    return _exact(lit)


def _sk(node: nodes.Expr, bound: frozenset, constants, lits: list, exact: bool) -> tuple[tuple, bool]:
    """(skeleton key, depends on the request) of an expression.

    The key holds everything :class:`ExpressionCodegen` makes code text of: node classes,
    operators, names, patterns, bound variables, the classes of literals, and the value of
    every literal except those the generator only ever turns into a parameter (operands of
    a binary operator, a call, an index or a list that is not folded). Those are appended
    to ``lits``; the generated code is the same for every value of them. Constant
    subexpressions (folded at compile time) and the object of an attribute read (whose
    description is part of an error message) are keyed exactly (``exact``)."""
    cls = node.__class__
    if cls is nodes.Attr:
        obj = node.obj
        if obj.__class__ is nodes.Name:  # a root's attribute (the commonest read): the Name case inline
            n = obj.name
            return ("A", ("N", n), node.name), (n in bound or n not in constants)
        k, f = _sk(obj, bound, constants, lits, True)
        return ("A", k, node.name), f
    if cls is nodes.Name:
        n = node.name
        return ("N", n), (n in bound or n not in constants)
    if cls is nodes.Literal:
        return _exact(node), False
    if cls is nodes.Binary:
        left, right = node.left, node.right
        lit_l, lit_r = left.__class__ is nodes.Literal, right.__class__ is nodes.Literal
        lk, lf = (None, False) if lit_l else _sk(left, bound, constants, lits, exact)
        rk, rf = (None, False) if lit_r else _sk(right, bound, constants, lits, exact)
        free = lf or rf
        if lit_l:
            lk = _open(left, free and not exact, lits)
        if lit_r:
            rk = _open(right, free and not exact, lits)
        return ("B", node.op, lk, rk), free
    if cls is nodes.Call or cls is nodes.ListExpr or cls is nodes.Index:
        items = (node.obj, node.index) if cls is nodes.Index else node.args if cls is nodes.Call else node.items
        sub = exact or (cls is nodes.Call and node.func == "in_cidr")  # in_cidr reads its literal
        keys: list = []
        free = False
        for item in items:
            if item.__class__ is nodes.Literal:
                keys.append(item)
            else:
                k, f = _sk(item, bound, constants, lits, sub)
                keys.append(k)
                free = free or f
        for i, k in enumerate(keys):
            if k.__class__ is nodes.Literal:
                keys[i] = _open(k, free and not sub, lits)
        tag = ("C", node.func) if cls is nodes.Call else ("I",) if cls is nodes.Index else ("[",)
        return (tag, tuple(keys)), free
    if cls is nodes.BoolOp:
        keys, free = [], False
        for item in node.items:
            k, f = _sk(item, bound, constants, lits, exact)
            keys.append(k)
            free = free or f
        return ("O", node.op, tuple(keys)), free
    if cls is nodes.Unary:
        k, f = _sk(node.operand, bound, constants, lits, exact)
        return ("U", node.op, k), f
    if cls is nodes.Matches:
        k, f = _sk(node.operand, bound, constants, lits, exact)
        return ("M", k, node.pattern), f
    if cls is nodes.Has:
        k, f = _sk(node.operand, bound, constants, lits, exact)
        return ("H", k, node.name), f
    if cls is nodes.Quantifier:
        ck, cf = _sk(node.collection, bound, constants, lits, exact)
        bk, bf = _sk(node.body, bound | {node.var}, constants, lits, exact)
        return ("Q", node.kind, node.var, ck, bk), cf or bf
    return ("?", id(node)), True  # pragma: no cover - the checker admits no other node


def _top(node: nodes.Expr, constants, lits: list) -> tuple:
    """The key of an expression generated on its own (a grant scope, a limit's amount or
    key): a literal there only becomes a parameter."""
    if node.__class__ is nodes.Literal:
        return _open(node, True, lits)
    return _sk(node, frozenset(), constants, lits, False)[0]


def _skeleton(rule: nodes.Rule, constants) -> tuple[tuple, list]:
    """(key, open literals) of a rule: two rules with the same key generate the same code,
    their parameters differing only in the values of the open literals (in this order)."""
    lits: list = []
    none = frozenset()
    conds = tuple([(c.kind, _sk(c.expr, none, constants, lits, False)[0]) for c in rule.conditions])
    grant = rule.grant
    g = None if grant is None else tuple([_top(e, constants, lits) for e in grant.scopes])
    lim = tuple([(c.measure, None if c.amount is None else _top(c.amount, constants, lits),
                  None if c.key is None else _top(c.key, constants, lits)) for c in rule.limits])
    return (rule.effect, conds, g, lim), lits


@dataclass(eq=False, slots=True)
class _Shape:
    """What one full code generation of a rule tells about every rule of its skeleton."""

    shape_key: str
    #: per parameter: the index of the open literal it is the value of, or -1 (then
    #: ``fixed`` holds it: a constant, a folded value or a literal the skeleton spells)
    pmap: tuple
    fixed: tuple
    #: (path, tag, open literal index or -1, fixed value) of the indexed first test, or None
    index: tuple | None
    #: (subjects globbed, resources globbed) -> the read set
    reads: dict


def _shape_of(rule: nodes.Rule, code: RuleCode, lits: list, track: dict, constants) -> _Shape | None:
    """The shape of the rule just generated (``track``: what ExpressionCodegen recorded), or
    None when some open literal did not become a parameter of its own (then every rule of
    this skeleton is generated in full)."""
    pmap = [-1] * len(code.params)
    for j, lit in enumerate(lits):
        at = track.get(id(lit))
        if not at:
            return None
        for i in at:  # once in the check, again in the check without its first test
            if pmap[i] != -1:
                return None
            pmap[i] = j
    fixed = tuple(None if j >= 0 else v for j, v in zip(pmap, code.params))
    index = None
    if code.index_key is not None:
        path, tag, value = code.index_key
        j = -1
        expr = _tests(rule)[0][1]
        for side in (expr.left, expr.right):
            if side.__class__ is nodes.Literal:
                j = next((n for n, lit in enumerate(lits) if lit is side), -1)
                break
        index = (path, tag, j, value)
    return _Shape(code.shape_key, tuple(pmap), fixed, index, {})


#: what a shape's generated functions are named after (compile_rules puts the shape's name there)
_SHAPE = "__shape__"


def _codegen(gen: ExpressionCodegen, rule: nodes.Rule, instrument: bool,
             constants, memo: dict | None = None) -> tuple[str, str, RuleCode]:
    """(parameter list, functions' text, code record) of one rule's shape.

    A shape is up to four module-level functions (``<shape>_check``, ``_rest``, ``_grant``,
    ``_limits``) whose literals are parameters ``_p0``, ``_p1`` … after the request roots,
    with defaults: a rule's own functions are the shape's code with the rule's literals as
    their defaults (:class:`_Factory`), so they hold no closure cells and read a literal
    as a local."""
    I1 = " " * 4
    tests = _tests(rule)
    key = _index_key(tests[0], constants) if tests else None
    gen.params = []
    parts = {"check": _test_lines(gen, tests, instrument, I1)}
    if key:
        parts["rest"] = _test_lines(gen, tests[1:], instrument, I1)
    grant = rule.grant if rule.effect == "permit" else None
    if grant is not None:
        gen.temps = 0
        scopes = ", ".join(f"_scope({gen.expr(s)[0]})" for s in grant.scopes)
        parts["grant"] = [f"{I1}return [{scopes}]"]
    limits = rule.limits if rule.effect == "permit" else ()
    if limits:
        gen.temps = 0
        pairs = ", ".join(
            f"({'1' if c.measure == 'count' else gen.expr(c.amount)[0]}, "
            f"{'True' if c.key is None else gen.expr(c.key)[0]})" for c in limits)
        parts["limits"] = [f"{I1}return [{pairs}]"]
    params = ", ".join(f"_p{i}" for i in range(len(gen.params)))
    signature = ARGS + "".join(f", _p{i}=None" for i in range(len(gen.params)))
    body: list[str] = []
    for name in _FUNCTIONS:
        if name in parts:
            body += [f"def {_SHAPE}_{name}({signature}):", *parts[name]]
        else:
            body.append(f"{_SHAPE}_{name} = None")
    text = "\n".join(body)
    return params, text, RuleCode(rule, params + "\n" + text, tuple(gen.params), key, _reads(rule, constants, memo))


#: a shape's functions, in the order a factory returns them
_FUNCTIONS = ("check", "rest", "grant", "limits")


def _named(text: str, name: str) -> str:
    """A shape's functions' text with their names: only the unindented lines (each
    ``def`` and ``= None``) name a function; the bodies are left as they are (an
    attribute a rule reads may be called anything, ``__shape__`` too)."""
    return "\n".join(name + ln[len(_SHAPE):] if ln.startswith(_SHAPE)
                     else "def " + name + ln[4 + len(_SHAPE):] if ln.startswith("def " + _SHAPE)
                     else ln for ln in text.split("\n"))


class _Factory:
    """A shape's functions, made into one rule's: the same code, the rule's literals as
    the defaults of the parameters after the request roots (one tuple, shared by the
    rule's functions). A shape without literals gives every rule its very functions."""

    __slots__ = ("functions",)

    def __init__(self, functions: tuple) -> None:
        self.functions = functions

    def __call__(self, params: tuple) -> tuple:
        if not params:
            return self.functions
        return tuple([None if f is None else _FunctionType(f.__code__, f.__globals__, f.__name__, params)
                      for f in self.functions])


def _shared(params: tuple, memo: dict) -> tuple:
    """``params`` with each string, integer and float replaced by the first equal one of
    its class this compilation saw (a float's sign too: ``-0.0`` is not ``0.0``), so the
    rules' defaults share the objects of their literals: ten thousand rules comparing a
    risk score with fifty thresholds point to fifty floats, which stay in the cache, not
    to ten thousand scattered copies (docs/engine.md#memory-locality; the parser already
    gives equal strings one object, not equal numbers). The values are equal and
    of the same class, so no evaluation can tell."""
    out = []
    for v in params:
        c = v.__class__
        if c is str or c is int:
            v = memo.setdefault((c, v), v)
        elif c is float and v == v:  # NaN equals nothing: each stays its own
            v = memo.setdefault((c, v, _copysign(1.0, v)), v)
        out.append(v)
    return tuple(out)


def _from_shape(shape: _Shape, rule: nodes.Rule, lits: list, constants, memo: dict) -> RuleCode:
    """The code record of a rule whose skeleton was generated before: the same shape, the
    parameters taken from its open literals (what :func:`_codegen` would make of it)."""
    params = tuple([lits[j].value if j >= 0 else f for j, f in zip(shape.pmap, shape.fixed)])
    index_key = None
    if shape.index is not None:
        path, tag, j, value = shape.index
        if j >= 0:
            value = lits[j].value
        # one tuple per distinct (path, value, class of value): many rules share one
        index_key = memo.setdefault((path, tag, value, value.__class__), (path, tag, value))
    target = rule.target
    globbed = (any(s.glob is not None for s in target.subjects or ()),
               any(s.glob is not None for s in target.resources or ()))
    reads = shape.reads.get(globbed)
    if reads is None:
        reads = shape.reads[globbed] = _reads(rule, constants, memo)
    return RuleCode(rule, shape.shape_key, params, index_key, reads)


def compile_rules(policy_set: PolicySet, instrument: bool = False,
                  counter: list | None = None,
                  reuse: tuple[list[CompiledRule], dict[str, Callable]] | None = None,
                  ) -> tuple[list[CompiledRule], str, dict[str, Callable]]:
    """Generate, compile and load the functions of every rule.

    Each rule is generated as a *shape*: the functions (the rule's check, its check
    without the indexed first test, its grant, its limit values) whose literals are
    parameters (``_p0``, ``_p1`` …) after the request roots; a :class:`_Factory` gives a
    rule those functions with its literals as their defaults. Rules that differ only in
    literals (the common case in large sets) share one shape, so the module Python
    compiles stays small; every new shape
    of one call is compiled by one ``compile()`` into one fresh namespace. Code generation
    runs once per *skeleton* (:func:`_skeleton`: the rule with the literals that only ever
    become parameters left open); the other rules of a skeleton take that rule's shape,
    their parameters, index key and read set derived from it (:func:`_from_shape`;
    tests/test_compile_shapes.py checks they are what a full generation makes).

    ``reuse``: the compiled rules and shape factories of an earlier compilation (see
    :class:`CompiledSet`; not instrumented, the same constants): a rule whose AST node it
    compiled is not generated again, it keeps its functions (pure functions of the
    request), index key, globs and reads, and its very compiled rule when its id, place
    and path are the same too. Returns the compiled rules, the generated source (new
    shapes only; kept for debugging and tests) and the factories of this set's shapes
    (shape key -> :class:`_Factory`).
    """
    lines: list[str] = []
    constants = dict(policy_set.constants)
    gen = ExpressionCodegen(constants)
    shapes: dict[str, str] = {}
    factories: dict[str, Callable] = {}
    old_rules: dict[int, CompiledRule] = {}
    old_factories: dict[str, Callable] = {}
    if reuse is not None:
        old_factories = reuse[1]
        old_rules = {id(cr.info.rule): cr for cr in reuse[0]}  # while compiling only
    keys: dict = {}  # one object per distinct shape key, attribute path and set of paths
    #: skeleton key -> its _Shape (None: generate every rule of it in full)
    templates: dict[tuple, _Shape | None] = {}
    globs: dict = {}  # target references -> their glob table (one per distinct target)
    literals: dict = {}  # one object per distinct literal parameter (_shared)
    pending = []
    out: list = [None] * len(policy_set.rules)
    for n, info in enumerate(policy_set.rules):
        rule = info.rule
        code = old_rules.get(id(rule))
        if code is not None and code.info.rule is rule and code.shape in old_factories:
            factories.setdefault(code.shape, old_factories[code.shape])
            old = code.info
            if (code.order == n and old.id == info.id and old.index == info.index
                    and old.path == info.path and old.explicit_id == info.explicit_id):
                out[n] = code  # the same rule in the same place: its compiled rule as it is
                continue
        else:
            skey, lits = _skeleton(rule, constants)
            shape = templates.get(skey, MISSING)
            if shape is not MISSING and shape is not None:
                code = _from_shape(shape, rule, lits, constants, keys)
            else:
                gen.track = {} if shape is MISSING else None
                params, text, code = _codegen(gen, rule, instrument, constants, keys)
                if shape is MISSING:
                    templates[skey] = _shape_of(rule, code, lits, gen.track, constants)
                    gen.track = None
                if code.shape_key not in shapes and code.shape_key not in factories:
                    known = old_factories.get(code.shape_key)
                    if known is not None:  # a new rule of a shape the earlier set compiled
                        factories[code.shape_key] = known
                    else:
                        name = shapes[code.shape_key] = f"_shape_{len(shapes)}"
                        lines.append(_named(text, name))
            code.shape_key = keys.setdefault(code.shape_key, code.shape_key)  # one string per shape
        pending.append((n, info, code))
    source = "\n".join(lines) + "\n"
    if lines:
        namespace: dict[str, Any] = dict(HELPERS)
        namespace["_n"] = counter if counter is not None else [0]
        compiled = compile(source, f"<policylang:{policy_set.root}>", "exec")
        exec(compiled, namespace)  # noqa: S102 - generated from the policy AST only; see module docstring
        for shape_key, name in shapes.items():
            factories[shape_key] = _Factory(tuple(namespace[f"{name}_{f}"] for f in _FUNCTIONS))
    for n, info, code in pending:
        rule = info.rule
        if code.__class__ is CompiledRule:  # a reused rule in a new place (or with a new id)
            check, rest, grant_fn, limit_fn = code.check, code.rest, code.grant, code.limit_values
            subjects, resources, shape = code.subjects, code.resources, code.shape
        else:
            shape = code.shape_key
            check, rest, grant_fn, limit_fn = factories[shape](_shared(code.params, literals))
            subjects = _globs_memo(rule.target.subjects, globs)
            resources = _globs_memo(rule.target.resources, globs)
        grant = rule.grant
        out[n] = CompiledRule(
            info=info, order=n, effect=rule.effect,
            check=check, rest=rest, grant=grant_fn,
            ttl=grant.ttl if grant is not None else 0,
            index_key=code.index_key,
            subjects=subjects,
            resources=resources,
            reads=code.reads,
            id=info.id,
            reason=rule.because,
            approvers=rule.by.approvers if rule.by is not None else (),
            limits=specs_of(info, constants) if limit_fn is not None else (),
            limit_values=limit_fn,
            shape=shape,
        )
    return out, source, factories


# ------------------------------------------------------------------ plans (the tree)

@dataclass(eq=False, slots=True)
class IndexGroup:
    path: tuple[str, ...]
    read: Callable
    by_str: dict
    by_num: dict
    by_bool: dict
    #: every entry of the group (evaluated in full when the value is absent)
    entries: tuple
    #: for a path of a principal's or resource's own attribute (``principal.dept``), the
    #: attribute's name and whether it is the principal's (``read`` is then
    #: ``P.attrs.get(name)`` or ``R.attrs.get(name)``, which the engine's short path reads
    #: inline), else None
    attr: str | None = None
    of_principal: bool = False


@dataclass(eq=False, slots=True)
class Plan:
    """Everything that can apply to one (kind, action, type): entries are
    ``(compiled rule, subject globs or None, resource globs or None, function to run)``
    where the function is the rule's full check, or its check without the first test
    for entries an index group's lookup found."""

    plain: tuple
    groups: tuple
    has_gates: bool
    key: Callable | None
    #: with attenuate_delegation, the key of what this plan reads outside the principal
    #: and the delegation (action, resource, context, risk, intent), for the plans of
    #: the delegators (whose principal and chain the main key already holds in full)
    env_key: Callable | None = None
    #: every entry, in rule order (what the plan was built from: a reload that finds the
    #: same entries for its key keeps the plan)
    entries: tuple = ()
    #: every entry is a plain permit or forbid (no subject or resource globs, no grant,
    #: no limit) and there is at most one index group: the engine's short path
    #: (Engine._evaluate) decides such a plan without building the entry list
    simple: bool = False


def _order(entry: tuple) -> int:
    return entry[0].order


def _same_entries(old: tuple, new: list) -> bool:
    """Are these the same entries (the same compiled rules with the same globs)?"""
    if len(old) != len(new):
        return False
    for a, b in zip(old, new):
        if a[0] is not b[0] or a[1] is not b[1] or a[2] is not b[2]:
            return False
    return True


class _Unnamed:
    """The plan-key slot shared by every kind, action or type no rule names (one plan
    serves them all). Not a string, so no request value can ever equal it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<not named by any rule>"


UNNAMED = _Unnamed()


#: eager plans: at most this many (kind, action, type) combinations, or EAGER_PLANS_PER_RULE
#: per rule if that is more, are planned when the set is compiled (the rest on first use)
EAGER_PLANS = 4096
EAGER_PLANS_PER_RULE = 4

#: the most (kind, action, type) triples of requests a compiled set remembers the plan
#: of (:meth:`CompiledSet.plan`); past it the memo starts again empty
RAW_PLANS = 4096


class CompiledSet:
    """The decision tree of a policy set: plans by (kind, action, type), memoised (bounded
    by the names the policies mention, plus one UNNAMED slot each).

    ``eager`` (the default) builds the plans of every (kind, action, type) the set names,
    and of the UNNAMED fallbacks, here, so the first request of a stream costs what a
    warm one does (:meth:`build_plans`; identical plans are one object). A set whose
    combinations exceed :data:`EAGER_PLANS` (or :data:`EAGER_PLANS_PER_RULE` per rule) gets the combinations its rules
    name together, and builds the others on first use.

    ``previous``: the compiled set of the set this one replaces (a reload): rules whose AST
    node it compiled (the rules of files that did not change) reuse its generated code,
    unless the constants changed or either set is instrumented.
    """

    def __init__(self, policy_set: PolicySet, instrument: bool = False, *,
                 previous: CompiledSet | None = None, eager: bool = True):
        self.policy_set = policy_set
        self.counter = [0]
        self.instrument = instrument
        self.constants_signature = constants_signature(policy_set.constants)
        reuse = None
        if (previous is not None and not instrument and not previous.instrument
                and previous.constants_signature == self.constants_signature):
            reuse = (previous.rules, previous.factories)
        #: the previous set's plans, for build_plans to keep those whose entries are the same
        self._previous_plans = previous._plans if reuse is not None and \
            previous.attenuate == policy_set.options.attenuate_delegation else None
        #: the compiled rules in order, the generated source of this compilation's new
        #: shapes, and the factories of the set's shapes (what a reload reuses)
        self.rules, self.source, self.factories = compile_rules(policy_set, instrument, self.counter, reuse)
        self.kinds: set[str] = set()
        self.actions: set[str] = set()
        self.types: set[str] = set()
        self.by_action: dict[str, list[CompiledRule]] = {}
        for cr in self.rules:
            t = cr.info.rule.target
            if t.subjects is not None:
                self.kinds.update(s.name for s in t.subjects)
            if t.resources is not None:
                self.types.update(s.name for s in t.resources)
            for a in (t.actions if t.actions is not None else ("*",)):
                self.by_action.setdefault(a, []).append(cr)
                if a != "*":
                    self.actions.add(a)
        self.attenuate = policy_set.options.attenuate_delegation
        self._plans: dict[tuple, Plan] = {}
        #: the requests' (kind, action, type) -> plan (:meth:`plan`; at most RAW_PLANS)
        self._raw: dict[tuple, Plan] = {}
        #: each kind, action and type the rules name -> the set's one string of it
        self._names: dict[str, str] = {n: n for names in (self.kinds, self.actions, self.types) for n in names}
        #: generated readers and key functions, shared by the plans that need the same
        #: one (bounded by the paths the rules read); filled under _lock
        self._readers: dict[tuple, Callable] = {}
        self._keys: dict[tuple, Callable] = {}
        self._lock = threading.Lock()
        if eager:
            self.build_plans()
        self._previous_plans = None

    def plan(self, kind: str, action: str, rtype: str) -> Plan:
        # the request's own (kind, action, type) first: one tuple and one lookup where the
        # named-or-UNNAMED key below costs three set lookups more (bounded: emptied when
        # full, so names no rule mentions, whatever a stream sends, hold at most RAW_PLANS)
        raw = (kind, action, rtype)
        plan = self._raw.get(raw)
        if plan is not None:
            return plan
        plan = self._plan(kind, action, rtype)
        memo = self._raw
        if len(memo) >= RAW_PLANS:
            memo.clear()
        # keyed by the set's own strings where it names them, not the first request's:
        # a lookup compares the request's strings with these, which the plans share and
        # so stay in the cache (docs/engine.md#memory-locality)
        names = self._names
        memo[(names.get(kind, kind), names.get(action, action), names.get(rtype, rtype))] = plan
        return plan

    def _plan(self, kind: str, action: str, rtype: str) -> Plan:
        key = (kind if kind in self.kinds else UNNAMED,
               action if action in self.actions else UNNAMED,
               rtype if rtype in self.types else UNNAMED)
        plan = self._plans.get(key)
        if plan is None:
            with self._lock:
                plan = self._plans.get(key)
                if plan is None:
                    plan = self._build(*key)
                    self._plans[key] = plan
        return plan

    def combinations(self) -> list[tuple]:
        """The (kind, action, type) keys :meth:`build_plans` plans: every combination of the
        named ones and UNNAMED when there are few enough, else those the rules name together
        (with UNNAMED where a rule has ``*``) and the all-UNNAMED fallback."""
        kinds = [*sorted(self.kinds), UNNAMED]
        actions = [*sorted(self.actions), UNNAMED]
        types = [*sorted(self.types), UNNAMED]
        budget = max(EAGER_PLANS, EAGER_PLANS_PER_RULE * len(self.rules))
        if len(kinds) * len(actions) * len(types) <= budget:
            return [(k, a, t) for k in kinds for a in actions for t in types]
        seen: dict[tuple, None] = {(UNNAMED, UNNAMED, UNNAMED): None}
        for cr in self.rules:
            t = cr.info.rule.target
            ks = [UNNAMED] if t.subjects is None else list(dict.fromkeys(s.name for s in t.subjects))
            acts = [UNNAMED] if t.actions is None else list(dict.fromkeys(t.actions))
            ts = [UNNAMED] if t.resources is None else list(dict.fromkeys(s.name for s in t.resources))
            for k in ks:
                for a in acts:
                    for r in ts:
                        seen[(k, a, r)] = None
                        if len(seen) >= budget:
                            return list(seen)
        return list(seen)

    def build_plans(self) -> int:
        """Build the plans of :meth:`combinations` now; returns how many distinct plans the
        set holds. Combinations whose rule lists are the same share one plan object.

        The same entries as :meth:`_entries` (which builds one plan on first use), found per
        (kind, action) in one pass over its rules, bucketed by resource type."""
        shared: dict[tuple, Plan] = {}
        by_pair: dict[tuple, list] = {}
        for kind, action, rtype in self.combinations():
            by_pair.setdefault((kind, action), []).append(rtype)
        candidates_of: dict = {}
        plans = self._plans
        previous = self._previous_plans
        # Entries are not shared between plans: at L (10,000 rules, 1,010 plans) sharing
        # would save some 1,400 of 21,400 entry tuples, and its memo (a 20,000-key dict
        # while the plans are built) costs more than that and leaves the heap fragmented.
        # Plans with equal entries are one object: an entry tuple is equal to another
        # when it holds the same compiled rule, equal globs and the same function.
        with self._lock:
            for (kind, action), rtypes in by_pair.items():
                candidates = candidates_of.get(action)
                if candidates is None:
                    candidates = candidates_of[action] = self._candidates(action)
                wild: list = []
                typed: dict[str, list] = {}
                for cr in candidates:
                    if cr.subjects is None:
                        sg = None
                    elif kind in cr.subjects:
                        sg = cr.subjects[kind]
                    else:
                        continue
                    if cr.resources is None:
                        wild.append((cr, sg, None, cr.check))
                    else:
                        for rt_name, rg in cr.resources.items():
                            typed.setdefault(rt_name, []).append((cr, sg, rg, cr.check))
                for rtype in rtypes:
                    key = (kind, action, rtype)
                    if key in plans:
                        continue
                    own = typed.get(rtype) if rtype is not UNNAMED else None
                    if not own:
                        entries = wild
                    elif not wild:
                        entries = own
                    else:
                        entries = sorted(wild + own, key=_order)
                    sig = tuple(entries)  # its signature, and the plan's entries
                    plan = shared.get(sig)
                    if plan is None:
                        old = previous.get(key) if previous is not None else None
                        if old is not None and _same_entries(old.entries, entries):
                            plan = old  # a reload that did not touch this plan's rules
                        else:
                            plan = self._plan_of(sig)
                        shared[sig] = plan
                    plans[key] = plan
        return len({id(p) for p in plans.values()})

    def _build(self, kind: str, action: str, rtype: str) -> Plan:
        return self._plan_of(self._entries(kind, action, rtype))

    def _candidates(self, action) -> list:
        """The rules of ``action`` and of ``*`` actions, in source order."""
        candidates = list(self.by_action.get(action, ())) if action != UNNAMED else []
        candidates += self.by_action.get("*", ())
        candidates.sort(key=lambda c: c.order)
        return candidates

    def _entries(self, kind: str, action: str, rtype: str, candidates: list | None = None) -> list:
        entries = []
        for cr in (self._candidates(action) if candidates is None else candidates):
            if cr.subjects is None:
                sg = None
            elif kind in cr.subjects:
                sg = cr.subjects[kind]
            else:
                continue
            if cr.resources is None:
                rg = None
            elif rtype in cr.resources:
                rg = cr.resources[rtype]
            else:
                continue
            entries.append((cr, sg, rg, cr.check))
        return entries

    def _plan_of(self, entries: list | tuple) -> Plan:
        """The plan of these entries."""
        groups_by_path: dict[tuple, list] = {}
        for e in entries:
            if e[0].index_key is not None:
                groups_by_path.setdefault(e[0].index_key[0], []).append(e)
        plain, groups = [], []
        grouped: set[int] = set()
        for path, members in groups_by_path.items():
            if len(members) < 2:
                continue
            reader = self._readers.get(path)
            if reader is None:
                reader = self._readers[path] = _reader(path)
            g = IndexGroup(path, reader, {}, {}, {}, tuple(members), *_own_attr(path))
            for e in members:
                _p, tag, value = e[0].index_key
                table = g.by_str if tag == "s" else g.by_num if tag == "n" else g.by_bool
                # found by the index: run the rule without the test the lookup answered
                table.setdefault(value, []).append((e[0], e[1], e[2], e[0].rest))
                grouped.add(e[0].order)
            for table in (g.by_str, g.by_num, g.by_bool):
                for value, found in table.items():
                    table[value] = tuple(found)
            groups.append(g)
        entries = entries if entries.__class__ is tuple else tuple(entries)
        plain = entries if not grouped else tuple([e for e in entries if e[0].order not in grouped])
        reads: set = set()
        for e in entries:
            reads |= e[0].reads
        has_gates = any(e[0].effect == "require_approval" for e in entries)
        env_key = None
        if self.attenuate:
            env_key = self._key({r for r in reads if r[0] not in ("principal", "delegation")}, False)
        simple = len(groups) <= 1 and all(
            e[1] is None and e[2] is None and e[0].grant is None and not e[0].limits
            and (e[0].effect == "permit" or e[0].effect == "forbid") for e in entries)
        return Plan(plain, tuple(groups), has_gates, self._key(reads, self.attenuate), env_key, entries, simple)

    def _key(self, reads: set, attenuate: bool) -> Callable:
        memo = (frozenset(reads), attenuate)
        fn = self._keys.get(memo)
        if fn is None:
            fn = self._keys[memo] = _key_function(reads, attenuate)
        return fn


def _own_attr(path: tuple[str, ...]) -> tuple[str | None, bool]:
    """(name, of the principal) when ``path`` reads a principal's or resource's own
    attribute (not a built-in one such as ``id``), else (None, False): IndexGroup.attr."""
    if len(path) == 2 and path[0] in ("principal", "resource"):
        root = BY_NAME[path[0]]
        if path[1] not in root.builtins and root.read(path[1]) == f"{root.attrs}.get({path[1]!r})":
            return path[1], path[0] == "principal"
    return None, False


def _reader(path: tuple[str, ...]) -> Callable:
    """A function of the roots returning the value at ``path``, or None when it is absent
    or cannot be read (it never raises). One-step paths are the root table's direct read."""
    root, *names = path
    direct = BY_NAME[root].read(names[0]) if len(names) == 1 else None
    if direct is not None:
        ns = dict(HELPERS)
        exec(compile(f"def _reader({ARGS}):\n    return {direct}\n",  # noqa: S102 - names come from the AST
                     "<policylang:reader>", "exec"), ns)
        return ns["_reader"]
    i = POSITION[root]

    def read(*roots):
        v = roots[i] if root != "delegation" else rt.Delegation(roots[i], roots[0])
        if v is None:
            return None
        for name in names:
            v = _read(v, name)
            if v is MISSING:
                return None
        return v
    return read


def _key_function(reads: set, attenuate: bool) -> Callable:
    """Generate the cache-key function of a plan: the typed values it reads.

    A scalar leaf contributes ``(type, value)`` inline (so ``true``, ``1`` and ``1.0``
    never collide); a list or object value makes the key unhashable, and the engine then
    decides without the cache. Whole roots (``principal`` used as a value, quantifiers
    over ``delegation.chain``) are frozen recursively.
    """
    whole = {p[0] for p in reads if len(p) == 1}
    paths = sorted(p for p in reads if len(p) == 1 or p[0] not in whole)
    parts = []
    for n, path in enumerate(paths):
        root, names = BY_NAME[path[0]], path[1:]
        expr = root.read(names[0]) if names else None
        if expr is None:
            # the root read whole, or an attribute it has no direct read for: all of it
            parts.append(root.whole_key)
            continue
        builtin = root.builtins.get(names[0])
        if len(names) == 1 and builtin is not None and not builtin.scalar:
            parts.append(f"_freeze({expr})")  # the chain or the root entity, in full
            continue
        for name in names[1:]:
            expr = f"_read({expr}, {name!r})"
        t = f"_k{n}"
        parts.append(f"({t} := {expr}).__class__, {t}")
    if attenuate:
        parts.append("_freeze(CH)")
    src = f"def _key({ARGS}):\n    return ({', '.join(parts)}{',' if len(parts) == 1 else ''})\n"
    ns = dict(HELPERS)
    exec(compile(src, "<policylang:key>", "exec"), ns)  # noqa: S102 - paths come from the policy AST
    return ns["_key"]
