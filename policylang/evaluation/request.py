"""Request dicts (docs/requests.md#request) → validated runtime values, with entity data merged (docs/language.md#entity-data).

Validation is hand-written straight-line code rather than a pydantic model: it runs on
every decision and must cost well under a microsecond or two. Every problem raises
:class:`~policylang.language.errors.RequestError` naming the field (``principal.id``,
``delegation[2].kind`` …); nothing malformed ever becomes a decision.
"""

from __future__ import annotations

import copy
import marshal
from collections.abc import Sequence
from typing import Any, Callable, Mapping

from ..language.errors import RequestError
from ..language.policyset import merge_entities
from .runtime import Action, Delegation, Entity, type_name

#: (kind or type, id) -> stored attrs or None
EntityLookup = Callable[[str, str], "Mapping[str, Any] | None"]

_EMPTY: dict = {}
_new = object.__new__

#: The longest delegation chain a request may carry (docs/requests.md#request): a longer one is a
#: RequestError naming ``delegation``. It matches the 64-level limit on a token's nested
#: ``act`` claims; other modules import it rather than repeating the number.
MAX_DELEGATION_DEPTH = 64

#: The deepest nesting of objects and lists a request value may have, counting the root
#: object itself (``context`` is level 1, ``context.a`` when it is an object is level 2 …).
MAX_VALUE_DEPTH = 64

#: Exact classes of the values requests are made of (JSON): anything else is normalised
#: (str/int/float subclasses such as StrEnum and IntEnum become plain str/int/float,
#: other mappings become dicts, other sequences lists) or refused, naming the field.
_PLAIN = frozenset((str, int, float, bool, type(None)))
_NOT_LISTS = (str, bytes, bytearray, memoryview)


class _Bad(Exception):
    """A value that cannot be normalised: the path below the field, and why."""

    def __init__(self, message: str):
        self.message = message
        self.path: list[str] = []


def _norm(v: Any, depth: int) -> Any:
    """``v`` as exact JSON types (the same object when it already is). Raises _Bad."""
    c = v.__class__
    if c in _PLAIN:
        return v
    if c is dict or (c is not list and isinstance(v, Mapping)):
        return _norm_object(v, c is not dict, depth)
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, int):  # bool cannot be subclassed: these are IntEnum and the like
        return int.__int__(v)
    if isinstance(v, float):
        return float.__float__(v)
    if c is list or (isinstance(v, Sequence) and not isinstance(v, _NOT_LISTS)):
        return _norm_list(v, c is list, depth)
    raise _Bad(f"expected a JSON value (string, number, boolean, null, list or object), got {type(v).__name__}")


def _norm_object(v: Mapping, changed: bool, depth: int) -> dict:
    """:func:`_norm` of a mapping (``changed``: it is not an exact dict)."""
    if depth > MAX_VALUE_DEPTH:
        raise _Bad(f"nested deeper than {MAX_VALUE_DEPTH} levels")
    fixes: dict = {}
    for k, x in v.items():
        if k.__class__ is not str:
            if isinstance(k, str):
                changed = True
            elif depth > 1:  # a top-level key no rule can name is left alone, as on the fast path
                raise _Bad(f"object keys must be strings, got {type_name(k)}")
        if x.__class__ not in _PLAIN:
            try:
                y = _norm(x, depth + 1)
            except _Bad as e:
                e.path.append(f".{k}")
                raise
            if y is not x:
                fixes[k] = y
    if not changed and not fixes:
        return v
    return {(str.__str__(k) if k.__class__ is not str and isinstance(k, str) else k):
            (fixes[k] if k in fixes else x) for k, x in v.items()}


def _norm_list(v: Sequence, exact: bool, depth: int) -> list:
    """:func:`_norm` of a sequence (``exact``: it is a list)."""
    if depth > MAX_VALUE_DEPTH:
        raise _Bad(f"nested deeper than {MAX_VALUE_DEPTH} levels")
    fixed: dict = {}
    for i, x in enumerate(v):
        if x.__class__ not in _PLAIN:
            try:
                y = _norm(x, depth + 1)
            except _Bad as e:
                e.path.append(f"[{i}]")
                raise
            if y is not x:
                fixed[i] = y
    if exact and not fixed:
        return v
    return [fixed[i] if i in fixed else x for i, x in enumerate(v)] if fixed else list(v)


