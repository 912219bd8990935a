"""The engine: owns the compiled decision tree and the bounded decision cache, and
answers requests (docs/language.md#combining-rules, docs/language.md#evaluation-errors-fail-closed, README.md#python-api).

``decide`` validates the request and merges entity data (:mod:`policylang.evaluation.request`),
finds the request's plan in the compiled tree (:mod:`policylang.evaluation.compiler`), evaluates
the applicable rules, and combines their outcomes (docs/language.md#combining-rules). The cache can never change
a decision: its key is the plan plus the typed value of every attribute path that any
rule of the plan reads, and decisions that consulted the approval checker are never
cached.
"""

from __future__ import annotations

import json
import threading
import time
from marshal import dumps as _dumps  # cache.request_key's, inline on the hit path
from typing import Any, Callable, Iterable, Mapping

from cachetools import LRUCache, TTLCache

from . import interpreter
from .compiler import CompiledSet
from .decision import ALLOW, DENY, Decision, attenuate, combine, combine_plain, confirmed, made as _made, thawed as _thawed
from ..language.policyset import PolicySet
from .strict import check_strict
from .request import Request, entity_lookup, named_actions, parse_parts
from .cache import MAX_KEY_BYTES, RequestCache, request_copy
from ..language.errors import RequestError
from .runtime import EvalError
from .limits import Limiter, idempotency_key, release_decision, set_has_limits

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
    ``strict``: refuse a request with an unknown key (``contxt``, ``principal.region``
    beside ``id``) with a RequestError and a did-you-mean (docs/requests.md#strict).
    ``limits``: the store that keeps the counters of the set's ``limit`` clauses (a
    :class:`policylang.privilege.store.Store`; docs/language.md#limits); a set with limits
    and no store fails its limited permits closed. ``clock``: seconds since the epoch
    for the limit windows (default ``time.time``).
    ``previous``: the engine this one replaces on a reload (docs/engine.md#loading): the
    rules of unchanged files reuse its compiled code; the same set shares its whole tree.
    """

    def __init__(self, policies: PolicySet, *, entities: Any = None, approvals: ApprovalChecker | None = None,
                 audit: Any = None, cache_size: int = 10_000, cache_ttl: float | None = None,
                 instrument: bool = False, limits: Any = None, clock: Callable[[], float] | None = None,
                 strict: bool = False, previous: "Engine | None" = None):
        if not isinstance(policies, PolicySet):
            raise TypeError("Engine needs a PolicySet from policylang.load() or policylang.loads()")
        if entities is not None and not (callable(entities) or isinstance(entities, Mapping)):
            raise TypeError("entities must be a mapping {kind: {id: attrs}} or a callable (kind, id) -> attrs")
        if isinstance(entities, Mapping):
            from ..language.loader import entities_shape_error
            problem = entities_shape_error(entities)
            if problem:
                raise ValueError(f"entities: {problem}")
        self.policies = policies
        if previous is not None and not isinstance(previous, Engine):
            raise TypeError("previous must be the Engine this one replaces")
        if previous is not None and previous.policies is policies and previous._instrument == instrument:
            self.tree = previous.tree  # the same set: share its compiled tree (forked workers)
        else:  # plans built now; with previous, unchanged rules reuse its generated code
            self.tree = CompiledSet(policies, instrument, previous=previous.tree if previous is not None else None)
        self.counters = Counters(self.tree.counter)
        self._instrument = instrument
        self._lookup = entity_lookup(policies.entities, entities)
        self._authority = policies.entity_authority  # which stored data requests cannot override
        self._actions = named_actions(self.tree.actions)  # the set's actions, each one Action
        self.approvals = approvals
        self.audit = audit
        self._version = policies.version
        self._attenuate = policies.options.attenuate_delegation
        if cache_size and cache_size > 0:
            self._cache = TTLCache(cache_size, cache_ttl) if cache_ttl else LRUCache(cache_size)
        else:
            self._cache = None
        #: the request cache (cache.py): exact request bytes -> decision, read without a
        #: lock; off when an entity source is a callable (its answers may change)
        self._fast = (RequestCache(cache_size, cache_ttl)
                      if self._cache is not None and not _has_callable(entities) else None)
        #: the JSON cache (decide_json): exact JSON bytes -> decision, on the same terms
        self._json = RequestCache(cache_size, cache_ttl) if self._fast is not None else None
        self._cache_ttl = cache_ttl if cache_ttl else None
        self._cache_lock = threading.Lock()
        #: the reservation step of docs/language.md#limits; None for a set without limits
        self._limiter = Limiter(limits, clock) if set_has_limits(policies) else None
        #: the short path (docs/engine.md#short-path) is taken by an engine without a limit
        #: store and not instrumented: a rule that raises there has the plan evaluated
        #: again on the full path, which would count its tests twice
        self._short = self._limiter is None and not instrument
        #: docs/requests.md#strict: refuse unknown keys instead of ignoring them
        self.strict = strict

    # ------------------------------------------------------------------ public API

    def decide(self, request: Mapping) -> Decision:
        """The decision for one request (docs/requests.md#request dict). Raises :class:`RequestError`."""
        if self.strict:
            check_strict(request)
        audit = self.audit
        if audit is None:
            return self._decide(request)
        start = time.perf_counter_ns()
        decision = self._decide(request)
        latency_us = (time.perf_counter_ns() - start) // 1000
        try:
            audit.record("decide", request=request, decision=decision, latency_us=latency_us)
        except BaseException:
            if decision.limits:  # the caller never sees this allow: give its reservation back
                release_decision(self._limiter, decision)
            raise
        return decision

    def release(self, reservation_id: str) -> bool:
        """Give back a reservation an ``allow`` made (docs/language.md#limits): the PEP
        calls this when the action it allowed did not run. True when it was released now,
        False when it is unknown or already released. Raises StoreError when the store fails."""
        limiter = self._limiter
        store = limiter.store if limiter is not None else None
        if store is None:
            # (the evaluation package imports nothing of privilege/: a plain ValueError)
            raise ValueError("this engine has no limit store: Engine(policies, limits=store)")
        return store.release_limits(reservation_id, limiter.clock())

    def decide_json(self, body: bytes | str) -> Decision:
        """The decision for one request given as JSON text (docs/requests.md#request), as a
        service receives it. With the cache on, the exact bytes are the key
        (docs/engine.md#json-requests): the same bytes again are a hit that neither parses
        nor validates. On a miss the text is parsed (NaN and Infinity refused) and decided
        as :meth:`decide` decides the parsed object; the decision is stored only when that
        succeeded, so text a miss rejects is rejected every time. Raises
        :class:`RequestError` (``field`` ``""`` when the text is not a JSON object)."""
        data = body.encode("utf-8", "surrogatepass") if body.__class__ is str else body
        cache = self._json if self.audit is None else None  # an audited decision is always recorded
        if cache is not None:
            entry = cache.data.get(data)
            if entry is not None and (entry[1] is None or entry[1] > cache.clock()):
                entry[2] = True  # CLOCK's reference flag (RequestCache.get)
                counters = self.counters
                counters.cache_hits += 1
                if self._instrument:
                    counters.decisions += 1
                frozen, request = entry[0]
                return _thawed(frozen, self._version, (self, None, request))
        request = parse_json_request(data)
        decision = self.decide(request)
        if (cache is not None and len(data) <= MAX_KEY_BYTES and request.get("approval") is None
                and not decision.errors and not decision.limits):
            cache.put(data, (_frozen(decision), request))
        return decision

    def decide_many(self, requests: Iterable[Mapping]) -> list[Decision]:
        """Decisions for many requests, in order (a bad request raises, naming its index)."""
        out = []
        decide = self.decide
        for i, request in enumerate(requests):
            try:
                out.append(decide(request))
            except RequestError as e:
                raise RequestError(f"[{i}].{e.field}" if e.field else f"[{i}]", e.reason) from None
        return out

    def decide_each(self, requests: Iterable[Mapping]) -> list[Decision | RequestError]:
        """Decisions for many requests, in order, answered per item like the HTTP batch: a
        bad request's place holds its :class:`RequestError` (``.field`` prefixed with its
        index, ``[2].principal.id``) and the others are still decided."""
        out: list[Decision | RequestError] = []
        decide = self.decide
        for i, request in enumerate(requests):
            try:
                out.append(decide(request))
            except RequestError as e:
                out.append(RequestError(f"[{i}].{e.field}" if e.field else f"[{i}]", e.reason))
        return out

    def explain_request(self, ctx, decision: Decision) -> str:
        """The readable trace for a decision this engine made (``ctx`` is what it kept)."""
        if isinstance(ctx, Request):
            req = ctx
        else:
            _engine, parts, raw = ctx if len(ctx) == 3 else (None, *ctx)
            if parts is None:  # a request-cache hit keeps the request only: validate it now
                parts = parse_parts(raw, self._lookup, self._authority)
            req = Request(*parts, raw)
        plan = self.tree.plan(req.principal.kind, req.action.name, req.resource.kind)
        entries = list(plan.plain) + [e for g in plan.groups for e in g.entries]
        candidates = [e[0].info for e in sorted(entries, key=lambda e: e[0].order)]
        return interpreter.explain(self.policies, req, decision, candidates)

    def exact_cache(self) -> tuple[int, float | None] | None:
        """``(maxsize, ttl)`` of the caches that key decisions by the exact request (the
        request and JSON caches, docs/engine.md#json-requests), or None when this engine
        has none (the cache off, a callable entity source, an audit log). A caller that
        keeps its own answers by the exact request bytes keeps them on these terms, and
        only for decisions without errors or limits and requests without an approval
        (what the engine stores): the service's answer cache, docs/server.md#answer-cache."""
        if self._json is None or self.audit is not None:
            return None
        return self._json.maxsize, self._cache_ttl

    def count_hit(self) -> None:
        """Count a decision answered from a cache kept on :meth:`exact_cache`'s terms
        outside the engine (the service's answer cache) as this engine's cache hit, as
        :meth:`cache_info` and the counters report hits."""
        counters = self.counters
        counters.cache_hits += 1
        if self._instrument:
            counters.decisions += 1

    def cache_info(self) -> dict:
        """The decision caches: ``size`` of the value-keyed cache, ``requests`` of the
        request cache (exact requests), ``maxsize`` of each, hits and misses of both."""
        cache = self._cache
        fast = self._fast
        return {"size": len(cache) if cache is not None else 0,
                "maxsize": cache.maxsize if cache is not None else 0,
                "requests": len(fast) if fast is not None else 0,
                "hits": self.counters.cache_hits, "misses": self.counters.cache_misses}

    # ------------------------------------------------------------------ internals

    # _decide and _evaluate are the two functions radon may find above complexity 25 in
    # policylang/ (docs/engine.md#performance): they are the decision's hot path, and each
    # call split out of them is paid on every decision (a Python call costs about as much
    # as the loop it would hold; `python -m benchmarks.instructions --scenario M --warmup
    # 2000` counts ~44k instructions per decision, so one extra call per rule is a few %).
    def _decide(self, request: Mapping) -> Decision:
        fast = self._fast
        fkey = None
        if fast is not None and request.__class__ is dict and request.get("approval") is None:
            # the request cache (policylang/evaluation/cache.py): exact bytes -> decision;
            # cache.request_key and RequestCache.get inline (a call costs what they do)
            try:
                fkey = _dumps(request, 2)  # format 2: see cache.py
            except Exception:  # noqa: BLE001 - unmarshallable (a subclass …), too deep, changed while read
                fkey = None
            else:
                if len(fkey) > MAX_KEY_BYTES:
                    fkey = None
            if fkey is not None:
                entry = fast.data.get(fkey)
                if entry is not None and (entry[1] is None or entry[1] > fast.clock()):
                    entry[2] = True  # CLOCK's reference flag (RequestCache.get)
                    counters = self.counters
                    counters.cache_hits += 1
                    if self._instrument:
                        counters.decisions += 1
                    return _thawed(entry[0], self._version, (self, None, request))
                # decide the key's own copy: what is stored is a function of the key alone
                request = request_copy(fkey)
        parts = parse_parts(request, self._lookup, self._authority, self._actions)
        P, A, R, C, K, CH, I, approval = parts
        if self._instrument:
            self.counters.decisions += 1
        plan = self.tree.plan(P.kind, A.name, R.kind)
        cache = self._cache
        key = None
        if cache is not None and (approval is None or not plan.has_gates):
            try:
                key = (plan, plan.key(P, A, R, C, K, CH, I))
                if CH and self._attenuate:
                    # the delegators' evaluations read the same action, resource, context,
                    # risk and intent through their own plans: key those reads too (their
                    # principals and chains are in the key already, in full)
                    subs: dict = {}
                    plan_of = self.tree.plan
                    for delegator in CH:
                        subs[plan_of(delegator.kind, A.name, R.kind)] = None
                    key = (key, tuple((sp, sp.env_key(P, A, R, C, K, CH, I)) for sp in subs))
                with self._cache_lock:  # cachetools caches are not thread-safe, reads reorder them
                    hit = cache[key]
            except TypeError:  # an unhashable value read: decide without the cache
                key = None
            except KeyError:
                self.counters.cache_misses += 1
            else:
                self.counters.cache_hits += 1
                # (a decision with errors or limits is never stored: see below)
                frozen = (*hit[:5], tuple(_path(P, CH)))
                if fkey is not None:
                    fast.put(fkey, frozen)
                return _thawed(frozen, self._version, (self, parts, request))
        decision = self._evaluate(plan, parts, request, self.approvals)
        if self._attenuate and CH and decision.decision == ALLOW:
            allowed = decision
            decision = attenuate(decision, CH, self._delegator_allows(parts, request), A.name, self._version,
                                 (self, parts, request))
            if decision is not allowed and allowed.limits:  # a delegator lacked the authority
                release_decision(self._limiter, allowed)
        if (key is not None or fkey is not None) and not decision.errors and not decision.limits:
            # decisions with errors are not cached: a message can name what made a value
            # unreadable (absent, or a string where an object was read …), which the key,
            # holding only "unreadable", does not tell apart
            frozen = _frozen(decision)
            if key is not None:
                with self._cache_lock:
                    cache[key] = (*frozen[:5], ())
            if fkey is not None:
                fast.put(fkey, frozen)
        return decision

    def _evaluate(self, plan, parts: tuple, request: Mapping, approvals, reserve: bool = True) -> Decision:
        # hot path, kept whole on purpose (see the note above _decide)
        P, A, R, C, K, CH, I, approval = parts
        if plan.simple and self._short:
            # the short path (docs/engine.md#short-path; compiler.Plan.simple: plain permits
            # and forbids, at most one index group): the holding rules are collected by
            # effect as they are found, and decision.combine_plain (what combine does for
            # these outcomes) makes the decision. A rule that raises sends the request
            # down the full path below, which evaluates every entry again (rule tests are
            # pure) and reports it.
            forbids = permits = None
            runs = plan.plain
            if plan.groups:
                group = plan.groups[0]
                if group.attr is not None:  # its reader's expression, inline
                    v = (P if group.of_principal else R).attrs.get(group.attr)
                else:
                    v = group.read(P, A, R, C, K, CH, I)
                # _group_entries inline for the common string value
                matched = group.by_str.get(v) if v.__class__ is str else _group_entries(group, v)
                if matched:
                    runs = runs + matched
            try:
                for cr, _sg, _rg, fn in runs:
                    if fn(P, A, R, C, K, CH, I):
                        if cr.effect == "forbid":
                            if forbids is None:
                                forbids = [cr]
                            else:
                                forbids.append(cr)
                        elif permits is None:
                            permits = [cr]
                        else:
                            permits.append(cr)
            except EvalError:
                pass
            else:
                if runs is not plan.plain:  # the group's entries ran after the plain ones: restore source order
                    if forbids is not None and len(forbids) > 1:
                        forbids.sort(key=_order_of)
                    if permits is not None and len(permits) > 1:
                        permits.sort(key=_order_of)
                return combine_plain(forbids, permits, [], [P.id] if not CH else _path(P, CH), self._version,
                                     (self, parts, request))
        held: list = []      # (order, compiled rule, scopes)
        errors: list = []    # (order, rule id, message)
        runs = _indexed_runs(plan, parts) if plan.groups else plan.plain
        for cr, sg, rg, fn in runs:
            if sg is not None and not _any_match(sg, P.id):
                continue
            if rg is not None and (R.id is None or not _any_match(rg, R.id)):
                continue
            try:
                if not fn(P, A, R, C, K, CH, I):
                    continue
            except EvalError as e:
                errors.append((cr.order, cr.id, self._error_text(cr, parts, request, e)))
                if cr.effect != "permit":
                    held.append((cr.order, cr, None))
                continue
            if cr.grant is None:
                held.append((cr.order, cr, None))
            else:
                try:
                    held.append((cr.order, cr, cr.grant(P, A, R, C, K, CH, I)))
                except EvalError as e:
                    errors.append((cr.order, cr.id, self._error_text(cr, parts, request, e)))
        if plan.groups:  # index groups run after the plain entries: restore source order
            if len(held) > 1:
                held.sort(key=_first)
            if len(errors) > 1:
                errors.sort(key=_first)
        err_list = [{"rule": rid, "message": msg} for _o, rid, msg in errors] if errors else []
        explainer = (self, parts, request)
        path = [P.id] if not CH else _path(P, CH)  # (_path inline for the common case)
        if not held:
            return _made(DENY, [], [], [], [], err_list, path, self._version, explainer)
        # classify the holding rules in one pass (inline: this runs on every decision, and
        # a call costs as much as the loop); decision.combine does the rest
        forbids: list = []
        gates: list = []
        permits: list = []
        for _o, cr, scopes in held:
            effect = cr.effect
            if effect == "forbid":
                forbids.append(cr)
            elif effect == "permit":
                permits.append((cr, scopes))
            else:
                gates.append(cr)
        confirm = None
        if gates and approvals is not None and approval is not None:
            req = Request(P, A, R, C, K, CH, I, approval, request)

            def confirm(cr):
                return confirmed(approvals, req, cr.approvers)
        limiter = self._limiter
        if limiter is None:
            return combine(forbids, gates, permits, err_list, path, self._version, explainer, confirm)
        return combine(forbids, gates, permits, err_list, path, self._version, explainer, confirm,
                       self._limit_step(limiter, parts, request) if reserve else None)

    @staticmethod
    def _limit_step(limiter: Limiter, parts: tuple, request: Mapping):
        """docs/language.md#limits for :func:`decision.combine`: the compiled amounts and keys."""
        P, A, R, C, K, CH, I, _approval = parts
        idem = idempotency_key(request)

        def values_of(cr):
            return cr.limit_values(P, A, R, C, K, CH, I)

        def reserve(permits):
            return limiter.reserve(permits, values_of, P.id, idem)
        return reserve

    def _error_text(self, cr, parts: tuple, request: Mapping, e: EvalError) -> str:
        """The message of a rule's evaluation error, with which expression failed and with
        which values (runtime.error_message). The error path only: the compiled code
        raises the bare message, and the reference interpreter, run again on this one
        rule, names the expression and the values, so both evaluators give one text."""
        try:
            req = Request(*parts, request)
            trace = interpreter.evaluate_rule(cr.info, interpreter.request_scope(req, self.policies.constants))
        except Exception:  # noqa: BLE001 - the bare message is still right
            return str(e)
        return trace.error if trace.error is not None else str(e)

    def _delegator_allows(self, parts: tuple, request: Mapping) -> Callable[[int], bool]:
        """docs/language.md#delegation-attenuation for :func:`decision.attenuate`: delegator i decides with the chain
        before it. One list grows as the loop goes (no slice per delegator, so the engine's
        own work is linear in the chain; the sub-decisions are dropped, nothing keeps it)."""
        P, A, R, C, K, CH, I, _approval = parts
        plan_of = self.tree.plan
        evaluate = self._evaluate
        prefix: list = []

        def allows(i: int) -> bool:
            delegator = CH[i]
            sub = (delegator, A, R, C, K, prefix, I, None)
            ok = evaluate(plan_of(delegator.kind, A.name, R.kind), sub, request, None, False).decision == ALLOW
            prefix.append(delegator)
            return ok
        return allows


def _frozen(decision: Decision) -> tuple:
    """A decision without errors or limits as the caches keep it: (decision, rules,
    reasons, grants, approvers, delegation path), tuples all the way down."""
    return (decision.decision, tuple(decision.rules), tuple(decision.reasons),
            tuple((g["rule"], tuple(g["scopes"]), g["ttl"]) for g in decision.grants),
            tuple(decision.approvers), tuple(decision.delegation_path))


def parse_json_request(data: bytes) -> dict:
    """A request's JSON text (UTF-8, -16 or -32) as a dict, or :class:`RequestError`."""
    try:
        request = json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        raise RequestError("", "the request is not valid JSON: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, NaN/Infinity
        raise RequestError("", f"the request is not valid JSON: {e}") from None
    if request.__class__ is not dict:
        raise RequestError("", f"a request is a JSON object, not {_json_kind(request)}")
    return request


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _json_kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def _has_callable(entities: Any) -> bool:
    """Is the engine's entity source a callable (whose answers may change between calls)?"""
    return entities is not None and callable(entities) and not isinstance(entities, Mapping)


def _indexed_runs(plan, parts: tuple) -> list:
    """The plan's plain entries, then those of its index groups that the request's value
    selects (the groups' first test is then already known to hold; docs/language.md#combining-rules order is
    restored after evaluation)."""
    P, A, R, C, K, CH, I, _approval = parts
    runs = list(plan.plain)
    for group in plan.groups:
        matched = _group_entries(group, group.read(P, A, R, C, K, CH, I))
        if matched:
            runs.extend(matched)
    return runs


def _group_entries(group, v):
    """The entries of index ``group`` that the request's value ``v`` selects (typed:
    ``true``, ``1`` and ``"1"`` never share a slot), or None. An absent value selects every
    entry, run in full: each one's first test then raises and reports its error."""
    cls = v.__class__
    if cls is str:
        return group.by_str.get(v)
    if v is None:
        return group.entries
    if cls is bool:
        return group.by_bool.get(v)
    if cls is int or cls is float:
        return group.by_num.get(v)
    return None


def _any_match(globs, value: str) -> bool:
    for g in globs:
        if g.match(value):
            return True
    return False


def _order_of(cr) -> int:
    return cr.order


def _path(P, CH) -> list[str]:
    if not CH:
        return [P.id]
    return [e.id for e in CH] + [P.id]


def _first(t):
    return t[0]


