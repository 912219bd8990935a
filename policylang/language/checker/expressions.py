"""The expression walk: one pass over every rule's conditions and grant scopes that
infers each static type (:mod:`.types`) and records what it finds as :class:`ExprFacts`.

The schema attribute checks (E004), the type checks (E005) and the unguarded-optional
lint (W103) all need the same inferred types — the type of ``principal.trust`` is known
only from the kinds the rule targets and the schema — so the walk runs once, for the
first of the ``schema``, ``types`` and ``lint`` stages that asks (:func:`facts`), and
files each finding under the stage that reports it. Names it cannot resolve, unknown
functions and wrong arities are the ``names`` stage's (its own walk): here they are just
unknown types, so one mistake gives one diagnostic. The walk is linear in the size of
the rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .. import nodes
from ..errors import Diagnostic
from ..roots import NAMES as ROOTS
from ..policyset import RuleInfo
from ...evaluation.runtime import FUNCTIONS
from ..source import Span
from .context import CheckContext, did_you_mean, quoted_list, tail_span
from .memo import UNSET
from .types import (ANY_PRINCIPAL, BOOL, CHAIN, CONTEXT, DELEGATION, LITERAL_TYPES, NUMBER, OBJECT, ORDERED,
                    RISK, ROOT_TYPES, SCALARS, SCHEMA_TYPES, SIGNALS, STRING, ActionType, EntityType, ListType,
                    StaticType, describe_type, is_list, common, type_of_ref, type_of_value)

_BUILTIN_ATTRS = {"principal": ("id", "kind"), "resource": ("id", "type")}
_DELEGATION_FIELDS = ("chain", "depth", "root")
#: the types of the delegation object's fields and of the risk object's
_DELEGATION_TYPES = {"chain": CHAIN, "depth": NUMBER, "root": ANY_PRINCIPAL}
_RISK_TYPES = {"score": NUMBER, "signals": SIGNALS}
_ORDER_OPS = frozenset(["<", "<=", ">", ">="])


def _outside(lt, rt, allowed: tuple) -> StaticType | None:
    """The first known operand type that is not one of ``allowed``, else None."""
    if lt is not None and lt not in allowed:
        return lt
    if rt is not None and rt not in allowed:
        return rt
    return None


@dataclass(frozen=True)
class EntityRead:
    """An entity attribute read by a forbid or approval gate's condition (for W108)."""

    info: RuleInfo
    node: nodes.Expr
    span: Span
    category: str
    #: the kinds/types the rule targets, or None for any
    kinds: tuple[str, ...] | None
    name: str


@dataclass
class ExprFacts:
    """What the expression walk found, by the stage that reports it."""

    #: E004 (undeclared attribute)
    schema: list[Diagnostic] = field(default_factory=list)
    #: E005 (types that cannot fit); E002 for an attribute the delegation object lacks when
    #: only its type shows it is the delegation object
    types: list[Diagnostic] = field(default_factory=list)
    #: W103 (optional attribute read without a guard)
    lint: list[Diagnostic] = field(default_factory=list)
    #: W108 input
    entity_reads: list[EntityRead] = field(default_factory=list)
    #: constants some rule reads (W107 input)
    used_constants: set[str] = field(default_factory=set)


def attr_path(node: nodes.Expr) -> str | None:
    """``principal.trust`` for an attribute path (W103 matches reads with guards)."""
    parts = []
    while True:
        if isinstance(node, nodes.Name):
            parts.append(node.name)
            return ".".join(reversed(parts))
        if isinstance(node, nodes.Attr):
            parts.append(node.name)
            node = node.obj
        elif isinstance(node, nodes.Index) and isinstance(node.index, nodes.Literal) and node.index.kind == "string":
            parts.append(node.index.value)
            node = node.obj
        else:
            return None


