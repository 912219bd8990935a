"""``policylang playground PATH``: the browser playground (docs/playground.md).

Serves a page for editing the set at PATH with its diagnostics as you type, deciding
requests (the set's example requests to pick from) with the delegation path and the rule
trace drawn, and listing the example requests an edit changes. Read-only unless
``--allow-write``. On a non-loopback ``--host`` it needs the decision service's
authentication (``--jwks``/``--jwt-audience`` bearer JWTs, or mutual TLS with
``--client-ca``), as ``policylang serve`` does. Exit 1 when the server extra is missing or
the authentication settings cannot work, 2 for usage errors.
"""

from __future__ import annotations

import importlib.util
import sys

import click

from .authopts import auth_options, check_auth_options, tls_settings

DESCRIPTION = "Edit a policy set in the browser: diagnostics as you type, decisions with their path and trace."


def _fail(message: str, status: int = 1) -> None:
    click.echo(f"policylang playground: {message}", err=True)
    sys.exit(status)


@click.command("playground", help=DESCRIPTION + " PATH is a .policy file or a directory. Read-only unless "
               "--allow-write; never writes outside PATH.")
@click.argument("path", type=click.Path(exists=True, dir_okay=True, file_okay=True))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (a non-loopback one needs --jwks or --client-ca).")
@click.option("--port", default=8182, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--audit", "audit", default=None, type=click.Path(dir_okay=False),
              help="An audit log for the audit viewer page (static/audit.html) to open.")
@click.option("--allow-write", is_flag=True, default=False,
              help="Let the page save edited files (only policy and entity files inside PATH).")
@auth_options(jwks_help="Authenticate every API call by bearer JWT verified against this JWKS (a file or an "
                        "https:// URL).",
              client_ca_help="Require client certificates signed by this CA (mutual TLS). Needs --tls-cert.")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(("critical", "error", "warning", "info", "debug")))
def command(path, host, port, audit, allow_write, jwks, jwt_audience, jwt_issuer, jwt_algorithms,
            jwt_caller_claim, tls_cert, tls_key, client_ca, log_level):
    check_auth_options(jwks=jwks, jwt_audience=jwt_audience, jwt_issuer=jwt_issuer, jwt_algorithms=jwt_algorithms,
                       tls_cert=tls_cert, tls_key=tls_key, client_ca=client_ca)
    from ..server.auth import is_loopback_host
    if not (jwks or client_ca) and not is_loopback_host(host):
        _fail(f"refusing to serve the playground on {host} without authentication: anyone who reaches the "
              "port could read the policies and decide against them. Configure --jwks FILE|URL --jwt-audience "
              "AUD (bearer JWTs) or --tls-cert/--tls-key/--client-ca (mutual TLS); or listen on 127.0.0.1", 2)
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        _fail(f"the server extra is not installed ({', '.join(missing)}); pip install 'policylang[server]'")

    auth = None
    if jwks or client_ca:
        from ..server.auth import Authenticator
        try:
            auth = Authenticator(jwks=jwks, issuer=jwt_issuer, audience=jwt_audience,
                                 algorithms=tuple(jwt_algorithms) or None, caller_claim=jwt_caller_claim,
                                 mtls=bool(client_ca))
        except Exception as e:  # noqa: BLE001 - an unreadable JWKS, a refused algorithm
            _fail(str(e))

    from ..playground.app import create_app
    try:
        app = create_app(path, read_only=not allow_write, audit_path=audit, auth=auth)
    except Exception as e:  # noqa: BLE001 - an unreadable path: one line, no traceback
        _fail(f"{path}: {e}")

    import uvicorn

    options = {"host": host, "port": port, "log_level": log_level, "access_log": False,
               "server_header": False, "lifespan": "off", **tls_settings(tls_cert, tls_key, client_ca)}
    scheme = "https" if tls_cert else "http"
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"policylang playground: {path} at {scheme}://{shown}:{port}/ "
               f"({'saving allowed' if allow_write else 'read-only'})", err=True)
    try:
        uvicorn.run(app, **options)
    except SystemExit as e:
        if e.code not in (None, 0):
            _fail(f"could not start serving on {host}:{port}")
        raise