def _normalised(value: Any, field: str) -> Any:
    try:
        return _norm(value, 1)
    except _Bad as e:
        raise _err(field + "".join(reversed(e.path)), e.message) from None


class Request:
    """A validated request: the roots an expression can read, plus the raw input."""

    __slots__ = ("principal", "action", "resource", "context", "risk", "delegation", "intent",
                 "approval", "raw", "chain")

    def __init__(self, principal: Entity, action: Action, resource: Entity, context: dict,
                 risk: dict | None, chain: list[Entity], intent: dict | None, approval: str | None,
                 raw: Mapping):
        self.principal = principal
        self.action = action
        self.resource = resource
        self.context = context
        self.risk = risk
        self.chain = chain
        self.delegation = Delegation(chain, principal)
        self.intent = intent
        self.approval = approval
        self.raw = raw

    def roots(self) -> dict[str, Any]:
        return {
            "principal": self.principal,
            "action": self.action,
            "resource": self.resource,
            "context": self.context,
            "risk": self.risk,
            "delegation": self.delegation,
            "intent": self.intent,
        }

    def delegation_path(self) -> list[str]:
        return [e.id for e in self.chain] + [self.principal.id]

    def as_delegator(self, i: int) -> "Request":
        """The request as delegator ``i`` of the chain would make it (docs/language.md#delegation-attenuation)."""
        return Request(self.chain[i], self.action, self.resource, self.context, self.risk,
                       self.chain[:i], self.intent, None, self.raw)


def _err(field: str, message: str) -> RequestError:
    return RequestError(field, message)


def _attrs(value: Any, field: str) -> dict:
    """An object of the request (``None``: empty), normalised. The fast path (an exact
    dict whose values are plain scalars or lists of them: what JSON requests mostly are)
    only looks at classes and returns the very same dict; keys need no look there (a
    JSON object's keys are strings, and a str-subclass key reads like its string);
    anything else takes the careful walk, which names the field."""
    if value.__class__ is dict:
        for v in value.values():
            if v.__class__ is not str and v.__class__ not in _PLAIN:
                if v.__class__ is not list:
                    return _normalised(value, field)
                for x in v:
                    if x.__class__ not in _PLAIN:
                        return _normalised(value, field)
        return value
    if value is None:
        return _EMPTY
    if isinstance(value, Mapping):
        return _normalised(value, field)
    raise _err(field, f"expected an object, got {type_name(value)}")


def _string(value: Any, field: str, required: bool = True) -> str | None:
    if value.__class__ is str:
        return value
    if isinstance(value, str):  # a str subclass (StrEnum …): its plain string
        return str.__str__(value)
    if value is None:
        if required:
            raise _err(field, "required")
        return None
    raise _err(field, f"expected a string, got {type_name(value)}")


def _merge(stored: Mapping | None, given: dict, authoritative: bool = False) -> dict:
    """The attributes of an entity whose stored record is ``stored`` and whose request
    sent ``given``. By default the stored record is the base and the request's non-null
    values override it. When the set makes this entity's stored data authoritative
    (docs/language.md#authoritative-entity-data) the stored record is the entity's whole
    set of attributes: ``given`` is ignored, values and added keys alike (not refused:
    a refusal on a differing value would let a caller test guesses of stored values)."""
    if authoritative and stored is not None:
        return stored if stored.__class__ is dict else dict(stored)
    if not stored:
        return given
    merged = dict(stored)
    for k, v in given.items():
        if v is not None:
            merged[k] = v
    return merged


