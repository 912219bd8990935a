"""The process supervisor of ``policylang serve --workers N`` (docs/server.md, docs/deploy.md).

:func:`run_workers` starts N uvicorn worker processes. Given the service ``serve`` loaded
(the set parsed, checked and compiled once, in this process), it *forks* them after the
load (Linux, docs/server.md#workers): the parent freezes its heap (``gc.freeze()``, so no
collection in a worker writes to the shared pages) and every worker starts serving that
compiled set at once, sharing its memory copy-on-write, with its own store connections,
audit log and caches. Without a loaded service, or where fork is unsafe, workers are
spawned and each loads the files itself. SIGHUP to the supervisor is passed on to every
worker: each reloads in place, incrementally from the set it serves (unchanged files are
not parsed again, unchanged rules not compiled again); the reloaded set is the worker's
own (not shared) until the supervisor restarts it. SIGINT or
SIGTERM stops them all (gracefully, then killed after the grace period); a worker that
exits is replaced, unless workers keep dying right after they start (then the supervisor
stops and exits 1). /metrics aggregates all workers through a shared multiprocess
directory.

On Linux each worker listens on its own ``SO_REUSEPORT`` socket, so the kernel spreads
the connections evenly over the workers. (With one shared socket, the first worker to
wake accepts a whole burst of keep-alive connections and the others idle.) Where
``SO_REUSEPORT`` is missing, uvicorn's own supervisor shares one socket instead.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time

import click

#: set in a forked worker, before it serves: (snapshot, file signature) the parent loaded
_PRELOADED: tuple | None = None

__all__ = ["run_workers", "uvicorn_options"]

#: deaths within this many seconds of a worker's start count as start-up failures
_QUICK_DEATH = 5
#: consecutive start-up failures after which the supervisor gives up
_MAX_QUICK_DEATHS = 3


def _echo_err(text: str) -> None:
    click.echo(text, err=True)


def uvicorn_options(common: dict) -> dict:
    """``common`` as uvicorn.Config keywords: the head deadline becomes the protocol class."""
    from .protocol import protocol_class
    options = dict(common)
    options["http"] = protocol_class(options.pop("header_timeout", 10.0))
    return options


def run_workers(config, workers: int, common: dict, service=None) -> None:
    """Serve ``config`` (a :class:`~policylang.server.service.ServiceConfig`) from
    ``workers`` uvicorn processes; ``common`` holds the uvicorn settings (``host``,
    ``port``, ``header_timeout``, …). ``service``: the
    :class:`~policylang.server.service.PolicyService` already loaded from ``config``: its
    set is handed to forked workers (see the module docstring). Returns when they have
    stopped."""
    from .app import CONFIG_ENV

    os.environ[CONFIG_ENV] = json.dumps(config.to_dict())
    own_dir = None
    if not (os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")):
        own_dir = tempfile.mkdtemp(prefix="policylang-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir
    preloaded = None
    if service is not None and service.current is not None and _can_fork():
        preloaded = (service.current, service.signature)
    try:
        if hasattr(socket, "SO_REUSEPORT") and sys.platform.startswith("linux"):
            _supervise_reuseport(workers, common, preloaded)
        else:  # pragma: no cover - not Linux
            _supervise_shared_socket(workers, common)
    finally:
        if own_dir:
            shutil.rmtree(own_dir, ignore_errors=True)


# ------------------------------------------------------------------- SO_REUSEPORT (Linux)

def _listen(host: str, port: int, *, listen: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(2048)
        sock.set_inheritable(True)
    return sock


def _answers(host: str, port: int) -> bool:
    """Does something accept connections at host:port already?"""
    target = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    try:
        with socket.create_connection((target, port), timeout=1):
            return True
    except OSError:
        return False


def _can_fork() -> bool:
    """May workers be forked from this process? Linux only (macOS forks are unsafe with
    system frameworks loaded)."""
    return sys.platform.startswith("linux") and "fork" in _start_methods()


def _start_methods() -> list[str]:
    import multiprocessing
    return multiprocessing.get_all_start_methods()


def _worker_main(common: dict) -> None:
    """One worker process: its own listening socket, then uvicorn until told to stop."""
    import uvicorn
    sock = _listen(common["host"], common["port"], listen=True)
    if _PRELOADED is not None:
        config = uvicorn.Config(_preloaded_app(*_PRELOADED), **uvicorn_options(common))
    else:
        config = uvicorn.Config("policylang.server.app:app_from_env", factory=True, **uvicorn_options(common))
    uvicorn.Server(config).run(sockets=[sock])


def _forked_worker_main(common: dict, preloaded: tuple) -> None:
    """A worker forked after the load: the parent's signal handlers are the supervisor's,
    so they are reset first (SIGHUP ignored until the app's lifespan takes it over)."""
    global _PRELOADED
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _PRELOADED = preloaded
    _worker_main(common)


def _preloaded_app(snapshot, signature):
    """The app of a forked worker: its own service (store, approvals, audit, metrics)
    serving the parent's compiled set."""
    from .aarp import AARP_ENV
    from .app import CONFIG_ENV, create_app
    from .service import ServiceConfig, build_service

    values = sys.modules.get("prometheus_client.values")
    if values is not None:
        # prometheus_client picks its value class when first imported, which may have been
        # before run_workers set PROMETHEUS_MULTIPROC_DIR: pick again, as a spawned worker
        # would (this worker's Metrics are created below, after this)
        values.ValueClass = values.get_value_class()
    config = ServiceConfig.from_dict(json.loads(os.environ[CONFIG_ENV]))
    service, extras = build_service(config)
    service.adopt(snapshot, signature, frozen=True)
    if service.files_signature() != signature:  # a worker started after the files changed
        service.load("startup")  # (incremental from the adopted set; a bad set keeps it)
    aarp = os.environ.get(AARP_ENV)
    return create_app(config, service=service, extras=extras, aarp=json.loads(aarp) if aarp else None)


def _claim_port(host: str, port: int) -> int:
    """The port every worker will listen on; exits 1 when the address cannot be had.

    Fails here, not in N workers, when the address cannot be had; and fixes port 0 to one
    port for all (the probe socket never listens, so it takes no connections).
    SO_REUSEPORT would also let this server join another one's port and split its
    traffic: a port something already answers on is refused."""
    if port and _answers(host, port):
        _echo_err(f"policylang serve: cannot listen on {host}:{port}: address already in use")
        sys.exit(1)
    try:
        probe = _listen(host, port, listen=False)
    except OSError as e:
        _echo_err(f"policylang serve: cannot listen on {host}:{port}: {e.strerror or e}")
        sys.exit(1)
    port = probe.getsockname()[1]
    probe.close()
    return port


class _Workers:
    """The worker processes of one supervisor, and the signals it has received."""

    def __init__(self, workers: int, common: dict, preloaded: tuple | None = None):
        import gc
        import multiprocessing
        import threading

        self.common = common
        self.preloaded = preloaded
        self.ctx = multiprocessing.get_context("fork" if preloaded is not None else "spawn")
        if preloaded is not None:
            # the server CLI's process only: what is alive now (the compiled set) moves to
            # the permanent generation, so no worker's collector touches (copies) its pages
            gc.collect()
            gc.freeze()
        self.wake = threading.Event()
        self.pending: list[int] = []
        self.quick_deaths = 0
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self.on_signal)
        self.procs = [self.spawn() for _ in range(workers)]

    def on_signal(self, sig, _frame) -> None:
        self.pending.append(sig)
        self.wake.set()

    def spawn(self):
        if self.preloaded is not None:
            proc = self.ctx.Process(target=_forked_worker_main, args=(self.common, self.preloaded), daemon=False)
        else:
            proc = self.ctx.Process(target=_worker_main, args=(self.common,), daemon=False)
        proc.start()
        return proc, time.monotonic()

    def handle_signals(self) -> bool:
        """Pass SIGHUP on to every worker; True when told to stop."""
        stopping = False
        while self.pending:
            sig = self.pending.pop(0)
            if sig == signal.SIGHUP:
                for proc, _t in self.procs:
                    if proc.is_alive():
                        os.kill(proc.pid, signal.SIGHUP)
            else:
                stopping = True
        return stopping

    def replace_dead(self) -> bool:
        """Start a new worker for each one that exited; True when workers keep failing at
        start-up (a worker that dies right after starting, because it cannot load the set
        or listen, would die again: give up rather than spin)."""
        for i, (proc, started) in enumerate(self.procs):
            if proc.is_alive():
                continue
            proc.join()
            self.quick_deaths = self.quick_deaths + 1 if time.monotonic() - started < _QUICK_DEATH else 0
            if self.quick_deaths >= _MAX_QUICK_DEATHS:
                _echo_err("policylang serve: workers keep failing at start-up; stopping")
                return True
            _echo_err(f"policylang serve: worker {proc.pid} exited ({proc.exitcode}); starting another")
            self.procs[i] = self.spawn()
        return False

    def run(self) -> None:
        while True:
            self.wake.wait(0.5)
            self.wake.clear()
            if self.handle_signals() or self.replace_dead():
                return

    def stop(self) -> None:
        """Terminate every worker; kill those still alive after the grace period."""
        for proc, _t in self.procs:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + float(self.common.get("timeout_graceful_shutdown") or 10) + 5
        for proc, _t in self.procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()


