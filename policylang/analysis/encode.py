"""A policy set's decision as an SMT formula (docs/analysis.md).

For one (principal kind, action, resource type) :class:`Encoder` builds z3 terms whose
value, in any model, is the decision the reference interpreter
(policylang/evaluation/interpreter.py) gives the request the model decodes to
(:meth:`Encoder.decode`). Values are modelled per attribute path: a type tag (absent,
bool, number, string, list, object) with a typed value beside it, so a missing attribute
or a type mismatch makes a condition raise exactly where the runtime raises, and forbids
and gates that raise hold (fail closed) while permits that raise do not.

Bounds: lists (request lists, ``delegation.chain``) have at most ``list_bound`` items;
numbers are exact rationals. A construct that is not encoded exactly raises
:class:`Incomplete` naming it; the decision of a (kind, action, type) whose rules use one
is not encoded at all (the callers say "incomplete: rule X uses Y").
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import z3

from ..language import nodes

ABSENT, BOOL, NUM, STR, LIST, OBJ, ENT, DELEG = range(8)
DENY, REQUIRE_APPROVAL, ALLOW = 0, 1, 2
DECISIONS = {DENY: "deny", REQUIRE_APPROVAL: "require_approval", ALLOW: "allow"}
CODES = {v: k for k, v in DECISIONS.items()}

#: the most items a request list (and ``delegation.chain``) has in the encoding
LIST_BOUND = 3
#: how deep lists nest inside lists before an equality of two of them is left free (an over-approximation)
NEST_BOUND = 1


#: numeric + - * are exact rationals in the encoding; requests carry IEEE doubles
ARITH_ASSUMPTION = "exact arithmetic on numbers (floating-point rounding of + - * is not modelled)"


class Incomplete(Exception):
    """A construct the encoding does not express exactly."""

    def __init__(self, construct: str, rule: str | None = None):
        super().__init__(construct)
        self.construct = construct
        self.rule = rule

    def __str__(self) -> str:
        return f"rule {self.rule} uses {self.construct}" if self.rule else self.construct


_TRUE, _FALSE = z3.BoolVal(True), z3.BoolVal(False)


def _real(v: Any) -> z3.ArithRef:
    f = Fraction(v)
    return z3.RealVal(f"{f.numerator}/{f.denominator}")


class SV:
    """A symbolic value: a tag and the typed values beside it; ``node`` (a request
    object path), ``items`` (a literal list), ``ent`` (an entity), ``alts`` (an if-then-else
    of two values) say how to look inside it."""

    __slots__ = ("alts", "b", "ent", "items", "n", "node", "s", "tag")

    def __init__(self, tag, b=_FALSE, n=None, s=None, node=None, items=None, ent=None, alts=None):
        self.tag = tag if isinstance(tag, z3.ExprRef) else z3.IntVal(tag)
        self.b = b
        self.n = n if n is not None else z3.RealVal(0)
        self.s = s if s is not None else z3.StringVal("")
        self.node = node
        self.items = items
        self.ent = ent
        self.alts = alts


def lit(v: Any) -> SV:
    """The symbolic value of a Python (JSON) value: a literal or a folded constant."""
    if isinstance(v, bool):
        return SV(BOOL, b=z3.BoolVal(v))
    if isinstance(v, (int, float)):
        return SV(NUM, n=_real(v))
    if hasattr(v, "as_integer_ratio") and not isinstance(v, str):
        return SV(NUM, n=_real(v))
    if isinstance(v, str):
        return SV(STR, s=z3.StringVal(v))
    if isinstance(v, (list, tuple)):
        return SV(LIST, items=[lit(x) for x in v])
    if v is None:
        return SV(ABSENT)
    raise Incomplete(f"a constant of type {type(v).__name__}")


def ite(c, a: SV, b: SV) -> SV:
    if z3.is_true(c):
        return a
    if z3.is_false(c):
        return b
    return SV(z3.If(c, a.tag, b.tag), z3.If(c, a.b, b.b), z3.If(c, a.n, b.n), z3.If(c, a.s, b.s),
              alts=(c, a, b))


class Node:
    """An attribute path of the request: its tag, typed values, children and list items."""

    def __init__(self, enc: Encoder, name: str, tags=(ABSENT, BOOL, NUM, STR, LIST, OBJ)):
        self.enc, self.name = enc, name
        self.tag = z3.Int(f"{name}#tag")
        self.b = z3.Bool(f"{name}#b")
        self.n = z3.Real(f"{name}#n")
        self.s = z3.String(f"{name}#s")
        self.len = z3.Int(f"{name}#len")
        self.children: dict[str, Node] = {}
        self.item_nodes: list[Node] | None = None
        enc.facts.append(z3.Or(*[self.tag == t for t in tags]))
        enc.facts.append(z3.And(self.len >= 0, self.len <= enc.list_bound))

    def sv(self) -> SV:
        return SV(self.tag, self.b, self.n, self.s, node=self)

    def child(self, key: str) -> Node:
        c = self.children.get(key)
        if c is None:
            c = self.children[key] = Node(self.enc, f"{self.name}.{key}")
            self.enc.facts.append(z3.Implies(c.tag != ABSENT, self.tag == OBJ))
        return c

    def items(self) -> list[Node]:
        if self.item_nodes is None:
            self.item_nodes = [Node(self.enc, f"{self.name}[{i}]") for i in range(self.enc.list_bound)]
        return self.item_nodes


class Ent:
    """A principal, delegation entry, resource or the action."""

    def __init__(self, category: str, kind, id_sv: SV, attrs: Node):
        self.category, self.kind, self.id, self.attrs = category, kind, id_sv, attrs

    def get(self, name: str) -> SV:
        if name == "id" and self.category != "action":
            return self.id
        if name == {"principal": "kind", "resource": "type", "action": "name"}[self.category]:
            return SV(STR, s=self.kind)
        return self.attrs.child(name).sv()

    def has(self, name: str):
        return self.get(name).tag != ABSENT


@dataclass
class Result:
    """The encoding of one (kind, action, type): the decision term and each rule's ``held``."""

    decision: Any
    held: dict
    approved: dict
    facts: list
    encoder: Encoder


