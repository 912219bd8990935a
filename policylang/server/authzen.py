"""The OpenID AuthZEN Authorization API 1.0 mapped onto policylang requests (docs/server.md).

Pure functions over parsed JSON: no web framework here, so the mapping is tested (and
reused) on its own. Every problem raises :class:`BadRequest` whose message starts with
the AuthZEN field it is about (``subject.id: required``,
``evaluations[2].resource.type: expected a string, got number``).

Mapping (docs/server.md)::

    subject.type / id / properties     -> principal.kind / id / attrs
    action.name / properties           -> action.name / attrs
    resource.type / id / properties    -> resource.type / id / attrs
    (other members beside type/id/name -> attrs too; ``properties`` wins a clash)
    context                            -> context, except that, when of policylang's shape,
    context.delegation [{type, id, properties}, ...]  -> delegation [{kind, id, attrs}]
    context.risk {score: number, signals: [...]}      -> risk
    context.intent {...}                               -> intent
    context.approval "ticket" (or an AARP object)      -> approval
    context.agent (a COAZ request, always)  -> principal; subject -> delegation root (coaz.py)

A reserved key of another shape (``"risk": "high"``, ``"approval": true``) stays in
``context`` for the policy to read; once lifted a key is checked strictly. A JSON
``null`` counts as absent (docs/requests.md#request).
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any, Iterable, Mapping

from ..language.errors import RequestError
from ..evaluation.runtime import type_name
from . import coaz

__all__ = [
    "BadRequest", "to_request", "parse_batch", "Batch", "SEMANTICS", "parse_search", "Search",
    "request_error", "decision_response", "decision_context", "item_error", "lifted_keys",
]

#: the batch semantics of ``options.evaluations_semantic`` (docs/server.md)
SEMANTICS = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")

#: keys of ``context`` lifted into their own request fields
LIFTED = ("delegation", "risk", "intent", "approval")
#: ... and the COAZ agent (docs/server.md#coaz), which turns the request around
_RESERVED = LIFTED + ("agent",)

#: the largest page a search answers (a bigger ``page.limit`` is clamped to it)
MAX_PAGE = 1000


class BadRequest(ValueError):
    """A malformed body: answered 400 with ``{"error": {"status": 400, "message": …}}``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status
        self.message = message


def _bad(field: str, message: str) -> BadRequest:
    return BadRequest(f"{field}: {message}" if field else message)


def _object(value: Any, field: str, required: bool) -> dict | None:
    if value is None:
        if required:
            raise _bad(field, "required")
        return None
    if value.__class__ is not dict:
        raise _bad(field, f"expected an object, got {type_name(value)}")
    return value


def _string(value: Any, field: str) -> str:
    if value.__class__ is str:
        return value
    if value is None:
        raise _bad(field, "required")
    raise _bad(field, f"expected a string, got {type_name(value)}")


#: members of an AuthZEN entity / action that are not attributes
_ENTITY_FIELDS = frozenset(("type", "id", "properties"))
_ACTION_FIELDS = frozenset(("name", "properties"))
#: attributes never taken from beside type/id: ``proven_by`` says how the principal was
#: proven (docs/server.md#workload-identity) and only the proof may set it
_NOT_LIFTED = frozenset(("proven_by",))


def _properties(obj: dict, field: str, fields: frozenset = _ENTITY_FIELDS) -> dict:
    """The entity's attributes: ``properties``, over the members beside its own fields
    (``{"type": "todo", "id": "t", "ownerID": "…"}``, the draft-00 shape)."""
    props = obj.get("properties")
    if props is not None and props.__class__ is not dict:
        raise _bad(field + ".properties", f"expected an object, got {type_name(props)}")
    if len(obj) > len(fields) or any(k not in fields for k in obj):
        extra = {k: v for k, v in obj.items()
                 if k not in fields and k not in _NOT_LIFTED and v is not None}
        if extra:
            return {**extra, **props} if props else extra
    return props if props is not None else {}


