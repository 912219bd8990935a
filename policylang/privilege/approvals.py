"""Human approvals for gated actions (docs/language.md#approvals, docs/zero-standing-privilege.md).

A ``require approval`` decision opens a ticket; a person approves (or denies) it; the
agent retries with ``"approval": ticket.id`` and the engine asks
:meth:`Approvals.checker` whether each gate that holds is confirmed::

    approvals = Approvals(store, entities=entity_data)
    engine = policylang.Engine(policies, approvals=approvals.checker)
    d = engine.decide(request)                      # require_approval
    ticket = approvals.open(d, request, ttl=3600)
    approvals.approve(ticket.id, approver="user:bob")
    engine.decide({**request, "approval": ticket.id})   # the gate is confirmed

Rules (docs/zero-standing-privilege.md):

* an approver is looked up as kind ``human`` in the entity data, and its ``groups``
  attribute must include one of the gate's ``by`` names;
* nobody approves their own request: the requesting principal and every identity in
  the request's delegation chain are refused;
* a ticket is bound to the whole request it was opened for: ``digest`` is the SHA-256
  of the canonical JSON of that request without ``approval`` (:func:`request_digest`:
  principal, action, resource with their attributes, context, risk, delegation chain
  and intent). It confirms nothing for a request whose digest differs (another amount
  in the context, another delegation chain …). The ticket also keeps ``request`` (that
  canonical request, with the redacted keys hidden) and a one-line ``summary``: what
  the approver is shown;
* it expires ``ttl`` seconds after opening (at most the lifetime cap: the policy set's
  ``option max_approval_ttl``, 24 h by default, and the ``max_ttl`` given to
  :class:`Approvals`; a longer ``ttl`` is refused) and can be reused until then,
  unless it was opened ``single_use``: then the first decision it confirms consumes it
  (an atomic compare-and-set in the store) and it confirms nothing after;
* a deny is final (also after an approval);
* when several gates hold, each needs an approver from its own ``by`` list: the checker
  is asked once per gate with that gate's list, and the ticket confirms a gate only if
  one of its approvers is (still) in one of that gate's groups;
* with an audit log, ``approval_open`` and ``approve`` are recorded *before* they take
  effect: when the record cannot be written nothing changes (and the caller gets the
  AuditError); a ``deny`` takes effect first (it only closes) and is then recorded;
* the checker confirms nothing when the store cannot be reached, or on any error.

Who may write the store may approve: guard it.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import math
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..evaluation.decision import decision_fields
from ..language.errors import RequestError
from ..evaluation.request import parse_parts, task_binding
from .store import Store, StoreError, open_store

__all__ = ["Approvals", "Approval", "ApprovalError", "StoreError", "request_digest", "canonical_request",
           "DEFAULT_MAX_TTL", "DEFAULT_TTL"]

PENDING, APPROVED, DENIED, EXPIRED, USED = "pending", "approved", "denied", "expired", "used"
#: closed by the requester (an AARP task cancellation, docs/server.md#aarp): final, like a deny
CANCELLED = "cancelled"

#: the lifetime cap when neither the policy set nor the caller sets one (seconds)
DEFAULT_MAX_TTL = 24 * 3600
#: a ticket's lifetime when the caller gives none (or the cap, when it is shorter)
DEFAULT_TTL = 3600
#: the digest's algorithm, spelled as a prefix of the hex value
_DIGEST_PREFIX = "sha256:"


class ApprovalError(Exception):
    """An approval operation was refused. ``code`` says why: ``not_found``,
    ``expired``, ``denied`` (the ticket was denied: final), ``used`` (a single-use
    ticket was consumed), ``forbidden`` (this approver may not act on it),
    ``cancelled`` (the requester cancelled it: final), ``exists`` (a ticket with the
    asked id exists already) or ``invalid`` (bad input, or a decision that is not
    ``require_approval``)."""

    def __init__(self, message: str, code: str = "invalid"):
        super().__init__(message)
        self.code = code


# -- the canonical request ---------------------------------------------------------------------


def _canon(value: Any, field_name: str) -> Any:
    """``value`` with integral floats as ints (150.0 is 150); RequestError for a
    non-finite number or anything that is not JSON."""
    if value is None or value.__class__ is bool or value.__class__ is str:
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RequestError(field_name, "a non-finite number cannot be approved")
        return int(value) if value.is_integer() else float(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise RequestError(field_name, "object keys must be strings")
            out[str.__str__(k)] = _canon(v, f"{field_name}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_canon(v, f"{field_name}[{i}]") for i, v in enumerate(value)]
    raise RequestError(field_name, f"not a JSON value ({type(value).__name__})")


def canonical_request(request: Any) -> dict:
    """The request a ticket is bound to: every field the engine reads except
    ``approval``, in one spelling (an action string is ``{"name": …, "attrs": {}}``,
    missing ``attrs``/``context`` are ``{}``, a missing delegation is ``[]``, integral
    floats are ints). Entity data is not merged in: this is what the caller sent.
    Raises :class:`~policylang.language.errors.RequestError` naming the field."""
    P, A, R, C, K, CH, I, _approval = parse_parts(request, None)

    def principal(e, where: str) -> dict:
        return {"id": e.id, "kind": e.kind, "attrs": _canon(e.attrs, where + ".attrs")}

    return {
        "principal": principal(P, "principal"),
        "action": {"name": A.name, "attrs": _canon(A.attrs, "action.attrs")},
        "resource": {"type": R.kind, "id": R.id, "attrs": _canon(R.attrs, "resource.attrs")},
        "context": _canon(C, "context"),
        "risk": _canon(K, "risk"),
        "delegation": [principal(e, f"delegation[{i}]") for i, e in enumerate(CH)],
        "intent": _canon(I, "intent"),
    }


def _dump(canonical: dict) -> bytes:
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8", "surrogatepass")


def request_digest(request: Any) -> str:
    """``"sha256:<hex>"`` of the canonical JSON (sorted keys, no whitespace, UTF-8,
    ``ensure_ascii=False``) of :func:`canonical_request`. Raises RequestError."""
    return _DIGEST_PREFIX + hashlib.sha256(_dump(canonical_request(request))).hexdigest()


def _summary(c: dict) -> str:
    """One line an approver can read: who, what, on what, with which attributes, via whom."""
    def attrs(a: Any) -> str:
        return json.dumps(a, sort_keys=True, ensure_ascii=False) if a else ""

    p, a, r = c["principal"], c["action"], c["resource"]
    parts = [f"{p['kind']} {p['id']} -> {a['name']}" + (f" {attrs(a['attrs'])}" if a["attrs"] else ""),
             f"on {r['type']}" + (f" {r['id']}" if r["id"] is not None else "")
             + (f" {attrs(r['attrs'])}" if r["attrs"] else "")]
    if c["context"]:
        parts.append(f"context {attrs(c['context'])}")
    if c["risk"]:
        parts.append(f"risk {attrs(c['risk'])}")
    if c["delegation"]:
        parts.append("via " + " > ".join(e["id"] for e in c["delegation"]))
    if c["intent"]:
        parts.append(f"intent {attrs(c['intent'])}")
    return "  ".join(parts)


def _redacted(value: Any, keys: frozenset) -> Any:
    if not keys:
        return value
    if isinstance(value, dict):
        return {k: "[redacted]" if k.casefold() in keys else _redacted(v, keys) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v, keys) for v in value]
    return value


@dataclass(frozen=True)
class Approval:
    """A ticket. ``status`` is computed at read time (``expired`` once past
    ``expires_at`` unless it was denied; ``used`` once a single-use ticket confirmed
    its decision)."""

    id: str
    status: str
    principal: str
    action: str
    resource_type: str
    resource_id: str | None
    task: str | None
    delegation: tuple[str, ...]
    rules: tuple[str, ...]
    reasons: tuple[str, ...]
    approvers: tuple[str, ...]
    created_at: float
    expires_at: float
    approvals: tuple[dict, ...] = ()
    denied_by: str | None = None
    denied_at: float | None = None
    purpose: str | None = None
    policy_version: str | None = None
    #: "sha256:<hex>" of the canonical request (None on a ticket from before binding:
    #: such a ticket confirms nothing)
    digest: str | None = None
    #: the canonical request, redacted: what the approver approves
    request: dict | None = field(default=None, compare=False)
    summary: str | None = None
    single_use: bool = False
    used_at: float | None = None
    data: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_data(cls, data: dict, now: float) -> "Approval":
        status = data.get("status", PENDING)
        uses = data.get("uses") or ()
        if status not in (DENIED, CANCELLED) and data.get("single_use") and uses:
            status = USED
        elif status not in (DENIED, CANCELLED) and now >= data["expires_at"]:
            status = EXPIRED
        return cls(
            id=data["id"], status=status, principal=data["principal"], action=data["action"],
            resource_type=data["resource_type"], resource_id=data.get("resource_id"),
            task=data.get("task"), delegation=tuple(data.get("delegation") or ()),
            rules=tuple(data.get("rules") or ()), reasons=tuple(data.get("reasons") or ()),
            approvers=tuple(data.get("approvers") or ()), created_at=data["created_at"],
            expires_at=data["expires_at"], approvals=tuple(data.get("approvals") or ()),
            denied_by=data.get("denied_by"), denied_at=data.get("denied_at"),
            purpose=data.get("purpose"), policy_version=data.get("policy_version"),
            digest=data.get("digest"), request=data.get("request"), summary=data.get("summary"),
            single_use=bool(data.get("single_use")),
            used_at=uses[0].get("at") if uses and isinstance(uses[0], dict) else None, data=data)

    @property
    def meta(self) -> dict:
        """What the opener attached (``open(…, meta=…)``): for a ticket opened by an AARP
        access request its ``evaluation_id``, task, requester and justification."""
        meta = self.data.get("meta")
        return meta if isinstance(meta, dict) else {}

    def to_dict(self) -> dict:
        extra = {"meta": self.meta} if self.meta else {}
        return {
            **extra,
            "id": self.id, "status": self.status, "principal": self.principal, "action": self.action,
            "resource": {"type": self.resource_type, "id": self.resource_id}, "task": self.task,
            "delegation": list(self.delegation), "rules": list(self.rules), "reasons": list(self.reasons),
            "approvers": list(self.approvers), "created_at": self.created_at, "expires_at": self.expires_at,
            "approvals": [dict(a) for a in self.approvals], "denied_by": self.denied_by,
            "denied_at": self.denied_at, "purpose": self.purpose, "policy_version": self.policy_version,
            "digest": self.digest, "summary": self.summary, "request": self.request,
            "single_use": self.single_use, "used_at": self.used_at,
        }


def _binding(request: Any) -> dict:
    """The fields a ticket is bound to, read from a request (docs/requests.md#request); ApprovalError
    ("invalid") when the request is malformed."""
    try:
        return task_binding(request, strict=False)
    except RequestError as e:
        raise ApprovalError(f"malformed request: {e}", "invalid") from None


def _decision_dict(decision: Any) -> dict:
    try:
        return decision_fields(decision)
    except TypeError:
        raise ApprovalError("not a decision", "invalid") from None


def _is_policy_set(obj: Any) -> bool:
    return callable(getattr(obj, "rule", None)) and hasattr(obj, "options")


def _policy_cap(policies: Any) -> float | None:
    cap = getattr(getattr(policies, "options", None), "max_approval_ttl", None)
    return float(cap) if isinstance(cap, (int, float)) and not isinstance(cap, bool) and cap > 0 else None


def _valid_seconds(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ApprovalError(f"{name} must be a positive number of seconds", "invalid")
    return float(value)


def _links(data: dict) -> dict:
    """The audit fields that tie a ticket's records to what opened it: the AARP
    ``evaluation_id`` and ``access_request`` (the task id; docs/server.md#aarp), when present."""
    meta = data.get("meta")
    if not isinstance(meta, dict):
        return {}
    return {k: meta[k] for k in ("evaluation_id", "access_request", "requester") if isinstance(meta.get(k), str)}


class _Refused(Exception):
    """A single-use ticket cannot be consumed (by this decision): nothing is written."""


class Approvals:
    """Approval tickets kept in a store.

    ``entities``: the entity data approvers are looked up in: a mapping
    ``{kind: {id: attrs}}`` (the shape of an ``*.entities.json`` file), a callable
    ``(kind, id) -> attrs | None``, or a loaded policy set (its entity files, and its
    ``option max_approval_ttl``).
    ``audit``: optional :class:`~policylang.audit.AuditLog`; ``approval_open``,
    ``approve`` and ``deny`` events are recorded.
    ``max_ttl``: a cap (seconds) on every ticket's lifetime, on top of the policy set's
    ``option max_approval_ttl`` (24 h when no policy set is known).
    ``redact``: request keys (any case, any depth) hidden in the ticket's ``request``
    copy; by default the audit log's ``redact`` keys.
    """

    def __init__(self, store: Store | str, entities: Any = None, *, audit: Any = None,
                 clock: Callable[[], float] = time.time, max_ttl: float | None = None,
                 redact: Any = None):
        self.store = open_store(store) if isinstance(store, str) else store
        if entities is not None and not (isinstance(entities, Mapping) or callable(entities)
                                         or isinstance(getattr(entities, "entities", None), Mapping)):
            raise TypeError("entities must be a mapping {kind: {id: attrs}}, a callable "
                            "(kind, id) -> attrs, or a policy set")
        if max_ttl is not None and (isinstance(max_ttl, bool) or not isinstance(max_ttl, (int, float))
                                    or not math.isfinite(max_ttl) or max_ttl <= 0):
            raise ValueError("max_ttl must be a positive number of seconds")
        self.entities = entities
        self.audit = audit
        self.max_ttl = None if max_ttl is None else float(max_ttl)
        if redact is None:
            redact = getattr(audit, "redact", ()) or ()
        if isinstance(redact, str):
            redact = [redact]
        self.redact = frozenset(str(k).casefold() for k in redact)
        self._clock = clock
        #: id(request) -> (request, nonce): which decision is consuming a single-use
        #: ticket (the engine asks once per gate with the same request object)
        self._consumers: "collections.OrderedDict[int, tuple[Any, str]]" = collections.OrderedDict()
        self._consumers_lock = threading.Lock()

    # -- entity data -----------------------------------------------------------------------

    def _lookup(self, kind: str, ident: str) -> Mapping | None:
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

    def groups_of(self, approver: str) -> set[str] | None:
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
        meta = data.get("meta")
        if isinstance(meta, dict) and meta.get("requester") and approver == meta.get("requester"):
            raise ApprovalError(f"{approver} submitted this access request and may not decide on it",
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

    def ttl_cap(self, policies: Any = None) -> float:
        """The longest lifetime a ticket may have: the policy set's ``option
        max_approval_ttl`` (24 h when unknown), lowered by this instance's ``max_ttl``."""
        cap = _policy_cap(policies)
        if cap is None and _is_policy_set(self.entities):
            cap = _policy_cap(self.entities)
        if cap is None:
            cap = float(DEFAULT_MAX_TTL)
        return cap if self.max_ttl is None else min(cap, self.max_ttl)

    def _policies_of(self, decision: Any, policies: Any) -> Any:
        if policies is not None:
            return policies
        engine = getattr(decision, "_explainer", None)
        if isinstance(engine, tuple) and engine:
            found = getattr(engine[0], "policies", None)
            if _is_policy_set(found):
                return found
        return self.entities if _is_policy_set(self.entities) else None

    def open(self, decision: Any, request: Any, ttl: float | None = None, *, single_use: bool = False,
             policies: Any = None, approval_id: str | None = None, meta: dict | None = None) -> Approval:
        """Open a ticket from a ``require_approval`` decision for ``request``.

        ``ttl``: seconds until it expires (default 1 h, or the cap when shorter); a
        ``ttl`` over the cap (:meth:`ttl_cap`) is refused (ApprovalError "invalid").
        ``single_use``: the first decision the ticket confirms consumes it.
        ``policies``: the policy set the decision came from (found on an engine's
        decision by itself): its ``option max_approval_ttl``, and each gate's ``by``
        list for a single-use ticket.
        ``approval_id``: the ticket's id (default: ``apr_`` and 96 random bits); an id in
        use is refused (ApprovalError ``exists``), atomically in the store.
        ``meta``: a JSON object kept with the ticket and shown with it (its
        ``evaluation_id``, when present, is copied onto the ticket's audit records; a
        ``requester`` may not approve it).
        The returned ticket carries ``digest``, the request binding."""
        d = _decision_dict(decision)
        approvers = _approvers_of(d)
        policies = self._policies_of(decision, policies)
        ttl = self._checked_ttl(ttl, policies)
        _check_open_options(single_use, approval_id, meta)
        binding = _binding(request)
        try:
            canonical = canonical_request(request)
        except RequestError as e:
            raise ApprovalError(f"malformed request: {e}", "invalid") from None
        digest = _DIGEST_PREFIX + hashlib.sha256(_dump(canonical)).hexdigest()
        path = d.get("delegation_path")
        if path and list(path) != [*binding["delegation"], binding["principal"]]:
            raise ApprovalError("the decision was made for another delegation path", "invalid")
        rules = [str(r) for r in d.get("rules") or ()]
        gates = self._gates(rules, list(dict.fromkeys(approvers)), policies)
        if single_use and gates is None:
            raise ApprovalError("a single-use ticket for a decision with several gates needs the policy "
                                "set (each gate's approvers)", "invalid")
        now = self._clock()
        shown = _redacted(canonical, self.redact)
        data = {
            "id": approval_id or "apr_" + secrets.token_hex(12), "status": PENDING, **binding,
            "rules": rules,
            "reasons": [str(r) for r in d.get("reasons") or ()],
            "approvers": list(dict.fromkeys(approvers)),
            "policy_version": d.get("policy_version") if isinstance(d.get("policy_version"), str) else None,
            "created_at": now, "expires_at": now + ttl, "approvals": [],
            "denied_by": None, "denied_at": None,
            "digest": digest, "request": shown, "summary": _summary(shown),
            "single_use": single_use, "gates": gates, "uses": [], "consumer": None,
        }
        if meta:
            data["meta"] = _redacted(_canon(meta, "meta"), self.redact)
        ticket = Approval.from_data(data, now)
        if approval_id is not None and self.store.get_approval(approval_id) is not None:
            raise ApprovalError(f"approval {approval_id} exists already", "exists")
        # audit first: a ticket nobody recorded is never created
        self._record("approval_open", request=request, decision=decision, approval=ticket.id,
                     expires_at=ticket.expires_at, digest=digest, single_use=single_use, **_links(data))
        try:
            self.store.create_approval(data["id"], data, now, data["expires_at"])
        except BaseException as e:
            self._aborted(ticket.id, "approval_open", e)
            if isinstance(e, StoreError) and approval_id is not None:
                try:  # lost a race for the asked id: say so rather than "unavailable"
                    taken = self.store.get_approval(approval_id) is not None
                except StoreError:
                    taken = False
                if taken:
                    raise ApprovalError(f"approval {approval_id} exists already", "exists") from None
            raise
        return ticket

    def _checked_ttl(self, ttl: float | None, policies: Any) -> float:
        """The ticket's lifetime: the default (1 h, or the cap when shorter) or ``ttl``,
        refused when over the cap (:meth:`ttl_cap`)."""
        cap = self.ttl_cap(policies)
        ttl = min(float(DEFAULT_TTL), cap) if ttl is None else _valid_seconds(ttl, "ttl")
        if ttl > cap:
            raise ApprovalError(f"ttl {ttl:g} s is longer than the approval lifetime cap ({cap:g} s: "
                                "option max_approval_ttl, or the service's cap); ask for a shorter one",
                                "invalid")
        return ttl

    @staticmethod
    def _gates(rules: list[str], approvers: list[str], policies: Any) -> list[list[str]] | None:
        """Each gate's ``by`` list, in rule order; None when they cannot be known."""
        if _is_policy_set(policies) and rules:
            out = []
            for rid in rules:
                info = policies.rule(rid)
                by = getattr(getattr(info, "rule", None), "by", None)
                if info is None or by is None:
                    break
                out.append(list(by.approvers))
            else:
                return out
        if len(rules) <= 1:
            return [approvers]
        return None

    def get(self, approval_id: str) -> Approval:
        if not isinstance(approval_id, str) or not approval_id:
            raise ApprovalError("approval id must be a non-empty string", "invalid")
        data = self.store.get_approval(approval_id)
        if data is None:
            raise ApprovalError(f"no approval {approval_id}", "not_found")
        return Approval.from_data(data, self._clock())

    def list(self, *, approver: str | None = None, include_closed: bool = False) -> list[Approval]:
        """Tickets, oldest first. By default only open ones (pending or approved, not
        expired nor used); with ``approver``, only those that person may decide on."""
        now = self._clock()
        out = []
        for data in self.store.list_approvals(now):
            try:
                t = Approval.from_data(data, now)
            except (KeyError, TypeError, AttributeError):
                continue  # a ticket this version cannot read is not shown as approvable
            if not include_closed and t.status in (DENIED, EXPIRED, USED, CANCELLED):
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
        expired, denied or used, or ``approver`` may not approve it. The audit record
        is written first: when it cannot be, nothing is approved (AuditError)."""
        return self._decide(approval_id, approver, APPROVED)

    def deny(self, approval_id: str, approver: str) -> Approval:
        """Deny the ticket, for good (also after approvals). Only someone who could
        approve it may deny it. The deny takes effect before it is recorded (it only
        closes): an AuditError afterwards leaves it in effect."""
        return self._decide(approval_id, approver, DENIED)

    def cancel(self, approval_id: str, by: str, *, reason: str | None = None,
               comment: str | None = None) -> Approval:
        """Cancel a ticket that is still open (the requester withdraws an AARP access
        request): final, it confirms nothing afterwards. ApprovalError ``cancelled``,
        ``denied``, ``used`` or ``expired`` when it is closed already, and ``invalid``
        when every gate is approved already (an approved request is not withdrawn: it
        expires, or single use spends it). Who may cancel is the caller's to check.
        Takes effect first, then is recorded (it only closes)."""
        if not isinstance(approval_id, str) or not approval_id:
            raise ApprovalError("approval id must be a non-empty string", "invalid")
        now = self._clock()

        def change(data: dict) -> dict:
            self._check_open(approval_id, data, now)
            if self.fully_approved(data):
                raise ApprovalError(f"approval {approval_id} is approved already", "invalid")
            data = dict(data)
            data.update(status=CANCELLED, cancelled_by=by, cancelled_at=now,
                        cancel_reason=reason, cancel_comment=comment)
            return data

        new = self.store.update_approval(approval_id, change)
        if new is None:
            raise ApprovalError(f"no approval {approval_id}", "not_found")
        self._record("approval_cancel", approval=approval_id, by=by, reason=reason, comment=comment,
                     digest=new.get("digest"), **_links(new))
        return Approval.from_data(new, now)

    def fully_approved(self, data: dict) -> bool:
        """Does every gate of this ticket (raw store data) have an eligible approver now?
        (Status ``approved`` alone says only that someone approved one gate.)"""
        if data.get("status") != APPROVED:
            return False
        excluded = {data.get("principal"), *(data.get("delegation") or ())}
        gates = data.get("gates")
        if not isinstance(gates, list) or not gates:
            gates = [data.get("approvers") or []]
        return all(isinstance(g, list) and g and self._confirmed_by(data, g, excluded) for g in gates)

    def _check_open(self, approval_id: str, data: dict, now: float) -> None:
        if data.get("status") == CANCELLED:
            raise ApprovalError(f"approval {approval_id} was cancelled by {data.get('cancelled_by')}; "
                                "a cancellation is final", "cancelled")
        if data.get("status") == DENIED:
            raise ApprovalError(f"approval {approval_id} was denied by {data.get('denied_by')}; "
                                "a deny is final", "denied")
        if data.get("single_use") and data.get("uses"):
            raise ApprovalError(f"approval {approval_id} was single-use and has been used", "used")
        if now >= data["expires_at"]:
            raise ApprovalError(f"approval {approval_id} has expired", "expired")

    def _decide(self, approval_id: str, approver: str, verdict: str) -> Approval:
        if not isinstance(approval_id, str) or not approval_id:
            raise ApprovalError("approval id must be a non-empty string", "invalid")
        now = self._clock()
        event = "approve" if verdict == APPROVED else "deny"

        def change(data: dict) -> dict:
            self._check_open(approval_id, data, now)
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

        if verdict == APPROVED and self.audit is not None:
            # audit first: check what can be checked, record, then write (which checks again)
            current = self.store.get_approval(approval_id)
            if current is None:
                raise ApprovalError(f"no approval {approval_id}", "not_found")
            change(current)
            self._record(event, approval=approval_id, approver=approver, digest=current.get("digest"),
                         **_links(current))
            try:
                new = self.store.update_approval(approval_id, change)
            except BaseException as e:
                self._aborted(approval_id, event, e, approver=approver)
                raise
            if new is None:
                self._aborted(approval_id, event, ApprovalError("the ticket is gone", "not_found"),
                              approver=approver)
                raise ApprovalError(f"no approval {approval_id}", "not_found")
            return Approval.from_data(new, now)

        new = self.store.update_approval(approval_id, change)
        if new is None:
            raise ApprovalError(f"no approval {approval_id}", "not_found")
        ticket = Approval.from_data(new, now)
        self._record(event, approval=approval_id, approver=approver, digest=new.get("digest"), **_links(new))
        return ticket

    def _record(self, event: str, **kw) -> None:
        if self.audit is not None:
            self.audit.record(event, **kw)

    def _aborted(self, approval_id: str, event: str, error: BaseException, **kw) -> None:
        """Best effort: say in the log that a recorded event did not take effect."""
        if self.audit is None:
            return
        try:
            self.audit.record("approval_aborted", approval=approval_id, aborted=event,
                              error=f"{type(error).__name__}: {error}", **kw)
        except Exception:
            pass

    # -- the engine's approval checker ---------------------------------------------------------

    def checker(self, approval_id: Any, request: Any, approvers: Any) -> bool:
        """docs/language.md#approvals: True when ticket ``approval_id`` was approved, for this very
        request (its digest), by a human currently in one of ``approvers`` (the gate's
        ``by`` list) who is neither the principal nor a delegator of this request, and
        has neither expired nor been denied (nor, single-use, been used by another
        decision). False on any doubt, including an unreachable store."""
        try:
            return self._confirms(approval_id, request, approvers)
        except Exception:
            return False

    def _confirmed_by(self, data: dict, gate: list[str], excluded: set) -> bool:
        for entry in data.get("approvals") or ():
            who = entry.get("approver") if isinstance(entry, dict) else None
            if not isinstance(who, str) or who in excluded:
                continue
            groups = self.groups_of(who)
            if groups and any(g in groups for g in gate):
                return True
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
        now = self._clock()
        if now >= data["expires_at"]:
            return False
        b = _binding(request)
        for key in ("principal", "action", "resource_type", "resource_id", "task"):
            if data.get(key) != b[key]:
                return False
        want = data.get("digest")
        if not isinstance(want, str) or not hmac.compare_digest(want, request_digest(request)):
            return False  # another request (or a ticket from before binding)
        excluded = {b["principal"], *b["delegation"]}
        if not self._confirmed_by(data, gate, excluded):
            return False
        if not data.get("single_use"):
            return True
        return self._consume(approval_id, data, request, gate, excluded, now)

    def _nonce(self, request: Any) -> str:
        """One value per request object being decided (the engine asks once per gate
        with the same object); the entry keeps the object so its id is not reused."""
        with self._consumers_lock:
            entry = self._consumers.get(id(request))
            if entry is not None and entry[0] is request:
                self._consumers.move_to_end(id(request))
                return entry[1]
            nonce = secrets.token_hex(16)
            self._consumers[id(request)] = (request, nonce)
            while len(self._consumers) > 1024:
                self._consumers.popitem(last=False)
            return nonce

    def _consume(self, approval_id: str, data: dict, request: Any, gate: list[str], excluded: set,
                 now: float) -> bool:
        """Single use: a ticket opened for n gates gives n confirmations, all to one
        decision, and only once every one of its gates has an approver (so that a
        partly approved ticket is not spent). Compare-and-set in the store."""
        gates = data.get("gates")
        if (not isinstance(gates, list) or not gates
                or not any(isinstance(g, list) and set(g) == set(gate) for g in gates)):
            return False
        if not all(isinstance(g, list) and self._confirmed_by(data, g, excluded) for g in gates):
            return False  # not every gate approved yet: confirm nothing, spend nothing
        nonce = self._nonce(request)

        def change(current: dict) -> dict:
            if (current.get("status") != APPROVED or now >= current["expires_at"]
                    or current.get("digest") != data.get("digest")):
                raise _Refused
            uses = list(current.get("uses") or ())
            if len(uses) >= len(gates) or (uses and current.get("consumer") != nonce):
                raise _Refused
            current = dict(current)
            current["consumer"] = nonce
            current["uses"] = [*uses, {"at": now, "gate": gate}]
            return current

        try:
            return self.store.update_approval(approval_id, change) is not None
        except _Refused:
            return False


def _approvers_of(d: dict) -> list:
    """The approvers of a ``require_approval`` decision (as a dict); ApprovalError otherwise."""
    if d.get("decision") != "require_approval":
        raise ApprovalError(f"the decision is {d.get('decision')!r}, not 'require_approval': "
                            "there is nothing to approve", "invalid")
    approvers = d.get("approvers")
    if (not isinstance(approvers, (list, tuple)) or not approvers
            or not all(isinstance(a, str) and a for a in approvers)):
        raise ApprovalError("the decision names no approvers", "invalid")
    return list(approvers)


def _check_open_options(single_use: Any, approval_id: Any, meta: Any) -> None:
    if not isinstance(single_use, bool):
        raise ApprovalError("single_use must be true or false", "invalid")
    if approval_id is not None and (not isinstance(approval_id, str) or not approval_id):
        raise ApprovalError("approval_id must be a non-empty string", "invalid")
    if meta is not None and not isinstance(meta, dict):
        raise ApprovalError("meta must be an object", "invalid")
