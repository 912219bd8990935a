"""JSON Schemas of the service's bodies, for its OpenAPI document (``/openapi.json``).

The handlers validate bodies by hand (it is faster, and every message names the field);
these schemas describe the same shapes for clients and for schema-driven testing.
"""

from __future__ import annotations

_PROPS = {"type": "object", "description": "Free-form attributes", "additionalProperties": True}

SUBJECT = {
    "type": "object",
    "required": ["type", "id"],
    "properties": {"type": {"type": "string"}, "id": {"type": "string"}, "properties": _PROPS},
}
SEARCHED_SUBJECT = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"type": "string"}, "id": {"type": "string", "description": "ignored"},
                   "properties": _PROPS},
}
RESOURCE = SUBJECT
SEARCHED_RESOURCE = SEARCHED_SUBJECT
ACTION = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "properties": _PROPS},
}
CONTEXT = {
    "type": "object",
    "description": "Context of the request. `delegation`, `risk`, `intent` and `approval` are "
                   "lifted into the policylang request's own fields (docs/server.md).",
    "properties": {
        "delegation": {"type": "array", "items": SUBJECT,
                       "description": "the delegation chain, root first, without the subject"},
        "risk": {"type": "object", "properties": {
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "signals": {"type": "array", "items": {"type": "string"}}}},
        "intent": {"type": "object"},
        "approval": {"type": "string"},
    },
    "additionalProperties": True,
}
PAGE = {
    "type": "object",
    "properties": {
        "limit": {"type": "integer", "minimum": 1},
        "token": {"type": "string", "description": "page.next_token of the previous answer"},
        "next_token": {"type": "string", "description": "accepted as a synonym of token"},
    },
}

EVALUATION_REQUEST = {
    "type": "object",
    "required": ["subject", "action", "resource"],
    "properties": {"subject": SUBJECT, "action": ACTION, "resource": RESOURCE, "context": CONTEXT},
}
EVALUATIONS_REQUEST = {
    "type": "object",
    "description": "Top-level subject, action, resource and context are whole-object defaults "
                   "for each item. Without (or with an empty) `evaluations`, the body is one "
                   "evaluation and is answered like /access/v1/evaluation.",
    "properties": {
        "subject": SUBJECT, "action": ACTION, "resource": RESOURCE, "context": CONTEXT,
        "evaluations": {"type": "array", "items": {
            "type": "object",
            "properties": {"subject": SUBJECT, "action": ACTION, "resource": RESOURCE, "context": CONTEXT}}},
        "options": {"type": "object", "properties": {
            "evaluations_semantic": {"type": "string",
                                     "enum": ["execute_all", "deny_on_first_deny", "permit_on_first_permit"]}}},
    },
}
SEARCH_SUBJECT_REQUEST = {
    "type": "object",
    "required": ["subject", "action", "resource"],
    "properties": {"subject": SEARCHED_SUBJECT, "action": ACTION, "resource": RESOURCE, "context": CONTEXT,
                   "page": PAGE},
}
SEARCH_RESOURCE_REQUEST = {
    "type": "object",
    "required": ["subject", "action", "resource"],
    "properties": {"subject": SUBJECT, "action": ACTION, "resource": SEARCHED_RESOURCE, "context": CONTEXT,
                   "page": PAGE},
}
SEARCH_ACTION_REQUEST = {
    "type": "object",
    "required": ["subject", "resource"],
    "properties": {"subject": SUBJECT, "resource": RESOURCE, "context": CONTEXT, "page": PAGE},
}

_ENTITY = {"type": "object", "required": ["id", "kind"],
           "properties": {"id": {"type": "string"}, "kind": {"type": "string"}, "attrs": _PROPS}}
DECIDE_REQUEST = {
    "type": "object",
    "description": "A request of docs/requests.md#request.",
    "required": ["principal", "action", "resource"],
    "properties": {
        "principal": _ENTITY,
        "action": {"oneOf": [{"type": "string"}, {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "attrs": _PROPS}}]},
        "resource": {"type": "object", "required": ["type"],
                     "properties": {"type": {"type": "string"}, "id": {"type": "string"}, "attrs": _PROPS}},
        "context": _PROPS,
        "risk": CONTEXT["properties"]["risk"],
        "delegation": {"type": "array", "items": _ENTITY},
        "intent": {"type": "object"},
        "approval": {"type": "string"},
    },
}

DECISION = {
    "type": "object",
    "description": "A decision of docs/requests.md#decision.",
    "required": ["decision", "rules", "reasons", "grants", "approvers", "errors", "delegation_path",
                 "policy_version"],
    "properties": {
        "decision": {"type": "string", "enum": ["allow", "deny", "require_approval"]},
        "rules": {"type": "array", "items": {"type": "string"}},
        "reasons": {"type": "array", "items": {"type": "string"}},
        "grants": {"type": "array", "items": {"type": "object"}},
        "approvers": {"type": "array", "items": {"type": "string"}},
        "errors": {"type": "array", "items": {"type": "object"}},
        "delegation_path": {"type": "array", "items": {"type": "string"}},
        "policy_version": {"type": "string"},
    },
}
EVALUATION_RESPONSE = {
    "type": "object",
    "required": ["decision"],
    "properties": {"decision": {"type": "boolean", "description": "true only for allow"},
                   "context": {"type": "object", "description": "the fields of docs/requests.md#decision, or {error}"}},
}
EVALUATIONS_RESPONSE = {
    "type": "object",
    "properties": {"evaluations": {"type": "array", "items": EVALUATION_RESPONSE},
                   "decision": {"type": "boolean"}, "context": {"type": "object"}},
}
SEARCH_RESPONSE = {
    "type": "object",
    "required": ["results", "page"],
    "properties": {"results": {"type": "array", "items": {"type": "object"}},
                   "page": {"type": "object", "properties": {"next_token": {"type": "string"}}}},
}
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["status", "message"], "properties": {
        "status": {"type": "integer"}, "message": {"type": "string"}}}},
}


def body(schema: dict) -> dict:
    """``openapi_extra`` for a route whose JSON body has ``schema``."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


#: the optional header of the AuthZEN evaluation routes (docs/server.md#limits)
IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    "description": "With a limit store: the evaluation's idempotency_key, so that a retry with the same "
                   "key consumes its limits once (on a batch, item i's key is the value with #i "
                   "appended). Ignored without a limit store.",
}


def with_idempotency(extra: dict) -> dict:
    """``extra`` (an ``openapi_extra``) declaring :data:`IDEMPOTENCY_HEADER`."""
    return {**extra, "parameters": [*extra.get("parameters", ()), IDEMPOTENCY_HEADER]}


def responses(ok: dict, *, post: bool = True) -> dict:
    out = {200: {"description": "OK", "content": {"application/json": {"schema": ok}}}}
    if post:
        out[400] = {"description": "A malformed body (the message names the field)",
                    "content": {"application/json": {"schema": ERROR}}}
        out[413] = {"description": "The body is larger than the service accepts",
                    "content": {"application/json": {"schema": ERROR}}}
    return out