def _entity(value: Any, field: str, *, need_id: bool = True) -> tuple[str, str | None, dict]:
    """``{type, id, properties}`` -> (type, id, properties). ``need_id=False`` for the
    searched entity, whose id is optional and ignored."""
    obj = _object(value, field, True)
    etype = _string(obj.get("type"), field + ".type")
    eid = None
    if need_id:
        eid = _string(obj.get("id"), field + ".id")
    return etype, eid, _properties(obj, field)


def _action(value: Any, field: str) -> tuple[str, dict]:
    obj = _object(value, field, True)
    return _string(obj.get("name"), field + ".name"), _properties(obj, field, _ACTION_FIELDS)


def _is_chain(value: Any) -> bool:
    """policylang's delegation shape: an array of entity objects (checked strictly once
    lifted: a ``null`` entry or an entry without ``id`` is a 400, not a dropped chain)."""
    return value.__class__ is list and all(e.__class__ is dict or e is None for e in value)


def _is_risk(value: Any) -> bool:
    """policylang's risk shape: an object whose ``score`` is a number and ``signals`` an
    array, when present (the range and the entries are checked strictly once lifted)."""
    if value.__class__ is not dict:
        return False
    score = value.get("score")
    if score is not None and score.__class__ is not int and score.__class__ is not float:
        return False
    signals = value.get("signals")
    return signals is None or signals.__class__ is list


#: reserved key -> does this value have policylang's shape (then it is lifted)?
_SHAPES = {
    "delegation": _is_chain,
    "risk": _is_risk,
    "intent": lambda v: v.__class__ is dict,
    # a ticket id, or an Approvals over AuthZEN approval object (docs/server.md#aarp)
    "approval": lambda v: v.__class__ is str or v.__class__ is dict,
}


def lifted_keys(ctx: Mapping) -> list[str]:
    """The reserved keys of an AuthZEN ``context`` that are lifted into their own request
    roots: ``agent`` whenever present (a COAZ request), the others only in policylang's
    shape. Every other key stays in ``context``."""
    out = []
    for key in _RESERVED:
        v = ctx.get(key)
        if v is None:
            continue
        if key == "agent" or _SHAPES[key](v):
            out.append(key)
    return out


def _context(value: Any, field: str) -> tuple[dict, dict]:
    """(plain context, lifted fields)."""
    ctx = _object(value, field, False)
    if not ctx:
        return {}, {}
    if "delegation" not in ctx and "risk" not in ctx and "intent" not in ctx and "approval" not in ctx \
            and "agent" not in ctx:
        return ctx, {}
    keys = lifted_keys(ctx)
    # a lifted key leaves context, and so does a reserved key that is null (absent)
    plain = {k: v for k, v in ctx.items() if k not in keys and not (v is None and k in _RESERVED)}
    if not keys:
        return plain, {}
    lifted: dict = {}
    chain = ctx.get("delegation") if "delegation" in keys else None
    if chain is not None:
        out = []
        for i, entry in enumerate(chain):
            where = f"{field}.delegation[{i}]"
            if entry is None:
                raise _bad(where, "null entry")
            etype, eid, props = _entity(entry, where)
            out.append({"kind": etype, "id": eid, "attrs": props})
        lifted["delegation"] = out
    for key in ("risk", "intent", "approval"):
        if key in keys:
            lifted[key] = ctx[key]
    agent = ctx.get("agent")
    if agent is not None:  # a COAZ request (docs/server.md#coaz): always strict
        if ctx.get("delegation") is not None:
            raise _bad(field + ".delegation", "not allowed with context.agent (a COAZ request: "
                                              "the subject delegates to the agent)")
        if plain.get(coaz.SUBJECT_TYPE) is not None:
            raise _bad(f"{field}.{coaz.SUBJECT_TYPE}", "not allowed with context.agent (a COAZ request: "
                                                       "it carries subject.type)")
        try:
            lifted["agent"] = coaz.agent_entity(agent, field + ".agent")
        except coaz.CoazError as e:
            raise _bad(e.field, e.reason) from None
    return plain, lifted


