"""policylang's own decision route: ``POST /v1/decide`` (a docs/requests.md#request
request in, the docs/requests.md#decision decision out)."""

from __future__ import annotations

import time

from fastapi import Request

from .. import identity, openapi
from ..app import _json
from . import RouteContext, post_options


def make_decide(ctx: RouteContext):
    service, metrics = ctx.service, ctx.metrics
    read_body, decide, failure = ctx.read_body, ctx.decide, ctx.failure

    async def decide_endpoint(request: Request):
        t0 = time.perf_counter()
        try:
            body = await read_body(request)
            d = await decide(service.current.engine, body, spec_names=True)
        except Exception as e:
            return failure("decide", e)
        metrics.decided("decide", d.decision)
        response = _json(d.to_dict())
        metrics.observe("decide", time.perf_counter() - t0)
        return response

    return decide_endpoint


def register(app, ctx: RouteContext) -> None:
    """Mount ``POST /v1/decide`` on ``app``."""
    ctx = identity.proving(ctx)  # a proven principal (docs/server.md#workload-identity)
    app.router.add_api_route("/v1/decide", make_decide(ctx), name="decide",
                             summary="A docs/requests.md#request request in, a docs/requests.md#decision decision out",
                             openapi_extra=openapi.body(openapi.DECIDE_REQUEST),
                             responses=openapi.responses(openapi.DECISION), **post_options())
