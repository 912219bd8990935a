"""Limits on permits (docs/language.md#limits): the reservation step that both evaluators
share, after :func:`decision.combine` has found that permits would determine an ``allow``.

A rule's ``limit`` clauses become :class:`LimitSpec` objects (bound folded when the set
loads). When only limited permits hold, they are tried in source order: the first whose
limits can all be reserved in the store, in one atomic step, determines the ``allow``;
a permit whose reservation would exceed a limit, whose amount or key raises, or whose
store is missing or unreachable does not hold (fail closed). A permit without a limit
that holds determines the ``allow`` on its own, and nothing is reserved.

The store keeps one counter per (rule, limit, window start, key) and one record per
reservation: :meth:`Store.reserve_limits` checks and consumes every counter of a
permit in one step (an SQLite ``BEGIN IMMEDIATE`` transaction, a Redis Lua script), and
a reservation id derived from the request's ``idempotency_key`` makes a retry consume
once. :meth:`Store.release_limits` gives a reservation back.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from ..language import nodes
from ..language.errors import RequestError
from .runtime import EvalError, type_name

#: the request field naming a retry (docs/requests.md, docs/language.md#limits)
IDEMPOTENCY_FIELD = "idempotency_key"
MAX_IDEMPOTENCY_KEY = 200

REFUSED = "refused"
RESERVED = "reserved"
REPLAYED = "replayed"
ERROR = "error"
NOT_CONSUMED = "not_consumed"


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One ``limit`` clause of one rule, ready to evaluate."""

    rule: str
    index: int
    text: str
    measure: str
    bound: float | int
    window: int | None
    amount: nodes.Expr | None
    key: nodes.Expr | None


def specs_of(info, constants: Mapping[str, Any]) -> tuple[LimitSpec, ...]:
    """The limits of a permit rule (``()`` for other rules and permits without one)."""
    from ..language.checker.limits import bound_value
    from ..language.formatter import limit_text

    rule = info.rule
    if rule.effect != "permit":
        return ()
    return tuple(LimitSpec(info.id, i, limit_text(c), c.measure, bound_value(c, constants), c.window,
                           c.amount, c.key)
                 for i, c in enumerate(rule.limits))


def set_has_limits(policy_set) -> bool:
    return any(info.rule.effect == "permit" and info.rule.limits for info in policy_set.rules)


def amount_value(v: Any) -> float | int:
    """A limit amount: a finite number of at least 0 (a negative one would refill the budget)."""
    if v.__class__ is bool or v.__class__ not in (int, float):
        raise EvalError(f"a limit amount must be a number, got {type_name(v)}")
    if not math.isfinite(v) or v < 0:
        raise EvalError(f"a limit amount must be a finite number of at least 0, got {v!r}")
    return v


def key_value(v: Any) -> str:
    """A limit key as the counter's name part: typed, so 1 and "1" never share a counter."""
    cls = v.__class__
    if cls is str:
        return "s:" + v
    if cls is bool:
        return "b:" + ("true" if v else "false")
    if cls is int or cls is float:
        if not math.isfinite(v):
            raise EvalError("a limit key must be a finite number")
        return "n:" + (repr(int(v)) if float(v).is_integer() else repr(float(v)))
    raise EvalError(f"a limit key must be a string, number or boolean, got {type_name(v)}")