def to_request(body: Mapping, prefix: str = "", *, search: str | None = None) -> dict:
    """An AuthZEN evaluation request -> a policylang request dict (docs/requests.md#request).

    ``prefix`` names the place of ``body`` in the whole document (``evaluations[3].``) so
    that messages point at the field. ``search`` (``"subject"``/``"resource"``/
    ``"action"``) relaxes the searched entity: its id (or the action) may be absent.

    The common well-formed shape (plain objects with exactly their own members, string
    type/id/name, ``properties`` an object or absent, a ``context`` without reserved keys
    or with only a policylang-shaped ``risk``) is mapped by a short path; everything else
    by the general one. Both give the same dict (tests/test_authzen_fastmap.py).
    """
    return _to_request(body, prefix, search, _subject_part, _action_part, _resource_part, _context_part)


def _to_request_general(body: Mapping, prefix: str = "", *, search: str | None = None) -> dict:
    """:func:`to_request` by the general mapping alone (what the short path is tested against)."""
    return _to_request(body, prefix, search, _subject_general, _action_general, _resource_general,
                       _context_general)


def _to_request(body: Mapping, prefix: str, search: str | None, subject_part, action_part, resource_part,
                context_part) -> dict:
    principal = subject_part(body.get("subject"), prefix, search == "subject")
    if search == "action":
        action = {"name": "", "attrs": {}}
    else:
        action = action_part(body.get("action"), prefix)
    resource = resource_part(body.get("resource"), prefix, search == "resource")
    context = context_part(body.get("context"), prefix)
    if search == "subject" and "agent" in context[1]:
        raise _bad(prefix + "context.agent", "a subject search cannot take a COAZ agent: its candidates "
                                             "would stand for the agent, not the user")
    return _assemble(principal, action, resource, context, prefix)


# The parts: each ``_<part>_part`` maps the common shape itself and hands anything else
# to ``_<part>_general`` (the same result; only the general path raises).

def _subject_part(value: Any, prefix: str, searched: bool = False) -> dict:
    if value.__class__ is dict and not searched:
        etype = value.get("type")
        eid = value.get("id")
        if etype.__class__ is str and eid.__class__ is str:
            n = len(value)
            if n == 2:  # exactly type and id
                return {"id": eid, "kind": etype, "attrs": {}}
            if n == 3:
                props = value.get("properties")
                if props.__class__ is dict:  # exactly type, id and an object of properties
                    return {"id": eid, "kind": etype, "attrs": props}
    return _subject_general(value, prefix, searched)


def _subject_general(value: Any, prefix: str, searched: bool = False) -> dict:
    stype, sid, sprops = _entity(value, prefix + "subject", need_id=not searched)
    return {"id": sid if sid is not None else "", "kind": stype, "attrs": sprops}


def _action_part(value: Any, prefix: str) -> dict:
    if value.__class__ is dict:
        name = value.get("name")
        if name.__class__ is str:
            n = len(value)
            if n == 1:
                return {"name": name, "attrs": {}}
            if n == 2:
                props = value.get("properties")
                if props.__class__ is dict:
                    return {"name": name, "attrs": props}
    return _action_general(value, prefix)


def _action_general(value: Any, prefix: str) -> dict:
    name, props = _action(value, prefix + "action")
    return {"name": name, "attrs": props}


def _resource_part(value: Any, prefix: str, searched: bool = False) -> dict:
    if value.__class__ is dict and not searched:
        etype = value.get("type")
        eid = value.get("id")
        if etype.__class__ is str and eid.__class__ is str:
            n = len(value)
            if n == 2:
                return {"type": etype, "id": eid, "attrs": {}}
            if n == 3:
                props = value.get("properties")
                if props.__class__ is dict:
                    return {"type": etype, "id": eid, "attrs": props}
    return _resource_general(value, prefix, searched)


def _resource_general(value: Any, prefix: str, searched: bool = False) -> dict:
    rtype, rid, rprops = _entity(value, prefix + "resource", need_id=not searched)
    return {"type": rtype, "id": rid, "attrs": rprops}