def _principal_fields(value: Any, field: str) -> tuple:
    """``(kind, id, attrs)`` of a principal or delegation entry that is not an exact dict
    with string id and kind (the fast path's case), checked in the order id, kind, attrs."""
    if value.__class__ is not dict:
        if value is None:
            raise _err(field, "required")
        if not isinstance(value, Mapping):
            raise _err(field, f"expected an object with id and kind, got {type_name(value)}")
    get = value.get
    pid = get("id")
    if pid.__class__ is not str:
        pid = _string(pid, field + ".id")
    kind = get("kind")
    if kind.__class__ is not str:
        kind = _string(kind, field + ".kind")
    attrs = get("attrs")
    return kind, pid, (_EMPTY if attrs is None else _attrs(attrs, field + ".attrs"))


def _resource_fields(resource: Any) -> tuple:
    """``(type, id, attrs)`` of a resource that is not an exact dict with a string type
    and a string or absent id (the fast path's case), checked in the order type, id, attrs."""
    if resource.__class__ is not dict and not isinstance(resource, Mapping):
        if resource is None:
            raise _err("resource", "required")
        raise _err("resource", f"expected an object with type, got {type_name(resource)}")
    rtype = resource.get("type")
    if rtype.__class__ is not str:
        rtype = _string(rtype, "resource.type")
    rid = resource.get("id")
    if rid is not None and rid.__class__ is not str:
        rid = _string(rid, "resource.id")
    rattrs = resource.get("attrs")
    return rtype, rid, (_EMPTY if rattrs is None else _attrs(rattrs, "resource.attrs"))


def _action(action: Any) -> Action:
    """The action of a request whose ``action`` is not a plain string: a str subclass, or
    an object with ``name`` (and ``attrs``)."""
    if action is None:
        raise _err("action", "required")
    if isinstance(action, str):
        return Action(str.__str__(action), _EMPTY)
    if isinstance(action, Mapping):
        name = action.get("name")
        if name.__class__ is not str:
            name = _string(name, "action.name")
        return Action(name, _attrs(action.get("attrs"), "action.attrs"))
    raise _err("action", f"expected a string or an object with name, got {type_name(action)}")


def _risk(risk: Any) -> dict:
    """``risk`` normalised, with its score (a number from 0 to 1) and signals (a list of
    strings) checked when present."""
    risk = _attrs(risk, "risk")
    score = risk.get("score")
    if score is not None:
        if score.__class__ is not float and score.__class__ is not int:
            raise _err("risk.score", f"expected a number, got {type_name(score)}")
        if not (0 <= score <= 1):  # NaN fails this too
            raise _err("risk.score", f"must be between 0 and 1, got {score}")
    signals = risk.get("signals")
    if signals is not None:
        if not isinstance(signals, list):
            raise _err("risk.signals", f"expected a list of strings, got {type_name(signals)}")
        for i, s in enumerate(signals):
            if s.__class__ is not str:
                raise _err(f"risk.signals[{i}]", f"expected a string, got {type_name(s)}")
    return risk


def _chain(delegation: Any, lookup: EntityLookup | None, authority: Any) -> list[Entity]:
    """The delegation entries of a request (not ``None``) as principals, entity data merged:
    a list (or other sequence) of at most :data:`MAX_DELEGATION_DEPTH` objects."""
    if not delegation:
        if delegation.__class__ is list or (isinstance(delegation, Sequence) and not isinstance(delegation, _NOT_LISTS)):
            return []
        raise _err("delegation", f"expected a list, got {type_name(delegation)}")
    if delegation.__class__ is not list and (not isinstance(delegation, Sequence)
                                              or isinstance(delegation, _NOT_LISTS)):
        raise _err("delegation", f"expected a list, got {type_name(delegation)}")
    if len(delegation) > MAX_DELEGATION_DEPTH:
        raise _err("delegation", f"at most {MAX_DELEGATION_DEPTH} entries, got {len(delegation)}")
    chain = []
    for i, entry in enumerate(delegation):
        if (entry.__class__ is dict and (pid := entry.get("id")).__class__ is str
                and (kind := entry.get("kind")).__class__ is str):
            attrs = entry.get("attrs")
            attrs = _EMPTY if attrs is None else _attrs(attrs, f"delegation[{i}].attrs")
        elif entry is None:
            raise _err(f"delegation[{i}]", "null entry")
        else:
            kind, pid, attrs = _principal_fields(entry, f"delegation[{i}]")
        if lookup is not None and (stored := lookup(kind, pid)) is not None:
            attrs = _merge(stored, attrs, authority is not None and authority.principal(kind))
        chain.append(Entity("principal", kind, pid, attrs))
    return chain


