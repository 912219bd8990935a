"""Human approvals for gated actions (SPEC §6.3, §11).

A ``require approval`` decision opens a ticket; a person approves (or denies) it; the
agent retries with ``"approval": ticket.id`` and the engine asks
:meth:`Approvals.checker` whether each gate that holds is confirmed::

    approvals = Approvals(store, entities=entity_data)
    engine = policylang.Engine(policies, approvals=approvals.checker)
    d = engine.decide(request)                      # require_approval
    ticket = approvals.open(d, request, ttl=3600)
    approvals.approve(ticket.id, approver="user:bob")
    engine.decide({**request, "approval": ticket.id})   # the gate is confirmed

Rules (SPEC §11):

* an approver is looked up as kind ``human`` in the entity data, and its ``groups``
  attribute must include one of the gate's ``by`` names;
* nobody approves their own request: the requesting principal and every identity in
  the request's delegation chain are refused;
* a ticket is bound to the principal id, action name, resource type and id, and task id
  it was opened for; it confirms nothing for any other request;
* it expires ``ttl`` seconds after opening and can be reused until then;
* a deny is final (also after an approval);
* when several gates hold, each needs an approver from its own ``by`` list: the checker
  is asked once per gate with that gate's list, and the ticket confirms a gate only if
  one of its approvers is (still) in one of that gate's groups;
* the checker confirms nothing when the store cannot be reached, or on any error.

Who may write the store may approve: guard it.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from .errors import RequestError
from .requests import task_binding
from .store import Store, StoreError, open_store

__all__ = ["Approvals", "Approval", "ApprovalError", "StoreError"]

PENDING, APPROVED, DENIED, EXPIRED = "pending", "approved", "denied", "expired"


class ApprovalError(Exception):
    """An approval operation was refused. ``code`` says why: ``not_found``,
    ``expired``, ``denied`` (the ticket was denied: final), ``forbidden`` (this approver
    may not act on it) or ``invalid`` (bad input, or a decision that is not
    ``require_approval``)."""

    def __init__(self, message: str, code: str = "invalid"):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Approval:
    """A ticket. ``status`` is computed at read time (``expired`` once past
    ``expires_at`` unless it was denied)."""

    id: str
    status: str
    principal: str
    action: str
    resource_type: str
    resource_id: Optional[str]
    task: Optional[str]
    delegation: tuple[str, ...]
    rules: tuple[str, ...]
    reasons: tuple[str, ...]
    approvers: tuple[str, ...]
    created_at: float
    expires_at: float
    approvals: tuple[dict, ...] = ()
    denied_by: Optional[str] = None
    denied_at: Optional[float] = None
    purpose: Optional[str] = None
    policy_version: Optional[str] = None
    data: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_data(cls, data: dict, now: float) -> "Approval":
        status = data.get("status", PENDING)
        if status != DENIED and now >= data["expires_at"]:
            status = EXPIRED
        return cls(
            id=data["id"], status=status, principal=data["principal"], action=data["action"],
            resource_type=data["resource_type"], resource_id=data.get("resource_id"),
            task=data.get("task"), delegation=tuple(data.get("delegation") or ()),
            rules=tuple(data.get("rules") or ()), reasons=tuple(data.get("reasons") or ()),
            approvers=tuple(data.get("approvers") or ()), created_at=data["created_at"],
            expires_at=data["expires_at"], approvals=tuple(data.get("approvals") or ()),
            denied_by=data.get("denied_by"), denied_at=data.get("denied_at"),
            purpose=data.get("purpose"), policy_version=data.get("policy_version"), data=data)

    def to_dict(self) -> dict:
        return {
            "id": self.id, "status": self.status, "principal": self.principal, "action": self.action,
            "resource": {"type": self.resource_type, "id": self.resource_id}, "task": self.task,
            "delegation": list(self.delegation), "rules": list(self.rules), "reasons": list(self.reasons),
            "approvers": list(self.approvers), "created_at": self.created_at, "expires_at": self.expires_at,
            "approvals": [dict(a) for a in self.approvals], "denied_by": self.denied_by,
            "denied_at": self.denied_at, "purpose": self.purpose, "policy_version": self.policy_version,
        }


def _binding(request: Any) -> dict:
    """The fields a ticket is bound to, read from a request (SPEC §2); ApprovalError
    ("invalid") when the request is malformed."""
    try:
        return task_binding(request, strict=False)
    except RequestError as e:
        raise ApprovalError(f"malformed request: {e}", "invalid") from None


def _decision_dict(decision: Any) -> dict:
    if hasattr(decision, "to_dict"):
        return dict(decision.to_dict())
    if isinstance(decision, Mapping):
        return dict(decision)
    return {f: getattr(decision, f) for f in ("decision", "rules", "reasons", "approvers",
                                              "delegation_path", "policy_version")
            if hasattr(decision, f)}


class Approvals:
    """Approval tickets kept in a store.

    ``entities``: the entity data approvers are looked up in: a mapping
    ``{kind: {id: attrs}}`` (the shape of an ``*.entities.json`` file), a callable
    ``(kind, id) -> attrs | None``, or a loaded policy set (its entity files).
    ``audit``: optional :class:`~policylang.audit.AuditLog`; ``approval_open``,
    ``approve`` and ``deny`` events are recorded.
    """

    def __init__(self, store: Store | str, entities: Any = None, *, audit: Any = None,
                 clock: Callable[[], float] = time.time):
        self.store = open_store(store) if isinstance(store, str) else store
        if entities is not None and not (isinstance(entities, Mapping) or callable(entities)
                                         or isinstance(getattr(entities, "entities", None), Mapping)):
            raise TypeError("entities must be a mapping {kind: {id: attrs}}, a callable "
                            "(kind, id) -> attrs, or a policy set")
        self.entities = entities
        self.audit = audit
        self._clock = clock

    # -- entity data -----------------------------------------------------------------------

    def _lookup(self, kind: str, ident: str) -> Optional[Mapping]:
        src = self.entities
        if src is None:
            return None
        if not isinstance(src, Mapping) and not callable(src):
            src = src.entities
        if isinstance(src, Mapping):
            found = (src.get(kind) or {})
            attrs = found.get(ident) if isinstance(found, Mapping) else None
        else:
            attrs = src(kind, ident)
        return attrs if isinstance(attrs, Mapping) else None

    def groups_of(self, approver: str) -> Optional[set[str]]:
        """The ``groups`` of a known human, or None when ``approver`` is not one."""
        attrs = self._lookup("human", approver)
        if attrs is None:
            return None
        groups = attrs.get("groups")
        if isinstance(groups, str):
            return {groups}
        if isinstance(groups, (list, tuple, set, frozenset)):
            return {g for g in groups if isinstance(g, str)}
        return set()

    def _eligible(self, data: dict, approver: Any) -> list[str]:
        """The ticket's approver groups ``approver`` belongs to; ApprovalError
        ("forbidden") when none, or when they are the requester or a delegator."""
        if not isinstance(approver, str) or not approver:
            raise ApprovalError("approver must be a non-empty id", "invalid")
        if approver == data["principal"] or approver in (data.get("delegation") or ()):
            raise ApprovalError(f"{approver} may not decide on a request they made or delegated",
                                "forbidden")
        groups = self.groups_of(approver)
        if groups is None:
            raise ApprovalError(f"{approver} is not a known human in the entity data", "forbidden")
        matched = [g for g in data["approvers"] if g in groups]
        if not matched:
            raise ApprovalError(f"{approver} is in none of the approver groups "
                                f"({', '.join(data['approvers'])})", "forbidden")
        return matched

    # -- tickets -------------------------------------------------------------------------------

    def open(self, decision: Any, request: Any, ttl: float = 3600) -> Approval:
        """Open a ticket from a ``require_approval`` decision for ``request``."""
        d = _decision_dict(decision)
        if d.get("decision") != "require_approval":
            raise ApprovalError(f"the decision is {d.get('decision')!r}, not 'require_approval': "
                                "there is nothing to approve", "invalid")
        approvers = d.get("approvers")
        if (not isinstance(approvers, (list, tuple)) or not approvers
                or not all(isinstance(a, str) and a for a in approvers)):
            raise ApprovalError("the decision names no approvers", "invalid")
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or ttl <= 0:
            raise ApprovalError("ttl must be a positive number of seconds", "invalid")
        binding = _binding(request)
        path = d.get("delegation_path")
        if path and list(path) != [*binding["delegation"], binding["principal"]]:
            raise ApprovalError("the decision was made for another delegation path", "invalid")
        now = self._clock()
        data = {
            "id": "apr_" + secrets.token_hex(12), "status": PENDING, **binding,
            "rules": [str(r) for r in d.get("rules") or ()],
            "reasons": [str(r) for r in d.get("reasons") or ()],
            "approvers": list(dict.fromkeys(approvers)),
            "policy_version": d.get("policy_version") if isinstance(d.get("policy_version"), str) else None,
            "created_at": now, "expires_at": now + float(ttl), "approvals": [],
            "denied_by": None, "denied_at": None,
        }
        self.store.create_approval(data["id"], data, now, data["expires_at"])
        ticket = Approval.from_data(data, now)
        self._record("approval_open", request=request, decision=decision, approval=ticket.id,
                     expires_at=ticket.expires_at)
        return ticket

    def get(self, approval_id: str) -> Approval:
        if not isinstance(approval_id, str) or not approval_id:
            raise ApprovalError("approval id must be a non-empty string", "invalid")
        data = self.store.get_approval(approval_id)
        if data is None:
            raise ApprovalError(f"no approval {approval_id}", "not_found")
        return Approval.from_data(data, self._clock())

    def list(self, *, approver: Optional[str] = None, include_closed: bool = False) -> list[Approval]:
        """Tickets, oldest first. By default only open ones (pending or approved, not
        expired); with ``approver``, only those that person may decide on."""
        now = self._clock()
        out = []
        for data in self.store.list_approvals(now):
            try:
                t = Approval.from_data(data, now)
            except (KeyError, TypeError):
                continue  # a ticket this version cannot read is not shown as approvable
            if not include_closed and t.status in (DENIED, EXPIRED):
                continue
            if approver is not None:
                try:
                    self._eligible(data, approver)
                except ApprovalError:
                    continue
            out.append(t)
        return out

    def approve(self, approval_id: str, approver: str) -> Approval:
        """Record ``approver``'s approval. ApprovalError when the ticket is unknown,
        expired or denied, or ``approver`` may not approve it."""
        return self._decide(approval_id, approver, APPROVED)

    def deny(self, approval_id: str, approver: str) -> Approval:
        """Deny the ticket, for good (also after approvals). Only someone who could
        approve it may deny it."""
        return self._decide(approval_id, approver, DENIED)

    def _decide(self, approval_id: str, approver: str, verdict: str) -> Approval:
        if not isinstance(approval_id, str) or not approval_id:
            raise ApprovalError("approval id must be a non-empty string", "invalid")
        now = self._clock()

        def change(data: dict) -> dict:
            if data.get("status") == DENIED:
                raise ApprovalError(f"approval {approval_id} was denied by {data.get('denied_by')}; "
                                    "a deny is final", "denied")
            if now >= data["expires_at"]:
                raise ApprovalError(f"approval {approval_id} has expired", "expired")
            matched = self._eligible(data, approver)
            data = dict(data)
            if verdict == DENIED:
                data.update(status=DENIED, denied_by=approver, denied_at=now)
            else:
                data["status"] = APPROVED
                if not any(a.get("approver") == approver for a in data["approvals"]):
                    data["approvals"] = [*data["approvals"],
                                         {"approver": approver, "groups": matched, "at": now}]
            return data

        new = self.store.update_approval(approval_id, change)
        if new is None:
            raise ApprovalError(f"no approval {approval_id}", "not_found")
        ticket = Approval.from_data(new, now)
        self._record("approve" if verdict == APPROVED else "deny", approval=approval_id, approver=approver)
        return ticket

    def _record(self, event: str, **kw) -> None:
        if self.audit is not None:
            self.audit.record(event, **kw)

    # -- the engine's approval checker ---------------------------------------------------------

    def checker(self, approval_id: Any, request: Any, approvers: Any) -> bool:
        """SPEC §6.3: True when ticket ``approval_id`` was approved, for this principal,
        action, resource and task, by a human currently in one of ``approvers`` (the
        gate's ``by`` list) who is neither the principal nor a delegator of this
        request, and has neither expired nor been denied. False on any doubt, including
        an unreachable store."""
        try:
            return self._confirms(approval_id, request, approvers)
        except Exception:
            return False

    def _confirms(self, approval_id: Any, request: Any, approvers: Any) -> bool:
        if not isinstance(approval_id, str) or not approval_id:
            return False
        gate = [a for a in (approvers or ()) if isinstance(a, str)]
        if not gate:
            return False
        data = self.store.get_approval(approval_id)
        if data is None or data.get("status") != APPROVED:
            return False
        if self._clock() >= data["expires_at"]:
            return False
        b = _binding(request)
        for key in ("principal", "action", "resource_type", "resource_id", "task"):
            if data.get(key) != b[key]:
                return False
        excluded = {b["principal"], *b["delegation"]}
        for entry in data.get("approvals") or ():
            who = entry.get("approver")
            if not isinstance(who, str) or who in excluded:
                continue
            groups = self.groups_of(who)
            if groups and any(g in groups for g in gate):
                return True
        return False
