"""``policylang serve PATH``: the HTTP decision service (SPEC §10).

The set is loaded and checked before anything listens: a set with errors prints every
diagnostic and exits 1. Then uvicorn serves it, in this process (``--workers 1``) or in
N worker processes that each load the same files (``--workers N``; SIGHUP to the parent
is passed on to every worker, which reloads in place). Nothing is shared between
workers or replicas except what the optional ``--store`` holds (approvals, revocations).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile

import click

DESCRIPTION = "Serve a policy set over HTTP (AuthZEN 1.0, /v1/decide, /healthz, /metrics)."

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def _echo_err(text: str) -> None:
    click.echo(text, err=True)


@click.command("serve", help=DESCRIPTION)
@click.argument("path", type=click.Path(dir_okay=True, file_okay=True))
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
              help="Shared state for approvals and tokens: sqlite:///state.db or redis://host:6379/0.")
@click.option("--keys", default=None, type=click.Path(dir_okay=False),
              help="Signing keys (policylang token keygen) to mint task tokens; needs --store.")
@click.option("--issuer", default=None, help="The iss claim of minted tokens (default: --public-url).")
@click.option("--audit", default=None, type=click.Path(dir_okay=False),
              help="Append every decision to this hash-chained audit log.")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(LOG_LEVELS))
@click.option("--access-log/--no-access-log", default=False, show_default=True,
              help="Log every request (costs throughput).")
def command(path, entities, host, port, workers, max_body, cache_size, poll_interval, public_url,
            store, keys, issuer, audit, log_level, access_log):
    if keys and not store:
        raise click.UsageError("--keys needs --store (revocations and task lifetimes live there)")
    if issuer and not keys:
        raise click.UsageError("--issuer needs --keys")
    import importlib.util
    missing = [m for m in ("fastapi", "uvicorn", "prometheus_client") if importlib.util.find_spec(m) is None]
    if missing:
        _echo_err(f"policylang serve: the server extra is not installed ({', '.join(missing)}); "
                  "pip install 'policylang[server]'")
        sys.exit(1)

    from ..server.service import ServiceConfig, build_service

    config = ServiceConfig(path=path, entities=tuple(entities), cache_size=cache_size,
                           poll_interval=poll_interval, max_body=max_body, public_url=public_url,
                           store=store, keys=keys, issuer=issuer, audit=audit)
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

    import uvicorn

    common = dict(host=host, port=port, log_level=log_level, access_log=access_log,
                  server_header=False, lifespan="on", timeout_graceful_shutdown=10)
    if workers == 1:
        from ..server.app import create_app
        app = create_app(config, service=service, extras=extras)
        uvicorn.run(app, **common)
        return
    _run_workers(config, workers, common)


def _run_workers(config, workers: int, common: dict) -> None:
    """N uvicorn workers on one socket. SIGHUP to this process reloads every worker in
    place; /metrics aggregates all workers through a shared multiprocess directory."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from ..server.app import CONFIG_ENV

    os.environ[CONFIG_ENV] = json.dumps(config.to_dict())
    own_dir = None
    if not (os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")):
        own_dir = tempfile.mkdtemp(prefix="policylang-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir

    class Supervisor(Multiprocess):
        def handle_hup(self) -> None:  # uvicorn queues signals and calls handle_<name>
            self.forward_hup()

        def forward_hup(self) -> None:
            for proc in list(self.processes):
                pid = getattr(proc, "pid", None)
                if pid:
                    try:
                        os.kill(pid, signal.SIGHUP)
                    except ProcessLookupError:
                        pass

    uconfig = uvicorn.Config("policylang.server.app:app_from_env", factory=True, workers=workers, **common)
    server = uvicorn.Server(uconfig)
    sock = uconfig.bind_socket()
    import inspect
    params = inspect.signature(Multiprocess.__init__).parameters
    kwargs = {"sockets": [sock]}
    if "target" in params:
        kwargs["target"] = server.run
    supervisor = Supervisor(uconfig, **kwargs)
    if not hasattr(supervisor, "signal_queue") and hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: supervisor.forward_hup())
    try:
        supervisor.run()
    except KeyboardInterrupt:  # pragma: no cover
        pass
    finally:
        if own_dir:
            shutil.rmtree(own_dir, ignore_errors=True)