def _with_optional_parts(raw: Mapping, left: int, lookup: EntityLookup | None, authority: Any,
                         principal: Entity, action: Action, resource: Entity) -> tuple:
    """:func:`parse_parts`' result for a request ``raw`` whose required roots are ``principal``,
    ``action`` and ``resource``: their tuple with context, risk, chain, intent and approval.
    ``left`` counts the keys other than principal, action and resource (``-1``: unknown);
    once every such key is accounted for, delegation, intent and approval are not looked up."""
    context = raw.get("context")
    if context is None:
        context = _EMPTY
    else:
        context = _attrs(context, "context")
        left -= 1
    risk = raw.get("risk")
    if risk is not None:
        left -= 1
        # the common risk, {"score": <a number from 0 to 1>}, needs no further look
        score = risk.get("score") if risk.__class__ is dict and len(risk) == 1 else None
        if not ((score.__class__ is float or score.__class__ is int) and 0.0 <= score <= 1.0):
            risk = _risk(risk)
    if not left:
        return principal, action, resource, context, risk, [], None, None
    delegation = raw.get("delegation")
    chain = [] if delegation is None else _chain(delegation, lookup, authority)
    intent = raw.get("intent")
    if intent is not None:
        intent = _attrs(intent, "intent")
    approval = raw.get("approval")
    if approval is not None and approval.__class__ is not str:
        if not isinstance(approval, str):
            raise _err("approval", f"expected a string, got {type_name(approval)}")
        approval = str.__str__(approval)
    return principal, action, resource, context, risk, chain, intent, approval


def _unsized(raw: Any) -> int:
    """:func:`parse_parts`' count of keys left for a request that is not an exact dict: ``-1``
    (unknown: a mapping's len() need not agree with its get(), so every key is looked up)."""
    if not isinstance(raw, Mapping):
        raise _err("", f"a request must be a JSON object, got {type_name(raw)}")
    return -1


def parse_request(raw: Any, lookup: EntityLookup | None = None, authority: Any = None) -> Request:
    """Validate ``raw`` (docs/requests.md#request) and merge entity data. Raises :class:`RequestError`.

    ``authority`` is the set's :attr:`~policylang.language.policyset.PolicySet.entity_authority`:
    which kinds and types have authoritative stored data (``None``: none)."""
    return Request(*parse_parts(raw, lookup, authority), raw)


def named_actions(names) -> dict[str, Action]:
    """One :class:`Action` without attributes for each name: what :func:`parse_parts` hands
    out for a request whose action is that plain string (an engine keeps one per action
    its set names, so the table is bounded by the set; an action is never changed)."""
    return {name: Action(name, _EMPTY) for name in names}


