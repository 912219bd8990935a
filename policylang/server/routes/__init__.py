"""The routes of the decision service, by concern (docs/server.md).

* :mod:`.authzen`: the OpenID AuthZEN Authorization API 1.0 (evaluation, evaluations,
  search, discovery);
* :mod:`.decide`: policylang's own ``POST /v1/decide``;
* :mod:`.ops`: ``GET /healthz`` and ``GET /metrics``.

Each module's ``register(app, ctx)`` mounts its routes on the app as
:class:`~policylang.server.app.DirectRoute` routes; :class:`RouteContext` holds what the
handlers share (the service, the metrics, the body reader, the decision call and the
error answers). ``create_app`` builds the context and registers the modules in the
order above (which is also the order of the OpenAPI document's paths).
"""

from __future__ import annotations

import logging

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ...language.errors import RequestError
from .. import authzen as _authzen  # the AuthZEN parsing (not .authzen, the routes
from ..app import Unavailable, error_response, parse_json_body
from ..authzen import BadRequest

log = logging.getLogger("policylang.server")

__all__ = ["RouteContext", "register_all"]


class RouteContext:
    """What the route handlers of one app share."""

    def __init__(self, service, metrics, config):
        self.service = service
        self.metrics = metrics
        self.config = config
        #: requests that may block (an approval id to look up, an audit write) run in
        #: the thread pool only when the service has an approvals store or an audit log
        self.use_threads = service.approvals is not None or service.audit is not None
        #: the limit store (docs/server.md#limits), or None: without one no evaluation
        #: consumes anything, and the AuthZEN routes ignore ``Idempotency-Key``
        self.limit_store = None

    async def read_body(self, request: Request) -> dict:
        raw = request.scope.get("policylang.body")
        if raw is None:
            raw = await request.body()
        return parse_json_body(request.headers.get("content-type"), raw)

    @staticmethod
    def decide_now(engine, req: dict, prefix: str, spec_names: bool):
        try:
            return engine.decide(req)
        except RequestError as e:
            if spec_names:
                raise BadRequest(str(e)) from None
            raise _authzen.request_error(e, prefix) from None
        except RecursionError:
            raise BadRequest(f"{prefix}request: nested too deeply") from None
        except Exception as e:
            from ...privilege.audit import AuditError
            if isinstance(e, AuditError):
                raise Unavailable(f"the audit log cannot be written: {e}") from None
            raise

    async def decide(self, engine, req: dict, prefix: str = "", spec_names: bool = False):
        service = self.service
        if self.use_threads and (service.audit is not None or req.get("approval") is not None):
            return await run_in_threadpool(self.decide_now, engine, req, prefix, spec_names)
        return self.decide_now(engine, req, prefix, spec_names)

    @staticmethod
    def item_failure(exc: Exception, i: int) -> dict:
        """The answer for batch item ``i`` that could not be decided (only bugs re-raise)."""
        if isinstance(exc, RequestError):
            exc = _authzen.request_error(exc, f"evaluations[{i}].")
        elif isinstance(exc, RecursionError):
            exc = BadRequest(f"evaluations[{i}]: nested too deeply")
        elif not isinstance(exc, (BadRequest, Unavailable)):
            from ...privilege.audit import AuditError
            if not isinstance(exc, AuditError):
                raise exc
            exc = Unavailable(f"the audit log cannot be written: {exc}")
        if isinstance(exc, Unavailable):
            return _authzen.item_error(str(exc), 503)
        return _authzen.item_error(exc.message)

    def failure(self, endpoint: str, exc: Exception) -> Response:
        if isinstance(exc, BadRequest):
            self.metrics.decided(endpoint, "invalid")
            return error_response(exc.status, exc.message)
        if isinstance(exc, Unavailable):
            return error_response(503, str(exc))
        log.exception("internal error on %s", endpoint)
        return error_response(500, "internal error")


#: ``DirectRoute`` keywords shared by every route
def post_options() -> dict:
    from ..app import DirectRoute
    return dict(methods=["POST"], response_class=Response, route_class_override=DirectRoute)


def get_options() -> dict:
    from ..app import DirectRoute
    return dict(methods=["GET"], response_class=Response, route_class_override=DirectRoute)


def register_all(app, ctx: RouteContext) -> None:
    """Mount every route module's routes on ``app``, in the documented order."""
    from . import authzen, decide, ops
    authzen.register(app, ctx)
    decide.register(app, ctx)
    ops.register(app, ctx)
