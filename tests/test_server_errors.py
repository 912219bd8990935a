"""Bad input never crashes the service (docs/server.md): 400 naming the problem for every
malformed body, 413 above the body limit, JSON errors for unknown routes, and a
schemathesis run over the service's own OpenAPI document that finds no 5xx."""

from __future__ import annotations

import json
import socket

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.generation import GenerationMode

try:
    from test_server_harness import CERT, LiveServer
except ImportError:  # tests/ as a package
    from tests.test_server_harness import CERT, LiveServer

MAX_BODY = 16384
GOOD = {"subject": {"type": "user", "id": "alice"}, "action": {"name": "read"},
        "resource": {"type": "record", "id": "record-1"}}


@pytest.fixture(scope="module")
def live():
    with LiveServer(CERT, "--poll-interval", "0", "--max-body", str(MAX_BODY)) as server:
        yield server


def _error(r, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["status"] == status
    return body["error"]["message"]


def test_body_over_the_limit_is_413(live):
    big = {**GOOD, "context": {"pad": "x" * MAX_BODY}}
    message = _error(live.client.post("/access/v1/evaluation", json=big), 413)
    assert str(MAX_BODY) in message
    # just under the limit is served
    fits = {**GOOD, "context": {"pad": "x" * (MAX_BODY - 300)}}
    assert len(json.dumps(fits)) <= MAX_BODY
    assert live.client.post("/access/v1/evaluation", json=fits).json()["decision"] is True


def test_chunked_body_over_the_limit_is_413(live):
    def chunks():
        yield b'{"subject": {"type": "user", "id": "alice"}, "pad": "'
        for _ in range(MAX_BODY // 1000 + 1):
            yield b"y" * 1000
        yield b'"}'
    r = live.client.post("/v1/decide", content=chunks(), headers={"content-type": "application/json"})
    _error(r, 413)


def test_413_applies_to_every_post_endpoint(live):
    for path in ("/access/v1/evaluations", "/access/v1/search/resource", "/v1/decide"):
        r = live.client.post(path, content=b"[" * (MAX_BODY + 1), headers={"content-type": "application/json"})
        _error(r, 413)


def test_a_lying_content_length_does_not_hang_or_crash(live):
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as s:
        s.sendall(b"POST /access/v1/evaluation HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 99999999\r\n\r\n{}")
        head = s.recv(4096).decode("latin-1")
    assert head.startswith("HTTP/1.1 413")


@pytest.mark.parametrize("name,content", [
    ("deep arrays", b"[" * 3000 + b"]" * 3000),
    ("deep objects in properties", b'{"subject": {"type": "user", "id": "a", "properties": {"p": '
     + b'{"a": ' * 1500 + b"1" + b"}" * 1500 + b"}}, \"action\": {\"name\": \"read\"}, "
     b'"resource": {"type": "record", "id": "record-1"}}'),
    ("huge integer", b'{"subject": {"type": "user", "id": "a"}, "n": ' + b"9" * 5000 + b"}"),
    ("overflowing float", b'{"subject": {"type": "user", "id": "a"}, "action": {"name": "read"}, '
     b'"resource": {"type": "record", "id": "record-1"}, "context": {"risk": {"score": 1e999}}}'),
    ("Infinity", b'{"context": Infinity}'),
    ("control character in a string", b'{"subject": "a\x01b"}'),
    ("trailing garbage", json.dumps(GOOD).encode() + b" {}"),
    ("UTF-16 body", json.dumps(GOOD).encode("utf-16")),
], ids=lambda v: v if isinstance(v, str) else "")
def test_hostile_bodies_are_400_never_500(live, name, content):
    r = live.client.post("/access/v1/evaluation", content=content, headers={"content-type": "application/json"})
    assert r.status_code in (200, 400), r.text
    if r.status_code == 400:
        _error(r, 400)


def test_deep_but_parseable_properties_are_decided_or_refused(live):
    depth = 200
    nested = json.loads('{"a": ' * depth + "1" + "}" * depth)
    body = {**GOOD, "subject": {"type": "user", "id": "alice", "properties": {"deep": nested}}}
    r = live.client.post("/access/v1/evaluation", json=body)
    assert r.status_code in (200, 400) and "decision" in r.json() or "error" in r.json()


def test_odd_but_valid_strings_round_trip(live):
    body = {**GOOD, "subject": {"type": "user", "id": "\ud800 lone surrogate \u0000 nul"}}
    r = live.client.post("/access/v1/evaluation", content=json.dumps(body).encode(),
                         headers={"content-type": "application/json"})
    assert r.status_code == 200
    assert r.json()["context"]["delegation_path"] == ["\ud800 lone surrogate \u0000 nul"]


def test_unknown_routes_and_methods_answer_json_errors(live):
    assert "no such endpoint" in _error(live.client.get("/access/v2/evaluation"), 404)
    assert "not allowed" in _error(live.client.get("/access/v1/evaluation"), 405)
    assert "not allowed" in _error(live.client.put("/v1/decide", json=GOOD), 405)


# -------------------------------------------------------------------- schemathesis

@pytest.fixture(scope="module")
def api_schema(live):
    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=8)
    return schema


fuzzed = schemathesis.pytest.from_fixture("api_schema")


@fuzzed.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_schemathesis_finds_no_server_error(case, live):
    response = case.call(base_url=live.url, timeout=10)
    assert response.status_code < 500, f"{case.as_curl_command()}\n-> {response.status_code} {response.text[:500]}"
    ctype = response.headers.get("content-type") or ""
    ctype = ctype[0] if isinstance(ctype, list) else ctype
    if 400 <= response.status_code < 500 and ctype.startswith("application/json"):
        error = response.json()["error"]
        assert error["status"] == response.status_code and error["message"]
