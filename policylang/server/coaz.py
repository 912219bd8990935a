"""COAZ-shaped AuthZEN requests mapped onto policylang's principal and delegation
(docs/server.md#coaz).

A COAZ PEP (the COAZ-MCP binding: a gateway's MCP middleware, an MCP server) sends the
*user* as the AuthZEN ``subject`` (``type: identity``, ``id`` from the token's
subject-identity claim) and the *agent* that acts for them as ``context.agent``
(``$token.?client_id``: a string). policylang's own guard sends the agent as the subject
and the user in ``context.delegation``. So that one policy set decides both, a request
whose ``context`` carries ``agent`` is mapped::

    context.agent  "<id>"                      -> principal {kind: "agent", id, attrs: {}}
    context.agent  {type?, id, properties?}    -> principal {kind: "agent", id, attrs: properties}
    subject.id / .properties                   -> delegation [{kind: "human", id, attrs: properties}]
    subject.type                               -> context.subject_type (untrusted, kept as a fact)
    action, resource, context.risk / intent / approval, the rest of context
                                               -> as for any AuthZEN request

Choices (each refused case is a 400 naming the AuthZEN field, never a guess):

* ``context.agent`` alone triggers the mapping, whatever ``subject.type`` says: the
  binding lets a declared mapping set ``subject.type`` to anything
  (``treasury_user`` in its conditional example) and says it is untrusted, while the
  agent is in ``context.agent`` "regardless". The kinds are fixed (``agent``,
  ``human``) rather than taken from the request, so an untrusted ``type`` can neither
  pick which rules apply nor dodge a kind's authoritative entity data.
* ``context.delegation`` together with ``context.agent`` is ambiguous (two chains) and
  refused, naming ``context.delegation``.
* ``context.subject_type`` is where ``subject.type`` goes, so a request that already has
  it is refused, naming it.
* The binding defines no chain beyond user -> agent (no actor chain), so the delegation
  has exactly one entry.
* In a batch with a top-level ``subject``, an ``evaluations`` entry that is COAZ-shaped
  may not bring its own ``subject``: the binding forbids per-entry subjects "to close off
  identity smuggling". (A batch without a top-level subject may carry a whole COAZ
  request per entry.) A subject search is refused: its candidates would replace the
  agent, not the user.

Pure functions over parsed JSON; :class:`CoazError` carries the field and the reason,
and :mod:`policylang.server.authzen` turns it into its ``BadRequest``.
"""

from __future__ import annotations

from typing import Any

from ..evaluation.request import MAX_VALUE_DEPTH
from ..evaluation.runtime import type_name

__all__ = ["AGENT_KIND", "SUBJECT_TYPE", "USER_KIND", "CoazError", "agent_entity", "assemble", "check_depth", "is_coaz"]

#: the kind of the agent (the principal) of a COAZ request
AGENT_KIND = "agent"
#: the kind of the user (the root of the delegation) of a COAZ request
USER_KIND = "human"
#: the context key that keeps the request's ``subject.type``
SUBJECT_TYPE = "subject_type"


class CoazError(ValueError):
    """A COAZ-shaped request that cannot be mapped: ``field`` is the AuthZEN field."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def is_coaz(body: Any) -> bool:
    """Whether an AuthZEN evaluation body (or one ``evaluations`` entry merged with its
    defaults) is COAZ-shaped: its ``context`` has a non-null ``agent``."""
    if body.__class__ is not dict:
        return False
    ctx = body.get("context")
    return ctx.__class__ is dict and ctx.get("agent") is not None


def agent_entity(value: Any, field: str) -> dict:
    """``context.agent`` (not null) -> the principal ``{id, kind, attrs}``.

    A string is the agent's id (what ``$token.?client_id`` yields); an object is an
    AuthZEN entity ``{type, id, properties}`` whose ``type``, when present, must be
    ``"agent"``. Unknown fields of the object are ignored, as on any AuthZEN entity."""
    if value.__class__ is str:
        if not value:
            raise CoazError(field, "must not be empty")
        return {"id": value, "kind": AGENT_KIND, "attrs": {}}
    if value.__class__ is not dict:
        raise CoazError(field, f"expected a string (the agent's id) or an object with id, got {type_name(value)}")
    aid = value.get("id")
    if aid.__class__ is not str:
        raise CoazError(field + ".id", "required" if aid is None else f"expected a string, got {type_name(aid)}")
    if not aid:
        raise CoazError(field + ".id", "must not be empty")
    atype = value.get("type")
    if atype is not None:
        if atype.__class__ is not str:
            raise CoazError(field + ".type", f"expected a string, got {type_name(atype)}")
        if atype != AGENT_KIND:
            raise CoazError(field + ".type", f"must be {AGENT_KIND!r} (the agent's kind is fixed), got {atype!r}")
    props = value.get("properties")
    if props is None:
        props = {}
    elif props.__class__ is not dict:
        raise CoazError(field + ".properties", f"expected an object, got {type_name(props)}")
    else:
        check_depth(props, field + ".properties")
    return {"id": aid, "kind": AGENT_KIND, "attrs": props}


def check_depth(value: Any, field: str, depth: int = 1) -> None:
    """Raise, naming the path, where ``value`` nests deeper than the engine takes
    (docs/requests.md#limits), so the error names the AuthZEN field it came from rather
    than the policylang one it was moved to."""
    if value.__class__ is dict:
        if depth > MAX_VALUE_DEPTH:
            raise CoazError(field, f"nested deeper than {MAX_VALUE_DEPTH} levels")
        for k, x in value.items():
            if x.__class__ is dict or x.__class__ is list:
                check_depth(x, f"{field}.{k}", depth + 1)
    elif value.__class__ is list:
        if depth > MAX_VALUE_DEPTH:
            raise CoazError(field, f"nested deeper than {MAX_VALUE_DEPTH} levels")
        for i, x in enumerate(value):
            if x.__class__ is dict or x.__class__ is list:
                check_depth(x, f"{field}[{i}]", depth + 1)


def assemble(subject: dict, action: dict, resource: dict, plain: dict, lifted: dict, prefix: str = "") -> dict:
    """The policylang request of a COAZ-shaped AuthZEN request, from its converted parts:
    ``subject`` is the converted subject (``{id, kind, attrs}`` from ``subject.id``,
    ``.type``, ``.properties``), ``plain`` the context without its lifted keys and
    ``lifted`` the lifted ones, ``agent`` (from :func:`agent_entity`) among them. Nothing
    given is changed: the parts of a batch's defaults are shared by its entries."""
    check_depth(subject["attrs"], prefix + "subject.properties")
    context = dict(plain)
    context[SUBJECT_TYPE] = subject["kind"]
    req = {
        "principal": lifted["agent"],
        "action": action,
        "resource": resource,
        "context": context,
        "delegation": [{"id": subject["id"], "kind": USER_KIND, "attrs": subject["attrs"]}],
    }
    for key in ("risk", "intent", "approval"):
        v = lifted.get(key)
        if v is not None:
            req[key] = v
    return req
