"""The HTTP decision service (``policylang serve``, docs/server.md). Needs the ``server`` extra
(``pip install policylang[server]``); ``import policylang`` never imports it.

    from policylang.server import create_app, ServiceConfig
    app = create_app(ServiceConfig(path="policies/", entities=("users.entities.json",)))

Modules: ``app`` (the app factory, endpoints, ASGI middlewares), ``authzen`` (the
AuthZEN 1.0 mapping, framework-free), ``service`` (loading, atomic swap, the reloader
thread), ``metrics`` (Prometheus), ``openapi`` (body schemas), ``zsp`` (approval and
token routes, mounted when a store is configured).
"""

from __future__ import annotations

from .service import PolicyService, ServiceConfig, Snapshot


def create_app(*args, **kwargs):
    from .app import create_app as _create_app
    return _create_app(*args, **kwargs)


__all__ = ["create_app", "ServiceConfig", "PolicyService", "Snapshot"]
