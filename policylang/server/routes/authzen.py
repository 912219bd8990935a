"""The OpenID AuthZEN Authorization API 1.0 routes: ``POST /access/v1/evaluation``,
``/access/v1/evaluations``, ``/access/v1/search/{subject,resource,action}`` and
``GET /.well-known/authzen-configuration`` (docs/server.md)."""

from __future__ import annotations

import asyncio
import time

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from .. import authzen, identity, openapi
from ..app import _YIELD_EVERY, _json
from ...evaluation.limits import IDEMPOTENCY_FIELD, MAX_IDEMPOTENCY_KEY
from . import RouteContext, get_options, post_options


def _idempotency(ctx: RouteContext, request: Request, items: int | None = None) -> str | None:
    """The ``Idempotency-Key`` header (docs/server.md#limits): the evaluation's
    ``idempotency_key``, so that a retry with the same key consumes its limits once; None
    without it, or when the service has no limit store (nothing to consume: the header is
    ignored, as the fast path ignores it). 1 to 200 characters, else a 400. On a batch of
    ``items`` each item's key is the header's with ``#`` and the item's index appended,
    which must fit too."""
    key = request.headers.get("idempotency-key")
    if key is None or ctx.limit_store is None:
        return None
    longest = len(key) + (0 if items is None else 1 + len(str(max(items - 1, 0))))
    if not key or longest > MAX_IDEMPOTENCY_KEY:
        where = "" if items is None else f" with '#' and the index of one of {items} evaluations appended"
        raise authzen.BadRequest(f"Idempotency-Key: must be 1 to {MAX_IDEMPOTENCY_KEY} characters{where}")
    return key


def _keyed(req, key: str | None, index: int | None = None):
    """``req`` (a mapped request dict) with the idempotency key of :func:`_idempotency`."""
    if key is not None and req.__class__ is dict:
        req[IDEMPOTENCY_FIELD] = key if index is None else f"{key}#{index}"
    return req


def _respond(d, with_context: bool) -> dict:
    """:func:`authzen.decision_response` plus ``context.limits`` (the decision's ``limits``
    entries, docs/server.md#limits) when the answer has a context and the decision touched
    a limit."""
    answer = authzen.decision_response(d, with_context)
    if d.limits and "context" in answer:
        answer["context"]["limits"] = [dict(e) for e in d.limits]
    return answer


async def _aarp_answer(ctx: RouteContext, aarp, engine, req: dict, authzen_context, request: Request,
                       prefix: str = "", with_context: bool = True):
    """``(decision, answer)`` with the Approvals over AuthZEN members (docs/server.md#aarp):
    a ``context.approval`` object is verified and replaced by its ticket id before the
    decision; a ``require_approval`` is answered as a requestable denial; a
    re-evaluation gets ``approval`` (allowed) or ``reason``/``next_action``. An answer
    with these members always carries its whole context (the profile's clients need
    it); the others only ``with_context``."""
    from ..aarp import Problem
    from ..app import Unavailable
    from ...privilege.audit import AuditError
    from ...privilege.store import StoreError
    ref = None
    try:
        if req.get("approval").__class__ is dict:
            ref = await run_in_threadpool(aarp.resolve, req["approval"], req, prefix + "context.approval")
            req = dict(req)
            if ref.ticket is None:
                del req["approval"]  # not usable: decided as a request without an approval
            else:
                req["approval"] = ref.ticket
        d = await ctx.decide(engine, req, prefix)
        aarp_members = d.decision == "require_approval" or ref is not None
        answer = _respond(d, with_context or aarp_members)
        if aarp_members:
            base = (ctx.config.public_url or str(request.base_url)).rstrip("/")
            extra: dict = {}
            if d.decision == "require_approval":
                extra.update(await run_in_threadpool(aarp.denial, d, req, authzen_context, base))
            if ref is not None:
                extra.update(await run_in_threadpool(aarp.reevaluated, d, req, ref))
            answer["context"].update(extra)
    except Problem as e:
        raise authzen.BadRequest(e.detail, e.status) from None
    except (AuditError, StoreError) as e:
        raise Unavailable(f"approvals over AuthZEN are unavailable: {e}") from None
    return d, answer


def make_evaluation(ctx: RouteContext):
    service, metrics = ctx.service, ctx.metrics
    read_body, decide, failure = ctx.read_body, ctx.decide, ctx.failure
    aarp = getattr(ctx, "aarp", None)

    async def evaluation(request: Request):
        t0 = time.perf_counter()
        try:
            body = await read_body(request)
            req = _keyed(authzen.to_request(body), _idempotency(ctx, request))
            engine = service.current.engine
            with_context = authzen.decision_context(body, True)
            if aarp is not None:
                d, answer = await _aarp_answer(ctx, aarp, engine, req, body.get("context"), request,
                                               with_context=with_context)
            else:
                d = await decide(engine, req)
                answer = _respond(d, with_context)
        except Exception as e:
            return failure("evaluation", e)
        metrics.decided("evaluation", d.decision)
        response = _json(answer)
        metrics.observe("evaluation", time.perf_counter() - t0)
        return response

    return evaluation


