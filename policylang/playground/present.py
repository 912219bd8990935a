"""The presented decision: what the playground page draws for one decision
(docs/playground.md#decision-json).

:func:`present` turns a :class:`~policylang.evaluation.decision.Decision` and the request
it answered into plain JSON: the decision's own fields, the delegation path as hops
(human -> orchestrator -> sub-agent), each marked allowed or denied by its own evaluation
under ``attenuate_delegation``, and the explain trace as one row per rule considered.
:func:`policylang.playground.audit_view.present_record` does the same for an audit
record, a decision known only by its fields (and read from an untrusted file).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ALLOW = "allow"


def _condition_rows(t, scope, sources) -> tuple[str, list[dict]]:
    """(why, conditions) of one rule trace: the readable reason it held or not."""
    from ..evaluation import interpreter

    rows: list[dict] = []
    why = ""
    for c in t.conditions:
        text = interpreter._render(c.expr, sources)
        row = {"kind": c.kind, "text": text, "line": c.expr.span.line, "column": c.expr.span.column}
        if c.error is not None:
            row["result"] = "error"
            row["error"] = c.error + (f" (at {c.error_detail})" if c.error_detail else "")
            why = f"{c.kind} {text}: error: {row['error']}"
        else:
            row["result"] = bool(c.result) if isinstance(c.result, bool) else None
            if c.detail is not None:
                why = f"{c.kind} {text} is {interpreter._tf(c.result)}: {interpreter.why(c.expr, scope, sources)}"
        rows.append(row)
    if t.error is not None:
        closed = "treated as holding" if t.info.rule.effect != "permit" else "treated as not holding"
        why = (why or f"error: {t.error}") + f" ({closed}: fails closed)"
    elif t.held and not why:
        why = "every condition held" if rows else "its target matched (no conditions)"
        if t.scopes is not None:
            why += "; grants " + " ".join(t.scopes)
    return why, rows


def trace_rows(policy_set, req) -> list[dict]:
    """One row per rule whose target matched the request, in source order."""
    from ..evaluation import interpreter

    sources = policy_set.sources
    scope = interpreter.request_scope(req, policy_set.constants)
    out = []
    for t in interpreter.traces(policy_set, req, trace=True):
        info = t.info
        why, conditions = _condition_rows(t, scope, sources)
        out.append({
            "rule": info.id,
            "effect": info.rule.effect,
            "held": bool(t.held),
            "error": t.error,
            "why": why,
            "file": info.path,
            "line": info.rule.span.line,
            "column": info.rule.span.column,
            "conditions": conditions,
        })
    return out


def _entity_label(entity) -> str:
    kind = getattr(entity, "kind", None)
    return f"{kind} {entity.id}" if kind else str(entity.id)


def path_hops(policy_set, req, decision) -> list[dict]:
    """The delegation path as hops: the root (the first delegator, usually a human), the
    delegators after it, then the subject (the request's principal). Under
    ``attenuate_delegation`` each delegator is marked by its own evaluation (as itself,
    with the chain before it, without the request's approval: docs/language.md#delegation-attenuation);
    the subject by the decision. Without attenuation a delegator's mark is ``None``."""
    from ..evaluation import interpreter

    chain = list(req.chain)
    attenuating = bool(policy_set.options.attenuate_delegation and chain)
    hops: list[dict] = []
    refused = False
    for i, entity in enumerate(chain):
        hop = {"id": entity.id, "kind": getattr(entity, "kind", None), "label": _entity_label(entity),
               "role": "root" if i == 0 else "delegator", "allowed": None, "note": ""}
        if attenuating:
            d = interpreter.decide_request(policy_set, req.as_delegator(i), None, attenuate=False)
            hop["allowed"] = d.decision == ALLOW
            by = f" by {', '.join(d.rules)}" if d.rules else " (no rule permits it)" if d.decision != ALLOW else ""
            hop["note"] = f"as itself: {d.decision}{by}"
            if d.decision != ALLOW and not refused:
                refused = True
                hop["note"] += "; the first delegator not allowed: the allow becomes a deny"
        else:
            hop["note"] = "not evaluated (attenuate_delegation is off)"
        hops.append(hop)
    p = req.principal
    allowed = decision.decision == ALLOW
    note = f"{decision.decision}"
    if decision.rules:
        note += f" by {', '.join(decision.rules)}"
    if refused:
        own = interpreter.decide_request(policy_set, req, None, attenuate=False)
        note = f"its own rules: {own.decision}; attenuated to {decision.decision}"
    hops.append({"id": p.id, "kind": getattr(p, "kind", None), "label": _entity_label(p), "role": "subject",
                 "allowed": allowed, "note": note})
    return hops


def _base(fields: Mapping[str, Any]) -> dict:
    decision = fields.get("decision")
    return {
        "decision": decision,
        "allowed": decision == ALLOW,
        "reasons": list(fields.get("reasons") or []),
        "determining": list(fields.get("rules") or []),
        "errors": [dict(e) for e in fields.get("errors") or []],
        "grants": [dict(g) for g in fields.get("grants") or []],
        "approvers": list(fields.get("approvers") or []),
        "policy_version": fields.get("policy_version"),
        **({"limits": [dict(e) for e in fields["limits"]]} if fields.get("limits") else {}),
    }


def present(policy_set, request: Mapping, decision, *, entities: Any = None) -> dict:
    """The presented decision (docs/playground.md#decision-json) of ``decision``, which an
    engine over ``policy_set`` gave for ``request``. Raises ``RequestError`` only for a
    request the engine would have refused anyway."""
    from ..evaluation.request import entity_lookup, parse_request

    req = parse_request(request, entity_lookup(policy_set.entities, entities), policy_set.entity_authority)
    out = _base(decision.to_dict())
    out["path"] = path_hops(policy_set, req, decision)
    out["trace"] = trace_rows(policy_set, req)
    return out


def summary(decision) -> dict:
    """What the 'what changes' view compares: the decision and its determining rules."""
    d = decision.to_dict() if hasattr(decision, "to_dict") else dict(decision)
    return {"decision": d.get("decision"), "rules": list(d.get("rules") or []), "reasons": list(d.get("reasons") or [])}
