"""The answer to one request (SPEC §3)."""

from __future__ import annotations

from typing import Any, Callable

ALLOW = "allow"
DENY = "deny"
REQUIRE_APPROVAL = "require_approval"


class Decision:
    """What :meth:`Engine.decide` returns. ``to_dict()`` is exactly the JSON of SPEC §3.

    ``explain()`` renders the readable trace of ``policylang eval --explain``; it is
    computed on demand by the reference interpreter (so it costs nothing until asked).
    """

    __slots__ = ("decision", "rules", "reasons", "grants", "approvers", "errors",
                 "delegation_path", "policy_version", "_explainer")

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


def combine(outcomes, request, policy_version: str, approvals, explainer=None) -> Decision:
    """SPEC §6: forbid wins, then unconfirmed approval gates, then permits, else deny.

    ``outcomes`` is a list, in source order, of ``(rule_info, held, error, scopes)`` for
    every rule whose target matched (``scopes`` is the evaluated grant of a holding
    permit, or ``None``). Shared by the engine and the reference interpreter: it is the
    combining algorithm only, with no evaluation in it.
    """
    errors = [{"rule": info.id, "message": err} for info, _held, err, _s in outcomes if err is not None]
    forbids = [info for info, held, _e, _s in outcomes if held and info.rule.effect == "forbid"]
    path = request.delegation_path()
    if forbids:
        return Decision(DENY, [r.id for r in forbids], _reasons(forbids), [], [], errors, path,
                        policy_version, explainer)
    gates = [info for info, held, _e, _s in outcomes if held and info.rule.effect == "require_approval"]
    if gates:
        open_gates = [g for g in gates if not confirmed(approvals, request, g)]
        if open_gates:
            approvers: list[str] = []
            for g in open_gates:
                by = g.rule.by
                for name in (by.approvers if by else ()):
                    if name not in approvers:
                        approvers.append(name)
            return Decision(REQUIRE_APPROVAL, [g.id for g in open_gates], _reasons(open_gates), [],
                            approvers, errors, path, policy_version, explainer)
    permits = [(info, scopes) for info, held, _e, scopes in outcomes if held and info.rule.effect == "permit"]
    if permits:
        grants = []
        for info, scopes in permits:
            grant = info.rule.grant
            if grant is not None:
                grants.append({"rule": info.id, "scopes": scopes, "ttl": grant.ttl})
        infos = [p[0] for p in permits]
        return Decision(ALLOW, [r.id for r in infos], _reasons(infos), grants, [], errors, path,
                        policy_version, explainer)
    return Decision(DENY, [], [], [], [], errors, path, policy_version, explainer)


def _reasons(infos) -> list[str]:
    return [r.rule.because for r in infos if r.rule.because is not None]


def confirmed(approvals, request, gate) -> bool:
    """SPEC §6.3: does the approval checker confirm this gate? A raising checker confirms nothing."""
    if approvals is None or request.approval is None:
        return False
    by = gate.rule.by
    try:
        return approvals(request.approval, request.raw, list(by.approvers) if by else []) is True
    except Exception:
        return False


def attenuation_denial(delegator_id: str, action: str, policy_version: str, path: list[str],
                       errors: list[dict], explainer=None) -> Decision:
    """SPEC §6.4: the allow needs every delegator's authority; this one lacked it."""
    reason = f"delegator {delegator_id} is not allowed to {action} this resource (attenuate_delegation)"
    return Decision(DENY, [], [reason], [], [], errors, path, policy_version, explainer)