class Encoder:
    """The symbolic request of one (kind, action, type) and the terms over it. ``kind``
    and the others are strings, or ``None`` for "some name no rule target names"."""

    def __init__(self, kind: str | None, action: str | None, rtype: str | None, tag: str = "",
                 list_bound: int = LIST_BOUND, others: tuple = ((), (), ()), symbolic: bool = False):
        self.list_bound = list_bound
        self.facts: list = []
        self.pre = tag
        #: ``symbolic``: one encoder for every (kind, action, type); the three names are free
        #: strings that :meth:`triple_facts` pins per triple, and rules' terms are built once
        #: (:meth:`held`) and shared by every triple and by both sets of a diff
        self.symbolic = symbolic
        if symbolic:
            self.kind_s, self.action_s, self.type_s = (z3.String(f"{tag}{role}") for role in ("kind", "action", "type"))
        else:
            self.kind_s, self.action_s, self.type_s = (
                z3.StringVal(v) if v is not None else self._fresh_name(f"{tag}{role}", taken)
                for v, role, taken in zip((kind, action, rtype), ("kind", "action", "type"), others))
        self.names = (kind, action, rtype)
        self.pid = z3.String(f"{tag}principal.id")
        self.rid = z3.String(f"{tag}resource.id")
        self.rid_present = z3.Bool(f"{tag}resource.id#present")
        self.principal = Ent("principal", self.kind_s, SV(STR, s=self.pid), Node(self, f"{tag}principal", (OBJ,)))
        self.resource = Ent("resource", self.type_s, SV(z3.If(self.rid_present, STR, ABSENT), s=self.rid),
                            Node(self, f"{tag}resource", (OBJ,)))
        self.action = Ent("action", self.action_s, SV(ABSENT), Node(self, f"{tag}action", (OBJ,)))
        self.context = Node(self, f"{tag}context", (OBJ,))
        self.risk = Node(self, f"{tag}risk", (ABSENT, OBJ))
        self.intent = Node(self, f"{tag}intent", (ABSENT, OBJ))
        score, signals = self.risk.child("score"), self.risk.child("signals")
        self.facts.append(z3.Or(score.tag == ABSENT, z3.And(score.tag == NUM, score.n >= 0, score.n <= 1)))
        self.facts.append(z3.Or(signals.tag == ABSENT, signals.tag == LIST))
        for i, it in enumerate(signals.items()):
            self.facts.append(z3.Implies(z3.And(signals.tag == LIST, i < signals.len), it.tag == STR))
        self.depth = z3.Int(f"{tag}delegation.depth")
        self.facts.append(z3.And(self.depth >= 0, self.depth <= list_bound))
        self.chain = [Ent("principal", z3.String(f"{tag}delegation[{i}].kind"),
                          SV(STR, s=z3.String(f"{tag}delegation[{i}].id")),
                          Node(self, f"{tag}delegation[{i}]", (OBJ,))) for i in range(list_bound)]
        self.approx: list[str] = []
        #: the cases whose equality is left free: a model where none of them occurs is exact
        self.approx_guards: list = []
        self._free = 0
        self._frees: dict = {}
        #: what a proof over this encoding assumes beyond the list bound
        self.assumptions: set = set()
        #: while :meth:`held` encodes a rule: what its terms use (see :class:`Held`)
        self._track: dict | None = None
        self._held: dict = {}
        self._memo: dict = {}
        #: leave every equality with a request list free (see _lists_equal)
        self.free_list_eq = False

    def _fresh_name(self, name, taken):
        v = z3.String(name)
        for t in taken:
            self.facts.append(v != t)
        return v

    # ------------------------------------------------------------ expressions

    def ev(self, e: nodes.Expr, env: dict) -> tuple[Any, SV]:
        """``(raises, value)`` of ``e``: ``raises`` a z3 bool, ``value`` meaningful when it is false.
        An operator outside any quantifier is built once per expression (syntax tree, spans
        ignored) and constants: rules that repeat one share its terms."""
        m = getattr(self, "_" + type(e).__name__)
        if env["vars"] or type(e) not in _MEMO:
            return m(e, env)
        key = (e, id(env["constants"]))
        got = self._memo.get(key)
        outer = self._track
        if got is None:
            self._track = inner = _new_track()
            try:
                out = m(e, env)
            finally:
                self._track = outer
            got = self._memo[key] = (out, inner)
        if outer is not None:
            _merge_track(outer, got[1])
        return got[0]

    def _Literal(self, e, env):
        return _FALSE, lit(e.value)

    def _ListExpr(self, e, env):
        errs, items = [], []
        for i in e.items:
            er, v = self.ev(i, env)
            errs.append(er)
            items.append(v)
        return _or(errs), SV(LIST, items=items)

    def _Name(self, e, env):
        n = e.name
        if n in env["vars"]:
            return _FALSE, env["vars"][n]
        if n in env["constants"]:
            return _FALSE, lit(env["constants"][n])
        if n == "principal":
            return _FALSE, SV(ENT, ent=self.principal)
        if n == "resource":
            return _FALSE, SV(ENT, ent=self.resource)
        if n == "action":
            return _FALSE, SV(ENT, ent=self.action)
        if n == "context":
            return _FALSE, self.context.sv()
        if n in ("risk", "intent"):
            node = self.risk if n == "risk" else self.intent
            return node.tag == ABSENT, node.sv()
        if n == "delegation":
            return _FALSE, SV(DELEG)
        return _TRUE, SV(ABSENT)  # unknown name: raises

    def _get(self, v: SV, key: str) -> tuple[Any, SV]:
        """``v.key`` / ``v["key"]``: raises when v has no attributes or the value is missing."""
        if v.alts is not None:
            c, a, b = v.alts
            ea, va = self._get(a, key)
            eb, vb = self._get(b, key)
            return z3.If(c, ea, eb), ite(c, va, vb)
        if v.ent is not None:
            out = v.ent.get(key)
            return out.tag == ABSENT, out
        if z3.is_int_value(v.tag) and v.tag.as_long() == DELEG:
            if key == "depth":
                self._bounded("delegation.depth")
                return _FALSE, SV(NUM, n=z3.ToReal(self.depth))
            if key == "chain":
                return _FALSE, SV(LIST, items=[SV(ENT, ent=c) for c in self.chain], n=z3.ToReal(self.depth),
                                  ent="chain")
            if key == "root":
                self._witness()
                return _FALSE, self._root()
            return _TRUE, SV(ABSENT)
        if v.node is not None:
            c = v.node.child(key)
            return z3.Or(v.tag != OBJ, c.tag == ABSENT), c.sv()
        return _TRUE, SV(ABSENT)  # literals are never objects

    def _root(self) -> SV:
        if not self.chain:
            return SV(ENT, ent=self.principal)
        return _ent_ite(self.depth == 0, SV(ENT, ent=self.principal), SV(ENT, ent=self.chain[0]))

    def _Attr(self, e, env):
        err, v = self.ev(e.obj, env)
        er2, out = self._get(v, e.name)
        return z3.Or(err, er2), out

    def _Has(self, e, env):
        err, v = self.ev(e.operand, env)
        return _FALSE, SV(BOOL, b=z3.And(z3.Not(err), self._has(v, e.name)))

    def _has(self, v: SV, key: str):
        if v.alts is not None:
            c, a, b = v.alts
            return z3.If(c, self._has(a, key), self._has(b, key))
        if v.ent is not None:
            return v.ent.has(key)
        if z3.is_int_value(v.tag) and v.tag.as_long() == DELEG:
            return z3.BoolVal(key in ("chain", "depth", "root"))
        if v.node is not None:
            return z3.And(v.tag == OBJ, v.node.child(key).tag != ABSENT)
        return _FALSE

    def _Index(self, e, env):
        if not isinstance(e.index, nodes.Literal) or e.index.kind not in ("string", "int"):
            raise Incomplete("an index that is not a string or integer literal")
        err, v = self.ev(e.obj, env)
        key = e.index.value
        if isinstance(key, str):
            if self._is_list_shaped(v) and v.node is None:
                return _TRUE, SV(ABSENT)
            er2, out = self._get(v, key)
            if v.node is not None:
                er2 = z3.Or(er2, v.tag != OBJ)
            return z3.Or(err, er2), out
        er2, out = self._item(v, key)
        return z3.Or(err, er2), out

    def _is_list_shaped(self, v):
        return v.items is not None

    def _item(self, v: SV, i: int) -> tuple[Any, SV]:
        if v.alts is not None:
            c, a, b = v.alts
            ea, va = self._item(a, i)
            eb, vb = self._item(b, i)
            return z3.If(c, ea, eb), ite(c, va, vb)
        if v.items is not None:
            if v.ent == "chain":
                self._bounded("an index into delegation.chain")
                if not 0 <= i < len(self.chain):
                    return _TRUE, SV(ABSENT)
                return z3.Not(z3.IntVal(i) < self.depth), v.items[i]
            if 0 <= i < len(v.items):
                return v.items[i].tag == ABSENT, v.items[i]
            return _TRUE, SV(ABSENT)
        if v.node is not None:
            self._bounded("an index into a request list")
            if not 0 <= i < self.list_bound:
                return _TRUE, SV(ABSENT)
            it = v.node.items()[i]
            return z3.Or(v.tag != LIST, z3.Not(i < v.node.len), it.tag == ABSENT), it.sv()
        return _TRUE, SV(ABSENT)

    def _length(self, v: SV):
        """(the list's length as a real, its items with their guards) of a list-valued SV."""
        if v.alts is not None:
            raise Incomplete("a list read through delegation.root")
        if v.items is not None:
            if v.ent == "chain":
                return z3.ToReal(self.depth), [(z3.IntVal(i) < self.depth, it) for i, it in enumerate(v.items)]
            return z3.RealVal(len(v.items)), [(_TRUE, it) for it in v.items]
        if v.node is not None:
            return z3.ToReal(v.node.len), [(i < v.node.len, it.sv()) for i, it in enumerate(v.node.items())]
        return z3.RealVal(0), []

    def _Call(self, e, env):
        if e.func in ("lower", "upper"):
            raise Incomplete(f"{e.func}()")
        if e.func == "in_cidr":
            raise Incomplete("in_cidr()")
        parts = [self.ev(a, env) for a in e.args]
        err = _or([p[0] for p in parts])
        vals = [p[1] for p in parts]
        if e.func == "len":
            if len(vals) != 1:
                return _TRUE, SV(ABSENT)
            v = vals[0]
            if _reqlist(v):
                self._bounded("len() of a request value (lists are bounded)")
            ln = _dist(v, lambda x: self._length(x)[0])
            is_list = v.tag == LIST
            return (z3.Or(err, z3.Not(z3.Or(is_list, v.tag == STR))),
                    SV(NUM, n=z3.If(is_list, ln, z3.ToReal(z3.Length(v.s)))))
        if e.func in ("starts_with", "ends_with"):
            if len(vals) != 2:
                return _TRUE, SV(ABSENT)
            a, b = vals
            test = z3.PrefixOf(b.s, a.s) if e.func == "starts_with" else z3.SuffixOf(b.s, a.s)
            return z3.Or(err, a.tag != STR, b.tag != STR), SV(BOOL, b=test)
        raise Incomplete(f"the function {e.func}()")

    def _Unary(self, e, env):
        err, v = self.ev(e.operand, env)
        if e.op == "not":
            return z3.Or(err, v.tag != BOOL), SV(BOOL, b=z3.Not(v.b))
        return z3.Or(err, v.tag != NUM), SV(NUM, n=-v.n)

    def _BoolOp(self, e, env):
        """Short-circuit: ``and`` stops at the first false item, ``or`` at the first true one."""
        stop = e.op == "or"
        err, val = _FALSE, z3.BoolVal(not stop)
        for item in reversed(e.items):
            er, v = self.ev(item, env)
            bad = z3.Or(er, v.tag != BOOL)
            hit = v.b if stop else z3.Not(v.b)
            err = z3.If(bad, _TRUE, z3.If(hit, _FALSE, err))
            val = z3.If(hit, z3.BoolVal(stop), val)
        return err, SV(BOOL, b=val)

    def _Binary(self, e, env):
        ea, a = self.ev(e.left, env)
        eb, b = self.ev(e.right, env)
        err = z3.Or(ea, eb)
        op = e.op
        if op in ("==", "!="):
            eq = self.equals(a, b, 0)
            return err, SV(BOOL, b=eq if op == "==" else z3.Not(eq))
        if op in ("<", "<=", ">", ">="):
            nums = z3.And(a.tag == NUM, b.tag == NUM)
            strs = z3.And(a.tag == STR, b.tag == STR)
            cmp_n = {"<": a.n < b.n, "<=": a.n <= b.n, ">": a.n > b.n, ">=": a.n >= b.n}[op]
            cmp_s = {"<": z3.StrLT(a.s, b.s) if hasattr(z3, "StrLT") else a.s < b.s,
                     "<=": a.s <= b.s, ">": b.s < a.s, ">=": b.s <= a.s}[op]
            return z3.Or(err, z3.Not(z3.Or(nums, strs))), SV(BOOL, b=z3.If(nums, cmp_n, cmp_s))
        if op in ("in", "not in"):
            if _reqlist(b):
                self._witness()
            member = _dist(b, lambda x: _or([z3.And(g, self.equals(a, it, 0)) for g, it in self._length(x)[1]]))
            sub = z3.Contains(b.s, a.s)
            ok = z3.Or(b.tag == LIST, z3.And(b.tag == STR, a.tag == STR))
            res = z3.If(b.tag == LIST, member, sub)
            return z3.Or(err, z3.Not(ok)), SV(BOOL, b=res if op == "in" else z3.Not(res))
        nums = z3.And(a.tag == NUM, b.tag == NUM)
        a_str = z3.is_int_value(a.tag) and a.tag.as_long() == STR
        b_str = z3.is_int_value(b.tag) and b.tag.as_long() == STR
        if op == "+" and (a_str or b_str):
            # a string on one side: concatenation or an error, never arithmetic
            return z3.Or(err, a.tag != STR, b.tag != STR), SV(STR, s=z3.Concat(a.s, b.s))
        self._assume(ARITH_ASSUMPTION)
        if op == "+":
            strs = z3.And(a.tag == STR, b.tag == STR)
            return (z3.Or(err, z3.Not(z3.Or(nums, strs))),
                    SV(z3.If(nums, NUM, STR), n=a.n + b.n, s=z3.Concat(a.s, b.s)))
        if op == "-":
            return z3.Or(err, z3.Not(nums)), SV(NUM, n=a.n - b.n)
        if op == "*":
            return z3.Or(err, z3.Not(nums)), SV(NUM, n=a.n * b.n)
        raise Incomplete("division (floating point)" if op == "/" else f"the operator {op}")

    def equals(self, a: SV, b: SV, depth: int):
        """``==`` (runtime.equals): never raises; values of different types are unequal."""
        if a.alts is not None:
            c, x, y = a.alts
            return z3.If(c, self.equals(x, b, depth), self.equals(y, b, depth))
        if b.alts is not None:
            c, x, y = b.alts
            return z3.If(c, self.equals(a, x, depth), self.equals(a, y, depth))
        if a.ent is not None and not isinstance(a.ent, str) or b.ent is not None and not isinstance(b.ent, str):
            if (a.ent is not None and not isinstance(a.ent, str)) and (b.ent is not None and not isinstance(b.ent, str)):
                raise Incomplete("a comparison of two entities")
            return _FALSE
        if a.tag.eq(z3.IntVal(DELEG)) or b.tag.eq(z3.IntVal(DELEG)):
            return _FALSE if not (a.tag.eq(b.tag)) else _TRUE
        parts = [z3.And(a.tag == BOOL, b.tag == BOOL, a.b == b.b),
                 z3.And(a.tag == NUM, b.tag == NUM, a.n == b.n),
                 z3.And(a.tag == STR, b.tag == STR, a.s == b.s)]
        a_list, b_list = a.items is not None or a.node is not None, b.items is not None or b.node is not None
        if a_list and b_list:
            parts.append(self._lists_equal(a, b, depth))
        if a.node is not None and b.node is not None:
            # two request objects: whether they are equal is left free (an over-approximation,
            # so "no such request" stays a proof; an example is replayed before it is reported)
            free = self._free_eq(a, b, "obj", "an equality of two request objects")
            parts.append(z3.And(a.tag == OBJ, b.tag == OBJ, free))
        return z3.Or(*parts)

    def _lists_equal(self, a: SV, b: SV, depth: int):
        """Both values are lists of equal length and items (``runtime.equals`` on lists)."""
        if self.free_list_eq and (_reqlist(a) or _reqlist(b)):
            # (proven lints) an equality with a request list is left free: an
            # over-approximation, so a proof holds whatever the lists' lengths
            free = self._free_eq(a, b, "list", "an equality with a request list")
            return z3.And(a.tag == LIST, b.tag == LIST, free)
        if depth >= NEST_BOUND:
            # lists nested deeper than the bound: whether they are equal is left free
            free = self._free_eq(a, b, "list", "an equality of lists nested deeper than the bound")
            return z3.And(a.tag == LIST, b.tag == LIST, free)
        if _reqlist(a) or _reqlist(b):
            self._bounded("an equality with a request list")
        la, ia = self._length(a)
        lb, ib = self._length(b)
        same = [la == lb]
        for i in range(min(len(ia), len(ib))):
            same.append(z3.Implies(ia[i][0], self.equals(ia[i][1], ib[i][1], depth + 1)))
        if len(ia) != len(ib):
            longer = ia if len(ia) > len(ib) else ib
            shorter = min(len(ia), len(ib))
            for g, _ in longer[shorter:]:
                same.append(z3.Not(g))
        return z3.And(a.tag == LIST, b.tag == LIST, *same)

    def _free_eq(self, a: SV, b: SV, what: str, construct: str):
        """One free boolean per pair of request values (the same pair compared by two rules,
        or by both sets of a diff, gets the same one)."""
        tag = LIST if what == "list" else OBJ
        if a.node is not None and b.node is not None:
            x, y = sorted((a.node.name, b.node.name))
            key = (what, x, y)
        else:
            self._free += 1
            key = (what, self._free)
        got = self._frees.get(key)
        if got is None:
            v = z3.Bool(f"{self.pre}{what}eq#{len(self._frees)}")
            got = self._frees[key] = (v, len(self.approx_guards))
            self.approx.append(construct)
            self.approx_guards.append(z3.And(a.tag == tag, b.tag == tag))
        if self._track is not None:
            self._track["guards"].add(got[1])
        return got[0]

    def _Matches(self, e, env):
        err, v = self.ev(e.operand, env)
        return z3.Or(err, v.tag != STR), SV(BOOL, b=z3.InRe(v.s, glob_re(e.pattern)))

    def _Quantifier(self, e, env):
        """``any`` stops at the first item whose body holds, ``all`` at the first that does not."""
        err, coll = self.ev(e.collection, env)
        if _reqlist(coll):
            self._witness()
        _, items = self._length(coll)
        if coll.items is None and coll.node is None:
            return _TRUE, SV(BOOL)
        stop = e.kind == "any"
        r_err, r_val = _FALSE, z3.BoolVal(not stop)
        for guard, item in reversed(items):
            scope = dict(env, vars={**env["vars"], e.var: item})
            er, v = self.ev(e.body, scope)
            bad = z3.Or(er, v.tag != BOOL)
            hit = v.b if stop else z3.Not(v.b)
            r_err = z3.If(guard, z3.If(bad, _TRUE, z3.If(hit, _FALSE, r_err)), _FALSE)
            r_val = z3.If(guard, z3.If(hit, z3.BoolVal(stop), r_val), z3.BoolVal(not stop))
        return z3.Or(err, coll.tag != LIST, r_err), SV(BOOL, b=r_val)

    # ------------------------------------------------------------ rules and the decision

    # ------------------------------------------------------------ what a rule's terms use

    def _assume(self, what: str) -> None:
        self.assumptions.add(what)
        if self._track is not None:
            self._track["assumptions"].add(what)

    def _bounded(self, what: str) -> None:
        """A construct whose value the list bound can change (a proof over it holds only
        within the bound)."""
        if self._track is not None:
            self._track["bounded"].add(what)

    def _witness(self) -> None:
        """A test over a request list that one item witnesses (``in``, ``any``/``all``,
        ``delegation.root``): with no bounded construct, a request that satisfies the terms
        has one whose lists keep only the witnesses, so a bound of at least the number of
        such tests loses no request."""
        if self._track is not None:
            self._track["witnesses"] += 1

    def held(self, info, constants) -> Held:
        """:meth:`rule_held` of a rule (without its target) with what its terms use, built
        once per rule syntax tree and constants (a diff's unchanged rules share one)."""
        key = (info.rule, id(constants))
        got = self._held.get(key)
        if got is not None:
            return got
        self._track = _new_track()
        try:
            term, err = self.rule_held(info, constants), None
        except Incomplete as e:
            term, err = None, e.construct
        finally:
            tr, self._track = self._track, None
        got = self._held[key] = Held(term, err, frozenset(tr["guards"]), frozenset(tr["assumptions"]),
                                     frozenset(tr["bounded"]), tr["witnesses"], constants)
        return got

    def triple_facts(self, triple, names) -> list:
        """A symbolic encoder's request pinned to one (kind, action, type): each name
        equal to the triple's, or (``None``) to none of the mentioned ones."""
        out = []
        for var, v, taken in zip((self.kind_s, self.action_s, self.type_s), triple, names):
            if v is not None:
                out.append(var == z3.StringVal(v))
            else:
                out.extend(var != z3.StringVal(x) for x in taken)
        return out

    def target(self, t: nodes.Target, names=None):
        """docs/language.md#rules for this (kind, action, type) (``names``: another one,
        for a symbolic encoder): a z3 bool, or False."""
        kind, action, rtype = self.names if names is None else names
        conds = []
        if t.actions is not None and action not in t.actions:
            return _FALSE
        if t.subjects is not None:
            alts = [_TRUE if s.glob is None else z3.InRe(self.pid, glob_re(s.glob))
                    for s in t.subjects if s.name == kind]
            if not alts:
                return _FALSE
            conds.append(_or(alts))
        if t.resources is not None:
            alts = [_TRUE if s.glob is None else z3.And(self.rid_present, z3.InRe(self.rid, glob_re(s.glob)))
                    for s in t.resources if s.name == rtype]
            if not alts:
                return _FALSE
            conds.append(_or(alts))
        return z3.And(*conds) if conds else _TRUE

    def rule_held(self, info, constants):
        """evaluate_rule: conditions in order; an error holds a forbid or gate and not a permit;
        a permit's grant scopes must evaluate to strings."""
        rule = info.rule
        if rule.limits:
            raise Incomplete("a limit", info.id)
        env = {"vars": {}, "constants": constants}
        fail_closed = rule.effect != "permit"
        try:
            tail = _TRUE
            if rule.effect == "permit" and rule.grant is not None:
                oks = []
                for s in rule.grant.scopes:
                    er, v = self.ev(s, env)
                    oks.append(z3.And(z3.Not(er), v.tag == STR))
                tail = z3.And(*oks)
            for cond in reversed(rule.conditions):
                er, v = self.ev(cond.expr, env)
                bad = z3.Or(er, v.tag != BOOL)
                goes_on = v.b if cond.kind == "when" else z3.Not(v.b)
                tail = z3.If(bad, z3.BoolVal(fail_closed), z3.If(goes_on, tail, _FALSE))
        except Incomplete as e:
            e.rule = info.id
            raise
        return tail


