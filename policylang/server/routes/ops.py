"""The operations routes: ``GET /healthz`` (serving state, policy version, last reload;
503 while no set is loaded) and ``GET /metrics`` (Prometheus text)."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from .. import openapi
from ..app import _json
from ..metrics import CONTENT_TYPE_LATEST
from . import RouteContext, get_options


def make_healthz(ctx: RouteContext):
    service = ctx.service

    async def healthz(request: Request):
        health = service.health()
        return _json(health, 200 if service.current is not None else 503)

    return healthz


def make_metrics(ctx: RouteContext):
    service, metrics = ctx.service, ctx.metrics

    async def metrics_endpoint(request: Request):
        snap = service.current
        metrics.sync_cache(snap.engine if snap else None)
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return metrics_endpoint


def register(app, ctx: RouteContext) -> None:
    """Mount ``GET /healthz`` and ``GET /metrics`` on ``app``."""
    get = get_options()
    app.router.add_api_route("/healthz", make_healthz(ctx), **get, name="healthz",
                             summary="Serving state, policy version and the last reload",
                             responses=openapi.responses({"type": "object"}, post=False))
    app.router.add_api_route("/metrics", make_metrics(ctx), **get, name="metrics",
                             summary="Prometheus metrics",
                             responses={200: {"description": "Prometheus text", "content": {"text/plain": {}}}})
