"""The answer to one request (docs/requests.md#decision)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

ALLOW = "allow"
DENY = "deny"
REQUIRE_APPROVAL = "require_approval"


#: the fields of a decision (docs/requests.md#decision), in their documented order
DECISION_FIELDS = ("decision", "rules", "reasons", "grants", "approvers", "errors",
                   "delegation_path", "policy_version", "limits")


def decision_fields(decision: Any) -> dict:
    """The decision fields of a :class:`Decision` (``to_dict()``), a mapping, or any object
    with those attributes; ``{}`` for ``None``. The one reader of a decision-like value, used
    by the audit log, approvals and credentials. Raises ``TypeError`` for anything else."""
    if decision is None:
        return {}
    if hasattr(decision, "to_dict"):
        data = decision.to_dict()
    elif isinstance(decision, Mapping):
        data = decision
    else:
        data = {f: getattr(decision, f) for f in DECISION_FIELDS if hasattr(decision, f)}
    if not isinstance(data, Mapping):
        raise TypeError(f"not a decision: {type(decision).__name__}")
    return {f: data[f] for f in DECISION_FIELDS if f in data}


class Decision:
    """What :meth:`Engine.decide` returns. ``to_dict()`` is exactly the JSON of docs/requests.md#decision.

    ``explain()`` renders the readable trace of ``policylang eval --explain``; it is
    computed on demand by the reference interpreter (so it costs nothing until asked).
    """

    __slots__ = ("decision", "rules", "reasons", "grants", "approvers", "errors",
                 "delegation_path", "policy_version", "_explainer")

    #: the limits the decision touched (docs/language.md#limits); a decision that touched
    #: one is a :class:`LimitedDecision`, every other has none (a class attribute, so
    #: decisions of sets without limits cost nothing more)
    limits: "tuple | list" = ()

    def __init__(self, decision: str, rules: list[str], reasons: list[str], grants: list[dict],
                 approvers: list[str], errors: list[dict], delegation_path: list[str],
                 policy_version: str, explainer: "Callable[[Decision], str] | tuple | None" = None):
        self.decision = decision
        self.rules = rules
        self.reasons = reasons
        self.grants = grants
        self.approvers = approvers
        self.errors = errors
        self.delegation_path = delegation_path
        self.policy_version = policy_version
        self._explainer = explainer

    @property
    def allowed(self) -> bool:
        return self.decision == ALLOW

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "rules": list(self.rules),
            "reasons": list(self.reasons),
            "grants": [{"rule": g["rule"], "scopes": list(g["scopes"]), "ttl": g["ttl"]} for g in self.grants],
            "approvers": list(self.approvers),
            "errors": [dict(e) for e in self.errors],
            "delegation_path": list(self.delegation_path),
            "policy_version": self.policy_version,
            **({"limits": [dict(e) for e in self.limits]} if self.limits else {}),
        }

    def explain(self) -> str:
        ex = self._explainer
        if ex is None:
            return f"decision: {self.decision}"
        if isinstance(ex, tuple):  # (engine, what it kept of the request): rendered on demand
            return ex[0].explain_request(ex, self)
        return ex(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Decision) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Decision({self.decision!r}, rules={self.rules!r})"

    def __bool__(self) -> bool:
        # `if engine.decide(req):` would be true for a deny (every object is truthy), so
        # an allow-everything bug is one missing attribute away: refuse to guess
        raise TypeError("a Decision has no truth value: test decision.allowed "
                        "(or decision.decision == 'allow')")


class LimitedDecision(Decision):
    """A decision that touched a limit: ``limits`` lists, per limit, which one, the key,
    ``used``, ``left``, ``max``, ``window_end``, the ``outcome`` and the ``reservation``."""

    __slots__ = ("limits",)

    def __init__(self, *args, limits: list):
        super().__init__(*args)
        self.limits = limits


_new = object.__new__


def made(decision: str, rules: list, reasons: list, grants: list, approvers: list, errors: list,
         delegation_path: list, policy_version: str, explainer=None) -> Decision:
    """``Decision(...)`` without the class call: the same object, the fields stored by a
    plain function (a Python-to-Python call; a class call with a Python ``__init__`` goes
    through C and a second frame). The evaluators' way of making every decision."""
    d = _new(Decision)
    d.decision = decision
    d.rules = rules
    d.reasons = reasons
    d.grants = grants
    d.approvers = approvers
    d.errors = errors
    d.delegation_path = delegation_path
    d.policy_version = policy_version
    d._explainer = explainer
    return d


def _thaw_grants(frozen: tuple) -> list:
    return [{"rule": g[0], "scopes": list(g[1]), "ttl": g[2]} for g in frozen[3]]