def _context_part(value: Any, prefix: str) -> tuple[dict, dict]:
    if value is None:
        return {}, {}
    if value.__class__ is dict and "delegation" not in value and "intent" not in value \
            and "approval" not in value and "agent" not in value:
        if "risk" not in value:  # no reserved key: all of it is the plain context
            return (value, {}) if value else ({}, {})
        risk = value.get("risk")
        if risk.__class__ is dict and _is_risk(risk):  # only risk, and lifted
            return {k: v for k, v in value.items() if k != "risk"}, {"risk": risk}
    return _context_general(value, prefix)


def _context_general(value: Any, prefix: str) -> tuple[dict, dict]:
    return _context(value, prefix + "context")


def _assemble(principal: dict, action: dict, resource: dict, context: tuple[dict, dict],
              prefix: str = "") -> dict:
    plain, lifted = context
    if "agent" in lifted:
        try:
            return coaz.assemble(principal, action, resource, plain, lifted, prefix)
        except coaz.CoazError as e:
            raise _bad(e.field, e.reason) from None
    req = {"principal": principal, "action": action, "resource": resource, "context": plain}
    if lifted:
        req.update(lifted)
    return req


def request_error(e: RequestError, prefix: str = "") -> BadRequest:
    """The engine's :class:`RequestError` (named in docs/requests.md#request terms) renamed to the AuthZEN
    field the caller sent (``risk.score`` -> ``context.risk.score``)."""
    field = e.field or ""
    return _bad(prefix + authzen_field(field) if field else prefix.rstrip("."), e.reason)


def authzen_field(field: str) -> str:
    """Rename a docs/requests.md#request field path to the AuthZEN one it came from."""
    head, sep, rest = field.partition(".")
    base = head.split("[", 1)[0]
    if base == "principal":
        return "subject" + sep + _rename_leaf(rest)
    if base == "resource":
        return "resource" + sep + _rename_leaf(rest)
    if base == "action":
        return "action" + sep + _rename_leaf(rest)
    if base == "delegation":
        return "context." + head + sep + _rename_leaf(rest)
    if base in ("risk", "intent", "approval"):
        return "context." + field
    return field


def _rename_leaf(rest: str) -> str:
    first, sep, tail = rest.partition(".")
    first = {"kind": "type", "attrs": "properties"}.get(first, first)
    return first + sep + tail


# ------------------------------------------------------------------------------- responses

def decision_context(body: Mapping, default: bool) -> bool:
    """Whether the answers to ``body`` carry the decision context: ``options.decision_context``
    (a boolean) when given, else ``default`` (docs/server.md#decision-context)."""
    options = body.get("options")
    if options is None:
        return default
    if options.__class__ is not dict:
        raise _bad("options", f"expected an object, got {type_name(options)}")
    v = options.get("decision_context")
    if v is None:
        return default
    if v is not True and v is not False:
        raise _bad("options.decision_context", f"expected a boolean, got {type_name(v)}")
    return v


def decision_response(decision, context: bool = True) -> dict:
    """``{"decision": <true only for allow>, "context": {…the fields of docs/requests.md#decision…}}``,
    or just ``{"decision": …}`` without ``context``.

    The context is exactly ``Decision.to_dict()``, built without copying the decision's
    lists of strings: the answer is serialised at once and never changed."""
    d = decision.decision
    if not context:
        return {"decision": d == "allow"}
    grants, errors = decision.grants, decision.errors
    return {"decision": d == "allow", "context": {
        "decision": d,
        "rules": decision.rules,
        "reasons": decision.reasons,
        "grants": [{"rule": g["rule"], "scopes": g["scopes"], "ttl": g["ttl"]} for g in grants] if grants else [],
        "approvers": decision.approvers,
        "errors": [{"rule": e["rule"], "message": e["message"]} for e in errors] if errors else [],
        "delegation_path": decision.delegation_path,
        "policy_version": decision.policy_version,
    }}


def item_error(message: str, status: int = 400) -> dict:
    """A batch item that could not be evaluated: denied, for itself alone."""
    return {"decision": False, "context": {"error": {"status": status, "message": message}}}


