"""``policylang serve PATH``: the HTTP decision service (docs/server.md).

The set is loaded and checked before anything listens: a set with errors prints every
diagnostic and exits 1. Then uvicorn serves it, in this process (``--workers 1``) or in
N worker processes forked after this load, sharing the compiled set copy-on-write
(``--workers N``, docs/server.md#workers; SIGHUP to the parent is passed on to every
worker, which reloads incrementally in place). Apart from that, nothing is shared between
workers or replicas except what the optional ``--store`` holds (approvals, revocations,
tasks, and the counters of the set's ``limit`` clauses: docs/server.md#limits).
"""

from __future__ import annotations

import sys

import click

from .authopts import auth_options, check_auth_options, tls_settings

DESCRIPTION = "Serve a policy set over HTTP (AuthZEN 1.0, /v1/decide, /healthz, /metrics)."

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def _echo_err(text: str) -> None:
    click.echo(text, err=True)


@click.command("serve", help=DESCRIPTION)
@click.argument("path", type=click.Path(exists=True, dir_okay=True, file_okay=True))
@click.option("--entities", "entities", multiple=True, type=click.Path(dir_okay=False),
              help="An entity data file {kind: {id: attrs}} (repeatable; wins over the set's own files).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8181, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Worker processes (each loads the set and reloads it by itself).")
@click.option("--max-body", default=1 << 20, show_default=True, type=click.IntRange(1, None),
              help="Largest request body in bytes; bigger ones are answered 413.")
@click.option("--cache-size", default=10_000, show_default=True, type=click.IntRange(0, None),
              help="Decision cache entries per worker (0 turns the cache off).")
@click.option("--poll-interval", default=0.5, show_default=True, type=click.FloatRange(0, 60),
              help="Seconds between checks of the files for changes (0: reload on SIGHUP only).")
@click.option("--public-url", default=None,
              help="The service's external base URL, for /.well-known/authzen-configuration.")
@click.option("--store", default=None,
              help="Shared state for approvals, tokens and limit counters: sqlite:///state.db or "
                   "redis://host:6379/0 (replicas sharing one Redis share every budget).")
@click.option("--create-store", is_flag=True, default=False,
              help="Create the --store when it does not exist (a new SQLite file, the Redis marker); "
                   "without it a missing store is refused.")
@click.option("--keys", default=None, type=click.Path(dir_okay=False),
              help="Signing keys (policylang token keygen) to mint task tokens; needs --store. "
                   "Re-read when the file changes and on SIGHUP (token rotate).")
@click.option("--require-open-tasks", is_flag=True, default=False,
              help="Mint tokens only for tasks a delegator opened first (POST /v1/tasks); needs --keys.")
@click.option("--issuer", default=None, help="The iss claim of minted tokens (default: --public-url).")
@click.option("--audit", default=None, type=click.Path(dir_okay=False),
              help="Append every decision to this hash-chained audit log.")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(LOG_LEVELS))
@click.option("--access-log/--no-access-log", default=False, show_default=True,
              help="Log every request (costs throughput).")
@click.option("--header-timeout", default=10.0, show_default=True, type=click.FloatRange(0.1, 3600),
              help="Seconds a connection has to send a complete request line and headers (then it is closed).")
@click.option("--body-timeout", default=30.0, show_default=True, type=click.FloatRange(0.1, 3600),
              help="Seconds a request body has to arrive in full (then 408).")
@click.option("--keep-alive-timeout", default=5, show_default=True, type=click.IntRange(1, 3600),
              help="Seconds an idle keep-alive connection is kept.")
@click.option("--max-connections", default=1000, show_default=True, type=click.IntRange(1, None),
              help="Connections (and in-flight requests) per worker; beyond it requests are answered 503.")
@auth_options(jwks_help="Authenticate callers of the approval/token/task routes by bearer JWT verified against "
                        "this JWKS: a file, or an https:// URL (refetched on key rotation).",
              client_ca_help="Require client certificates signed by this CA (mutual TLS); the caller is the "
                             "certificate's URI SAN (e.g. a SPIFFE id). Needs --tls-cert.")