def make_evaluations(ctx: RouteContext):
    service, metrics = ctx.service, ctx.metrics
    read_body, decide, failure, item_failure = ctx.read_body, ctx.decide, ctx.failure, ctx.item_failure
    use_threads = ctx.use_threads
    aarp = getattr(ctx, "aarp", None)

    async def evaluations(request: Request):
        t0 = time.perf_counter()
        counts: dict = {}
        try:
            body = await read_body(request)
            batch = authzen.parse_batch(body)
            engine = service.current.engine
            if batch.items is None:  # no array: a single evaluation
                req = _keyed(authzen.to_request(body), _idempotency(ctx, request))
                with_context = authzen.decision_context(body, True)
                if aarp is not None:
                    d, answer = await _aarp_answer(ctx, aarp, engine, req, body.get("context"), request,
                                                   with_context=with_context)
                else:
                    d = await decide(engine, req)
                    answer = _respond(d, with_context)
                metrics.decided("evaluations", d.decision)
                response = _json(answer)
                metrics.observe("evaluations", time.perf_counter() - t0)
                return response
            key = _idempotency(ctx, request, len(batch.items))
            if key is not None:
                for i, item in enumerate(batch.items):
                    _keyed(item, key, i)
            # batch items answer {"decision": …} alone unless asked (docs/server.md#decision-context)
            with_context = authzen.decision_context(body, False)
            if aarp is not None:
                out = await _run_batch_aarp(ctx, aarp, body, batch, engine, counts, request, with_context)
            else:
                out = await _run_batch(batch, engine, counts, decide, item_failure, direct=not use_threads,
                                       with_context=with_context)
        except Exception as e:
            return failure("evaluations", e)
        for outcome, n in counts.items():
            metrics.decided("evaluations", outcome, n)
        response = _json({"evaluations": out})
        metrics.observe("evaluations", time.perf_counter() - t0)
        return response

    return evaluations


async def _run_batch(batch, engine, counts: dict, decide, item_failure, *, direct: bool,
                     with_context: bool = False) -> list:
    """The answers for ``batch.items`` in order, stopping early per ``batch.semantic``;
    ``counts`` gets the number of each outcome. An item that could not be decided keeps
    its ``context.error`` whatever ``with_context`` says."""
    semantic = batch.semantic
    deny_first = semantic == "deny_on_first_deny"
    permit_first = semantic == "permit_on_first_permit"
    respond = _respond
    out: list = []
    append = out.append
    for i, item in enumerate(batch.items):
        if i and not i % _YIELD_EVERY:
            await asyncio.sleep(0)
        if item.__class__ is dict:
            try:
                d = engine.decide(item) if direct else await decide(engine, item, f"evaluations[{i}].")
                answer = respond(d, with_context)
                outcome = d.decision
            except Exception as e:
                answer = item_failure(e, i)
                outcome = "invalid"
        else:  # a BadRequest found while parsing
            answer = authzen.item_error(item.message)
            outcome = "invalid"
        counts[outcome] = counts.get(outcome, 0) + 1
        append(answer)
        if deny_first and not answer["decision"]:
            break
        if permit_first and answer["decision"]:
            break
    return out


async def _run_batch_aarp(ctx: RouteContext, aarp, body: dict, batch, engine, counts: dict, request: Request,
                          with_context: bool = False) -> list:
    """:func:`_run_batch` with the Approvals over AuthZEN members on each item."""
    semantic = batch.semantic
    raw = body.get("evaluations")
    out: list = []
    for i, item in enumerate(batch.items):
        if i and not i % _YIELD_EVERY:
            await asyncio.sleep(0)
        if item.__class__ is dict:
            try:
                given = raw[i].get("context") if raw[i].get("context") is not None else body.get("context")
                d, answer = await _aarp_answer(ctx, aarp, engine, item, given, request, f"evaluations[{i}].",
                                               with_context)
                outcome = d.decision
            except Exception as e:
                answer = ctx.item_failure(e, i)
                outcome = "invalid"
        else:
            answer = authzen.item_error(item.message)
            outcome = "invalid"
        counts[outcome] = counts.get(outcome, 0) + 1
        out.append(answer)
        if semantic == "deny_on_first_deny" and not answer["decision"]:
            break
        if semantic == "permit_on_first_permit" and answer["decision"]:
            break
    return out


async def _give_back(engine, d) -> None:
    """Release the reservation a search candidate's ``allow`` made (docs/server.md#limits).
    A store that fails here fails the search (503): the caller learns its budget may be held."""
    from ..app import Unavailable
    from ...evaluation.limits import RESERVED
    from ...privilege.store import StoreError
    for e in d.limits:
        if e.get("outcome") == RESERVED and e.get("reservation"):
            try:
                await run_in_threadpool(engine.release, e["reservation"])
            except (StoreError, ValueError) as exc:
                raise Unavailable(f"the limit store cannot be used: {exc}") from None
            return