# ------------------------------------------------------------------------------------ batch

class Batch:
    """A parsed ``/access/v1/evaluations`` body. ``items`` is None when the body has no
    (or an empty) ``evaluations`` array: it is then a single evaluation. Otherwise each
    item is a request dict, or a :class:`BadRequest` for an invalid item."""

    __slots__ = ("items", "semantic")

    def __init__(self, items: list | None, semantic: str):
        self.items = items
        self.semantic = semantic


_PARTS = (("subject", _subject_part), ("action", _action_part), ("resource", _resource_part),
          ("context", _context_part))
#: the same by the general mapping alone (what tests/test_authzen_fastmap.py compares with)
_PARTS_GENERAL = (("subject", _subject_general), ("action", _action_general), ("resource", _resource_general),
                  ("context", _context_general))


#: stand-ins for the parts a top-level default is checked without
_PROBE = {"principal": {"id": "probe", "kind": "probe", "attrs": {}}, "action": {"name": "probe", "attrs": {}},
          "resource": {"type": "probe", "id": None, "attrs": {}}}


def _check_default(key: str, part) -> None:
    """A top-level default checked as the engine checks a request (values, not only
    shapes: ``context.risk.score`` out of range), so that a bad one is the body's 400
    named at the top level rather than each inheriting item's."""
    from ..evaluation.request import parse_request
    if key == "context":
        plain, lifted = part
        probe = {**_PROBE, "context": plain, **{k: v for k, v in lifted.items() if k != "agent"}}
        if probe.get("approval").__class__ is dict:  # an AARP reference: checked by the profile
            del probe["approval"]
    else:
        probe = {**_PROBE, {"subject": "principal"}.get(key, key): part}
    try:
        parse_request(probe)
    except RequestError as e:
        raise request_error(e) from None


def parse_batch(body: Mapping) -> Batch:
    """Parse an evaluations body. Whole-body problems raise :class:`BadRequest`; a bad item
    becomes a :class:`BadRequest` in its place."""
    return _parse_batch(body, _PARTS)


def _parse_batch_general(body: Mapping) -> Batch:
    """:func:`parse_batch` by the general mapping alone (what the short path is tested against)."""
    return _parse_batch(body, _PARTS_GENERAL)


def _parse_batch(body: Mapping, parts_of) -> Batch:
    options = _object(body.get("options"), "options", False) or {}
    semantic = options.get("evaluations_semantic")
    if semantic is None:
        semantic = "execute_all"
    elif semantic.__class__ is not str:
        raise _bad("options.evaluations_semantic", f"expected a string, got {type_name(semantic)}")
    elif semantic not in SEMANTICS:
        raise _bad("options.evaluations_semantic", f"must be one of {', '.join(SEMANTICS)}; got {json.dumps(semantic)}")
    items = body.get("evaluations")
    if items is None or items == []:
        return Batch(None, semantic)
    if items.__class__ is not list:
        raise _bad("evaluations", f"expected an array, got {type_name(items)}")
    # The top-level objects are whole-object defaults: each is converted once, and an item
    # that inherits one shares it. An invalid default is the whole body's 400, named at
    # the top level, even when every item brings its own.
    defaults: list = []
    for key, convert in parts_of:
        v = body.get(key)
        if v is None:
            defaults.append((convert, None))
            continue
        if v.__class__ is not dict:
            raise _bad(key, f"expected an object, got {type_name(v)}")
        part = convert(v, "")
        _check_default(key, part)
        defaults.append((convert, part))
    (subject_part, subject), (action_part, action), (resource_part, resource), (context_part, context) = defaults
    out: list = []
    append = out.append
    coaz_subject = body.get("subject") is not None  # an entry may not replace it under a COAZ context
    for i, item in enumerate(items):
        if item.__class__ is not dict:
            append(_bad(f"evaluations[{i}]", f"expected an object, got {type_name(item)}"))
            continue
        prefix = f"evaluations[{i}]."
        try:
            # each part from the item, else the top-level default, else the item's own
            # absent field named (in this order: the first problem is the one answered)
            v = item.get("subject")
            p = subject_part(v, prefix) if v is not None or subject is None else subject
            v = item.get("action")
            a = action_part(v, prefix) if v is not None or action is None else action
            v = item.get("resource")
            r = resource_part(v, prefix) if v is not None or resource is None else resource
            v = item.get("context")
            c = context_part(v, prefix) if v is not None or context is None else context
            lifted = c[1]
            if not lifted:
                append({"principal": p, "action": a, "resource": r, "context": c[0]})
                continue
            if coaz_subject and "agent" in lifted and item.get("subject") is not None:
                raise _bad(prefix + "subject", "not allowed under a COAZ context.agent: the top-level "
                                               "subject is the user of every evaluation")
            append(_assemble(p, a, r, c, prefix))
        except BadRequest as e:
            append(e)
    return Batch(out, semantic)