def parse_parts(raw: Any, lookup: EntityLookup | None = None, authority: Any = None,
                actions: Mapping[str, Action] | None = None) -> tuple:
    """:func:`parse_request` without building a :class:`Request`: the engine's hot path.

    Returns ``(principal, action, resource, context, risk, chain, intent, approval)``.
    ``actions`` (:func:`named_actions`) gives the action of a request whose action is one
    of its names as a plain string (else a new one is made).
    The common case (exact dicts and strings) runs straight through; anything else
    takes the careful path that names the offending field. The roots are read and
    checked in the order of docs/requests.md#request, so the first bad one is named.
    """
    # left: the keys other than principal, action and resource (all three are required)
    left = len(raw) - 3 if raw.__class__ is dict else _unsized(raw)

    p = raw.get("principal")
    if p.__class__ is dict and (pid := p.get("id")).__class__ is str and (pkind := p.get("kind")).__class__ is str:
        pattrs = p.get("attrs")
        if pattrs.__class__ is dict:
            # every decision passes here: _attrs' plain-value check inline (a call costs as
            # much as the loop); anything not a plain scalar goes to _attrs for the rest
            for v in pattrs.values():
                if v.__class__ is not str and v.__class__ not in _PLAIN:
                    pattrs = _attrs(pattrs, "principal.attrs")
                    break
        else:
            pattrs = _EMPTY if pattrs is None else _attrs(pattrs, "principal.attrs")
    else:
        pkind, pid, pattrs = _principal_fields(p, "principal")
    if lookup is not None and (stored := lookup(pkind, pid)) is not None:
        pattrs = _merge(stored, pattrs, authority is not None and authority.principal(pkind))
    # the three objects every decision makes, without an __init__ frame each (the same
    # attributes Entity(...) and Action(...) set)
    principal = _new(Entity)
    principal.category = "principal"
    principal.kind = pkind
    principal.id = pid
    principal.attrs = pattrs

    action = raw.get("action")
    if action.__class__ is str:
        act = actions.get(action) if actions is not None else None
        if act is None:
            act = _new(Action)
            act.name = action
            act.attrs = _EMPTY
    elif action.__class__ is dict and (aname := action.get("name")).__class__ is str:
        # an exact dict with a string name (what an AuthZEN request maps to): _action's
        # mapping case without its isinstance checks
        aattrs = action.get("attrs")
        act = _new(Action)
        act.name = aname
        act.attrs = _EMPTY if aattrs is None else _attrs(aattrs, "action.attrs")
    else:
        act = _action(action)

    r = raw.get("resource")
    if (r.__class__ is dict and (rtype := r.get("type")).__class__ is str
            and ((rid := r.get("id")) is None or rid.__class__ is str)):
        rattrs = r.get("attrs")
        if rattrs.__class__ is dict:
            for v in rattrs.values():  # as for the principal's attrs above
                if v.__class__ is not str and v.__class__ not in _PLAIN:
                    rattrs = _attrs(rattrs, "resource.attrs")
                    break
        else:
            rattrs = _EMPTY if rattrs is None else _attrs(rattrs, "resource.attrs")
    else:
        rtype, rid, rattrs = _resource_fields(r)
    if lookup is not None and rid is not None and (stored := lookup(rtype, rid)) is not None:
        rattrs = _merge(stored, rattrs, authority is not None and authority.resource(rtype))
    res = _new(Entity)
    res.category = "resource"
    res.kind = rtype
    res.id = rid
    res.attrs = rattrs

    if not left:  # nothing but the three required roots
        return principal, act, res, _EMPTY, None, [], None, None
    if left == 1 and (risk := raw.get("risk")).__class__ is dict and len(risk) == 1:
        # the three roots and the common risk, {"score": <a number from 0 to 1>}:
        # _with_optional_parts' first case inline
        score = risk.get("score")
        if (score.__class__ is float or score.__class__ is int) and 0.0 <= score <= 1.0:
            return principal, act, res, _EMPTY, risk, [], None, None
    return _with_optional_parts(raw, left, lookup, authority, principal, act, res)


def task_binding(request: Any, *, strict: bool) -> dict:
    """The identity fields a token or an approval ticket is bound to (docs/zero-standing-privilege.md): principal
    id, action name, resource type and id, the delegation ids, the task id and purpose.

    Raises :class:`RequestError` naming the field. ``strict`` (tokens) also refuses an
    empty delegation id or task id, and a delegation that is not a list even when empty.
    """
    if not isinstance(request, Mapping):
        raise _err("request", "must be an object")
    p = request.get("principal")
    _require_name(p, "id", "principal.id")
    action = _binding_action(request.get("action"))
    r = request.get("resource")
    _require_name(r, "type", "resource.type")
    rid = r.get("id")
    if rid is not None and not isinstance(rid, str):
        raise _err("resource.id", "must be a string")
    ids = _binding_delegation(request.get("delegation"), strict)
    task, purpose = _binding_intent(request.get("intent"), strict)
    return {"principal": p["id"], "action": action, "resource_type": r["type"], "resource_id": rid,
            "task": task, "delegation": ids, "purpose": purpose}