@dataclass(frozen=True)
class Held:
    """A rule's "holds" term (target aside) with what it uses: ``incomplete`` (the construct
    that is not encoded; ``term`` is None), ``guards`` (indices into ``approx_guards``: the
    equalities left free), ``assumptions``, ``bounded`` (constructs the list bound changes)
    and ``witnesses`` (see :meth:`Encoder._witness`)."""

    term: Any
    incomplete: str | None
    guards: frozenset
    assumptions: frozenset
    bounded: frozenset
    witnesses: int
    constants: Any = None


def solve(solver, enc: Encoder, *extra, guards=None):
    """``(status, model)``: a model where no over-approximated equality occurs when there is
    one (``"sat"``), else any model (``"approx"``, to be replayed), or ``"unsat"`` (a proof)
    or ``"unknown"``. ``guards``: the over-approximation guards that matter (default: all)."""
    guards = enc.approx_guards if guards is None else guards
    r = solver.check(*extra)  # a proof takes one check
    if r == z3.sat:
        model = solver.model()
        if not guards or not any(z3.is_true(model.eval(g, True)) for g in guards):
            return "sat", model
        exact = z3.And(*[z3.Not(g) for g in guards])
        if solver.check(*extra, exact) == z3.sat:
            return "sat", solver.model()
        return "approx", model
    return ("unsat" if r == z3.unsat else "unknown"), None