# ----------------------------------------------------------------------------------- search

class Search:
    """A parsed search body: the request template, what is searched, where to resume."""

    __slots__ = ("what", "request", "entity_type", "limit", "after", "query_digest")

    def __init__(self, what: str, request: dict, entity_type: str | None, limit: int,
                 after: str | None, query_digest: str):
        self.what = what
        self.request = request
        self.entity_type = entity_type
        self.limit = limit
        self.after = after
        self.query_digest = query_digest


def parse_search(body: Mapping, what: str) -> Search:
    """Parse a ``/access/v1/search/{subject,resource,action}`` body."""
    request = to_request(body, search=what)
    page = _object(body.get("page"), "page", False) or {}
    limit = page.get("limit")
    if limit is None:
        limit = MAX_PAGE
    elif limit.__class__ is not int:
        raise _bad("page.limit", f"expected an integer, got {type_name(limit)}")
    elif limit < 1:
        raise _bad("page.limit", f"must be at least 1, got {limit}")
    limit = min(limit, MAX_PAGE)
    # The query (the body without its page) fixes the result order; a token from another
    # query is refused rather than silently resuming somewhere unrelated.
    query = {k: v for k, v in body.items() if k != "page"}
    for k in ("subject", "resource"):
        if what == k and isinstance(query.get(k), dict):
            query[k] = {kk: vv for kk, vv in query[k].items() if kk != "id"}
    if what == "action":
        query.pop("action", None)
    digest = hashlib.sha256(json.dumps([what, query], sort_keys=True, default=str).encode("utf-8",
                                                                                           "surrogatepass")).hexdigest()[:16]
    token = page.get("token")
    field = "page.token"
    if token is None:
        token = page.get("next_token")
        field = "page.next_token"
    after = None
    if token is not None and token != "":
        if token.__class__ is not str:
            raise _bad(field, f"expected a string, got {type_name(token)}")
        after = _read_token(token, digest, field)
    if what == "subject":
        etype = request["principal"]["kind"]
    elif what == "resource":
        etype = request["resource"]["type"]
    else:
        etype = None
    return Search(what, request, etype, limit, after, digest)


def make_token(after: str, digest: str) -> str:
    """An opaque continuation token: where to resume, bound to the query it came from.
    It carries everything needed, so any replica can resume it."""
    raw = json.dumps({"a": after, "q": digest}, separators=(",", ":")).encode("utf-8", "surrogatepass")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _read_token(token: str, digest: str, field: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw.decode("utf-8", "surrogatepass"))
        after, q = data["a"], data["q"]
        if not isinstance(after, str) or not isinstance(q, str):
            raise ValueError
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise _bad(field, "not a token this service issued") from None
    if q != digest:
        raise _bad(field, "the token belongs to a different search")
    return after


def search_candidates(names: Iterable[str], after: str | None) -> list[str]:
    """The sorted candidates strictly after ``after`` (all of them without one)."""
    ordered = names if isinstance(names, list) else sorted(names)
    if after is None:
        return ordered
    import bisect
    return ordered[bisect.bisect_right(ordered, after):]