def _require_name(value: Any, key: str, field: str) -> None:
    """For :func:`task_binding`: refuse ``value`` unless it is an object whose ``key`` is a non-empty string."""
    if not isinstance(value, Mapping) or not isinstance(value.get(key), str) or not value[key]:
        raise _err(field, "a non-empty string is required")


def _binding_action(action: Any) -> str:
    """For :func:`task_binding`: the action's name (a string, or an object's ``name``), not empty."""
    if isinstance(action, Mapping):
        action = action.get("name")
    if not isinstance(action, str) or not action:
        raise _err("action.name", "a non-empty string is required")
    return action


def _binding_delegation(chain: Any, strict: bool) -> list[str]:
    """For :func:`task_binding`: the delegation entries' ids. Not strict, an empty value of any type is no chain."""
    if chain is None or (not strict and not chain):
        return []
    if not isinstance(chain, list):
        raise _err("delegation", "must be a list")
    ids = []
    for i, e in enumerate(chain):
        if not isinstance(e, Mapping) or not isinstance(e.get("id"), str) or (strict and not e["id"]):
            raise _err(f"delegation[{i}].id", "a non-empty string is required" if strict else "a string is required")
        ids.append(e["id"])
    return ids


def _binding_intent(intent: Any, strict: bool) -> tuple:
    """For :func:`task_binding`: ``(task id, purpose)`` of the intent, each ``None`` when absent
    (a purpose that is not a string counts as absent)."""
    if intent is None:
        return None, None
    if not isinstance(intent, Mapping):
        raise _err("intent", "must be an object")
    task = intent.get("task_id")
    if task is not None and (not isinstance(task, str) or (strict and not task)):
        raise _err("intent.task_id", "must be a non-empty string" if strict else "must be a string")
    purpose = intent.get("purpose")
    return task, (purpose if isinstance(purpose, str) else None)


def _snapshot(merged: dict) -> dict:
    """A deep copy of merged entity maps, so that the engine owns its entity data: a
    caller changing its mapping after the engine was built changes no decision, cached
    or not (the request cache keys requests alone; docs/engine.md#the-decision-cache).
    Plain data is copied by one marshal round trip (C); other operator data (a YAML date
    …) by ``copy.deepcopy``, and what even that cannot copy is kept as it is."""
    try:
        return marshal.loads(marshal.dumps(merged))
    except ValueError:
        pass
    out: dict = {}
    for kind, ids in merged.items():
        copied = out[kind] = {}
        for eid, attrs in ids.items():
            try:
                copied[eid] = copy.deepcopy(attrs)
            except Exception:  # noqa: BLE001 - an uncopyable value is kept, not refused
                copied[eid] = attrs
    return out


def entity_lookup(*sources: Any) -> EntityLookup | None:
    """One lookup over entity sources, later ones winning: mappings
    ``{kind: {id: attrs}}`` or callables ``(kind, id) -> attrs | None``."""
    sources = tuple(s for s in sources if s)
    if not sources:
        return None
    if all(isinstance(s, Mapping) for s in sources):
        merged: dict[str, dict] = {}
        for s in sources:
            merge_entities(merged, s)
        for kind, ids in merged.items():  # normalised once, here, not on every decision
            for eid, attrs in ids.items():
                if isinstance(attrs, Mapping):
                    try:
                        ids[eid] = _normalised(attrs, f"entities[{kind}][{eid}]")
                    except RequestError:
                        pass  # operator data the loader accepted (a YAML date …): kept as it is
        merged = _snapshot(merged)

        def lookup(kind: str, eid: str):
            ids = merged.get(kind)
            return ids.get(eid) if ids is not None else None
        return lookup

    def lookup_chain(kind: str, eid: str):
        for s in reversed(sources):
            if callable(s):
                found = s(kind, eid)
            else:
                ids = s.get(kind)
                found = ids.get(eid) if ids is not None else None
            if found is not None:
                if found.__class__ is dict:
                    return _attrs(found, f"entities[{kind}][{eid}]")
                if not isinstance(found, Mapping):
                    raise RequestError(f"entities[{kind}][{eid}]", "the entity source returned a non-object")
                return _normalised(found, f"entities[{kind}][{eid}]")
        return None
    return lookup_chain
