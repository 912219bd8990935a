"""The playground's audit viewer (docs/audit-viewer.md): open an audit log, verify its
hash chain, filter its records, and present one record's decision and delegation path the
way the playground draws a decision.

The chain is checked by the audit log's own verification (policylang/privilege/audit.py:
the same line parsing, duplicate-key check, canonical-form check, hash and ``prev`` link
as ``verify_file`` and ``policylang audit verify``); this module only goes on past the
first bad line so that every line gets a status:

- ``ok``: intact and chained to the line before;
- ``tampered``: the first line that is not (altered, removed, inserted, reordered,
  rewritten, not JSON, not UTF-8…), with the reason ``audit verify`` gives;
- ``broken``: every line after it: the chain through it is broken, so nothing after it can
  be vouched for;
- ``torn``: an unterminated last line that is not a whole record (an interrupted write),
  ignored as ``audit verify`` ignores it.

``add_audit_routes(app, audit_path=..., read_only=...)`` registers the JSON API under
``/api/audit/`` (docs/audit-viewer.md#api); the page is ``static/audit.html``. The viewer
never writes to a log.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from ..evaluation.decision import DECISION_FIELDS, attenuation_denial
from ..privilege.audit import TORN_REASON, check_lines

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_UPLOAD_BYTES",
    "add_audit_routes",
    "build_report",
    "present_record",
    "record_detail",
    "row_summary",
    "verify_lines",
    "walk_lines",
]

#: the largest uploaded log the API reads (bytes); a larger body is a 413
MAX_UPLOAD_BYTES = 8 * 1024 * 1024
#: the largest configured log (``--audit FILE``) the API reads; `policylang audit verify`
#: checks larger ones
MAX_FILE_BYTES = 64 * 1024 * 1024
#: rows per page by default, and at most
DEFAULT_LIMIT = 500
MAX_LIMIT = 5000
#: the longest filter value accepted
MAX_FILTER = 1000
#: the longest text shown in a table cell
_CELL = 300
#: the longest path drawn (a request's delegation chain has at most 64 entries)
_MAX_PATH = 100
_PREVIEW = 200

FILTERS = ("task", "principal", "decision")


class ViewerError(ValueError):
    """A bad request to the viewer: ``status`` (400, 404, 413), the ``field`` it is about
    (a parameter, ``line``, ``body``; None for the log itself) and a message that starts
    with that field's name."""

    def __init__(self, status: int, field: str | None, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.status = status
        self.field = field
        self.message = str(self)


# -- verification, line by line -------------------------------------------------------------


def _lines(data: bytes) -> Iterable[bytes]:
    """The lines of ``data`` as a file iterates them: split after each ``\\n`` only."""
    return io.BytesIO(data)


def walk_lines(data: bytes, head: str | None, sink: Callable[[int, str, str, Any, bytes], None]) -> dict:
    """Check the chain of the log text ``data``, calling ``sink(n, status, reason, record,
    raw)`` for every line in order (``record``: the line's parsed JSON object or None;
    ``raw``: the line without its newline), and return the verification: exactly what
    :func:`policylang.audit.verify_file` finds for the same bytes (``ok``, ``records``,
    ``head``, ``line``, ``message``, ``torn_line``) plus ``lines`` (how many),
    ``anchored_head`` and ``summary``, the banner text. Nothing of a line is kept after its
    call. Both run the one loop, :func:`policylang.audit.check_lines`. Raises ValueError
    for a malformed ``head``."""
    result, n = check_lines(_lines(data), head, sink)
    anchored = head.strip().lower() if head is not None else None
    return {
        "ok": result.ok, "records": result.records, "head": result.head, "line": result.line,
        "message": result.message, "torn_line": result.torn_line, "lines": n, "anchored_head": anchored,
        "summary": _summary(result.ok, result.records, result.line, result.message, result.torn_line, anchored),
    }


def verify_lines(data: bytes, head: str | None = None) -> dict:
    """:func:`walk_lines` with every line kept: ``{"verification": {...}, "lines": [(n,
    status, reason, record, raw), ...]}``. Raises ValueError for a malformed ``head``."""
    out: list[tuple[int, str, str, Any, bytes]] = []
    verification = walk_lines(data, head, lambda *line: out.append(line))
    return {"verification": verification, "lines": out}


def _summary(ok: bool, count: int, line: int | None, message: str, torn_line: int | None,
             head: str | None) -> str:
    if not ok:
        return f"chain broken at line {line}: {message}"
    text = f"chain verified: {count} record{'' if count == 1 else 's'}"
    if head is not None:
        text += f", including the anchored head {head[:12]}…"
    if torn_line is not None:
        text += f"; line {torn_line} is an {TORN_REASON}"
    return text


# -- one row of the table ---------------------------------------------------------------------


def _cell(value: Any) -> str | None:
    """A value of an untrusted record as table text (None stays None)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, sort_keys=True)
        except (TypeError, ValueError, RecursionError):
            text = str(value)
    return text if len(text) <= _CELL else text[:_CELL] + "…"


def _get(mapping: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _principal(rec: Mapping) -> str | None:
    """Who acted: the request's principal, else an event's ``principal``, ``approver`` or ``by``."""
    for value in (_get(rec, "request", "principal", "id"), rec.get("principal"),
                  rec.get("approver"), rec.get("by")):
        if isinstance(value, str):
            return value
    return None


def _action(rec: Mapping) -> str | None:
    action = _get(rec, "request", "action")
    if isinstance(action, Mapping):
        action = action.get("name")
    return action if isinstance(action, str) else None


def _resource(rec: Mapping) -> str | None:
    resource = _get(rec, "request", "resource")
    if not isinstance(resource, Mapping):
        return None
    rtype, rid = _str(resource.get("type")), _str(resource.get("id"))
    if rtype is None:
        return rid
    return f"{rtype}:{rid}" if rid is not None else rtype


def _task(rec: Mapping) -> str | None:
    """The task: an event's ``task`` (open_task, revoke_task), the request's
    ``intent.task_id``, or an approval's ``access_request``."""
    for value in (rec.get("task"), _get(rec, "request", "intent", "task_id"), rec.get("access_request")):
        if isinstance(value, str):
            return value
    return None


def _path_ids(rec: Mapping) -> list[str]:
    """The ids of the delegation path: the decision's ``delegation_path``, else the
    request's ``delegation`` chain then its principal."""
    path = rec.get("delegation_path")
    if isinstance(path, list) and path:
        return [p if isinstance(p, str) else _cell(p) or "?" for p in path]
    ids: list[str] = []
    chain = _get(rec, "request", "delegation")
    if isinstance(chain, list):
        for entry in chain:
            ident = _get(entry, "id")
            ids.append(ident if isinstance(ident, str) else "?")
    principal = _get(rec, "request", "principal", "id")
    if isinstance(principal, str):
        ids.append(principal)
    return ids


def row_summary(n: int, status: str, reason: str, rec: Any, raw: bytes) -> dict:
    """One row of the table: the line's status and the record's time, event, principal,
    action, resource, decision and task (None where the record has none)."""
    row: dict[str, Any] = {"line": n, "status": status, "reason": reason}
    if isinstance(rec, Mapping):
        row.update(time=_cell(_str(rec.get("time"))), event=_cell(_str(rec.get("event"))),
                   id=_cell(_str(rec.get("id"))), principal=_cell(_principal(rec)),
                   action=_cell(_action(rec)), resource=_cell(_resource(rec)),
                   decision=_cell(_str(rec.get("decision"))), task=_cell(_task(rec)),
                   hash=_cell(_str(rec.get("hash"))))
        row["preview"] = None
    else:
        row.update(dict.fromkeys(("time", "event", "id", "principal", "action", "resource",
                                  "decision", "task", "hash")))
        text = raw.decode("utf-8", "replace")
        row["preview"] = text if len(text) <= _PREVIEW else text[:_PREVIEW] + "…"
    return row


def _matches(row: dict, rec: Any, filters: Mapping[str, str | None]) -> bool:
    task, principal, decision = (filters.get(k) for k in FILTERS)
    if task and row["task"] != task:
        return False
    if decision and row["decision"] != decision:
        return False
    if principal:
        on_path = isinstance(rec, Mapping) and principal in _path_ids(rec)
        if row["principal"] != principal and not on_path:
            return False
    return True


# -- presenting one record as a decision ---------------------------------------------------------


def _safe(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON can carry it: non-finite numbers spelled as strings, nesting past
    64 levels cut off (a parsed line may nest far deeper than a response should)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if depth > 64 and isinstance(value, (dict, list)):
        return "[too deep]"
    if isinstance(value, dict):
        return {str(k): _safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_safe(v, depth + 1) for v in value]
    return value


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [v if isinstance(v, str) else _cell(v) or "" for v in value]


def _errors(value: Any) -> list[dict]:
    out = []
    if isinstance(value, list):
        for item in value:
            if isinstance(item, Mapping):
                out.append({"rule": _cell(item.get("rule")) or "", "message": _cell(item.get("message")) or ""})
            else:
                out.append({"rule": "", "message": _cell(item) or ""})
    return out


def _kinds(rec: Mapping, ids: list[str]) -> dict[int, str]:
    """Each path position's ``kind`` from the request, where the request's chain and
    principal line up with the path."""
    entries: list[Any] = []
    chain = _get(rec, "request", "delegation")
    if isinstance(chain, list):
        entries.extend(chain)
    principal = _get(rec, "request", "principal")
    if principal is not None:
        entries.append(principal)
    kinds = {}
    if len(entries) == len(ids):
        for i, entry in enumerate(entries):
            kind = _get(entry, "kind")
            if isinstance(kind, str) and _get(entry, "id") == ids[i]:
                kinds[i] = kind
    return kinds


def _attenuation_reason(delegator: str, action: str) -> str:
    """The reason the engine gives when ``delegator`` lacked the authority (the one text,
    from evaluation/decision.py)."""
    return attenuation_denial(delegator, action, "", [], []).reasons[0]


def present_record(record: Mapping) -> dict:
    """The playground's presented decision (what ``PolicylangPath.draw`` draws) for one
    audit record: the decision fields copied onto the record, and its delegation path
    (``delegation_path``, else the request's ``delegation`` then ``principal``) as
    ``path`` entries root first, each with ``role`` (``root``, ``delegator``,
    ``subject``), ``allowed`` and a ``note``.

    A record keeps only the decision, so a delegator's ``allowed`` is known only from an
    attenuation denial (docs/language.md#delegation-attenuation): the delegator its reason
    names is ``false``, the ones before it ``true``, the rest ``null``. The subject is
    ``allowed`` as the playground marks it (``decision == "allow"``), ``null`` for an
    event without a decision. ``kind`` comes from the request where its chain lines up
    with the path; ``trace`` is empty (a record keeps no trace). Values of any type are
    accepted (an uploaded log is untrusted): what is not of the documented type is shown
    as text or left out.
    """
    if not isinstance(record, Mapping):
        raise TypeError(f"an audit record is a JSON object, not {type(record).__name__}")
    decision = _str(record.get("decision"))
    reasons = _strings(record.get("reasons"))
    rules = _strings(record.get("rules"))
    approvers = _strings(record.get("approvers"))
    grants = [_safe(g) for g in record.get("grants") if isinstance(g, Mapping)] \
        if isinstance(record.get("grants"), list) else []
    ids = _path_ids(record)
    extra = len(ids) - _MAX_PATH
    if extra > 0:
        ids = ids[:_MAX_PATH]
    kinds = _kinds(record, ids)
    action = _action(record)

    refused: int | None = None  # the delegator an attenuation denial names
    if decision == "deny" and not rules and action is not None:
        for i, ident in enumerate(ids[:-1]):
            if _attenuation_reason(ident, action) in reasons:
                refused = i
                break

    path = []
    last = len(ids) - 1
    for i, ident in enumerate(ids):
        role = "subject" if i == last else ("root" if i == 0 else "delegator")
        kind = kinds.get(i)
        notes: list[str] = []
        allowed: bool | None = None
        if i == last:
            if decision is None:
                notes.append("no decision in this record")
            else:
                allowed = decision == "allow"
                notes.append(decision + (f" by {', '.join(rules)}" if rules else ""))
                if refused is not None:
                    notes.append(f"attenuated: {ids[refused]} lacked the authority")
                elif decision == "require_approval" and approvers:
                    notes.append(f"needs approval by {', '.join(approvers)}")
        elif refused is not None:
            if i < refused:
                allowed = True
                notes.append("allowed as a delegator (attenuate_delegation)")
            elif i == refused:
                allowed = False
                notes.append("the first delegator not allowed: the allow becomes a deny")
            else:
                notes.append("not evaluated")
        else:
            notes.append("not known from the record")
        path.append({"id": ident, "kind": kind, "label": f"{kind} {ident}" if kind else ident,
                     "role": role, "allowed": allowed, "note": "; ".join(notes)})
    if extra > 0:
        path[-1]["note"] += f" ({extra} more entries of the path not drawn)"
    out = {
        "decision": decision,
        "allowed": decision == "allow",
        "reasons": reasons,
        "determining": rules,
        "errors": _errors(record.get("errors")),
        "grants": grants,
        "approvers": approvers,
        "policy_version": _str(record.get("policy_version")),
        "path": path,
        "trace": [],
        "event": _str(record.get("event")),
    }
    limits = record.get("limits")
    if isinstance(limits, list) and limits:
        out["limits"] = [_safe(x) for x in limits if isinstance(x, Mapping)]
    return out


# -- the report and one record's detail ------------------------------------------------------------


def _int_param(name: str, value: str | None, default: int, maximum: int | None = None) -> int:
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit()) or len(value) > 12:
        raise ViewerError(400, name, f"must be a non-negative integer, got {value[:40]!r}")
    number = int(value)
    if maximum is not None and number > maximum:
        raise ViewerError(400, name, f"must be at most {maximum}, got {number}")
    return number


def _filters(params: Mapping[str, Any]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in FILTERS:
        value = params.get(name)
        if value is not None and not isinstance(value, str):
            raise ViewerError(400, name, "must be a string")
        if value is not None and len(value) > MAX_FILTER:
            raise ViewerError(400, name, f"longer than {MAX_FILTER} characters")
        out[name] = value.strip() or None if value is not None else None
    return out


def _walk(data: bytes, params: Mapping[str, Any], sink) -> dict:
    try:
        return walk_lines(data, params.get("head") or None, sink)
    except ValueError as e:
        message = str(e)
        raise ViewerError(400, "head", message.removeprefix("head ")) from e


def build_report(data: bytes, params: Mapping[str, Any] | None = None, *, source: str = "upload",
                 name: str | None = None) -> dict:
    """The verification and the (filtered, paged) rows of the log text ``data``.

    ``params``: ``task``, ``principal``, ``decision`` (filters: equal to the row's value;
    ``principal`` also matches any id on the record's delegation path), ``head`` (an
    anchored hash the chain must contain), ``offset`` and ``limit`` (paging of the matching
    rows). Raises :class:`ViewerError` (400) naming the bad parameter. The verification
    always covers the whole log, whatever the filters; only the page's rows are kept.
    """
    params = params or {}
    filters = _filters(params)
    offset = _int_param("offset", params.get("offset"), 0)
    limit = _int_param("limit", params.get("limit"), DEFAULT_LIMIT, MAX_LIMIT)
    rows: list[dict] = []
    matched = 0

    def sink(n, status, reason, rec, raw):
        nonlocal matched
        row = row_summary(n, status, reason, rec, raw)
        if _matches(row, rec, filters):
            if offset <= matched < offset + limit:
                rows.append(row)
            matched += 1

    verification = _walk(data, params, sink)
    return {
        "source": source, "name": name, "verification": verification,
        "filters": filters, "total": verification["lines"], "matched": matched,
        "offset": offset, "limit": limit, "rows": rows,
    }


def record_detail(data: bytes, line: str | int, params: Mapping[str, Any] | None = None) -> dict:
    """One line of the log text ``data``: its status, the record, its request and decision
    fields, and ``presented`` (:func:`present_record`; None for a line that is not a JSON
    object), with the verification of the whole log. Raises :class:`ViewerError`: 400 for
    a malformed ``line`` or ``head``, 404 for a line the log does not have."""
    params = params or {}
    number = _int_param("line", str(line), 0)
    if number < 1:
        raise ViewerError(400, "line", "must be a line number, 1 or more")
    found: list[tuple] = []

    def sink(n, status, reason, rec, raw):
        if n == number:
            found.append((n, status, reason, rec, raw))

    verification = _walk(data, params, sink)
    if not found:
        raise ViewerError(404, "line", f"the log has {verification['lines']} lines, not {number}")
    n, status, reason, rec, raw = found[0]
    row = row_summary(n, status, reason, rec, raw)
    out: dict[str, Any] = {"line": n, "status": status, "reason": reason, "row": row,
                           "verification": verification}
    if isinstance(rec, Mapping):
        out["record"] = _safe(rec)
        out["request"] = _safe(rec.get("request"))
        out["decision_fields"] = {k: _safe(rec[k]) for k in DECISION_FIELDS if k in rec}
        out["presented"] = present_record(rec)
        out["raw"] = None
    else:
        out.update(record=None, request=None, decision_fields=None, presented=None,
                   raw=raw.decode("utf-8", "replace")[:10000])
    return out


# -- the routes ------------------------------------------------------------------------------------


def _read_file(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ViewerError(404, None, f"audit log {path.name}: no such file (yet)") from None
    except OSError as e:
        raise ViewerError(404, None, f"audit log {path.name}: cannot be read ({e.strerror or e})") from None
    if len(data) > MAX_FILE_BYTES:
        raise ViewerError(413, None, f"audit log {path.name}: larger than {MAX_FILE_BYTES} bytes, more than the "
                               "viewer reads; check it with `policylang audit verify`")
    return data


def add_audit_routes(app, *, audit_path: Path | str | os.PathLike | None, read_only: bool = True) -> None:
    """Register the audit viewer's API (docs/audit-viewer.md#api) on ``app`` (a Starlette
    or FastAPI app; the routes are plain Starlette routes, under the app's own middleware:
    the playground's loopback, same-origin and authentication checks cover them).

    ``audit_path``: the log ``GET /api/audit/log`` opens (``policylang playground --audit
    FILE``), read afresh on every request; None: only uploaded logs can be viewed.
    ``read_only``: the playground's mode, reported by ``GET /api/audit/config``; the viewer
    is read-only in either mode (it never writes to a log or to the disk).
    """
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    configured = Path(audit_path) if audit_path is not None else None

    def error(e: ViewerError) -> JSONResponse:
        body: dict[str, Any] = {"status": e.status, "message": e.message}
        if e.field is not None:
            body["field"] = e.field
        return JSONResponse({"error": body}, status_code=e.status)

    def configured_log() -> bytes:
        if configured is None:
            raise ViewerError(404, None, "no audit log is configured: start the playground with --audit FILE, "
                                   "or upload a log (POST api/audit/log)")
        return _read_file(configured)

    async def uploaded(request: Request) -> bytes:
        limit = MAX_UPLOAD_BYTES
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise ViewerError(413, "body", f"an uploaded log may have at most {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ViewerError(413, "body", f"an uploaded log may have at most {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def answer(body: dict) -> Response:
        text = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return Response(text, media_type="application/json")

    name = configured.name if configured is not None else None

    async def audit_config(request: Request) -> Response:
        return answer({"configured": configured is not None, "name": name, "read_only": bool(read_only),
                       "max_upload_bytes": MAX_UPLOAD_BYTES, "filters": list(FILTERS)})

    async def audit_log(request: Request) -> Response:
        try:
            if request.method == "POST":
                data, source = await uploaded(request), "upload"
            else:
                data, source = await run_in_threadpool(configured_log), "file"
            report = await run_in_threadpool(build_report, data, dict(request.query_params), source=source,
                                             name=name if source == "file" else None)
            return answer(report)
        except ViewerError as e:
            return error(e)

    async def audit_record(request: Request) -> Response:
        try:
            if request.method == "POST":
                data = await uploaded(request)
            else:
                data = await run_in_threadpool(configured_log)
            detail = await run_in_threadpool(record_detail, data, request.path_params["line"],
                                             dict(request.query_params))
            return answer(detail)
        except ViewerError as e:
            return error(e)

    app.add_route("/api/audit/config", audit_config, methods=["GET"], include_in_schema=False)
    app.add_route("/api/audit/log", audit_log, methods=["GET", "POST"], include_in_schema=False)
    app.add_route("/api/audit/records/{line}", audit_record, methods=["GET", "POST"], include_in_schema=False)