def _thawing(index: int, name: str, thaw: Callable[[tuple], Any]) -> property:
    """The ``name`` field of a :class:`CachedDecision`: on first read, ``thaw`` makes it (a
    fresh list) from the cached entry and it is kept in the decision's ``_made`` list at
    ``index``, so a caller changes its decision's field, never the cache's entry (or
    another hit's). A plain list item and a marker, not an unset slot: a first read that
    raised and caught an AttributeError cost ten times the read."""

    def fget(self):
        made = self._made
        value = made[index]
        if value is _UNREAD:  # not read before: make it now
            value = made[index] = thaw(self._frozen)
        return value

    def fset(self, value):
        self._made[index] = value

    return property(fget, fset, None, f"the decision's {name} (made on first read)")


#: what a :class:`CachedDecision`'s field holds until it is first read
_UNREAD = object()
_ALL_UNREAD = [_UNREAD] * 6


class CachedDecision(Decision):
    """A decision answered from a decision cache (:meth:`Engine.decide` and
    :meth:`Engine.decide_json` on a hit): the same fields, equal to the decision the miss
    made, built by :func:`thawed` in five stores. Its list fields are made from the
    cache's entry (tuples) on first read, each a fresh list the caller may change; a
    caller that reads only ``decision`` / ``allowed`` pays for none of them. Everything
    else is :class:`Decision`'s (``to_dict``, ``explain``, equality); a copy (``copy.copy``)
    is a plain :class:`Decision` of its fields, as a copy of one is. (Two threads reading
    a field of one decision for the first time at the same instant may each make it; the
    field then holds the later list: read a decision's fields before handing it to
    another thread that changes them.)"""

    __slots__ = ("_frozen", "_made")

    rules = _thawing(0, "rules", lambda f: list(f[1]))
    reasons = _thawing(1, "reasons", lambda f: list(f[2]))
    grants = _thawing(2, "grants", _thaw_grants)
    approvers = _thawing(3, "approvers", lambda f: list(f[4]))
    errors = _thawing(4, "errors", lambda f: [])  # a cached decision has none
    delegation_path = _thawing(5, "delegation_path", lambda f: list(f[5]))

    def __reduce__(self):
        return (Decision, (self.decision, self.rules, self.reasons, self.grants, self.approvers, self.errors,
                           self.delegation_path, self.policy_version, self._explainer))


def thawed(frozen: tuple, policy_version: str, explainer=None) -> CachedDecision:
    """The decision of a cache entry ``(decision, rules, reasons, grants, approvers,
    delegation path)`` (tuples all the way down, grants as ``(rule, scopes, ttl)``; no
    errors or limits), without a Python-level ``__init__`` call: the hit path's."""
    d = _new(CachedDecision)
    d._frozen = frozen
    d._made = _ALL_UNREAD.copy()
    d.decision = frozen[0]
    d.policy_version = policy_version
    d._explainer = explainer
    return d


def combine(forbids: list, gates: list, permits: list, errors: list, path: list[str],
            policy_version: str, explainer=None, confirm: "Callable[[Any], bool] | None" = None,
            limiter: "Callable[[list], tuple] | None" = None) -> Decision:
    """docs/language.md#combining-rules, the one combining algorithm (the engine, the reference interpreter and the
    test runner's coverage all come here): forbid wins, then unconfirmed approval gates,
    then permits, else deny.

    The evaluators classify the outcomes of the rules whose target matched: ``forbids``
    and ``gates`` are the holding forbid and require_approval rules, ``permits`` the
    holding permits as ``(rule, scopes)`` (``scopes`` the evaluated grant, or ``None``),
    each in source order; ``errors`` is the docs/language.md#evaluation-errors-fail-closed error list. A rule is anything with
    ``id``, ``reason`` (its ``because`` or ``None``), ``approvers`` and ``ttl``: the
    engine's compiled rules, the interpreter's :class:`RuleView`. ``confirm(gate)`` says
    whether the approval checker confirms a gate (docs/language.md#approvals); ``None``: nothing confirms.
    ``limiter(permits)`` (docs/language.md#limits; only for sets with limits) is called when
    permits would determine the allow: it reserves and returns ``(the permits that
    determine it, limit entries, errors)``.
    No evaluation happens here. (Plain loops: in Python 3.11 each comprehension is a
    function call, and this runs on every decision.)
    """
    if forbids:
        return combine_plain(forbids, None, errors, path, policy_version, explainer)
    if gates:
        if confirm is not None:
            gates = [g for g in gates if not confirm(g)]
        if gates:
            rules, reasons, approvers = [], [], []
            for g in gates:
                rules.append(g.id)
                if g.reason is not None:
                    reasons.append(g.reason)
                for name in g.approvers:
                    if name not in approvers:
                        approvers.append(name)
            return made(REQUIRE_APPROVAL, rules, reasons, [], approvers, errors, path,
                            policy_version, explainer)
    if not permits:
        return made(DENY, [], [], [], [], errors, path, policy_version, explainer)
    if limiter is not None:
        permits, entries, more = limiter(permits)
        if more:
            errors = errors + more
        if entries or not permits:
            return _limited(permits, entries, errors, path, policy_version, explainer)
    rules, reasons, grants = [], [], []
    for r, scopes in permits:
        rules.append(r.id)
        if r.reason is not None:
            reasons.append(r.reason)
        if scopes is not None:
            grants.append({"rule": r.id, "scopes": scopes, "ttl": r.ttl})
    return made(ALLOW, rules, reasons, grants, [], errors, path, policy_version, explainer)


