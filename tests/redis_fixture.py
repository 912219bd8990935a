"""Real stores for the zero-standing-privilege tests.

``store_url`` / ``store`` are parametrised over SQLite and Redis, so one suite runs on
both. The Redis ones start a real ``redis-server`` on 127.0.0.1 on a free port (with an
append-only file) and stop it afterwards; they are skipped, with
the reason, only when the ``redis-server`` binary is missing (``apt-get install
redis-server``). ``redis_factory`` gives a test its own server (``appendfsync always``) to kill and
restart.

Import the fixtures into a test module: ``from redis_fixture import store, store_url, …``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

REDIS_SERVER = shutil.which("redis-server")
SKIP_REASON = ("redis-server binary not found on PATH: install it (apt-get install redis-server) "
               "to run the Redis store tests")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port_url() -> str:
    """A redis:// URL where nothing listens (the port was free a moment ago)."""
    return f"redis://127.0.0.1:{free_port()}/0"


class RedisServer:
    """One redis-server process with its data directory; start/stop/restart at will."""

    def __init__(self, directory: str, port: int | None = None, fsync: str = "always"):
        self.directory = directory
        self.port = port or free_port()
        self.fsync = fsync
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        os.makedirs(self.directory, exist_ok=True)
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.directory,
             "--appendonly", "yes", "--appendfsync", self.fsync, "--save", "", "--daemonize", "no",
             "--protected-mode", "yes", "--logfile", os.path.join(self.directory, "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}; see "
                                   f"{os.path.join(self.directory, 'redis.log')}")
            if self._answers():
                return self
            time.sleep(0.02)
        self.stop(kill=True)
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def flush(self) -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port)
        try:
            client.flushall()
        finally:
            client.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    if REDIS_SERVER is None:
        pytest.skip(SKIP_REASON)
    # the shared server need not fsync every write (the outage test's own server does)
    server = RedisServer(str(tmp_path_factory.mktemp("redis")), fsync="everysec").start()
    yield server
    server.stop()


@pytest.fixture
def redis_factory(tmp_path):
    """Start servers of the test's own (stopped at the end of the test)."""
    if REDIS_SERVER is None:
        pytest.skip(SKIP_REASON)
    started: list[RedisServer] = []

    def make(name: str = "redis") -> RedisServer:
        server = RedisServer(str(tmp_path / name)).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop(kill=True)


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request, tmp_path):
    """A fresh store URL of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    server = request.getfixturevalue("redis_server")
    server.flush()
    return server.url


@pytest.fixture
def store(store_url):
    from policylang.store import open_store

    s = open_store(store_url)
    yield s
    s.close()


@pytest.fixture(params=["sqlite", "redis"])
def dead_store_url(request, tmp_path):
    """A store URL of each kind that cannot be used."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'no-such-dir' / 'state.db'}"
    return closed_port_url()