_MEMO = (nodes.Binary, nodes.BoolOp, nodes.Call, nodes.Matches, nodes.Quantifier, nodes.Has, nodes.Unary)


def _new_track() -> dict:
    return {"guards": set(), "assumptions": set(), "bounded": set(), "witnesses": 0}


def _merge_track(into: dict, part: dict) -> None:
    into["guards"] |= part["guards"]
    into["assumptions"] |= part["assumptions"]
    into["bounded"] |= part["bounded"]
    into["witnesses"] += part["witnesses"]


def _reqlist(v: SV) -> bool:
    """Whether ``v`` may be a request list (an attribute path or ``delegation.chain``)."""
    if v.alts is not None:
        return _reqlist(v.alts[1]) or _reqlist(v.alts[2])
    return v.node is not None or v.ent == "chain"


def _dist(v: SV, f):
    """``f(v)`` for a value that may be an if-then-else of two (delegation.root's attributes)."""
    if v.alts is not None:
        c, a, b = v.alts
        return z3.If(c, _dist(a, f), _dist(b, f))
    return f(v)


def _ent_ite(c, a: SV, b: SV) -> SV:
    return SV(ENT, alts=(c, a, b))


def _or(xs):
    xs = [x for x in xs if not z3.is_false(x)]
    if not xs:
        return _FALSE
    return xs[0] if len(xs) == 1 else z3.Or(*xs)