def idempotency_key(request: Mapping) -> str | None:
    """The request's ``idempotency_key``: absent, or a string of 1 to 200 characters."""
    v = request.get(IDEMPOTENCY_FIELD) if isinstance(request, Mapping) else None
    if v is None:
        return None
    if v.__class__ is not str or not 0 < len(v) <= MAX_IDEMPOTENCY_KEY:
        raise RequestError(IDEMPOTENCY_FIELD, f"must be a string of 1 to {MAX_IDEMPOTENCY_KEY} characters")
    return v


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _num(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x


def reservation_id(rule_id: str, principal_id: str, idem: str | None) -> str:
    """Derived from the idempotency key (so a retry finds its first reservation), else random."""
    if idem is None:
        return secrets.token_hex(16)
    h = hashlib.sha256(json.dumps([rule_id, principal_id, idem]).encode("utf-8")).hexdigest()
    return h[:32]


def counter_key(spec: LimitSpec, window_start: int | None, key: str) -> str:
    digest = hashlib.sha256(json.dumps([spec.rule, spec.index, window_start, key]).encode("utf-8")).hexdigest()
    return digest[:40]


class Limiter:
    """The reservation step: ``Limiter(store, clock)``; the engine and the reference
    interpreter call :meth:`reserve` with the holding permits."""

    def __init__(self, store: Any, clock: Callable[[], float] | None = None):
        self.store = store
        self.clock = clock or time.time

    def reserve(self, permits: list, values_of: Callable, principal_id: str, idem: str | None):
        """``permits``: the holding permits ``(rule, scopes)``, each rule with ``limits``
        (its :class:`LimitSpec` tuple). ``values_of(rule)``: ``[(amount, key), …]`` per
        limit, raising :class:`EvalError`. Returns ``(permits that determine the allow,
        limit entries for the decision, errors)``."""
        free = [p for p in permits if not p[0].limits]
        if free:
            return free, [], []
        entries: list[dict] = []
        errors: list[dict] = []
        for r, scopes in permits:
            try:
                values = [(amount_value(a), key_value(k), k) for a, k in values_of(r)]
            except EvalError as e:
                errors.append({"rule": r.id, "message": str(e)})
                entries.extend(_entry(s, None, None, ERROR, None, None) for s in r.limits)
                continue
            now = self.clock()
            plan = []
            for spec, (amount, key, raw) in zip(r.limits, values):
                start = end = None
                if spec.window:
                    start = int(now // spec.window) * spec.window
                    end = start + spec.window
                plan.append((spec, amount, raw, counter_key(spec, start, key), end))
            store = self.store
            if store is None:
                errors.append({"rule": r.id, "message": "no limit store is configured, so this limited "
                                                        "permit does not hold (fail closed)"})
                entries.extend(_entry(s, raw, None, ERROR, None, end) for s, _a, raw, _c, end in plan)
                continue
            rid = reservation_id(r.id, principal_id, idem)
            try:
                status, refused, used = store.reserve_limits(
                    rid, [(c, a, s.bound, end) for s, a, _raw, c, end in plan], now)
            except Exception as e:  # noqa: BLE001 - an unreachable store fails closed, never raises
                errors.append({"rule": r.id, "message": f"limit store error, so this limited permit does not "
                                                        f"hold (fail closed): {e}"})
                entries.extend(_entry(s, raw, None, ERROR, None, end) for s, _a, raw, _c, end in plan)
                continue
            if status in (RESERVED, REPLAYED):
                entries.extend(_entry(s, raw, u, status, rid, end) for (s, _a, raw, _c, end), u in zip(plan, used))
                return [(r, scopes)], entries, errors
            for i, ((s, a, raw, _c, end), u) in enumerate(zip(plan, used)):
                entries.append(_entry(s, raw, u, REFUSED if i == refused else NOT_CONSUMED, None, end, a))
        return [], entries, errors


def _entry(spec: LimitSpec, key: Any, used, outcome: str, rid: str | None, end: float | None,
           needed=None) -> dict:
    e = {"rule": spec.rule, "limit": spec.text, "key": key, "max": spec.bound,
         "used": None if used is None else _num(used),
         "left": None if used is None else _num(max(0, spec.bound - used)),
         "window_end": _iso(end), "outcome": outcome, "reservation": rid}
    if needed is not None and outcome == REFUSED:
        e["needed"] = _num(needed)
    return e


def refusal_reasons(entries: list[dict]) -> list[str]:
    out = []
    for e in entries:
        if e["outcome"] == REFUSED:
            out.append(f"limit reached ({e['rule']}): {e['limit']}: {e['used']} used, {e['left']} left, "
                       f"this request needs {e.get('needed')}")
    return out


def reservation_of(decision) -> str | None:
    """The reservation an ``allow`` holds (to release it), or None."""
    for e in getattr(decision, "limits", ()) or ():
        if e.get("reservation") and e.get("outcome") in (RESERVED, REPLAYED):
            return e["reservation"]
    return None


def release_decision(limiter: Limiter, decision) -> None:
    """Give back what an ``allow`` reserved when it does not stand after all (attenuation
    turned it into a deny, the audit write failed). A reservation that was replayed is
    the first attempt's: it is kept."""
    for e in getattr(decision, "limits", ()) or ():
        if e.get("outcome") == RESERVED and e.get("reservation") and limiter.store is not None:
            try:
                limiter.store.release_limits(e["reservation"], limiter.clock())
            except Exception:  # noqa: BLE001 - best effort; the decision is a deny either way
                pass
            return