@click.option("--admin-policies", default=None, type=click.Path(dir_okay=True, file_okay=True),
              help="A policy set deciding which caller may use which approval/token/task route "
                   "(default: any authenticated caller).")
@click.option("--svid-bundle", default=None, type=click.Path(exists=True, dir_okay=True, file_okay=True),
              help="Prove the decision's principal by SPIFFE SVID: a directory of trust bundles "
                   "<trust-domain>.json (SPIFFE bundle / JWKS) and/or <trust-domain>.pem, or one such file "
                   "with --trust-domain. Re-read when it changes.")
@click.option("--svid-audience", default=None, help="The aud every JWT-SVID (X-Workload-SVID header) must carry.")
@click.option("--trust-domain", "trust_domains", multiple=True,
              help="An accepted SPIFFE trust domain (repeatable; default: every one with a bundle).")
@click.option("--require-proven-principal", is_flag=True, default=False,
              help="Refuse decision requests without a valid SVID (401) and whose body names another "
                   "principal than the proven one (403). Needs --svid-bundle.")
@click.option("--svid-kind", "svid_kinds", multiple=True, metavar="PATTERN=KIND",
              help="The kind of a proven principal whose SPIFFE id matches the glob PATTERN "
                   "(spiffe://example.org/agents/*=agent; repeatable, the first match wins). With any, a "
                   "body naming another kind is 403, and so is a proven id no pattern matches. Needs "
                   "--svid-bundle.")
# -- Approvals over AuthZEN (docs/server.md#aarp) --------------------------------------------
@click.option("--binding-keys", default=None, type=click.Path(dir_okay=False),
              help="Ed25519 keys (policylang token keygen) signing AARP binding tokens and approval states; "
                   "turns on requestable denials and /access/v1/requests. Needs --store. Re-read when the "
                   "file changes.")
@click.option("--binding-ttl", default=600, show_default=True, type=click.IntRange(1, 86400),
              help="Seconds a requestable denial can be submitted as an access request (its expires_at).")
@click.option("--ui", is_flag=True, default=False,
              help="Also serve the playground, read-only, at /ui (docs/playground.md), behind the same "
                   "authentication as the service. Needs --workers 1.")