_GLOBS: dict[str, Any] = {}


def glob_re(pattern: str):
    """policylang/language/globs.py as a z3 regular expression: ``*`` any run without ``/``,
    ``**`` any run, ``?`` one character other than ``/``, everything else literal."""
    r = _GLOBS.get(pattern)
    if r is not None:
        return r
    any_char = z3.AllChar(z3.ReSort(z3.StringSort()))
    not_slash = z3.Intersect(any_char, z3.Complement(z3.Re("/")))
    parts, i, buf = [], 0, ""
    while i < len(pattern):
        c = pattern[i]
        if c in "*?":
            if buf:
                parts.append(z3.Re(buf))
                buf = ""
            if pattern.startswith("**", i):
                parts.append(z3.Star(any_char))
                i += 2
                continue
            parts.append(z3.Star(not_slash) if c == "*" else not_slash)
        else:
            buf += c
        i += 1
    if buf:
        parts.append(z3.Re(buf))
    if not parts:
        r = z3.Re("")
    else:
        r = parts[0] if len(parts) == 1 else z3.Concat(*parts)
    _GLOBS[pattern] = r
    return r


# ------------------------------------------------------------------ the whole decision

def applicable(policy_set, kind, action, rtype) -> list:
    """The rules whose target can match a request of (kind, action, type) (``None``: a name
    no target names), in source order."""
    out = []
    for info in policy_set.rules:
        t = info.rule.target
        if t.actions is not None and action not in t.actions:
            continue
        if t.subjects is not None and not any(s.name == kind for s in t.subjects):
            continue
        if t.resources is not None and not any(s.name == rtype for s in t.resources):
            continue
        out.append(info)
    return out


