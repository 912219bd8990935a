"""The reference interpreter: a plain, direct reading of docs/language.md#expressions, docs/language.md#combining-rules and docs/language.md#evaluation-errors-fail-closed over the
AST. It is the oracle the compiled engine is tested against (same cases, generated
policies and requests: the whole decision must agree), so it favours obviousness over
speed: no index, no folding, no caching.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..language import nodes
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


def describe(node: nodes.Expr) -> str:
    """A short source-like rendering of an attribute path (for messages)."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Attr):
        return f"{describe(node.obj)}.{node.name}"
    if isinstance(node, nodes.Index):
        return f"{describe(node.obj)}[…]"
    if isinstance(node, nodes.Call):
        return f"{node.func}(…)"
    return "value"


def expr_text(node: nodes.Expr) -> str:
    """The expression as policylang source (canonical, one line), for error details."""
    from ..language.formatter import expr as render  # the failure path only

    try:
        return render(node)
    except Exception:  # pragma: no cover - every checked node prints
        return describe(node)


def _operand(node: nodes.Expr, value: Any) -> tuple[str | None, Any]:
    return (None if isinstance(node, nodes.Literal) else expr_text(node), value)


def _fail(e: EvalError, node: nodes.Expr, *operands: tuple[nodes.Expr, Any]) -> EvalError:
    """``e`` with its detail (which expression, which values) unless an inner one set it."""
    if e.detail is None:
        e.detail = rt.operand_detail(expr_text(node), [_operand(n, v) for n, v in operands])
    return e


def evaluate(node: nodes.Expr, scope: Scope) -> Any:
    """The value of ``node``; raises :class:`EvalError` as docs/language.md#evaluation-errors-fail-closed says.

    One small function per node kind (``_EVALUATORS``, keyed on the node's class), each
    a direct reading of its section of the language reference."""
    evaluator = _EVALUATORS.get(type(node))
    if evaluator is None:
        raise EvalError(f"cannot evaluate {type(node).__name__}")  # pragma: no cover
    return evaluator(node, scope)


def _eval_literal(node: nodes.Literal, scope: Scope) -> Any:
    return node.value


def _eval_list(node: nodes.ListExpr, scope: Scope) -> Any:
    return [evaluate(i, scope) for i in node.items]


def _eval_name(node: nodes.Name, scope: Scope) -> Any:
    return scope.lookup(node.name)


def _eval_attr(node: nodes.Attr, scope: Scope) -> Any:
    obj = evaluate(node.obj, scope)
    try:
        return rt.get_attr(obj, node.name, describe(node.obj))
    except EvalError as e:
        raise _fail(e, node, (node.obj, obj)) from None


def _eval_index(node: nodes.Index, scope: Scope) -> Any:
    obj = evaluate(node.obj, scope)
    key = evaluate(node.index, scope)
    try:
        return rt.index(obj, key)
    except EvalError as e:
        raise _fail(e, node, (node.obj, obj), (node.index, key)) from None


def _eval_call(node: nodes.Call, scope: Scope) -> Any:
    fn, arity, _ = rt.FUNCTIONS[node.func] if node.func in rt.FUNCTIONS else (None, 0, "")
    if fn is None:
        raise EvalError(f"unknown function '{node.func}'")
    if len(node.args) != arity:
        raise EvalError(f"{node.func}() takes {arity} argument(s), got {len(node.args)}")
    args = [evaluate(a, scope) for a in node.args]
    try:
        return fn(*args)
    except EvalError as e:
        raise _fail(e, node, *zip(node.args, args)) from None


def _eval_unary(node: nodes.Unary, scope: Scope) -> Any:
    v = evaluate(node.operand, scope)
    try:
        if node.op == "not":
            return not rt.boolean(v, "operand of 'not'")
        return rt.negate(v)
    except EvalError as e:
        raise _fail(e, node, (node.operand, v)) from None


def _truth(item: nodes.Expr, scope: Scope, what: str) -> bool:
    v = evaluate(item, scope)
    try:
        return rt.boolean(v, what)
    except EvalError as e:
        raise _fail(e, item, (item, v)) from None