def _supervise_reuseport(workers: int, common: dict, preloaded: tuple | None = None) -> None:
    common = dict(common, port=_claim_port(common["host"], common["port"]))
    host = f"[{common['host']}]" if ":" in common["host"] else common["host"]
    how = ", forked after the load" if preloaded is not None else ""
    _echo_err(f"policylang serve: {workers} workers on http://{host}:{common['port']} (pid {os.getpid()}{how})")
    pool = _Workers(workers, common, preloaded)
    pool.run()
    pool.stop()
    if pool.quick_deaths >= _MAX_QUICK_DEATHS:
        sys.exit(1)


# ----------------------------------------------------------- one shared socket (elsewhere)

def _supervise_shared_socket(workers: int, common: dict) -> None:  # pragma: no cover - not Linux
    import inspect

    import uvicorn
    from uvicorn.supervisors import Multiprocess

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

    uconfig = uvicorn.Config("policylang.server.app:app_from_env", factory=True, workers=workers,
                             **uvicorn_options(common))
    server = uvicorn.Server(uconfig)
    sock = uconfig.bind_socket()
    kwargs = {"sockets": [sock]}
    if "target" in inspect.signature(Multiprocess.__init__).parameters:
        kwargs["target"] = server.run
    supervisor = Supervisor(uconfig, **kwargs)
    if not hasattr(supervisor, "signal_queue") and hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: supervisor.forward_hup())
    supervisor.run()
