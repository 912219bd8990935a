"""The COAZ-MCP mapping engine (OpenID "COAZ-MCP: COAZ Binding for the Model Context
Protocol", Draft 1; docs/agents.md#mcp-guard): an MCP JSON-RPC request and the validated
access token's claims in, the AuthZEN Access Evaluation (or Access Evaluations) request
out, exactly as the binding defines it.

::

    from policylang.integrations.coaz_mapping import Mapper

    mapper = Mapper(server_id="https://mcp.example.com")
    built = mapper.build("tools/call", {"name": "get_customer", "arguments": {"id": "c-1"}},
                         claims, declared=tool_input_schema.get("x-authzen-mapping"))
    built.api       # "evaluation" or "evaluations" (the envelope of the mapping)
    built.body      # the AuthZEN request body
    mapper.build("ping", {}, claims)          # None: a pass-through operation
    mapper.build("frobnicate", {}, claims)    # raises UnknownMethod (deny, -32001)

* **Default mappings** for every MCP method the binding lists (lifecycle, tools,
  resources, prompts, completion, logging, tasks); ``ping`` and ``notifications/*`` are
  pass-through; any other method raises :class:`UnknownMethod` (an authorization denial)
  unless the deployment configured a mapping for it (``methods=``; :data:`EXTRA_MAPPINGS`
  maps ``server/discover`` and ``resources/templates/list``, which the binding does not). The
  server-initiated requests are out of the binding's scope and denied like unknown ones.
* **Declared mappings** (a tool's ``inputSchema["x-authzen-mapping"]``) override the
  default ``tools/call`` mapping for that tool only.
* **Values**: a string that starts with ``$`` is a CEL expression over ``params`` and
  ``token``; ``$$…`` is the literal ``$…``; anything else is a literal. Expressions are
  evaluated with cel-python (``celpy``), never with Python ``eval``, and bounded: the
  expression's length and number of macros, the size of the inputs and of the result.
* **Absent**: CEL optional selection (``token.?client_id``) omits the field when the key
  is missing; plain selection of a missing key is an evaluation error. cel-python 0.5
  does not parse ``.?``, so an expression that *is* a selection path
  (``token.?client_id``, ``params.?arguments.?region``, ``token["sub"]``) is resolved by
  the path walker here with CEL's semantics; ``.?`` inside a larger expression is a
  mapping error (fail closed), never silently dropped.
* **Trust-anchored subject**: the effective ``subject.id`` of every decision must equal
  the subject-identity claim (``sub``, or the designated on-behalf-of claim) of the
  validated token, else a mapping error and no PDP call. A declared mapping may override
  ``subject.id`` from another source only when the mapper was built with
  ``allow_subject_override=True`` (a warning is logged each time). An omitted subject or
  ``subject.id`` gets the claim, an omitted ``subject.type`` gets ``identity``; a
  per-entry ``subject`` in ``evaluations`` is a mapping error.
* **``$token.aud``** as the server's ``resource.id``: a string is used as it is; from a
  list the member that is this server (``server_id``) is taken; anything else is a
  mapping error. With ``server_id`` configured and ``use_server_id=True`` the configured
  identifier is used directly.

Errors: :class:`MappingError` (JSON-RPC ``-32602``) and :class:`UnknownMethod`
(``-32001``). Pure Python over parsed JSON; thread-safe (compiled programs are cached).
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("policylang.integrations.mcp")

__all__ = [
    "DEFAULT_MAPPINGS",
    "EXTRA_MAPPINGS",
    "DENIED",
    "MAPPING_ERROR",
    "MAPPING_KEY",
    "PASS_THROUGH",
    "PDP_ERROR",
    "SERVER_INITIATED",
    "Built",
    "Mapper",
    "MappingError",
    "UnknownMethod",
    "resolve_value",
]

#: where a tool declares its mapping (inside ``inputSchema``)
MAPPING_KEY = "x-authzen-mapping"
#: JSON-RPC codes of the binding's error handling section
MAPPING_ERROR = -32602
DENIED = -32001
PDP_ERROR = -32603

#: bounds on what an expression may cost (CEL has no loops, but comprehensions nest)
MAX_EXPRESSION = 1024
MAX_MACROS = 4
MAX_INPUT_BYTES = 256 * 1024
MAX_RESULT_BYTES = 64 * 1024
MAX_MAPPING_DEPTH = 16
MAX_EVALUATIONS = 64

PASS_THROUGH = frozenset({"ping"})
SERVER_INITIATED = frozenset({"sampling/createMessage", "elicitation/create", "roots/list"})


class MappingError(ValueError):
    """A COAZ mapping error (the binding's ``-32602``): the request cannot be built."""

    code = MAPPING_ERROR

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message if message.startswith("COAZ mapping error") else "COAZ mapping error: " + message


class UnknownMethod(Exception):
    """A method with no mapping that is not pass-through: an authorization denial (``-32001``)."""

    code = DENIED

    def __init__(self, method: str):
        super().__init__(f"Access denied: method {method!r} has no COAZ mapping")
        self.method = method
        self.message = str(self)


# -- default mappings (section "Default Mappings") ---------------------------------------------

_SUBJECT = {"type": "identity", "id": "$token.sub"}
_AGENT = {"agent": "$token.?client_id"}


def _server(action: str, **context: str) -> dict:
    return {"evaluation": {"subject": dict(_SUBJECT), "context": {**_AGENT, **context},
                           "action": {"name": action}, "resource": {"type": "mcp_server", "id": "$token.aud"}}}


def _item(action: str, rtype: str, rid: str) -> dict:
    return {"evaluation": {"subject": dict(_SUBJECT), "context": dict(_AGENT),
                           "action": {"name": action}, "resource": {"type": rtype, "id": rid}}}


DEFAULT_MAPPINGS: dict[str, dict] = {
    "initialize": _server("initialize", protocol_version="$params.protocolVersion"),
    "tools/list": _server("tools/list"),
    "tools/call": _item("tools/call", "tool", "$params.name"),
    "resources/list": _server("resources/list"),
    "resources/read": _item("resources/read", "resource", "$params.uri"),
    "resources/subscribe": _item("resources/subscribe", "resource", "$params.uri"),
    "resources/unsubscribe": _item("resources/unsubscribe", "resource", "$params.uri"),
    "prompts/list": _server("prompts/list"),
    "prompts/get": _item("prompts/get", "prompt", "$params.name"),
    "completion/complete": {"evaluation": {
        "subject": dict(_SUBJECT), "context": dict(_AGENT), "action": {"name": "completion/complete"},
        "resource": {"type": "$params.ref.type == 'ref/prompt' ? 'prompt' : 'resource'",
                     "id": "$params.ref.type == 'ref/prompt' ? $params.ref.name : $params.ref.uri"}}},
    "logging/setLevel": _server("logging/setLevel", level="$params.level"),
    "tasks/get": _item("tasks/get", "task", "$params.taskId"),
    "tasks/result": _item("tasks/result", "task", "$params.taskId"),
    "tasks/cancel": _item("tasks/cancel", "task", "$params.taskId"),
    "tasks/list": _server("tasks/list"),
}
#: Mappings for client methods the binding (Draft 1) has no default for, which it
#: therefore denies ("Unknown Methods": methods of later MCP versions fail closed). Not
#: the binding's: policylang's, for a deployment to opt in to
#: (``McpGuard(pdp, methods=EXTRA_MAPPINGS)``, docs/agents.md#methods-the-binding-does-not-map).
#: ``server/discover`` (MCP 2026-07-28: what a modern client sends first, in place of
#: ``initialize``) and ``resources/templates/list`` take the shape of the binding's
#: ``initialize`` and ``resources/list`` (the server as the resource), each under its own
#: action name, so a policy permits them by name.
EXTRA_MAPPINGS: dict[str, dict] = {
    "server/discover": _server("server/discover"),
    "resources/templates/list": _server("resources/templates/list"),
}
# The binding writes the completion id as ``$params.ref.type == 'ref/prompt' ? $params.ref.name :
# $params.ref.uri``: the inner ``$`` are its notation for an input variable, not CEL, so a ``$``
# right before ``params`` or ``token`` (outside a string literal) is dropped before compiling
# (see _unprefix); ``$`` is no CEL token, so nothing else can mean it.


# -- expressions -----------------------------------------------------------------------------

_ABSENT = object()
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_STEP = re.compile(r"\s*(?:(\.\?|\.)\s*(" + _IDENT + r")|\[\s*('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\s*\])")
_ROOT = re.compile(r"\s*(" + _IDENT + r")")
_MACROS = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(")
_VARS = ("params", "token")


def _path(expr: str) -> list[tuple[bool, str]] | None:
    """``root(.f|.?f|["k"])*`` -> [(optional, key), ...] with the root first, or None when the
    expression is anything else."""
    m = _ROOT.match(expr)
    if not m or m.group(1) not in _VARS:
        return None
    steps = [(False, m.group(1))]
    pos = m.end()
    while pos < len(expr):
        if expr[pos:].strip() == "":
            break
        s = _STEP.match(expr, pos)
        if not s:
            return None
        if s.group(2) is not None:
            steps.append((s.group(1) == ".?", s.group(2)))
        else:
            steps.append((False, json.loads(s.group(3)) if s.group(3)[0] == '"' else
                          json.loads('"' + s.group(3)[1:-1].replace('"', '\\"').replace("\\'", "'") + '"')))
        pos = s.end()
    return steps


def _walk(steps: list[tuple[bool, str]], variables: Mapping[str, Any], expr: str) -> Any:
    cur: Any = variables[steps[0][1]]
    for optional, key in steps[1:]:
        if isinstance(cur, Mapping) and key in cur:
            cur = cur[key]
        elif optional and isinstance(cur, Mapping):
            return _ABSENT
        elif isinstance(cur, Mapping):
            raise MappingError(f"expression '${expr}' failed: no such key {key!r}")
        else:
            raise MappingError(f"expression '${expr}' failed: cannot select {key!r} from a "
                               f"{type(cur).__name__ if cur is not None else 'null'}")
    return cur


class _Cel:
    """Compiled CEL programs, cached (LRU), shared across threads."""

    def __init__(self, size: int = 512):
        try:
            import celpy
        except ImportError as e:  # pragma: no cover - exercised only without the extra
            raise ImportError("COAZ expressions need cel-python: pip install 'policylang[mcp]'") from e
        import celpy
        self.celpy = celpy
        self.env = celpy.Environment()
        self.size = size
        self.cache: OrderedDict[str, Any] = OrderedDict()
        self.lock = threading.Lock()

    def program(self, expr: str):
        with self.lock:
            prog = self.cache.get(expr)
            if prog is not None:
                self.cache.move_to_end(expr)
                return prog
        try:
            prog = self.env.program(self.env.compile(expr))
        except Exception as e:  # noqa: BLE001  (any compile failure is a mapping error: fail closed)
            raise MappingError(f"expression '${expr}' does not compile: {_first_line(e)}") from None
        with self.lock:
            self.cache[expr] = prog
            while len(self.cache) > self.size:
                self.cache.popitem(last=False)
        return prog

    def evaluate(self, expr: str, activation: Mapping[str, Any]) -> Any:
        prog = self.program(expr)
        try:
            result = prog.evaluate(dict(activation))
        except Exception as e:  # noqa: BLE001  (any evaluation failure is a mapping error: fail closed)
            raise MappingError(f"expression '${expr}' failed: {_first_line(e)}") from None
        if isinstance(result, self.celpy.evaluation.CELEvalError):
            raise MappingError(f"expression '${expr}' failed: {_first_line(result)}")
        return _to_json(result, expr)


def _first_line(e: BaseException) -> str:
    args = getattr(e, "args", ())
    text = str(args[0]) if args else str(e)
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__


def _to_json(value: Any, expr: str) -> Any:
    from celpy import celtypes as t
    if value is None or isinstance(value, t.NullType):
        return None
    if isinstance(value, (t.BoolType, bool)):
        return bool(value)
    if isinstance(value, (t.IntType, t.UintType)) or (isinstance(value, int) and not isinstance(value, bool)):
        return int(value)
    if isinstance(value, (t.DoubleType, float)):
        f = float(value)
        if not math.isfinite(f):
            raise MappingError(f"expression '${expr}' gave a non-finite number")
        return f
    if isinstance(value, (t.StringType, str)):
        return str(value)
    if isinstance(value, (t.ListType, list, tuple)):
        return [_to_json(v, expr) for v in value]
    if isinstance(value, (t.MapType, dict)):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise MappingError(f"expression '${expr}' gave a map with a non-string key")
            out[str(k)] = _to_json(v, expr)
        return out
    raise MappingError(f"expression '${expr}' gave a {type(value).__name__}, not a JSON value")


_cel: _Cel | None = None
_cel_lock = threading.Lock()


def _engine() -> _Cel:
    global _cel
    if _cel is None:
        with _cel_lock:
            if _cel is None:
                _cel = _Cel()
    return _cel


def resolve_value(value: Any, variables: Mapping[str, Any], activation: Any = None) -> Any:
    """One leaf: a literal as it is, ``$$…`` as the literal ``$…``, ``$expr`` evaluated
    (``_ABSENT`` when an optional selection misses)."""
    if not isinstance(value, str) or not value.startswith("$"):
        return value
    if value.startswith("$$"):
        return value[1:]
    expr = _unprefix(value[1:])
    if not expr.strip():
        raise MappingError("an empty expression '$'")
    if len(expr) > MAX_EXPRESSION:
        raise MappingError(f"an expression longer than {MAX_EXPRESSION} characters")
    steps = _path(expr)
    if steps is not None:
        return _walk(steps, variables, expr)
    if ".?" in _strip_strings(expr):
        raise MappingError(f"expression '${expr}': optional selection ('.?') is supported only as a whole "
                           "selection path (e.g. '$token.?client_id')")
    if len(_MACROS.findall(_strip_strings(expr))) > MAX_MACROS:
        raise MappingError(f"expression '${expr}' uses more than {MAX_MACROS} macros")
    cel = _engine()
    if activation is None:
        activation = {k: cel.celpy.json_to_cel(v) for k, v in variables.items()}
    elif isinstance(activation, _Lazy):
        activation = activation.get()
    result = cel.evaluate(expr, activation)
    if len(json.dumps(result)) > MAX_RESULT_BYTES:
        raise MappingError(f"expression '${expr}' gave a value larger than {MAX_RESULT_BYTES} bytes")
    return result


_STRING_OR_DOLLAR = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\$(?=(?:params|token)\b)")


def _unprefix(expr: str) -> str:
    """``$params`` / ``$token`` inside an expression -> ``params`` / ``token`` (string
    literals untouched)."""
    if "$" not in expr:
        return expr
    return _STRING_OR_DOLLAR.sub(lambda m: "" if m.group(0) == "$" else m.group(0), expr)


def _strip_strings(expr: str) -> str:
    return re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "''", expr)


# -- building the request ---------------------------------------------------------------------


@dataclass
class Built:
    """A constructed AuthZEN request: ``api`` is ``"evaluation"`` or ``"evaluations"``
    (the API the envelope names), ``body`` the request body, ``declared`` whether a
    declared mapping made it, ``subject_override`` whether its subject is not anchored."""

    api: str
    body: dict
    declared: bool = False
    subject_override: bool = False
    method: str = ""

    def decisions(self) -> list[dict]:
        """One AuthZEN evaluation per decision: the body itself, or each ``evaluations``
        entry with the top-level defaults applied (an entry's own member wins)."""
        if self.api == "evaluation":
            return [self.body]
        defaults = {k: v for k, v in self.body.items() if k not in ("evaluations", "options")}
        return [{**defaults, **entry} for entry in self.body["evaluations"]]


class _Lazy:
    """The CEL activation, converted once per request and only if an expression needs CEL."""

    def __init__(self, variables):
        self.variables = variables
        self.value = None

    def get(self):
        if self.value is None:
            celpy = _engine().celpy
            self.value = {k: celpy.json_to_cel(v) for k, v in self.variables.items()}
        return self.value


class Mapper:
    """Builds AuthZEN requests from MCP requests (see the module doc).

    ``server_id``: this MCP server's resource identifier (RFC 8707): picks the member of a
    list ``aud``; with ``use_server_id`` it is ``resource.id`` of server-scoped methods
    directly. ``subject_claim``: the subject-identity claim (default ``sub``; an
    on-behalf-of claim where the deployment designates one). ``methods``: mappings for
    further methods (or replacing a default), keyed by method name. ``allow_subject_override``:
    let a declared mapping set ``subject.id`` from elsewhere than the claim (warned)."""

    def __init__(self, *, server_id: str | None = None, use_server_id: bool = False, subject_claim: str = "sub",
                 methods: Mapping[str, Mapping] | None = None, allow_subject_override: bool = False):
        if not isinstance(subject_claim, str) or not re.fullmatch(_IDENT, subject_claim):
            raise ValueError("subject_claim must be a claim name")
        if use_server_id and not server_id:
            raise ValueError("use_server_id needs server_id")
        self.server_id = server_id
        self.use_server_id = use_server_id
        self.subject_claim = subject_claim
        self.allow_subject_override = allow_subject_override
        self.methods: dict[str, dict] = {k: v for k, v in DEFAULT_MAPPINGS.items()}
        for name, mapping in (methods or {}).items():
            check_mapping(mapping)
            self.methods[name] = dict(mapping)

    @staticmethod
    def is_pass_through(method: str) -> bool:
        return method in PASS_THROUGH or method.startswith("notifications/")

    def mapping_for(self, method: str, params: Mapping | None, declared: Mapping | None = None) -> tuple[dict, bool]:
        if method == "tools/call" and declared is not None:
            return declared, True  # type: ignore[return-value]
        mapping = self.methods.get(method)
        if mapping is None or method in SERVER_INITIATED:
            raise UnknownMethod(method)
        return mapping, False

    def build(self, method: str, params: Mapping | None, claims: Mapping | None,
              declared: Mapping | None = None) -> Built | None:
        """The AuthZEN request for ``method`` with ``params`` under the validated token
        ``claims``; ``declared``: the tool's ``x-authzen-mapping`` (``tools/call`` only).
        ``None`` for a pass-through operation. Raises :class:`MappingError` or
        :class:`UnknownMethod`."""
        if not isinstance(method, str):
            raise MappingError("the request has no method")
        if self.is_pass_through(method):
            return None
        mapping, is_declared = self.mapping_for(method, params, declared)
        if claims is None:
            raise MappingError("no validated access token: $token is undefined")
        if not isinstance(claims, Mapping):
            raise MappingError("the token claims are not an object")
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise MappingError("params is not an object")
        variables = {"params": _plain(params, "params"), "token": _plain(claims, "token")}
        api, template = check_mapping(mapping)
        subject_t = template.get("subject")
        if self.subject_claim != "sub" and isinstance(subject_t, Mapping) and subject_t.get("id") == "$token.sub":
            # a designated on-behalf-of claim C: every $token.sub as subject.id reads as $token.C
            template = {**template, "subject": {**subject_t, "id": "$token." + self.subject_claim}}
        lazy = _Lazy(variables)
        body = self._resolve(template, variables, lazy, 0)
        if not isinstance(body, dict):
            raise MappingError(f"the {api} template did not resolve to an object")
        built = Built(api, body, declared=is_declared, method=method)
        self._finish(built, template, claims, is_declared)
        return built

    # -- resolution
    def _resolve(self, template: Any, variables, lazy: _Lazy, depth: int) -> Any:
        if depth > MAX_MAPPING_DEPTH:
            raise MappingError(f"the mapping nests deeper than {MAX_MAPPING_DEPTH} levels")
        if isinstance(template, Mapping):
            out = {}
            for k, v in template.items():
                r = self._resolve(v, variables, lazy, depth + 1)
                if r is not _ABSENT:
                    out[k] = r
            return out
        if isinstance(template, list):
            out_list = []
            for v in template:
                r = self._resolve(v, variables, lazy, depth + 1)
                if r is not _ABSENT:
                    out_list.append(r)
            return out_list
        if isinstance(template, str) and template.startswith("$") and not template.startswith("$$"):
            steps = _path(template[1:]) if len(template) <= MAX_EXPRESSION + 1 else None
            if steps is not None:
                return _walk(steps, variables, template[1:])
            return resolve_value(template, variables, lazy)
        return resolve_value(template, variables)

    def _finish(self, built: Built, template: Mapping, claims: Mapping, declared: bool) -> None:
        body = built.body
        claim = claims.get(self.subject_claim)
        if not isinstance(claim, str) or not claim:
            raise MappingError(f"the validated token has no string {self.subject_claim!r} claim "
                               "(the subject-identity claim)")
        # the subject: supplied where omitted, anchored to the claim
        subject = body.get("subject")
        if subject is None:
            subject = {}
        if not isinstance(subject, dict):
            raise MappingError("subject did not resolve to an object")
        if "id" not in subject:
            subject["id"] = claim
        subject.setdefault("type", "identity")
        body["subject"] = {"type": subject.pop("type"), "id": subject.pop("id"), **subject}
        subject = body["subject"]
        if not isinstance(subject["type"], str) or not subject["type"]:
            raise MappingError("subject.type must resolve to a non-empty string")
        if not isinstance(subject["id"], str) or not subject["id"]:
            raise MappingError("subject.id must resolve to a non-empty string")
        if subject["id"] != claim:
            if not (declared and self.allow_subject_override):
                raise MappingError(f"subject.id {subject['id']!r} is not the validated token's "
                                   f"{self.subject_claim!r} claim")
            built.subject_override = True
            log.warning("COAZ: the declared mapping of %s sets subject.id from a source other than the token's %r "
                        "claim; it is not verified", built.method, self.subject_claim)
        # the server-scoped resource.id from $token.aud
        default_tpl = template
        for entry, tpl in self._entries(built, default_tpl):
            self._check_entry(entry, tpl, claims)
        if built.api == "evaluations":
            entries = body.get("evaluations")
            for i, entry in enumerate(entries):
                if "subject" in entry:
                    raise MappingError(f"evaluations[{i}] sets its own subject: the top-level subject applies to all")

    def _entries(self, built: Built, template: Mapping):
        body = built.body
        if built.api == "evaluation":
            yield body, template
            return
        defaults = {k: v for k, v in body.items() if k not in ("evaluations", "options")}
        tdefaults = {k: v for k, v in template.items() if k not in ("evaluations", "options")}
        for i, (entry, tentry) in enumerate(zip(body["evaluations"], template["evaluations"])):
            if not isinstance(entry, dict):
                raise MappingError(f"evaluations[{i}] did not resolve to an object")
            if "subject" in tentry:
                raise MappingError(f"evaluations[{i}] sets its own subject: the top-level subject applies to all")
            merged_t = {**tdefaults, **tentry}
            yield _Merged(entry, defaults, i), merged_t

    def _check_entry(self, entry: Any, tpl: Mapping, claims: Mapping) -> None:
        where = f"evaluations[{entry.index}]." if isinstance(entry, _Merged) else ""
        for key in ("action", "resource"):
            v = entry.get(key)
            if v is None:
                raise MappingError(f"{where}{key} is absent (a required field)")
            if not isinstance(v, dict):
                raise MappingError(f"{where}{key} did not resolve to an object")
        action = entry.get("action")
        if not isinstance(action.get("name"), str) or not action["name"]:
            raise MappingError(f"{where}action.name must resolve to a non-empty string")
        resource = entry.get("resource")
        if not isinstance(resource.get("type"), str) or not resource["type"]:
            raise MappingError(f"{where}resource.type must resolve to a non-empty string")
        rid_t = (tpl.get("resource") or {}).get("id") if isinstance(tpl.get("resource"), Mapping) else None
        if isinstance(rid_t, str) and rid_t.strip() in ("$token.aud", "$token['aud']", '$token["aud"]'):
            entry.set_resource_id(self._audience(claims)) if isinstance(entry, _Merged) else \
                resource.__setitem__("id", self._audience(claims))
            resource = entry.get("resource")
        rid = resource.get("id")
        if not isinstance(rid, str) or not rid:
            raise MappingError(f"{where}resource.id must resolve to a non-empty string")
        ctx = entry.get("context")
        if ctx is not None and not isinstance(ctx, dict):
            raise MappingError(f"{where}context did not resolve to an object")

    def _audience(self, claims: Mapping) -> str:
        if self.use_server_id:
            return self.server_id  # type: ignore[return-value]
        aud = claims.get("aud")
        if isinstance(aud, str) and aud:
            return aud
        if isinstance(aud, list):
            if self.server_id is not None and self.server_id in aud:
                return self.server_id
            raise MappingError("$token.aud is a list and no member of it is this server's identifier")
        raise MappingError("$token.aud does not identify this server (no string aud claim)")


class _Merged:
    """An ``evaluations`` entry seen with the top-level defaults, writing back to the entry."""

    def __init__(self, entry: dict, defaults: dict, index: int):
        self.entry, self.defaults, self.index = entry, defaults, index

    def get(self, key):
        return self.entry[key] if key in self.entry else self.defaults.get(key)

    def set_resource_id(self, value: str) -> None:
        if "resource" in self.entry:
            self.entry["resource"]["id"] = value
        else:
            self.defaults["resource"]["id"] = value


_ENVELOPE_MEMBERS = {"evaluation": {"subject", "action", "resource", "context"},
                     "evaluations": {"subject", "action", "resource", "context", "evaluations", "options"}}


def check_mapping(mapping: Any) -> tuple[str, dict]:
    """``(api, template)`` of a well-formed mapping, else :class:`MappingError`: exactly one
    envelope key (``evaluation`` or ``evaluations``) whose value is an object with only the
    AuthZEN request's members; ``evaluations`` a non-empty list of objects (at most 64)
    with no ``subject``."""
    if not isinstance(mapping, Mapping):
        raise MappingError("the mapping is not an object")
    keys = list(mapping.keys())
    if len(keys) != 1 or keys[0] not in _ENVELOPE_MEMBERS:
        raise MappingError(f"the mapping must have exactly one envelope, 'evaluation' or 'evaluations' "
                           f"(got {', '.join(map(repr, keys)) or 'none'})")
    api = keys[0]
    template = mapping[api]
    if not isinstance(template, Mapping):
        raise MappingError(f"the {api!r} envelope is not an object")
    extra = set(template) - _ENVELOPE_MEMBERS[api]
    if extra:
        raise MappingError(f"the {api!r} envelope has unknown members: {', '.join(sorted(extra))}")
    for key in ("subject", "action", "resource", "context"):
        if key in template and not isinstance(template[key], (Mapping, str)):
            raise MappingError(f"{key} must be an object or an expression")
    if api == "evaluations":
        entries = template.get("evaluations")
        if not isinstance(entries, list) or not entries:
            raise MappingError("'evaluations' must be a non-empty list")
        if len(entries) > MAX_EVALUATIONS:
            raise MappingError(f"more than {MAX_EVALUATIONS} evaluations")
        for i, e in enumerate(entries):
            if not isinstance(e, Mapping):
                raise MappingError(f"evaluations[{i}] is not an object")
            if "subject" in e:
                raise MappingError(f"evaluations[{i}] sets its own subject: the top-level subject applies to all")
            extra = set(e) - {"action", "resource", "context"}
            if extra:
                raise MappingError(f"evaluations[{i}] has unknown members: {', '.join(sorted(extra))}")
    return api, dict(template)


def _plain(value: Any, what: str) -> Any:
    """JSON-only copy of an input variable, bounded in size."""
    try:
        text = json.dumps(value, allow_nan=False, default=_refuse)
    except (TypeError, ValueError) as e:
        raise MappingError(f"{what} is not JSON: {e}") from None
    if len(text) > MAX_INPUT_BYTES:
        raise MappingError(f"{what} is larger than {MAX_INPUT_BYTES} bytes")
    return json.loads(text)


def _refuse(o: Any):
    raise TypeError(f"{type(o).__name__} is not a JSON value")