def _eval_boolop(node: nodes.BoolOp, scope: Scope) -> Any:
    """``and`` stops at the first false item, ``or`` at the first true one."""
    if node.op == "and":
        for item in node.items:
            if not _truth(item, scope, "operand of 'and'"):
                return False
        return True
    for item in node.items:
        if _truth(item, scope, "operand of 'or'"):
            return True
    return False


def _eval_binary(node: nodes.Binary, scope: Scope) -> Any:
    """Both operands, left then right, then the operator."""
    a = evaluate(node.left, scope)
    b = evaluate(node.right, scope)
    op = node.op
    try:
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
    except EvalError as e:
        raise _fail(e, node, (node.left, a), (node.right, b)) from None


def _eval_matches(node: nodes.Matches, scope: Scope) -> Any:
    v = evaluate(node.operand, scope)
    try:
        return rt.matches(v, node.pattern)
    except EvalError as e:
        raise _fail(e, node, (node.operand, v)) from None


def _eval_has(node: nodes.Has, scope: Scope) -> Any:
    """False, not an error, when the operand itself cannot be evaluated."""
    try:
        obj = evaluate(node.operand, scope)
    except EvalError:
        return False
    return rt.has_attr(obj, node.name)


def _eval_quantifier(node: nodes.Quantifier, scope: Scope) -> Any:
    """``any`` stops at the first item whose body holds, ``all`` at the first that does not."""
    value = evaluate(node.collection, scope)
    try:
        coll = rt.iterable(value)
    except EvalError as e:
        raise _fail(e, node.collection, (node.collection, value)) from None
    if node.kind == "any":
        for item in coll:
            if _truth(node.body, scope.bind(node.var, item), "quantifier body"):
                return True
        return False
    for item in coll:
        if not _truth(node.body, scope.bind(node.var, item), "quantifier body"):
            return False
    return True


_EVALUATORS: dict[type, Callable[[Any, Scope], Any]] = {
    nodes.Literal: _eval_literal,
    nodes.ListExpr: _eval_list,
    nodes.Name: _eval_name,
    nodes.Attr: _eval_attr,
    nodes.Index: _eval_index,
    nodes.Call: _eval_call,
    nodes.Unary: _eval_unary,
    nodes.BoolOp: _eval_boolop,
    nodes.Binary: _eval_binary,
    nodes.Matches: _eval_matches,
    nodes.Has: _eval_has,
    nodes.Quantifier: _eval_quantifier,
}


# ------------------------------------------------------------------ rules and decisions

def target_matches(target: nodes.Target, req) -> bool:
    """docs/language.md#rules: kind, action, type and the id globs."""
    p = req.principal
    if target.subjects is not None:
        if not any(s.name == p.kind and (s.glob is None or rt.glob(s.glob).match(p.id))
                   for s in target.subjects):
            return False
    if target.actions is not None and req.action.name not in target.actions:
        return False
    r = req.resource
    if target.resources is not None:
        if not any(s.name == r.kind and (s.glob is None or (r.id is not None and rt.glob(s.glob).match(r.id)))
                   for s in target.resources):
            return False
    return True


def scope_value(v: Any) -> str:
    if isinstance(v, str):
        return v
    raise EvalError(f"a grant scope must be a string, got {rt.type_name(v)}")


@dataclass
class ConditionTrace:
    kind: str  # when / unless
    expr: nodes.Expr
    result: Any = None  # True / False, or None when it raised or was not reached
    error: str | None = None
    detail: str | None = None  # "stops" for the condition that stopped the rule
    #: for an error: which expression failed, with which values (EvalError.detail)
    error_detail: str | None = None


@dataclass
class RuleTrace:
    info: Any
    held: bool
    error: str | None
    scopes: list[str] | None
    conditions: list[ConditionTrace] = field(default_factory=list)