def sure_guards(expr: nodes.Expr, holds: bool) -> set[str]:
    """The ``path.name`` of each `has` that must be true for a `when` (``holds``) or an
    `unless` (not ``holds``) not to stop the rule: a top-level `has`, the items of a
    top-level `and` (of an `or` for an `unless`), through `not`."""
    cls = expr.__class__
    if cls is nodes.Has:
        if not holds:
            return set()
        p = attr_path(expr.operand)
        return {f"{p}.{expr.name}"} if p is not None else set()
    if cls is nodes.Unary and expr.op == "not":
        return sure_guards(expr.operand, not holds)
    if cls is nodes.BoolOp and expr.op == ("and" if holds else "or"):
        out: set[str] = set()
        for item in expr.items:
            out |= sure_guards(item, holds)
        return out
    return set()


def _schema_read(node: nodes.Expr) -> bool:
    """An attribute read (``resource.owner``, ``context["x"]``), not a literal, constant or call."""
    return node.__class__ is nodes.Attr or (node.__class__ is nodes.Index and node.index.__class__ is nodes.Literal)


def _equality_class(t) -> str | None:
    """What `==` can compare ``t`` with at all (None: unknown, or anything)."""
    if t is STRING or t is NUMBER or t is BOOL:
        return t.value
    cls = t.__class__
    if cls is ListType:
        return "list"
    if cls is EntityType:
        return t.category
    if cls is ActionType:
        return "action"
    return None


def _has_name_span(n: nodes.Has) -> Span:
    """Where an undeclared `has` key is reported: the whole test (the node does not keep
    its key's own span, and `has owner` and `has "owner"` end alike)."""
    return n.span


def targeted(refs, declared) -> tuple[str, ...] | None:
    """The declared kinds/types of a target entry (``None`` for ``*``)."""
    if refs is None:
        return None
    if not declared:
        return ()  # the category has no schema: attributes are free-form anyway
    if len(refs) == 1:
        name = refs[0].name
        return (name,) if name in declared else ()
    return tuple(dict.fromkeys(r.name for r in refs if r.name in declared))