def command(path, entities, host, port, workers, max_body, cache_size, poll_interval, public_url,
            store, keys, issuer, audit, log_level, access_log, header_timeout, body_timeout,
            keep_alive_timeout, max_connections, jwks, jwt_audience, jwt_issuer, jwt_algorithms,
            jwt_caller_claim, tls_cert, tls_key, client_ca, admin_policies, create_store=False,
            require_open_tasks=False, svid_bundle=None, svid_audience=None, trust_domains=(),
            require_proven_principal=False, binding_keys=None, binding_ttl=600, ui=False, svid_kinds=()):
    _check_ui(ui=ui, workers=workers, host=host, authenticated=bool(jwks or client_ca))
    _check_options(host=host, store=store, keys=keys, issuer=issuer, jwks=jwks, jwt_audience=jwt_audience,
                   jwt_issuer=jwt_issuer, jwt_algorithms=jwt_algorithms, tls_cert=tls_cert, tls_key=tls_key,
                   client_ca=client_ca, admin_policies=admin_policies, create_store=create_store,
                   require_open_tasks=require_open_tasks)
    _check_identity_options(svid_bundle=svid_bundle, svid_audience=svid_audience, trust_domains=trust_domains,
                            require_proven_principal=require_proven_principal, client_ca=client_ca)
    kinds = _svid_kinds(svid_kinds, svid_bundle)
    if binding_keys and not store:
        raise click.UsageError("--binding-keys needs --store (the approval tickets live there)")
    aarp = {"binding_keys": binding_keys, "binding_ttl": binding_ttl} if binding_keys else None
    import importlib.util
    missing = [m for m in ("fastapi", "uvicorn", "prometheus_client") if importlib.util.find_spec(m) is None]
    if missing:
        _echo_err(f"policylang serve: the server extra is not installed ({', '.join(missing)}); "
                  "pip install 'policylang[server]'")
        sys.exit(1)

    from ..server.service import ServiceConfig, build_service

    config = ServiceConfig(path=path, entities=tuple(entities), cache_size=cache_size,
                           poll_interval=poll_interval, max_body=max_body, public_url=public_url,
                           store=store, keys=keys, issuer=issuer, audit=audit, body_timeout=body_timeout,
                           jwks=jwks, jwt_issuer=jwt_issuer, jwt_audience=jwt_audience,
                           jwt_algorithms=tuple(jwt_algorithms), jwt_caller_claim=jwt_caller_claim,
                           mtls=bool(client_ca), admin_policies=admin_policies,
                           create_store=create_store, require_open_tasks=require_open_tasks)
    if svid_bundle:  # proven workload identity (policylang.server.identity)
        import dataclasses
        config = dataclasses.replace(config, svid_bundle=svid_bundle, svid_audience=svid_audience,
                                     svid_trust_domains=tuple(trust_domains),
                                     require_proven_principal=require_proven_principal, svid_kinds=kinds)
        try:
            from ..server.identity import verifier_for
            verifier_for(config)
        except ValueError as e:  # an unreadable bundle, a bad trust domain name, no spiffe package
            _echo_err(f"policylang serve: {e}")
            sys.exit(1)
    try:
        _check_auth(config)
    except Exception as e:  # an unreadable JWKS, a bad algorithm, admin policies with errors
        _echo_err(f"policylang serve: {e}")
        sys.exit(1)
    try:
        service, extras = build_service(config)
    except Exception as e:  # a bad store URL, an unreadable key file, an audit log that cannot open
        _echo_err(f"policylang serve: {e}")
        sys.exit(1)
    result = service.load("startup")
    for d in result.diagnostics:
        _echo_err(d.render())
    if not result.ok:
        n = sum(1 for d in result.diagnostics if d.severity == "error")
        _echo_err(f"policylang serve: {path}: {n} error{'s' if n != 1 else ''}; not serving")
        sys.exit(1)
    snap = service.current
    _echo_err(f"policylang serve: {path}: {len(snap.policies.rules)} rules, {snap.version}")
    if aarp:  # fail before serving when the binding keys cannot sign
        try:
            from ..server.aarp import from_settings
            from_settings(aarp, approvals=extras.get("approvals"), audit=None, engine_getter=None,
                          public_url=public_url)
        except Exception as e:
            _echo_err(f"policylang serve: --binding-keys {binding_keys}: {e}")
            sys.exit(1)

    import uvicorn

    common = dict(host=host, port=port, log_level=log_level, access_log=access_log,
                  server_header=False, lifespan="on", timeout_graceful_shutdown=10,
                  timeout_keep_alive=keep_alive_timeout, limit_concurrency=max_connections,
                  header_timeout=header_timeout, **tls_settings(tls_cert, tls_key, client_ca))
    if workers == 1:
        from ..server.app import create_app
        from ..server.supervisor import uvicorn_options
        app = create_app(config, service=service, extras=extras, aarp=aarp)
        if ui:  # the playground, read-only, behind the service's authenticator (docs/playground.md)
            from ..playground.app import mount_ui
            mount_ui(app, path, auth=app.state.authenticator)
        try:
            uvicorn.run(app, **uvicorn_options(common))
        except SystemExit as e:  # uvicorn's start-up failure (3): it has logged why
            if e.code not in (None, 0):
                _echo_err(f"policylang serve: could not start serving on {host}:{port}")
                sys.exit(1)
            raise
        return
    if aarp:  # each worker builds its access request service from these (app_from_env)
        import json
        import os
        from ..server.aarp import AARP_ENV
        os.environ[AARP_ENV] = json.dumps(aarp)
    from ..server.supervisor import run_workers
    run_workers(config, workers, common, service=service)  # forks the workers after this load