def evaluate_rule(info, scope: Scope, trace: bool = False) -> RuleTrace:
    """docs/language.md#tokens and docs/language.md#evaluation-errors-fail-closed: conditions in order, stopping at the first that does not hold;
    an error fails closed (a permit does not hold; a forbid or gate holds)."""
    rule: nodes.Rule = info.rule
    out = RuleTrace(info, False, None, None)
    fail_closed = rule.effect != "permit"
    for cond in rule.conditions:
        ct = ConditionTrace(cond.kind, cond.expr)
        if trace:
            out.conditions.append(ct)
        try:
            value = _truth(cond.expr, scope, "condition")
        except EvalError as e:
            ct.error = str(e)
            out.error = rt.error_message(e)
            ct.error_detail = e.detail
            out.held = fail_closed
            return out
        ct.result = value
        if value != (cond.kind == "when"):
            ct.detail = "stops"
            return out
    grant = rule.grant if rule.effect == "permit" else None
    if grant is not None:
        try:
            out.scopes = [scope_value(evaluate(s, scope)) for s in grant.scopes]
        except EvalError as e:
            out.error = rt.error_message(e)
            return out
    out.held = True
    return out


def request_scope(req, constants: Mapping[str, Any]) -> Scope:
    return Scope(req.roots(), constants)


def traces(policy_set, req, trace: bool = False, candidates=None) -> list[RuleTrace]:
    """Evaluate every rule whose target matches (``candidates``: a subset of the rules,
    in source order, known to contain all of those, e.g. from the engine's index)."""
    scope = request_scope(req, policy_set.constants)
    rules = policy_set.rules if candidates is None else candidates
    return [evaluate_rule(info, scope, trace) for info in rules if target_matches(info.rule.target, req)]


def classify(ts, constants=None):
    """The outcomes of the rules whose target matched, as :func:`decision.combine` takes
    them: ``(forbids, gates, permits, errors)``, each in source order (``constants`` fold
    the bounds of limited permits)."""
    from .decision import RuleView

    forbids, gates, permits, errors = [], [], [], []
    for t in ts:
        if t.error is not None:
            errors.append({"rule": t.info.id, "message": t.error})
        if not t.held:
            continue
        effect = t.info.rule.effect
        if effect == "forbid":
            forbids.append(RuleView(t.info))
        elif effect == "permit":
            permits.append((RuleView(t.info, constants), t.scopes))
        else:
            gates.append(RuleView(t.info))
    return forbids, gates, permits, errors


def combine_traces(policy_set, req, ts, approvals=None, limiter=None):
    """The docs/language.md#combining-rules decision from the rule traces of ``req`` (no docs/language.md#delegation-attenuation attenuation).
    ``limiter``: a :class:`~policylang.evaluation.limits.Limiter` (docs/language.md#limits), or
    None, when limited permits hold without a reservation (delegators' evaluations)."""
    from .decision import combine, confirmed

    confirm = None
    if approvals is not None and req.approval is not None:
        def confirm(gate):
            return confirmed(approvals, req, gate.approvers)
    reserve = None
    if limiter is not None:
        reserve = limit_step(limiter, req, policy_set.constants)
    return combine(*classify(ts, policy_set.constants), req.delegation_path(), policy_set.version, None, confirm,
                   reserve)


def limit_step(limiter, req, constants):
    """docs/language.md#limits for :func:`decision.combine`: the amounts and keys evaluated on the AST."""
    from .limits import idempotency_key

    idem = idempotency_key(req.raw)
    scope = request_scope(req, constants)

    def values_of(rv):
        return [(1 if s.measure == "count" else evaluate(s.amount, scope),
                 True if s.key is None else evaluate(s.key, scope)) for s in rv.limits]

    def reserve(permits):
        return limiter.reserve(permits, values_of, req.principal.id, idem)
    return reserve


def decide_request(policy_set, req, approvals=None, attenuate: bool = True, limiter=None):
    """The reference decision for a validated request (docs/language.md#combining-rules, docs/language.md#approvals, docs/language.md#delegation-attenuation, docs/language.md#limits)."""
    from .decision import ALLOW
    from .decision import attenuate as attenuate_chain

    decision = combine_traces(policy_set, req, traces(policy_set, req), approvals, limiter)
    if not (attenuate and policy_set.options.attenuate_delegation and req.chain):
        return decision

    def allows(i: int) -> bool:
        return decide_request(policy_set, req.as_delegator(i), None, attenuate=False).decision == ALLOW

    out = attenuate_chain(decision, req.chain, allows, req.action.name, policy_set.version)
    if out is not decision and limiter is not None:  # a delegator lacked the authority: give it back
        from .limits import release_decision
        release_decision(limiter, decision)
    return out