def set_incomplete(policy_set) -> str | None:
    """What makes the whole set's decision unencodable, or None."""
    if policy_set.entities and any(policy_set.entities.values()):
        return "the set uses stored entity data"
    if policy_set.options.attenuate_delegation:
        return "the set uses option attenuate_delegation"
    return None


def encode_decision(enc: Encoder, policy_set, approvals: str = "none", rules=None) -> Result:
    """The decision term of ``policy_set`` over ``enc``'s request.

    ``approvals``: ``"none"`` (as the engine decides with no approval checker: every gate
    that holds asks for approval) or ``"free"`` (a free boolean per gate says whether its
    approval is confirmed). Raises :class:`Incomplete`."""
    why = set_incomplete(policy_set)
    if why:
        raise Incomplete(why)
    forbids, gates, permits, held, approved = [], [], [], {}, {}
    kind, action, rtype = enc.names
    for info in (applicable(policy_set, kind, action, rtype) if rules is None else rules):
        h = z3.And(enc.target(info.rule.target), enc.rule_held(info, policy_set.constants))
        held[info.id] = h
        if info.rule.effect == "forbid":
            forbids.append(h)
        elif info.rule.effect == "permit":
            permits.append(h)
        else:
            if approvals == "free":
                a = approved[info.id] = z3.Bool(f"{enc.pre}approved#{info.id}")
                gates.append(z3.And(h, z3.Not(a)))
            else:
                gates.append(h)
    dec = z3.If(_or(forbids), DENY, z3.If(_or(gates), REQUIRE_APPROVAL, z3.If(_or(permits), ALLOW, DENY)))
    return Result(dec, held, approved, enc.facts, enc)