def _search_request(template: dict, what: str, name: str) -> dict:
    """The search's request ``template`` with the candidate ``name`` filled in."""
    req = dict(template)
    if what == "subject":
        p = template["principal"]
        req["principal"] = {"id": name, "kind": p["kind"], "attrs": p["attrs"]}
    elif what == "resource":
        r = template["resource"]
        req["resource"] = {"type": r["type"], "id": name, "attrs": r["attrs"]}
    else:
        req["action"] = {"name": name, "attrs": {}}
    return req


def make_search(ctx: RouteContext, what: str):
    service, metrics = ctx.service, ctx.metrics
    read_body, decide, failure = ctx.read_body, ctx.decide, ctx.failure
    endpoint = f"search_{what}"

    async def search(request: Request):
        t0 = time.perf_counter()
        counts: dict = {}
        try:
            body = await read_body(request)
            query = authzen.parse_search(body, what)
            snap = service.current
            engine = snap.engine
            if what == "action":
                names = snap.actions
            else:
                names = snap.candidates.get(query.entity_type, [])
            names = authzen.search_candidates(names, query.after)
            results: list = []
            more = False
            last = None
            for i, name in enumerate(names):
                if i and i % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                d = await decide(engine, _search_request(query.request, what, name))
                if d.limits:  # a search asks what could be done: it never consumes a limit
                    await _give_back(engine, d)
                counts[d.decision] = counts.get(d.decision, 0) + 1
                if d.decision != "allow":
                    continue
                if len(results) == query.limit:
                    more = True
                    break
                last = name
                results.append({"name": name} if what == "action" else
                               {"type": query.entity_type, "id": name})
        except Exception as e:
            return failure(endpoint, e)
        for outcome, n in counts.items():
            metrics.decided(endpoint, outcome, n)
        page = {"next_token": authzen.make_token(last, query.query_digest) if more else ""}
        response = _json({"results": results, "page": page})
        metrics.observe(endpoint, time.perf_counter() - t0)
        return response

    search.__name__ = f"search_{what}"
    return search


def make_discovery(ctx: RouteContext):
    config = ctx.config

    async def discovery(request: Request):
        base = (config.public_url or str(request.base_url)).rstrip("/")
        doc = {
            "policy_decision_point": base,
            "access_evaluation_endpoint": base + "/access/v1/evaluation",
            "access_evaluations_endpoint": base + "/access/v1/evaluations",
            "search_subject_endpoint": base + "/access/v1/search/subject",
            "search_resource_endpoint": base + "/access/v1/search/resource",
            "search_action_endpoint": base + "/access/v1/search/action",
        }
        if getattr(ctx, "aarp", None) is not None:  # Approvals over AuthZEN (docs/server.md#aarp)
            from ..aarp import CAPABILITY
            doc["access_request_endpoint"] = base + "/access/v1/requests"
            doc["jwks_uri"] = base + "/access/v1/jwks"
            doc["capabilities"] = [CAPABILITY]
        return _json(doc)

    return discovery


def register(app, ctx: RouteContext) -> None:
    """Mount the AuthZEN routes on ``app``."""
    ctx = identity.proving(ctx)  # a proven principal (docs/server.md#workload-identity)
    post, get = post_options(), get_options()
    app.router.add_api_route("/access/v1/evaluation", make_evaluation(ctx), name="evaluation",
                             summary="AuthZEN access evaluation",
                             openapi_extra=openapi.with_idempotency(openapi.body(openapi.EVALUATION_REQUEST)),
                             responses=openapi.responses(openapi.EVALUATION_RESPONSE), **post)
    app.router.add_api_route("/access/v1/evaluations", make_evaluations(ctx), name="evaluations",
                             summary="AuthZEN access evaluations (batch)",
                             openapi_extra=openapi.with_idempotency(openapi.body(openapi.EVALUATIONS_REQUEST)),
                             responses=openapi.responses(openapi.EVALUATIONS_RESPONSE), **post)
    for what, schema in (("subject", openapi.SEARCH_SUBJECT_REQUEST), ("resource", openapi.SEARCH_RESOURCE_REQUEST),
                         ("action", openapi.SEARCH_ACTION_REQUEST)):
        app.router.add_api_route(f"/access/v1/search/{what}", make_search(ctx, what), name=f"search_{what}",
                                 summary=f"AuthZEN {what} search", openapi_extra=openapi.body(schema),
                                 responses=openapi.responses(openapi.SEARCH_RESPONSE), **post)
    app.router.add_api_route("/.well-known/authzen-configuration", make_discovery(ctx), **get,
                             name="authzen_configuration", summary="AuthZEN PDP metadata",
                             responses=openapi.responses({"type": "object"}, post=False))