def decide(policy_set, request: Any, *, entities: Any = None, approvals: Callable | None = None,
           limits: Any = None, clock: Callable | None = None):
    """Reference ``decide``: validate, merge entity data, evaluate every rule plainly.
    ``limits``: the store of docs/language.md#limits (a set with limits and no store fails
    its limited permits closed, as the engine does)."""
    from .limits import Limiter, set_has_limits
    from .request import entity_lookup, parse_request

    req = parse_request(request, entity_lookup(policy_set.entities, entities), policy_set.entity_authority)
    limiter = Limiter(limits, clock) if set_has_limits(policy_set) else None
    return decide_request(policy_set, req, approvals, limiter=limiter)



# ------------------------------------------------------------------ explanations

def why(expr: nodes.Expr, scope: Scope, sources: Mapping[str, str]) -> str:
    """Which part of a condition made it come out ``value``, with the values compared."""
    node = expr
    # descend into the part of an and/or chain that decided the result
    while True:
        if isinstance(node, nodes.BoolOp):
            target = (node.op == "or")  # an `or` is decided by a true item, an `and` by a false one
            nxt = None
            for item in node.items:
                try:
                    if evaluate(item, scope) is target:
                        nxt = item
                        break
                except EvalError:
                    return _render(node, sources)
            if nxt is None:
                # every item had the other value: show the last one
                nxt = node.items[-1]
            node = nxt
            continue
        if isinstance(node, nodes.Unary) and node.op == "not":
            node = node.operand
            continue
        break
    if isinstance(node, nodes.Binary) and node.op in ("==", "!=", "<", "<=", ">", ">=", "in", "not in"):
        try:
            left = evaluate(node.left, scope)
            right = evaluate(node.right, scope)
        except EvalError as e:
            return f"{_render(node, sources)}: {e}"
        return f"{_render(node, sources)}: {rt.show(left)} {node.op} {rt.show(right)} is {_tf(_safe_eval(node, scope))}"
    if isinstance(node, nodes.Matches):
        try:
            v = evaluate(node.operand, scope)
        except EvalError as e:
            return f"{_render(node, sources)}: {e}"
        return f"{_render(node, sources)}: {rt.show(v)} matches {rt.show(node.pattern)} is {_tf(_safe_eval(node, scope))}"
    if isinstance(node, nodes.Has):
        return f"{_render(node, sources)} is {_tf(_safe_eval(node, scope))}"
    return f"{_render(node, sources)} is {_tf(_safe_eval(node, scope))}"


def _safe_eval(node, scope):
    try:
        return evaluate(node, scope)
    except EvalError as e:
        return f"an error ({e})"


def _tf(v: Any) -> str:
    return rt.show(v) if not isinstance(v, str) else v


def _render(node: nodes.Expr, sources: Mapping[str, str]) -> str:
    """The expression's own source text (whitespace folded), or a short rendering."""
    text = sources.get(node.span.path)
    if text is not None and 0 <= node.span.start < node.span.end <= len(text):
        snippet = " ".join(text[node.span.start:node.span.end].split())
        return snippet if len(snippet) <= 80 else snippet[:79] + "…"
    return describe(node)


def _approval_lines(req, decision, ts) -> list[str]:
    """Which approval satisfied which gate: when the request carries an approval, gates
    held, no forbid held and the decision is not require_approval, every gate that held
    was confirmed (docs/language.md#approvals)."""
    from .decision import REQUIRE_APPROVAL

    if req.approval is None or decision.decision == REQUIRE_APPROVAL:
        return []
    held = [t for t in ts if t.held]
    if any(t.info.rule.effect == "forbid" for t in held):
        return []
    out = []
    for t in held:
        if t.info.rule.effect == "require_approval":
            by = t.info.rule.by.approvers if t.info.rule.by is not None else ()
            who = f" (approvers: {', '.join(by)})" if by else ""
            out.append(f"approval {rt.show(req.approval)} satisfied gate {t.info.id}{who}")
    return out


