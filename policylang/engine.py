"""The engine: owns the compiled decision tree and the bounded decision cache, and
answers requests (SPEC §6, §7, §9).

``decide`` validates the request and merges entity data (:mod:`policylang.requests`),
finds the request's plan in the compiled tree (:mod:`policylang.compiler`), evaluates
the applicable rules, and combines their outcomes (SPEC §6). The cache can never change
a decision: its key is the plan plus the typed value of every attribute path that any
rule of the plan reads, and decisions that consulted the approval checker are never
cached.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterable, Mapping

from cachetools import LRUCache, TTLCache

from . import interpreter
from .compiler import MISSING, CompiledSet
from .decision import ALLOW, DENY, REQUIRE_APPROVAL, Decision, attenuation_denial, confirmed
from .policyset import PolicySet
from .requests import Request, entity_lookup, parse_request
from .runtime import EvalError

ApprovalChecker = Callable[[str, Mapping, list], bool]


class Counters:
    """Work counters (with ``Engine(instrument=True)``): a regression guard that does not
    depend on timing. ``conditions`` counts evaluated tests (conjuncts of a ``when``)."""

    def __init__(self, cell: list):
        self._cell = cell
        self.decisions = 0
        self.cache_hits = 0
        self.cache_misses = 0

    @property
    def conditions(self) -> int:
        return self._cell[0]

    def reset(self) -> None:
        self._cell[0] = 0
        self.decisions = self.cache_hits = self.cache_misses = 0


class Engine:
    """Decides requests against a loaded :class:`PolicySet`.

    ``entities``: more entity data, a mapping ``{kind: {id: attrs}}`` or a callable
    ``(kind_or_type, id) -> attrs | None``; it wins over the set's entity files.
    ``approvals``: the approval checker ``(approval_id, request, approvers) -> bool``.
    ``audit``: an object with ``record(event, *, request, decision, latency_us)`` (such
    as :class:`policylang.audit.AuditLog`); a failing write makes ``decide`` raise.
    ``cache_size``/``cache_ttl``: the decision cache (0 turns it off; ttl in seconds).
    ``instrument``: count evaluated conditions in ``engine.counters``.
    """

    def __init__(self, policies: PolicySet, *, entities: Any = None, approvals: ApprovalChecker | None = None,
                 audit: Any = None, cache_size: int = 10_000, cache_ttl: float | None = None,
                 instrument: bool = False):
        if not isinstance(policies, PolicySet):
            raise TypeError("Engine needs a PolicySet from policylang.load() or policylang.loads()")
        if entities is not None and not (callable(entities) or isinstance(entities, Mapping)):
            raise TypeError("entities must be a mapping {kind: {id: attrs}} or a callable (kind, id) -> attrs")
        if isinstance(entities, Mapping):
            from .loader import entities_shape_error
            problem = entities_shape_error(entities)
            if problem:
                raise ValueError(f"entities: {problem}")
        self.policies = policies
        self.tree = CompiledSet(policies, instrument)
        self.counters = Counters(self.tree.counter)
        self._instrument = instrument
        self._lookup = entity_lookup(policies.entities, entities)
        self.approvals = approvals
        self.audit = audit
        self._version = policies.version
        self._attenuate = policies.options.attenuate_delegation
        if cache_size and cache_size > 0:
            self._cache = TTLCache(cache_size, cache_ttl) if cache_ttl else LRUCache(cache_size)
        else:
            self._cache = None
        self._cache_lock = threading.Lock()

    # ------------------------------------------------------------------ public API

    def decide(self, request: Mapping) -> Decision:
        """The decision for one request (SPEC §2 dict). Raises :class:`RequestError`."""
        if self.audit is None:
            return self._decide(request)
        start = time.perf_counter_ns()
        decision = self._decide(request)
        latency_us = (time.perf_counter_ns() - start) // 1000
        self.audit.record("decide", request=request, decision=decision, latency_us=latency_us)
        return decision

    def decide_many(self, requests: Iterable[Mapping]) -> list[Decision]:
        """Decisions for many requests, in order (a bad request raises, naming its index)."""
        out = []
        decide = self.decide
        for i, request in enumerate(requests):
            try:
                out.append(decide(request))
            except ValueError as e:
                from .errors import RequestError
                if isinstance(e, RequestError):
                    field = f"[{i}].{e.field}" if e.field else f"[{i}]"
                    raise RequestError(field, str(e).split(": ", 1)[-1]) from None
                raise
        return out

    def explain_request(self, req: Request, decision: Decision) -> str:
        return interpreter.explain(self.policies, req, decision)

    def cache_info(self) -> dict:
        cache = self._cache
        return {"size": len(cache) if cache is not None else 0,
                "maxsize": cache.maxsize if cache is not None else 0,
                "hits": self.counters.cache_hits, "misses": self.counters.cache_misses}

    # ------------------------------------------------------------------ internals

    def _decide(self, request: Mapping) -> Decision:
        req = parse_request(request, self._lookup)
        if self._instrument:
            self.counters.decisions += 1
        P, A, R = req.principal, req.action, req.resource
        plan = self.tree.plan(P.kind, A.name, R.kind)
        cache = self._cache
        key = None
        if cache is not None and not (plan.has_gates and req.approval is not None):
            try:
                key = (plan, plan.key(P, A, R, req.context, req.risk, req.delegation, req.intent))
                hit = cache.get(key)
            except TypeError:  # an unhashable value: decide without the cache
                key = hit = None
            if hit is not None:
                self.counters.cache_hits += 1
                d, rules, reasons, grants, approvers, errors = hit
                return Decision(d, list(rules), list(reasons), [dict(g) for g in grants], list(approvers),
                                [dict(e) for e in errors], req.delegation_path(), self._version, (self, req))
            self.counters.cache_misses += 1
        decision = self._evaluate(plan, req, self.approvals)
        if decision.decision == ALLOW and self._attenuate and req.chain:
            for i, delegator in enumerate(req.chain):
                sub_req = req.as_delegator(i)
                sub_plan = self.tree.plan(delegator.kind, A.name, R.kind)
                if self._evaluate(sub_plan, sub_req, None).decision != ALLOW:
                    decision = attenuation_denial(delegator.id, A.name, self._version, decision.delegation_path,
                                                  decision.errors, (self, req))
                    break
        if key is not None:
            with self._cache_lock:
                cache[key] = (decision.decision, tuple(decision.rules), tuple(decision.reasons),
                              tuple(dict(g) for g in decision.grants), tuple(decision.approvers),
                              tuple(dict(e) for e in decision.errors))
        return decision

    def _evaluate(self, plan, req: Request, approvals) -> Decision:
        P, A, R, C, K, D, I = (req.principal, req.action, req.resource, req.context, req.risk,
                               req.delegation, req.intent)
        held: list = []      # (order, compiled rule, scopes)
        errors: list = []    # (order, rule id, message)
        for entry in plan.plain:
            self._run(entry, False, P, A, R, C, K, D, I, held, errors)
        for group in plan.groups:
            v = group.read(P, A, R, C, K, D, I)
            if v is MISSING:
                for entry in group.entries:
                    self._run(entry, False, P, A, R, C, K, D, I, held, errors)
                continue
            cls = v.__class__
            if cls is str:
                matched = group.by_str.get(v)
            elif cls is bool:
                matched = group.by_bool.get(v)
            elif cls is int or cls is float:
                matched = group.by_num.get(v)
            else:
                matched = None
            if matched:
                for entry in matched:
                    self._run(entry, True, P, A, R, C, K, D, I, held, errors)
        if len(held) > 1:
            held.sort(key=_first)
        if len(errors) > 1:
            errors.sort(key=_first)
        err_list = [{"rule": rid, "message": msg} for _o, rid, msg in errors]
        path = req.delegation_path()
        explainer = (self, req)
        forbids = [cr for _o, cr, _s in held if cr.effect == "forbid"]
        if forbids:
            return Decision(DENY, [cr.info.id for cr in forbids], _reasons(forbids), [], [], err_list, path,
                            self._version, explainer)
        gates = [cr for _o, cr, _s in held if cr.effect == "require_approval"]
        if gates:
            open_gates = [cr for cr in gates if not confirmed(approvals, req, cr.info)]
            if open_gates:
                approvers: list[str] = []
                for cr in open_gates:
                    by = cr.info.rule.by
                    for name in (by.approvers if by else ()):
                        if name not in approvers:
                            approvers.append(name)
                return Decision(REQUIRE_APPROVAL, [cr.info.id for cr in open_gates], _reasons(open_gates), [],
                                approvers, err_list, path, self._version, explainer)
        permits = [(cr, s) for _o, cr, s in held if cr.effect == "permit"]
        if permits:
            grants = [{"rule": cr.info.id, "scopes": s, "ttl": cr.ttl} for cr, s in permits if cr.grant is not None]
            infos = [cr for cr, _s in permits]
            return Decision(ALLOW, [cr.info.id for cr in infos], _reasons(infos), grants, [], err_list, path,
                            self._version, explainer)
        return Decision(DENY, [], [], [], [], err_list, path, self._version, explainer)

    @staticmethod
    def _run(entry, indexed: bool, P, A, R, C, K, D, I, held: list, errors: list) -> None:
        cr, sg, rg = entry
        if sg is not None and not any(g.match(P.id) for g in sg):
            return
        if rg is not None and (R.id is None or not any(g.match(R.id) for g in rg)):
            return
        try:
            ok = (cr.rest if indexed else cr.check)(P, A, R, C, K, D, I)
        except EvalError as e:
            errors.append((cr.order, cr.info.id, str(e)))
            if cr.effect != "permit":
                held.append((cr.order, cr, None))
            return
        if not ok:
            return
        scopes = None
        if cr.grant is not None:
            try:
                scopes = cr.grant(P, A, R, C, K, D, I)
            except EvalError as e:
                errors.append((cr.order, cr.info.id, str(e)))
                return
        held.append((cr.order, cr, scopes))


def _first(t):
    return t[0]


def _reasons(crs) -> list[str]:
    return [cr.info.rule.because for cr in crs if cr.info.rule.because is not None]