def triple_decision(enc: Encoder, policy_set, rules, triple, names, constants=None):
    """For a symbolic encoder: ``(decision term, {rule id: holds term}, guard indices,
    assumptions)`` of ``rules`` (the rules applicable to ``triple``) with no approval
    confirmed, each rule's terms built once (:meth:`Encoder.held`). Raises
    :class:`Incomplete`."""
    why = set_incomplete(policy_set)
    if why:
        raise Incomplete(why)
    constants = policy_set.constants if constants is None else constants
    forbids, gates, permits, held = [], [], [], {}
    guards: set = set()
    assumptions: set = set()
    for info in rules:
        h = enc.held(info, constants)
        if h.term is None:
            raise Incomplete(h.incomplete, info.id)
        guards |= h.guards
        assumptions |= h.assumptions
        term = held[info.id] = z3.And(enc.target(info.rule.target, triple), h.term)
        (forbids if info.rule.effect == "forbid" else permits if info.rule.effect == "permit" else gates).append(term)
    dec = z3.If(_or(forbids), DENY, z3.If(_or(gates), REQUIRE_APPROVAL, z3.If(_or(permits), ALLOW, DENY)))
    return dec, held, guards, assumptions


# ------------------------------------------------------------------ decoding a model

def _val(model, t):
    return model.eval(t, model_completion=True)


