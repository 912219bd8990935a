"""Attacks on the live decision service (issue 11, findings 12, 16, 21, 22).

Every test runs a real `policylang serve` on 127.0.0.1 and performs the attack."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from test_server_harness import CERT, LiveServer  # noqa: E402

READ = {"principal": {"id": "agent:reader", "kind": "agent"}, "action": "read",
        "resource": {"type": "repo", "id": "acme/api"}, "intent": {"task_id": "T-1"}}

POLICY = '''
@id("readers-read")
permit agent to read on repo
  grant "repo:read:" + resource.id for 10m
  because "agents read repositories"

@id("deploys-need-a-human")
require approval for agent to deploy on service
  by "sre"
  because "deploys are high impact"
'''


def _raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
        return out


# ------------------------------------------------------------------------ finding 12

def test_slowloris_half_open_connections_do_not_lock_out_a_normal_request():
    with LiveServer(CERT, "--header-timeout", "1.5") as server:
        socks = []
        try:
            for i in range(200):
                c = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                c.sendall(b"POST /v1/decide HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
                socks.append(c)
            for c in socks[:50]:  # some keep trickling header bytes
                c.sendall(b"X-Slow: a\r\n")
            t0 = time.monotonic()
            r = httpx.post(server.url + "/v1/decide", json=READ, timeout=5)
            assert r.status_code == 200 and r.json()["decision"] in ("allow", "deny")
            assert time.monotonic() - t0 < 3
            # and the half-open connections are closed by the server after the head deadline
            time.sleep(2.5)
            closed = 0
            for c in socks:
                c.settimeout(2)
                try:
                    if c.recv(1024) == b"":
                        closed += 1
                except (ConnectionResetError, BrokenPipeError):
                    closed += 1
                except socket.timeout:
                    pass
            assert closed == len(socks), f"only {closed} of {len(socks)} half-open connections were closed"
        finally:
            for c in socks:
                c.close()


def test_a_slow_body_is_answered_408_and_closed():
    with LiveServer(CERT, "--body-timeout", "1") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(b"POST /v1/decide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{")
            t0 = time.monotonic()
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            assert data.startswith(b"HTTP/1.1 408"), data[:200]
            assert time.monotonic() - t0 < 4


# ------------------------------------------------------------------------ finding 16

@pytest.fixture(scope="module")
def zsp_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("zsp")
    (d / "p.policy").write_text(POLICY)
    keys = d / "keys.json"
    from policylang.credentials import KeySet
    KeySet.generate().save(keys)
    with LiveServer(d, "--store", f"sqlite:///{d / 'state.db'}", "--create-store", "--keys", keys) as server:
        yield server


@pytest.mark.parametrize("path, body", [
    ("/v1/tokens", '{"request": %s, "x": 1e999}'),
    ("/v1/approvals", '{"request": %s, "ttl": 1e999}'),
    ("/v1/tokens", '{"request": %s, "x": NaN}'),
    ("/v1/decide", '%s'),
])
def test_overflowing_numbers_are_refused_on_every_route(zsp_server, path, body):
    req = dict(READ) if path != "/v1/approvals" else {**READ, "action": "deploy",
                                                        "resource": {"type": "service", "id": "api"}}
    if path == "/v1/decide":
        text = json.dumps({**req, "context": {"n": 0}}).replace('"n": 0', '"n": 1e999')
    else:
        text = body % json.dumps(req)
    r = zsp_server.client.post(path, content=text.encode(), headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert "not valid JSON" in r.json()["error"]["message"]


# ------------------------------------------------------------------------ finding 21

def test_healthz_does_not_disclose_absolute_paths(tmp_path):
    d = tmp_path / "policies"
    d.mkdir()
    f = d / "a.policy"
    f.write_text('permit agent to read on repo because "r"\n')
    ents = tmp_path / "extra.entities.json"
    ents.write_text("{}")
    with LiveServer(f.resolve(), "--entities", ents.resolve(), "--poll-interval", "0.1") as server:
        f.write_text("permit agent to read on\n")  # a broken reload: diagnostics in /healthz
        ents.write_text("{bad")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = server.client.get("/healthz").text
            if json.loads(text)["last_reload"]["ok"] is False:
                break
            time.sleep(0.1)
        health = json.loads(text)
        assert health["last_reload"]["ok"] is False and health["last_reload"]["diagnostics"]
        assert str(tmp_path) not in text and str(tmp_path.resolve()) not in text, text
        assert "/tmp" not in text, text


# ------------------------------------------------------------------------ finding 22

def test_a_too_large_body_is_answered_413_not_reset():
    with LiveServer(CERT) as server:
        body = b"{" + b" " * (8 << 20) + b"}"
        r = httpx.post(server.url + "/v1/decide", content=body, headers={"Content-Type": "application/json"},
                       timeout=20)
        assert r.status_code == 413
        assert "larger than" in r.json()["error"]["message"]
        # chunked (no Content-Length): the same
        def gen():
            for _ in range(8):
                yield b" " * (1 << 20)
        r = httpx.post(server.url + "/v1/decide", content=gen(), headers={"Content-Type": "application/json"},
                       timeout=20)
        assert r.status_code == 413


def test_a_client_still_sending_a_too_large_body_reads_the_413_instead_of_a_reset():
    """The attack on finding 22 at the socket level: the client declares 8 MiB and keeps
    sending it in pieces while the server has already decided to refuse it. A server that
    answers and closes at once leaves unread data behind, so the kernel resets the
    connection: the client's next send fails (EPIPE/ECONNRESET) and the 413 is lost."""
    with LiveServer(CERT) as server:
        size = 8 << 20
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
            s.sendall(b"POST /v1/decide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % size)
            piece = b" " * (256 << 10)
            sent = 0
            while sent < size:
                s.sendall(piece)  # raises ConnectionResetError/BrokenPipeError if reset
                sent += len(piece)
                if sent == 1 << 20:
                    time.sleep(0.3)  # the server has long seen the head and refused it by now
            out = b""
            while b"\r\n\r\n" not in out or len(out) < 40:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        assert out.startswith(b"HTTP/1.1 413"), out[:200]
