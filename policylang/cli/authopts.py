"""The caller-authentication options ``serve`` and ``playground`` share (docs/server.md#authentication).

One place for the options (bearer JWTs against a JWKS, HTTPS, mutual TLS), the usage
errors of their combinations, and the uvicorn TLS settings they turn into, so the two
commands can never drift apart on what "authenticated" means.
"""

from __future__ import annotations

from collections.abc import Callable

import click

__all__ = ["auth_options", "check_auth_options", "tls_settings"]


def auth_options(*, jwks_help: str, client_ca_help: str) -> Callable:
    """The decorator adding ``--jwks``, ``--jwt-audience``, ``--jwt-issuer``,
    ``--jwt-algorithm``, ``--jwt-caller-claim``, ``--tls-cert``, ``--tls-key`` and
    ``--client-ca`` to a command."""
    options = [
        click.option("--jwks", default=None, help=jwks_help),
        click.option("--jwt-audience", default=None, help="The aud every caller JWT must carry (required with --jwks)."),
        click.option("--jwt-issuer", default=None, help="The iss every caller JWT must carry."),
        click.option("--jwt-algorithm", "jwt_algorithms", multiple=True,
                     help="An accepted JWS algorithm (repeatable; default: RS*, PS*, ES*, EdDSA; never none or HS*)."),
        click.option("--jwt-caller-claim", default="sub", show_default=True, help="The claim that names the caller."),
        click.option("--tls-cert", default=None, type=click.Path(dir_okay=False),
                     help="Serve HTTPS with this certificate (PEM)."),
        click.option("--tls-key", default=None, type=click.Path(dir_okay=False),
                     help="The private key of --tls-cert (PEM)."),
        click.option("--client-ca", default=None, type=click.Path(dir_okay=False), help=client_ca_help),
    ]

    def decorate(fn: Callable) -> Callable:
        for option in reversed(options):
            fn = option(fn)
        return fn
    return decorate


def check_auth_options(*, jwks, jwt_audience, jwt_issuer, jwt_algorithms, tls_cert, tls_key, client_ca) -> None:
    """Refuse combinations of the options that cannot work (click.UsageError: exit 2)."""
    if jwks and not jwt_audience:
        raise click.UsageError("--jwks needs --jwt-audience (the aud every caller token must carry)")
    if (jwt_audience or jwt_issuer or jwt_algorithms) and not jwks:
        raise click.UsageError("--jwt-audience, --jwt-issuer and --jwt-algorithm need --jwks")
    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if client_ca and not tls_cert:
        raise click.UsageError("--client-ca needs --tls-cert and --tls-key (mutual TLS)")


def tls_settings(tls_cert, tls_key, client_ca) -> dict:
    """uvicorn's keyword arguments for HTTPS and, with ``client_ca``, required client certificates."""
    if not tls_cert:
        return {}
    out = {"ssl_certfile": tls_cert, "ssl_keyfile": tls_key}
    if client_ca:
        import ssl
        out.update(ssl_ca_certs=client_ca, ssl_cert_reqs=int(ssl.CERT_REQUIRED))
    return out