def _py_string(model, s) -> str:
    v = _val(model, s)
    try:
        text = v.as_string()
    except Exception:  # noqa: BLE001  # pragma: no cover - older z3
        text = str(v).strip('"')
    # z3 writes characters outside printable ASCII as \u{hex}
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


_ESCAPE = __import__("re").compile(r"\\u\{([0-9a-fA-F]{1,6})\}")


def _py_number(model, n):
    v = _val(model, n)
    if z3.is_rational_value(v):
        f = Fraction(v.numerator_as_long(), v.denominator_as_long())
    else:  # an algebraic number: its decimal approximation
        f = Fraction(v.as_decimal(12).rstrip("?"))
    return f.numerator if f.denominator == 1 else float(f)


def _py_node(model, node: Node, tag=None):
    tag = _val(model, node.tag).as_long() if tag is None else tag
    if tag == BOOL:
        return z3.is_true(_val(model, node.b))
    if tag == NUM:
        return _py_number(model, node.n)
    if tag == STR:
        return _py_string(model, node.s)
    if tag == LIST:
        n = _val(model, node.len).as_long()
        items = node.items()[:n] if n else []
        return [_py_node(model, it) if _val(model, it.tag).as_long() != ABSENT else None for it in items]
    if tag == OBJ:
        out = {}
        for k, c in node.children.items():
            if _val(model, c.tag).as_long() != ABSENT:
                out[k] = _py_node(model, c)
        return out
    return None


def decode(model, enc: Encoder) -> dict:
    """The concrete request (docs/requests.md#request) of a model."""
    req: dict = {
        "principal": {"id": _py_string(model, enc.pid), "kind": _py_string(model, enc.kind_s),
                      "attrs": _py_node(model, enc.principal.attrs, OBJ)},
    }
    action_name = _py_string(model, enc.action_s)
    action_attrs = _py_node(model, enc.action.attrs, OBJ)
    req["action"] = {"name": action_name, "attrs": action_attrs} if action_attrs else action_name
    res = {"type": _py_string(model, enc.type_s), "attrs": _py_node(model, enc.resource.attrs, OBJ)}
    if z3.is_true(_val(model, enc.rid_present)):
        res["id"] = _py_string(model, enc.rid)
    req["resource"] = res
    ctx = _py_node(model, enc.context, OBJ)
    if ctx:
        req["context"] = ctx
    for name, node in (("risk", enc.risk), ("intent", enc.intent)):
        if _val(model, node.tag).as_long() == OBJ:
            req[name] = _py_node(model, node, OBJ)
    depth = _val(model, enc.depth).as_long()
    if depth:
        req["delegation"] = [{"id": _py_string(model, c.id.s), "kind": _py_string(model, c.kind),
                              "attrs": _py_node(model, c.attrs, OBJ)} for c in enc.chain[:depth]]
    return req


# ------------------------------------------------------------------ (kind, action, type) triples

def mentioned(policy_set) -> tuple[set, set, set]:
    kinds, actions, types = set(), set(), set()
    for info in policy_set.rules:
        t = info.rule.target
        kinds.update(s.name for s in t.subjects or ())
        actions.update(t.actions or ())
        types.update(s.name for s in t.resources or ())
    return kinds, actions, types


def triples(*sets) -> list[tuple]:
    """Every (kind, action, type) the sets mention, plus ``None`` for "a name none of them
    mentions" in each place (where only ``*`` targets apply)."""
    kinds, actions, types = set(), set(), set()
    for ps in sets:
        k, a, t = mentioned(ps)
        kinds |= k
        actions |= a
        types |= t
    return [(k, a, t) for k in sorted(kinds) + [None] for a in sorted(actions) + [None]
            for t in sorted(types) + [None]], (tuple(sorted(kinds)), tuple(sorted(actions)), tuple(sorted(types)))


def new_encoder(triple, names, tag="", list_bound=LIST_BOUND) -> Encoder:
    others = tuple(tuple(z3.StringVal(x) for x in ns) for ns in names)
    return Encoder(*triple, tag=tag, list_bound=list_bound, others=others)