def _delegator_lines(policy_set, req) -> list[str]:
    """docs/language.md#delegation-attenuation: each delegator's own evaluation, as the
    attenuation step decides it (as the principal, with the chain before it, without the
    request's approval). The first that is not allowed turns an allow into a deny."""
    from .decision import ALLOW, REQUIRE_APPROVAL

    if not (policy_set.options.attenuate_delegation and req.chain):
        return []
    out = ["delegators (attenuate_delegation: each decides as itself, without the request's approval):"]
    refused = False
    for i, entity in enumerate(req.chain):
        d = decide_request(policy_set, req.as_delegator(i), None, attenuate=False)
        by = f" by {', '.join(d.rules)}" if d.rules else ""
        mark = ""
        if d.decision != ALLOW and not refused:
            refused = True
            mark = " <- the first delegator not allowed: an allow becomes a deny"
        out.append(f"  [{d.decision}] {entity.kind} {entity.id} (depth {i}){by}{mark}")
        if d.decision == REQUIRE_APPROVAL:
            out.append(f"      gated by {', '.join(d.rules)}: the request's approval does not reach a delegator, "
                       f"so this gate cannot be satisfied for it (check: W113)")
        for reason in d.reasons:
            out.append(f"      because: {reason}")
    return out


def explain(policy_set, req, decision, candidates=None) -> str:
    """The readable trace of ``policylang eval --explain`` (docs/cli.md)."""
    sources = policy_set.sources
    scope = request_scope(req, policy_set.constants)
    lines = [f"decision: {decision.decision}"]
    lines.append("delegation path: " + " -> ".join(decision.delegation_path))
    lines.append(f"policy version: {decision.policy_version}")
    if decision.rules:
        lines.append("determined by: " + ", ".join(decision.rules))
    for reason in decision.reasons:
        lines.append(f"because: {reason}")
    for g in decision.grants:
        lines.append(f"grant ({g['rule']}): {' '.join(g['scopes'])} for {g['ttl']}s")
    if decision.approvers:
        lines.append("approvers: " + ", ".join(decision.approvers))
    for e in decision.limits:
        used = "" if e["used"] is None else f": {e['used']} of {e['max']} used, {e['left']} left"
        window = f", window ends {e['window_end']}" if e["window_end"] else ""
        res = f", reservation {e['reservation']}" if e["reservation"] else ""
        lines.append(f"limit ({e['rule']}) {e['outcome']}: {e['limit']}{used}{window}{res}")
    ts = traces(policy_set, req, trace=True, candidates=candidates)
    lines.append(f"rules considered: {len(ts)} of {len(policy_set.rules)}")
    for t in ts:
        info = t.info
        effect = info.rule.effect.replace("_", " ")
        if t.error is not None:
            status = "ERROR, treated as holding (fails closed)" if info.rule.effect != "permit" else \
                "ERROR, treated as not holding (fails closed)"
        else:
            status = "held" if t.held else "did not hold"
        lines.append(f"  [{status}] {info.id} ({effect}, {info.location})")
        for c in t.conditions:
            text = _render(c.expr, sources)
            if c.error is not None:
                lines.append(f"      {c.kind} {text}  -> error: {c.error}")
                if c.error_detail is not None:
                    lines.append(f"          at {c.error_detail}")
            elif c.detail is not None:
                lines.append(f"      {c.kind} {text}  -> {_tf(c.result)}, stops here: {why(c.expr, scope, sources)}")
            else:
                lines.append(f"      {c.kind} {text}  -> {_tf(c.result)}")
        if t.scopes is not None:
            lines.append(f"      grant {' '.join(t.scopes)}")
    lines.extend(_approval_lines(req, decision, ts))
    lines.extend(_delegator_lines(policy_set, req))
    if decision.errors:
        lines.append("errors:")
        for e in decision.errors:
            info = policy_set.rule(e["rule"])
            where = f" ({info.location})" if info else ""
            lines.append(f"  {e['rule']}{where}: {e['message']}")
    return "\n".join(lines)