def combine_plain(forbids: list | None, permits: list | None, errors: list, path: list[str],
                  policy_version: str, explainer=None) -> Decision:
    """:func:`combine` for outcomes without gates, grants or limits: ``forbids`` and
    ``permits`` are the holding rules in source order (``None`` or empty: none). Forbid
    wins, then the permits, else deny; the determining ids and their reasons in order.
    :func:`combine` comes here for its forbids, and the engine's short path
    (docs/engine.md#short-path) for plans of plain permits and forbids."""
    if forbids:
        held, verdict = forbids, DENY
    elif permits:
        held, verdict = permits, ALLOW
    else:
        return made(DENY, [], [], [], [], errors, path, policy_version, explainer)
    rules, reasons = [], []
    for r in held:
        rules.append(r.id)
        if r.reason is not None:
            reasons.append(r.reason)
    return made(verdict, rules, reasons, [], [], errors, path, policy_version, explainer)


def _limited(permits, entries, errors, path, policy_version, explainer) -> Decision:
    from .limits import refusal_reasons

    if not permits:
        return LimitedDecision(DENY, [], refusal_reasons(entries), [], [], errors, path, policy_version,
                               explainer, limits=entries)
    rules, reasons, grants = [], [], []
    for r, scopes in permits:
        rules.append(r.id)
        if r.reason is not None:
            reasons.append(r.reason)
        if scopes is not None:
            grants.append({"rule": r.id, "scopes": scopes, "ttl": r.ttl})
    return LimitedDecision(ALLOW, rules, reasons, grants, [], errors, path, policy_version, explainer,
                           limits=entries)


class RuleView:
    """What :func:`combine` reads of a rule, for evaluators that work on the AST."""

    __slots__ = ("id", "reason", "approvers", "ttl", "info", "limits")

    def __init__(self, info, constants=None):
        rule = info.rule
        if rule.effect == "permit" and rule.limits:
            from .limits import specs_of
            self.limits = specs_of(info, constants or {})
        else:
            self.limits = ()
        self.info = info
        self.id = info.id
        self.reason = rule.because
        self.approvers = tuple(rule.by.approvers) if rule.by else ()
        self.ttl = rule.grant.ttl if rule.grant is not None else None


def confirmed(approvals, request, approvers) -> bool:
    """docs/language.md#approvals: does the approval checker confirm a gate naming ``approvers``? A raising
    checker confirms nothing."""
    if approvals is None or request.approval is None:
        return False
    try:
        return approvals(request.approval, request.raw, list(approvers)) is True
    except Exception:
        return False


def attenuate(decision: Decision, chain, allows: "Callable[[int], bool]", action: str,
              policy_version: str, explainer=None) -> Decision:
    """docs/language.md#delegation-attenuation, the one attenuation loop: an allow stands only if every delegator of the
    chain, deciding as itself with the part of the chain before it, is allowed too.
    ``allows(i)`` decides for ``chain[i]`` (called in chain order, stopping at the first
    that is not allowed); the first refused delegator turns the allow into a deny."""
    if decision.decision != ALLOW:
        return decision
    for i, delegator in enumerate(chain):
        if not allows(i):
            return attenuation_denial(delegator.id, action, policy_version, decision.delegation_path,
                                      decision.errors, explainer)
    return decision


def attenuation_denial(delegator_id: str, action: str, policy_version: str, path: list[str],
                       errors: list[dict], explainer=None) -> Decision:
    """docs/language.md#delegation-attenuation: the allow needs every delegator's authority; this one lacked it."""
    reason = f"delegator {delegator_id} is not allowed to {action} this resource (attenuate_delegation)"
    return made(DENY, [], [reason], [], [], errors, path, policy_version, explainer)