def _check_options(*, host, store, keys, issuer, jwks, jwt_audience, jwt_issuer, jwt_algorithms, tls_cert,
                   tls_key, client_ca, admin_policies, create_store, require_open_tasks) -> None:
    """Refuse option combinations that cannot work (usage error, exit 2), and the approval
    and token routes unauthenticated on a non-loopback address (exit 2)."""
    if create_store and not store:
        raise click.UsageError("--create-store needs --store")
    if require_open_tasks and not keys:
        raise click.UsageError("--require-open-tasks needs --keys")
    if keys and not store:
        raise click.UsageError("--keys needs --store (revocations and task lifetimes live there)")
    if issuer and not keys:
        raise click.UsageError("--issuer needs --keys")
    check_auth_options(jwks=jwks, jwt_audience=jwt_audience, jwt_issuer=jwt_issuer, jwt_algorithms=jwt_algorithms,
                       tls_cert=tls_cert, tls_key=tls_key, client_ca=client_ca)
    if admin_policies and not (jwks or client_ca):
        raise click.UsageError("--admin-policies needs authentication: --jwks or --client-ca")
    from ..server.auth import is_loopback_host
    if store and not (jwks or client_ca) and not is_loopback_host(host):
        _echo_err(f"policylang serve: refusing to serve the approval and token routes on {host} without "
                  "authentication: anyone who reaches the port could approve, mint and revoke. Configure "
                  "--jwks FILE|URL --jwt-audience AUD (bearer JWTs) or --tls-cert/--tls-key/--client-ca "
                  "(mutual TLS), optionally --admin-policies DIR; or listen on 127.0.0.1")
        sys.exit(2)


def _check_ui(*, ui, workers, host, authenticated) -> None:
    """``--ui``: one worker, and authentication off loopback (exit 2), as ``policylang playground``."""
    if not ui:
        return
    if workers != 1:
        raise click.UsageError("--ui needs --workers 1")
    from ..server.auth import is_loopback_host
    if not authenticated and not is_loopback_host(host):
        _echo_err(f"policylang serve: refusing to serve the playground (--ui) on {host} without authentication: "
                  "configure --jwks FILE|URL --jwt-audience AUD or --tls-cert/--tls-key/--client-ca; "
                  "or listen on 127.0.0.1")
        sys.exit(2)


def _check_identity_options(*, svid_bundle, svid_audience, trust_domains, require_proven_principal,
                            client_ca) -> None:
    """Usage errors (exit 2) of the proven-workload-identity options."""
    if (svid_audience or trust_domains or require_proven_principal) and not svid_bundle:
        raise click.UsageError("--svid-audience, --trust-domain and --require-proven-principal need --svid-bundle")
    if svid_bundle and not (svid_audience or client_ca):
        raise click.UsageError("--svid-bundle needs --svid-audience (JWT-SVIDs) or --client-ca (X.509-SVIDs "
                               "over mutual TLS), or both")


def _svid_kinds(values, svid_bundle) -> tuple[tuple[str, str], ...]:
    """``--svid-kind PATTERN=KIND`` values as (pattern, kind) pairs (usage errors exit 2)."""
    import re
    pairs = []
    for value in values:
        pattern, sep, kind = value.rpartition("=")
        if not sep or not pattern.startswith("spiffe://") or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", kind):
            raise click.UsageError(f"--svid-kind {value!r}: expected PATTERN=KIND, a glob of SPIFFE ids "
                                   "(spiffe://...) and a kind name (spiffe://example.org/agents/*=agent)")
        pairs.append((pattern, kind))
    if pairs and not svid_bundle:
        raise click.UsageError("--svid-kind needs --svid-bundle")
    return tuple(pairs)


def _check_auth(config) -> None:
    """Fail before serving when the authentication settings cannot work."""
    if not config.auth_configured:
        return
    from ..language.errors import PolicyError
    from ..server.auth import AdminGuard, Authenticator
    Authenticator(jwks=config.jwks, issuer=config.jwt_issuer, audience=config.jwt_audience,
                  algorithms=tuple(config.jwt_algorithms) or None, caller_claim=config.jwt_caller_claim,
                  mtls=config.mtls)
    try:
        AdminGuard(config.admin_policies)
    except PolicyError as e:
        raise ValueError(f"--admin-policies {config.admin_policies}:\n{e}") from None