class ExpressionWalk:
    """One walk over every rule's conditions and grant scopes, computing static types.

    See the module docstring: E004 of ``schema``, E005 of ``types`` and W103 of
    ``lint`` are found in one pass and each stage reports its own share. An
    unknown type (``None``) never produces a diagnostic, and an operand that already has
    an error is unknown from there on, so one mistake gives one diagnostic.
    """

    def __init__(self, ctx: CheckContext) -> None:
        self.ctx = ctx
        self.sch = ctx.schema
        self.facts = ExprFacts()
        self.const_types = {n: type_of_value(v) for n, v in ctx.constants.items()}
        self.const_names = ctx.const_decls
        self.used_constants = self.facts.used_constants
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
        self.entity_reads = self.facts.entity_reads
        self.gate = None
        self._entity_types: dict = {}
        self._d = {
            nodes.Literal: self._literal, nodes.Name: self._name, nodes.Attr: self._attr, nodes.Index: self._index,
            nodes.Call: self._call, nodes.Unary: self._unary, nodes.Binary: self._binary, nodes.BoolOp: self._boolop,
            nodes.Matches: self._matches, nodes.Has: self._has, nodes.Quantifier: self._quantifier,
            nodes.ListExpr: self._list,
        }

    def _report(self, stage: str, code: str, message: str, span: Span) -> None:
        getattr(self.facts, stage).append(Diagnostic.make(code, message, span))

    def _type_error(self, message: str, span: Span) -> None:
        self.facts.types.append(Diagnostic.make("E005", message, span))

    # -- rules --------------------------------------------------------------------
    def run(self) -> None:
        """Walk every rule; a rule the previous check walked in the same environment (its
        memo, see :mod:`.memo`) gets its recorded results instead."""
        facts = self.facts
        lists = (facts.schema, facts.types, facts.lint)
        memo, out = self.ctx.memo, self.ctx.new_memo
        all_used = self.used_constants
        for info in self.ctx.rules:
            rule = info.rule
            hit = memo.entry(rule) if memo is not None else None
            if hit is not None and hit[2] is not UNSET:  # same rule node, same declarations
                results = hit[2]
                if results is not None:
                    for into, found in zip(lists, results):
                        into.extend(found)
                    # an entity read names its rule: this set's RuleInfo of it
                    facts.entity_reads.extend(r if r.info is info else replace(r, info=info) for r in results[3])
                    all_used.update(results[4])
            else:
                starts = [len(x) for x in lists]
                reads0 = len(facts.entity_reads)
                self.used_constants = used = set()
                self._rule(info)
                self.used_constants = all_used
                all_used.update(used)
                if used or len(facts.entity_reads) != reads0 or any(len(x) != n for x, n in zip(lists, starts)):
                    results = (*(tuple(x[n:]) for x, n in zip(lists, starts)), tuple(facts.entity_reads[reads0:]),
                               frozenset(used))
                else:  # the rule found nothing (the common case): no empty tuples to make
                    results = None
            if out is not None:
                out.record(info.index, rule, walk=results, stage="walk")

    def _rule(self, info: RuleInfo) -> None:
        d = self._d
        empty: dict = {}
        rule = info.rule
        self.enter_rule(rule.target)
        self.gate = info if rule.effect != "permit" else None
        # a rule's conditions stop at the first that fails, so a `has` that an earlier
        # condition needs to hold guards every later one (`when principal has trust`
        # then `when principal.trust >= 0.5`)
        carried: set[str] = set()
        for c in rule.conditions:
            self.reads = []
            self.guards = set(carried)
            e = c.expr
            t = d[e.__class__](e, empty)
            if t is not None and t is not BOOL:
                self._type_error(f"a `{c.kind}` condition must be a boolean, but this is {describe_type(t)}; "
                                 f"compare it to something (e.g. `== …`)", e.span)
            if self.reads:
                self._unguarded(c)
            carried |= sure_guards(e, c.kind == "when")
        self.gate = None
        self.reads = []
        for clause in rule.clauses:
            if clause.__class__ is nodes.Grant:
                for scope in clause.scopes:
                    t = d[scope.__class__](scope, empty)
                    if t is not None and t is not STRING:
                        self._type_error(f"a grant scope must be a string, but this is {describe_type(t)}; "
                                         f"build it with string concatenation, e.g. \"repo:read:\" + resource.id",
                                         scope.span)
            elif clause.__class__ is nodes.Limit:
                self._limit(clause, empty)
        self.reads = []

    def _limit(self, clause: nodes.Limit, env) -> None:
        """E005 for a limit whose amount or bound is not a number, or whose key is not a
        string, number or boolean (docs/language.md#limits)."""
        d = self._d
        for what, e in (("amount", clause.amount), ("bound", clause.bound)):
            if e is None:
                continue
            t = d[e.__class__](e, env)
            if t is not None and t is not NUMBER:
                self._type_error(f"a limit {what} must be a number, but this is {describe_type(t)}", e.span)
        if clause.key is not None:
            t = d[clause.key.__class__](clause.key, env)
            if t is not None and t not in SCALARS:
                self._type_error(f"a limit key must be a string, number or boolean, but this is "
                                 f"{describe_type(t)}; key by one attribute such as principal.id", clause.key.span)

    def _unguarded(self, c: nodes.Condition) -> None:
        for node, path, name in self.reads:
            if path is None or path not in self.guards:
                shown = path or name
                base = shown.rsplit(".", 1)[0] if path else "<entity>"
                self._report("lint", "W103", f"'{shown}' is optional in the schema but is read without a `has` "
                                             f"guard in this `{c.kind}`, so a request without it makes the rule "
                                             f"raise; guard it: `{base} has {name} and …`", node.span)

    def enter_rule(self, target: nodes.Target) -> None:
        sch = self.sch
        self.principal = self._entity_type("principal", targeted(target.subjects, sch.principals))
        self.resource = self._entity_type("resource", targeted(target.resources, sch.resources))
        acts = target.actions
        if acts is None or not sch.actions:
            self.action = ActionType(None if acts is None else ())
        else:
            self.action = ActionType(tuple(dict.fromkeys(a for a in acts if a in sch.actions)))

    def _entity_type(self, category: str, kinds: tuple[str, ...] | None) -> EntityType:
        """One (equal, immutable) EntityType per category and list of kinds: rules share them."""
        key = (category, kinds)
        t = self._entity_types.get(key)
        if t is None:
            t = self._entity_types[key] = EntityType(category, kinds)
        return t

    # -- expressions --------------------------------------------------------------
    def _literal(self, n: nodes.Literal, env):
        return LITERAL_TYPES.get(n.kind)

    def _name(self, n: nodes.Name, env):
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
            return ROOT_TYPES[name]
        return None  # unknown: the names stage reports it

    def _attr(self, n: nodes.Attr, env):
        o = n.obj
        obj = self._d[o.__class__](o, env)
        if obj is None:
            return None
        return self.attribute(n, obj, n.name, False, env)

    def _name_span(self, node, is_index: bool) -> Span:
        if is_index:
            return node.index.span
        return tail_span(node.span, len(node.name))

    def attribute(self, node, obj, name: str, is_index: bool, env):
        """The type of ``obj.name`` (or ``obj["name"]``)."""
        cls = obj.__class__
        if cls is ListType:
            self._type_error(f"cannot read attribute '{name}' of a list", self._name_span(node, is_index))
            return None
        if cls is EntityType or cls is ActionType:
            return self._schema_attribute(node, obj, name, is_index)
        if obj is DELEGATION:
            return self._delegation_attribute(node, name, is_index, env)
        if obj is RISK:
            return _RISK_TYPES.get(name)
        if obj is OBJECT:
            return None
        if obj is CONTEXT:
            return self._context_attribute(node, name, is_index)
        self._type_error(f"cannot read attribute '{name}' of {describe_type(obj)}", self._name_span(node, is_index))
        return None

    def _schema_attribute(self, node, obj: EntityType | ActionType, name: str, is_index: bool):
        """An attribute of an entity or action: typed by the schema (E004 when undeclared),
        noted for W108 in a gate and for W103 when optional."""
        key = (obj, name)
        hit = self._attr_cache.get(key)
        if hit is None:
            hit = self._attr_cache[key] = self._entity_attr(obj, name)
        t, optional, problem = hit
        if self.gate is not None and obj.__class__ is EntityType and name not in _BUILTIN_ATTRS[obj.category]:
            self._entity_read(node, self._name_span(node, is_index), obj, name)
        if problem is not None:
            self._report("schema", "E004", problem, self._name_span(node, is_index))
        if optional and not self.in_has:
            self.reads.append((node, attr_path(node), name))
        return t

    def _delegation_attribute(self, node, name: str, is_index: bool, env):
        """A field of the delegation object (E002 here for a name it lacks, when only its
        type shows it is the delegation object)."""
        t = _DELEGATION_TYPES.get(name)
        if t is not None:
            return t
        base = node.obj
        if base.__class__ is not nodes.Name or base.name != "delegation" or base.name in env:
            # the delegation object reached other than by its root name (``[delegation][0]``):
            # only its type says so, so this walk reports it; the names stage reports the rest
            self._report("types", "E002", f"'delegation' has no attribute '{name}'"
                                          f"{did_you_mean(name, _DELEGATION_FIELDS)}; it has only chain, "
                                          f"depth and root", self._name_span(node, is_index))
        return None

    def _context_attribute(self, node, name: str, is_index: bool):
        """A context attribute: typed by the schema's ``context`` declaration, if any."""
        declared = self.sch.context
        if declared is None:
            return None
        ref = declared.get(name)
        if ref is None:
            self._report("schema", "E004", f"context attribute '{name}' is not declared in the schema"
                                           f"{did_you_mean(name, declared)}; add it to the `context {{ … }}` "
                                           f"declaration or fix the name", self._name_span(node, is_index))
            return None
        if ref.optional and not self.in_has:
            self.reads.append((node, attr_path(node), name))
        return type_of_ref(ref)

    def _entity_read(self, node, span: Span, obj: EntityType, name: str) -> None:
        """Note a read of an entity attribute in a forbid or gate (W108)."""
        target = self.gate.rule.target
        if obj is self.principal:
            refs = target.subjects
        elif obj is self.resource:
            refs = target.resources
        else:
            refs = None  # a delegation-chain entity: any principal kind
        kinds = None if refs is None else tuple(dict.fromkeys(r.name for r in refs))
        self.entity_reads.append(EntityRead(self.gate, node, span, obj.category, kinds, name))

    def _entity_attr(self, obj: EntityType | ActionType, name: str) -> tuple:
        """(type, optional, E004 message or None) of an attribute of an entity or action."""
        if obj.__class__ is ActionType:
            if name == "name":
                return (STRING, False, None)
            declared, category, word = self.action_attrs, "action", "action"
            kinds = obj.names
        else:
            category = obj.category
            if name in _BUILTIN_ATTRS[category]:
                return (STRING, False, None)
            if category == "principal":
                declared, word = self.sch.principals, "kind"
            else:
                declared, word = self.sch.resources, "resource type"
            kinds = obj.kinds
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
            where = f"any declared {word}" if kinds is None else f"{word} {quoted_list(missing)}"
            problem = (f"{category} attribute '{name}' is not declared for {where}{did_you_mean(name, known)}; "
                       f"declare it in the schema or fix the name")
        if not refs:
            return (None, False, problem)
        return (common([type_of_ref(r) for r in refs]), any(r.optional for r in refs), problem)

    def _index(self, n: nodes.Index, env):
        d = self._d
        obj = d[n.obj.__class__](n.obj, env)
        idx = n.index
        key = d[idx.__class__](idx, env)
        if obj is None:
            return None
        lit = idx if idx.__class__ is nodes.Literal else None
        if is_list(obj):
            if key is not None and key is not NUMBER:
                self._type_error(f"a list index must be an integer, but this is {describe_type(key)}", idx.span)
            elif lit is not None and lit.kind == "decimal":
                self._type_error("a list index must be an integer, not a decimal", idx.span)
            return obj.elem
        if obj in SCALARS:
            self._type_error(f"cannot index {describe_type(obj)}; only lists, objects and entities can be indexed",
                             n.span)
            return None
        if lit is not None and lit.kind == "string":
            return self.attribute(n, obj, lit.value, True, env)
        if key is not None and key is not STRING:
            self._type_error(f"an attribute key must be a string, but this is {describe_type(key)}", idx.span)
        return None

    def _call(self, n: nodes.Call, env):
        d = self._d
        arg_types = [d[a.__class__](a, env) for a in n.args]
        spec = FUNCTIONS.get(n.func)
        if spec is None or len(n.args) != spec[1]:
            return None  # an unknown function or a wrong arity: the names stage reports it
        result = spec[2]
        for i, (arg, t) in enumerate(zip(n.args, arg_types)):
            if t is None:
                continue
            if n.func == "len":
                if t is not STRING and not is_list(t):
                    self._type_error(f"len() needs a list or a string, but this is {describe_type(t)}", arg.span)
            elif t is not STRING:
                what = ("an IP address string" if n.func == "in_cidr" and i == 0
                        else "a CIDR string such as \"10.0.0.0/8\"" if n.func == "in_cidr" else "a string")
                self._type_error(f"{n.func}() needs {what}, but this is {describe_type(t)}", arg.span)
        return SCHEMA_TYPES.get(result)

    def _unary(self, n: nodes.Unary, env):
        o = n.operand
        t = self._d[o.__class__](o, env)
        if n.op == "not":
            if t is not None and t is not BOOL:
                self._type_error(f"'not' needs a boolean, but its operand is {describe_type(t)}", o.span)
            return BOOL
        if t is not None and t is not NUMBER:
            self._type_error(f"unary '-' needs a number, but its operand is {describe_type(t)}", n.span)
            return None
        return NUMBER

    def _boolop(self, n: nodes.BoolOp, env):
        d = self._d
        for item in n.items:
            t = d[item.__class__](item, env)
            if t is not None and t is not BOOL:
                self._type_error(f"the operands of '{n.op}' must be booleans, but this is {describe_type(t)}; "
                                 f"compare it to something to get a boolean", item.span)
        return BOOL

    def _matches(self, n: nodes.Matches, env):
        o = n.operand
        t = self._d[o.__class__](o, env)
        if t is not None and t is not STRING:
            self._type_error(f"'matches' needs a string on the left, but this is {describe_type(t)}", o.span)
        return BOOL

    def _has(self, n: nodes.Has, env):
        o = n.operand
        self.in_has += 1  # `has` never raises: reads inside it need no guard
        try:
            t = self._d[o.__class__](o, env)
        finally:
            self.in_has -= 1
        if (self.gate is not None and t.__class__ is EntityType
                and n.name not in _BUILTIN_ATTRS[t.category]):
            self._entity_read(n, n.span, t, n.name)
        self._has_key(n, t)
        p = attr_path(o)
        if p is not None:
            self.guards.add(f"{p}.{n.name}")
        return BOOL

    def _has_key(self, n: nodes.Has, t) -> None:
        """E004 for a `has` key the schema does not declare, as for a read of it
        (`delegation.root has kidn`): the test could only ever be false."""
        if t.__class__ is EntityType or t.__class__ is ActionType:
            key = (t, n.name)
            hit = self._attr_cache.get(key)
            if hit is None:
                hit = self._attr_cache[key] = self._entity_attr(t, n.name)
            problem = hit[2]
        elif t is CONTEXT and self.sch.context is not None and n.name not in self.sch.context:
            problem = (f"context attribute '{n.name}' is not declared in the schema"
                       f"{did_you_mean(n.name, self.sch.context)}; add it to the `context {{ … }}` "
                       f"declaration or fix the name")
        else:
            return
        if problem is not None:
            self._report("schema", "E004", f"`has` tests an undeclared attribute, so it is always false: "
                                           f"{problem}", _has_name_span(n))

    def _list(self, n: nodes.ListExpr, env):
        d = self._d
        return ListType(common([d[i.__class__](i, env) for i in n.items]))

    def _quantifier(self, n: nodes.Quantifier, env):
        d = self._d
        c = n.collection
        coll = d[c.__class__](c, env)
        if coll is not None and not is_list(coll):
            self._type_error(f"'{n.kind}' iterates over a list, but this is {describe_type(coll)}", c.span)
        elem = coll.elem if is_list(coll) else None
        b = n.body
        body = d[b.__class__](b, {**env, n.var: elem})
        if body is not None and body is not BOOL:
            self._type_error(f"the body of '{n.kind}' must be a boolean, but it is {describe_type(body)}", b.span)
        return BOOL

    def _binary(self, n: nodes.Binary, env):
        d = self._d
        left, right = n.left, n.right
        lt = d[left.__class__](left, env)
        rt = d[right.__class__](right, env)
        op = n.op
        if op == "==" or op == "!=":
            self._equality(n, op, lt, rt)
            return BOOL
        if op in _ORDER_OPS:
            self._ordering(n, op, lt, rt)
            return BOOL
        if op == "in" or op == "not in":
            self._membership(n, op, lt, rt)
            return BOOL
        if op == "+":
            return self._plus(n, lt, rt)
        return self._arith(n, op, lt, rt)  # - * /

    def _ordering(self, n: nodes.Binary, op: str, lt, rt) -> None:
        bad = _outside(lt, rt, ORDERED)
        if bad is not None:
            self._type_error(f"'{op}' compares two numbers or two strings, but one side is "
                             f"{describe_type(bad)}", n.span)
        elif lt is not None and rt is not None and lt != rt:
            self._type_error(f"'{op}' compares two numbers or two strings, but this compares "
                             f"{describe_type(lt)} with {describe_type(rt)}; convert one side or fix the "
                             f"operand", n.span)

    def _equality(self, n: nodes.Binary, op: str, lt, rt) -> None:
        """E005 for `==`/`!=` between types no value of which is ever equal (a
        ``set<string>`` and a string): the comparison is always false (or true)."""
        a, b = _equality_class(lt), _equality_class(rt)
        if a is None or b is None or a == b:
            return
        if self._constant(n.left) and self._constant(n.right):
            return  # no request value in it: a constant comparison, not a schema mistake
        always = "false" if op == "==" else "true"
        hint = "; convert one side or fix the operand"
        if (a == "list") != (b == "list"):
            from ..formatter import expr as source
            item, coll = (n.right, n.left) if a == "list" else (n.left, n.right)
            suggestion = f"{source(item)} in {source(coll)}"
            if len(suggestion) <= 60:
                hint = f"; to test membership write `{suggestion}`"
        self._type_error(f"'{op}' compares {describe_type(lt)} with {describe_type(rt)}, which are never equal, "
                         f"so this is always {always}{hint}", n.span)

    def _constant(self, node: nodes.Expr) -> bool:
        """No root and no quantifier variable in ``node``: only literals and constants."""
        names = self.const_names
        return all(k.__class__ is not nodes.Name or k.name in names for k in nodes.walk(node))

    def _membership(self, n: nodes.Binary, op: str, lt, rt) -> None:
        if rt is None:
            return
        if rt is STRING:
            if lt is not None and lt is not STRING:
                self._type_error(f"'{op}' a string tests for a substring and needs a string on the left, "
                                 f"but this is {describe_type(lt)}", n.left.span)
            elif lt is STRING and _schema_read(n.left) and _schema_read(n.right):
                self._report("lint", "W112", f"'{op}' between two string attributes tests for a substring "
                                             f"(\"ops\" in \"devops\" is true); if "
                                             f"'{attr_path(n.right) or 'the right side'}' holds several values, "
                                             f"declare it set<string>, else compare with `==`", n.span)
        elif not is_list(rt):
            self._type_error(f"'{op}' needs a list (or a string) on the right, but this is "
                             f"{describe_type(rt)}", n.right.span)

    def _plus(self, n: nodes.Binary, lt, rt):
        bad = _outside(lt, rt, ORDERED)
        if bad is not None:
            self._type_error(f"'+' adds numbers or joins strings, but one side is {describe_type(bad)}", n.span)
            return None
        if lt is not None and rt is not None and lt != rt:
            self._type_error(f"'+' adds two numbers or joins two strings, but this mixes {describe_type(lt)} "
                             f"and {describe_type(rt)}", n.span)
            return None
        return lt if lt is not None else rt

    def _arith(self, n: nodes.Binary, op: str, lt, rt):
        bad = _outside(lt, rt, (NUMBER,))
        if bad is not None:
            self._type_error(f"'{op}' needs two numbers, but one side is {describe_type(bad)}", n.span)
            return None
        return NUMBER



def run_walk(ctx: CheckContext) -> ExprFacts:
    """Walk every rule of ``ctx`` once; the facts are also kept as ``ctx.facts``."""
    walk = ExpressionWalk(ctx)
    walk.run()
    walk._d = {}  # drop the bound methods: no reference cycle outlives the pass
    ctx.facts = walk.facts
    ctx.used_constants |= walk.facts.used_constants
    return walk.facts


def facts(ctx: CheckContext) -> ExprFacts:
    """The walk's facts, walking the rules the first time a stage asks."""
    return ctx.facts if ctx.facts is not None else run_walk(ctx)
