"""The limit routes of the decision service (docs/server.md#limits), mounted when a
``--store`` is configured (the store keeps the counters of the set's ``limit`` clauses):

=======  ========================  ======================================================
POST     /v1/limits/release        ``{"reservation": ID}``: give back what an ``allow``
                                   reserved (the action it allowed did not run): 200
                                   ``{"released": true}``, or ``{"released": false}`` for
                                   an unknown or already released reservation; 400 naming
                                   the field for a bad body; 503 when the store fails
=======  ========================  ======================================================

The route is guarded like the approval, token and task routes (policylang.server.auth:
action ``release_limit`` on resource type ``limit_reservation``, id = the reservation).

:func:`limited_decide` wraps the routes' decision call: a decision of a set with limits
asks the store (SQLite, Redis), so it runs in the thread pool; every decision's
``limits`` entries are counted in the metrics.
"""

from __future__ import annotations

import time
import weakref

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from .. import openapi
from ..app import _json, error_response
from ..authzen import BadRequest
from . import RouteContext, post_options

__all__ = ["register", "limited_decide", "MAX_RESERVATION_ID"]

#: the longest reservation id accepted (the engine's are 32 hex digits)
MAX_RESERVATION_ID = 200

RELEASE_REQUEST = {
    "type": "object",
    "required": ["reservation"],
    "properties": {"reservation": {"type": "string", "minLength": 1, "maxLength": MAX_RESERVATION_ID,
                                   "description": "the `reservation` of a decision's `limits` entry"}},
}
RELEASE_RESPONSE = {"type": "object", "required": ["released"], "properties": {"released": {"type": "boolean"}}}


def limited_decide(ctx: RouteContext):
    """``ctx.decide`` for a service with a limit store: decisions of a set with limits run
    in the thread pool (the reservation is a store round trip), and the limit entries of
    every decision are counted (``policylang_limit_refusals_total``,
    ``policylang_limit_reservations_total``)."""
    from ...evaluation.limits import set_has_limits

    inner = ctx.decide
    decide_now = ctx.decide_now
    metrics = ctx.metrics
    has_limits: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def limited(engine) -> bool:
        try:
            return has_limits[engine]
        except KeyError:
            value = has_limits[engine] = set_has_limits(engine.policies)
            return value
        except TypeError:  # an engine that cannot be weakly referenced: ask every time
            return set_has_limits(engine.policies)

    async def decide(engine, req: dict, prefix: str = "", spec_names: bool = False):
        if limited(engine):
            d = await run_in_threadpool(decide_now, engine, req, prefix, spec_names)
        else:
            d = await inner(engine, req, prefix, spec_names)
        if d.limits:
            metrics.limited(d.limits)
        return d

    return decide


def make_release(ctx: RouteContext, store):
    read_body = ctx.read_body

    async def release(request: Request):
        try:
            body = await read_body(request)
        except BadRequest as e:
            return error_response(e.status, e.message)
        rid = body.get("reservation")
        if rid is None:
            return error_response(400, "reservation: required (the reservation id of a decision's limits entry)")
        if rid.__class__ is not str or not 0 < len(rid) <= MAX_RESERVATION_ID:
            return error_response(400, f"reservation: must be a string of 1 to {MAX_RESERVATION_ID} characters")
        from ...privilege.store import StoreError
        try:
            released = await run_in_threadpool(store.release_limits, rid, time.time())
        except StoreError as e:  # unreachable, locked: nothing was released
            return error_response(503, f"unavailable: the limit store cannot be used: {e}")
        return _json({"released": bool(released)})

    return release


def register(app, ctx: RouteContext, store) -> None:
    """Mount ``POST /v1/limits/release`` on ``app`` (giving back reservations of ``store``)."""
    app.router.add_api_route("/v1/limits/release", make_release(ctx, store), name="release_limit",
                             summary="Give back a limit reservation an allow made (docs/server.md#limits)",
                             openapi_extra=openapi.body(RELEASE_REQUEST),
                             responses=openapi.responses(RELEASE_RESPONSE), **post_options())
