"""The fast path of the decision routes (policylang/server/fastpath.py, docs/server.md#fast-path)
answers exactly as the service's ordinary layers do: one corpus of good and bad requests
goes through an app with the fast path and one without, in-process at the ASGI level, and
every answer (status, body bytes, headers) and the metrics must be the same."""

from __future__ import annotations

import asyncio
import json
import re
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policylang.server import ServiceConfig, create_app
from policylang.server.app import DISCARD_LIMIT
from policylang.server.fastpath import FastPath, parse_body

try:
    from test_server_harness import CERT
except ImportError:  # tests/ as a package
    from tests.test_server_harness import CERT

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MAX_BODY = 65536
JSON = [(b"content-type", b"application/json")]
GOOD = {"subject": {"type": "user", "id": "alice"}, "action": {"name": "read"},
        "resource": {"type": "record", "id": "record-1"}}
WRITE = {"subject": {"type": "user", "id": "alice"}, "action": {"name": "write"},
         "resource": {"type": "record", "id": "record-2"}}
DECIDE = {"principal": {"kind": "user", "id": "alice"}, "action": "write",
          "resource": {"type": "record", "id": "record-1"}}


def _apps(**config):
    cfg = ServiceConfig(path=str(CERT), poll_interval=0, max_body=MAX_BODY, **config)
    fast = create_app(cfg, watch=False, fast_path=True)
    plain = create_app(cfg, watch=False, fast_path=False)
    return fast, plain


@pytest.fixture(scope="module")
def apps():
    fast, plain = _apps()
    assert fast.state.fast_path == "on" and isinstance(fast._front, FastPath)
    assert plain.state.fast_path.startswith("turned off") and not isinstance(plain._front, FastPath)
    return fast, plain


# --------------------------------------------------------------------------- the driver

async def _call(app, method: str, path: str, headers: list, chunks: list[bytes], *, delay: float = 0.0,
                forever: bool = False):
    """One request through ``app`` at the ASGI level: ``chunks`` are the body messages
    (``delay`` seconds apart; ``forever``: then never the last one)."""
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": [(k.lower(), v) for k, v in headers],
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000), "state": {}}
    pending = list(chunks) or [b""]
    received = 0

    async def receive():
        nonlocal received
        if received and delay:
            await asyncio.sleep(delay)
        if received < len(pending):
            received += 1
            return {"type": "http.request", "body": pending[received - 1],
                    "more_body": forever or received < len(pending)}
        if forever:
            await asyncio.sleep(3600)
        await asyncio.sleep(3600)  # a server that reads on after the body would hang here
        return {"type": "http.disconnect"}

    sent: list = []

    async def send(message):
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 30)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], [(k.lower(), v) for k, v in start.get("headers", [])], body, received


def _same(apps, method, path, headers=JSON, chunks=(b"",), **kw):
    """The answer of both apps, checked equal; returns (status, headers dict, json or bytes)."""
    fast, plain = apps
    a = asyncio.run(_call(fast, method, path, list(headers), list(chunks), **kw))
    b = asyncio.run(_call(plain, method, path, list(headers), list(chunks), **kw))
    ha, hb = dict(a[1]), dict(b[1])
    given = next((v for k, v in headers if k == b"x-request-id"), None)  # the first one counts
    for h in (ha, hb):
        if given:
            assert h[b"x-request-id"] == given
        else:
            assert re.fullmatch(rb"[0-9a-f]{32}", h[b"x-request-id"])
    if not given:
        ha.pop(b"x-request-id")
        hb.pop(b"x-request-id")
    assert (a[0], ha, a[2]) == (b[0], hb, b[2]), (method, path, chunks[:1])
    assert a[3] == b[3], "both read the body as far"
    try:
        parsed = json.loads(a[2])
    except ValueError:
        parsed = a[2]
    return a[0], ha, parsed


def _body(obj) -> bytes:
    return json.dumps(obj).encode()


# ---------------------------------------------------------------------------- the corpus

def _batch(n: int, **extra) -> dict:
    items = [{"resource": {"type": "record", "id": f"record-{1 + i % 2}"},
              "action": {"name": ("read", "write", "delete")[i % 3]}} for i in range(n)]
    items[n // 2] = {"resource": {"type": "record"}}  # a bad item: answered alone
    return {"subject": {"type": "user", "id": "alice"}, "evaluations": items, **extra}


GOOD_BODIES = [
    ("/access/v1/evaluation", GOOD),
    ("/access/v1/evaluation", WRITE),
    ("/access/v1/evaluation", {**GOOD, "options": {"decision_context": False}}),
    ("/access/v1/evaluation", {**WRITE, "context": {"risk": {"score": 0.5}, "ip": "10.0.0.1"}}),
    ("/access/v1/evaluation", {**GOOD, "unknown": {"x": 1}, "subject": {"type": "user", "id": "alice", "extra": 1}}),
    ("/access/v1/evaluation", {**GOOD, "context": {"n": 2 ** 70, "m": -(2 ** 65), "f": 1e-400}}),
    ("/access/v1/evaluations", GOOD),
    ("/access/v1/evaluations", _batch(7)),
    ("/access/v1/evaluations", _batch(600)),  # yields to the loop on the way
    ("/access/v1/evaluations", _batch(9, options={"evaluations_semantic": "deny_on_first_deny"})),
    ("/access/v1/evaluations", _batch(9, options={"evaluations_semantic": "permit_on_first_permit",
                                                  "decision_context": True})),
    ("/v1/decide", DECIDE),
    ("/v1/decide", {**DECIDE, "action": "read", "risk": {"score": 0.2}}),
]

BAD_BODIES = [
    ("/access/v1/evaluation", {"action": {"name": "read"}, "resource": {"type": "record", "id": "r"}}),
    ("/access/v1/evaluation", {**GOOD, "subject": {"type": "user"}}),
    ("/access/v1/evaluation", {**GOOD, "subject": {"type": "user", "id": 7}}),
    ("/access/v1/evaluation", {**GOOD, "subject": {"type": "user", "id": 2 ** 70}}),
    ("/access/v1/evaluation", {**GOOD, "action": "read"}),
    ("/access/v1/evaluation", {**GOOD, "options": {"decision_context": "yes"}}),
    ("/access/v1/evaluation", {**GOOD, "options": []}),
    ("/access/v1/evaluation", {**GOOD, "context": {"risk": {"score": 7}}}),
    ("/access/v1/evaluation", {**GOOD, "context": []}),
    ("/access/v1/evaluations", {**GOOD, "evaluations": {"a": 1}}),
    ("/access/v1/evaluations", _batch(3, options={"evaluations_semantic": "most"})),
    ("/access/v1/evaluations", _batch(3, context={"risk": {"score": -1}})),
    ("/access/v1/evaluations", {"evaluations": [1, None, "x", GOOD]}),
    ("/access/v1/evaluations", {"evaluations": []}),
    ("/v1/decide", {**DECIDE, "action": 3}),
    ("/v1/decide", {"principal": "alice"}),
    ("/v1/decide", {**DECIDE, "bogus": 1}),
]

RAW_BODIES = [
    b"", b"   \n", b"{", b'{"subject":', b"[]", b'"x"', b"null", b"1", b"true", b"{}", b"{} {}",
    b'{"subject": {"type": "user", "id": "alice"},}',
    b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}', b'{"a": 1e400}', b'{"a": -1e400}',
    b'{"a": 1' + b"0" * 5000 + b"}",  # beyond the interpreter's integer digits
    b"\xef\xbb\xbf" + _body(GOOD),  # a UTF-8 byte order mark
    _body(GOOD).decode().encode("utf-16-le"), _body(GOOD).decode().encode("utf-32"),
    (b'{"subject": {"type": "user", "id": "\\ud800"}, "action": {"name": "read"}, '
    b'"resource": {"type": "record", "id": "r"}}'),
    b'{"subject": {"type": "user", "id": "\xff\xfe"}}',
    b'{"subject": {"type": "user", "id": "a\x01b"}}',
    # duplicate keys: the last one counts, on both paths
    (b'{"subject": {"type": "user", "id": "bob", "id": "alice"}, "action": {"name": "write"}, '
    b'"action": {"name": "read"}, "resource": {"type": "record", "id": "record-1"}}'),
    # JSON bombs: deep nesting, beyond orjson's limit and beyond the interpreter's
    b'{"context": {"x": ' + b"[" * 1500 + b"]" * 1500 + b"}}",
    _body({**GOOD, "context": {"x": json.loads("[" * 900 + "]" * 900)}}),
    b'{"context": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}",
    b"[" * (MAX_BODY - 10),
]

CONTENT_TYPES = [None, b"text/plain", b"application/json; charset=utf-8", b"Application/JSON",
                 b" application/json ", b"application/json\xa0", b"application/json;", b"application/json ;q=1",
                 b"application/jsonx", b"", b"application/x-www-form-urlencoded"]


def test_good_requests_answer_the_same(apps):
    decisions = []
    for path, body in GOOD_BODIES:
        status, _, answer = _same(apps, "POST", path, chunks=[_body(body)])
        assert status == 200, (path, answer)
        decisions.append(answer.get("decision", answer.get("evaluations")))
    assert decisions[0] is True and decisions[1] is False  # a fixture that decides both ways


def test_bad_bodies_answer_the_same_400(apps):
    for path, body in BAD_BODIES:
        status, _, answer = _same(apps, "POST", path, chunks=[_body(body)])
        assert status in (200, 400), (path, body, answer)  # a batch answers bad items alone
        if status == 400:
            assert answer["error"]["status"] == 400 and answer["error"]["message"]


def test_malformed_json_answers_the_same_400(apps):
    for raw in RAW_BODIES:
        for path in ("/access/v1/evaluation", "/access/v1/evaluations", "/v1/decide"):
            status, _, answer = _same(apps, "POST", path, chunks=[raw])
            assert status in (200, 400), (raw[:60], answer)
            if raw.startswith((b'{"a": 1e', b'{"a": N', b"[[")):
                assert status == 400 and "not valid JSON" in answer["error"]["message"]


def test_content_types_answer_the_same(apps):
    for ctype in CONTENT_TYPES:
        headers = [] if ctype is None else [(b"content-type", ctype)]
        for path in ("/access/v1/evaluation", "/access/v1/evaluations", "/v1/decide"):
            status, _, answer = _same(apps, "POST", path, headers=headers, chunks=[_body(GOOD)])
            if ctype is None or ctype.decode("latin-1").split(";")[0].strip().lower() != "application/json":
                assert status == 400 and "Content-Type" in answer["error"]["message"]
    # two Content-Type headers: the first counts, on both paths
    _same(apps, "POST", "/access/v1/evaluation", headers=[(b"content-type", b"text/plain"), *JSON],
          chunks=[_body(GOOD)])
    _same(apps, "POST", "/access/v1/evaluation", headers=[*JSON, (b"content-type", b"text/plain")],
          chunks=[_body(GOOD)])


def test_request_ids_are_echoed_or_made(apps):
    for rid in (b"abc-123", b"", b"x" * 200):
        _same(apps, "POST", "/access/v1/evaluation", headers=[*JSON, (b"x-request-id", rid)],
              chunks=[_body(GOOD)])
    _same(apps, "POST", "/access/v1/evaluation", headers=[*JSON, (b"x-request-id", b"one"),
                                                          (b"x-request-id", b"two")], chunks=[_body(GOOD)])


def test_other_routes_and_methods_pass_through(apps):
    for method, path in (("GET", "/access/v1/evaluation"), ("PUT", "/access/v1/evaluations"),
                         ("POST", "/access/v1/evaluation/"), ("POST", "/nope"),
                         ("POST", "/access/v1/search/action"), ("GET", "/.well-known/authzen-configuration"),
                         ("DELETE", "/v1/decide")):
        _same(apps, method, path, chunks=[_body(GOOD)])


def test_body_cap_is_the_same_declared_streamed_and_chunked(apps):
    """Over the cap: 413 and Connection: close on both, whether the size is declared
    (Content-Length) or found while streaming (chunked, many small chunks)."""
    big = _body({**GOOD, "context": {"pad": "x" * MAX_BODY}})
    declared = [*JSON, (b"content-length", str(len(big)).encode())]
    status, headers, answer = _same(apps, "POST", "/access/v1/evaluation", headers=declared, chunks=[big])
    assert status == 413 and headers[b"connection"] == b"close" and str(MAX_BODY) in answer["error"]["message"]
    pieces = [big[i:i + 97] for i in range(0, len(big), 97)]  # chunked, no Content-Length
    status, headers, _ = _same(apps, "POST", "/access/v1/evaluations", chunks=pieces)
    assert status == 413 and headers[b"connection"] == b"close"
    # declared beyond what is ever read: answered at once, nothing read
    huge = [*JSON, (b"content-length", str(DISCARD_LIMIT + 1).encode())]
    status, _, _ = _same(apps, "POST", "/v1/decide", headers=huge, chunks=[b"{"])
    assert status == 413
    # a Content-Length that is not a number: the body is read and judged as it comes
    _same(apps, "POST", "/access/v1/evaluation", headers=[*JSON, (b"content-length", b"zz")],
          chunks=[_body(GOOD)])
    # exactly at the cap is served
    pad = MAX_BODY - len(_body({**GOOD, "context": {"pad": ""}}))
    exact = _body({**GOOD, "context": {"pad": "x" * pad}})
    assert len(exact) == MAX_BODY
    status, _, _ = _same(apps, "POST", "/access/v1/evaluation", chunks=[exact[:100], exact[100:]])
    assert status == 200


def test_slow_bodies_time_out_the_same():
    """A body that trickles in (slowloris) or never ends: 408 and the connection closed on
    both paths, after the same deadline."""
    apps = _apps(body_timeout=0.3)
    body = _body(GOOD)
    pieces = [body[i:i + 4] for i in range(0, len(body), 4)]
    t0 = time.monotonic()
    status, headers, answer = _same(apps, "POST", "/access/v1/evaluation", chunks=pieces, delay=0.05)
    assert status == 408 and headers[b"connection"] == b"close" and "0.3 seconds" in answer["error"]["message"]
    status, _, _ = _same(apps, "POST", "/v1/decide", chunks=[b'{"principal": '], forever=True)
    assert status == 408
    assert time.monotonic() - t0 < 10
    status, _, _ = _same(apps, "POST", "/access/v1/evaluation", chunks=pieces[:3] + [b"".join(pieces[3:])],
                         delay=0.01)
    assert status == 200


def _metric_lines(app) -> list[str]:
    text = app.state.metrics.render().decode()
    return sorted(ln for ln in text.splitlines()
                  if ln.startswith(("policylang_decisions_total{", "policylang_request_duration_seconds_count{"))
                  and not ln.endswith(" 0.0"))


def test_metrics_count_the_same():
    apps = _apps()
    for path, body in GOOD_BODIES + BAD_BODIES:
        _same(apps, "POST", path, chunks=[_body(body)])
    for raw in RAW_BODIES[:12]:
        _same(apps, "POST", "/access/v1/evaluations", chunks=[raw])
    fast, plain = _metric_lines(apps[0]), _metric_lines(apps[1])
    assert fast == plain
    assert any('endpoint="evaluations",outcome="invalid"' in ln for ln in fast)
    assert any('endpoint="decide",outcome="allow"' in ln for ln in fast)


def test_authentication_configured_answers_the_same(tmp_path):
    """With bearer JWTs configured: the decision routes are not guarded routes, with or
    without (valid, wrong, garbage) credentials, the same on both paths; a guarded route
    still refuses a missing or wrong token (it goes to the service's layers)."""
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", alg="ES256", use="sig")
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    now = int(time.time())
    claims = {"sub": "user:alice", "aud": "pdp", "iat": now, "exp": now + 300}
    good = jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1"})
    wrong = jwt.encode(claims, other, algorithm="ES256", headers={"kid": "k1"})
    apps = _apps(jwks=str(tmp_path / "jwks.json"), jwt_audience="pdp")
    assert apps[0].state.fast_path == "on"
    for auth in (None, b"Bearer " + good.encode(), b"Bearer " + wrong.encode(), b"Basic Zm9vOmJhcg==", b"Bearer"):
        headers = JSON + ([(b"authorization", auth)] if auth else [])
        for path in ("/access/v1/evaluation", "/v1/decide"):
            status, _, _ = _same(apps, "POST", path, headers=headers, chunks=[_body(DECIDE if "decide" in path else GOOD)])
            assert status == 200
        status, headers_out, _ = _same(apps, "POST", "/v1/limits/release", headers=headers,
                                       chunks=[b'{"reservation": "r"}'])
        if auth is None or auth.startswith(b"Basic") or auth == b"Bearer" or good.encode() not in auth:
            assert status == 401 and b"www-authenticate" in headers_out


def test_features_it_does_not_implement_go_to_the_routes(tmp_path, monkeypatch):
    """An audit log (decisions in the thread pool) or POLICYLANG_FAST_PATH=0: no fast path."""
    app = create_app(ServiceConfig(path=str(CERT), poll_interval=0, audit=str(tmp_path / "audit.jsonl")), watch=False)
    assert "audit" in app.state.fast_path and not isinstance(app._front, FastPath)
    status, _, body, _ = asyncio.run(_call(app, "POST", "/access/v1/evaluation", JSON, [_body(GOOD)]))
    assert status == 200 and json.loads(body)["decision"] is True
    monkeypatch.setenv("POLICYLANG_FAST_PATH", "0")
    app = create_app(ServiceConfig(path=str(CERT), poll_interval=0), watch=False)
    assert not isinstance(app._front, FastPath)
    monkeypatch.setenv("POLICYLANG_FAST_PATH", "1")
    app = create_app(ServiceConfig(path=str(CERT), poll_interval=0), watch=False)
    assert isinstance(app._front, FastPath)


def test_parse_body_takes_the_standard_decoder_where_orjson_differs():
    from policylang.server.app import parse_json_body
    for raw in (b'{"n": 18446744073709551616}', b'{"n": -9223372036854775809}', b'{"a": 1, "a": 2}',
                b'{"f": 0.1, "g": -0.0, "h": 1E5}'):
        assert parse_body(b"application/json", raw) == parse_json_body("application/json", raw)
        assert type(parse_body(b"application/json", raw).get("n")) is type(parse_json_body("application/json", raw).get("n"))


# ------------------------------------------------------------------ over real sockets

def _read_response(f) -> tuple[int, dict, bytes]:
    status = int(f.readline().split()[1])
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    body = f.read(int(headers.get("content-length", 0)))
    return status, headers, body


def _exchange(port: int, chunks: list[bytes], n: int, delay: float = 0.0) -> list:
    """Write ``chunks`` on one connection (``delay`` apart), then read ``n`` answers."""
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        for i, c in enumerate(chunks):
            if i and delay:
                time.sleep(delay)
            sock.sendall(c)
        f = sock.makefile("rb")
        out = []
        for _ in range(n):
            status, headers, body = _read_response(f)
            headers.pop("date", None)
            rid = headers.pop("x-request-id", "")
            assert status == 100 or re.fullmatch(r"[0-9a-f]{32}|given-\d+", rid), rid  # (100 Continue: none)
            out.append((status, headers, body))
        return out


def _live_server():
    """tests/test_server_harness.LiveServer (``policylang serve`` in a subprocess)."""
    try:
        from test_server_harness import LiveServer
    except ImportError:  # tests/ as a package
        from tests.test_server_harness import LiveServer
    return LiveServer


def _http(path: str, body: bytes, *extra: str, rid: int | None = None) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: x", "Content-Type: application/json", *extra]
    if not any(h.lower().startswith("transfer-encoding") for h in extra):
        head.append(f"Content-Length: {len(body)}")
    if rid is not None:
        head.append(f"X-Request-ID: given-{rid}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _answer_then_closed(port: int, data: bytes) -> tuple:
    """Send ``data`` on a new connection: (status, headers without date and request id,
    body, everything the server sent after that answer before closing)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(data)
        f = sock.makefile("rb")
        status, headers, body = _read_response(f)
        headers.pop("date")
        headers.pop("x-request-id")
        return status, headers, body, f.read()


def test_over_uvicorn_pipelined_chunked_slow_and_oversized_answer_the_same():
    """Both paths served by ``policylang serve`` (uvicorn, httptools): pipelined requests
    on one kept-alive connection, a chunked body, a body in two writes, a body too slow
    (408) and one too large (413) answer the same, byte for byte but Date and generated
    request ids."""
    LiveServer = _live_server()
    args = (CERT, "--poll-interval", "0", "--max-body", "4096", "--body-timeout", "0.5")
    with LiveServer(*args, env={"POLICYLANG_FAST_PATH": "1"}) as fast, \
            LiveServer(*args, env={"POLICYLANG_FAST_PATH": "0"}) as plain:
        corpus = [_http(p, _body(b)) for p, b in GOOD_BODIES[:5] + BAD_BODIES[:5] if len(_body(b)) < 4000]
        corpus += [_http("/access/v1/evaluation", raw) for raw in RAW_BODIES[:14]]
        corpus += [_http("/access/v1/evaluation", _body(GOOD), rid=7)]
        good = _body(GOOD)
        chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, good[:10], len(good) - 10, good[10:])
        corpus += [_http("/v1/decide", chunked.replace(good, good), "Transfer-Encoding: chunked")]
        big = _body({**GOOD, "context": {"pad": "x" * 5000}})
        for server in (fast, plain):
            server.answers = _exchange(server.port, [b"".join(corpus)], len(corpus))  # pipelined
            server.answers += _exchange(server.port, [_http("/access/v1/evaluation", good)[:-20], good[-20:]], 1,
                                        delay=0.1)  # the body in two writes
            server.answers += _exchange(server.port, [_http("/access/v1/evaluation", good)[:-20], good[-20:]], 1,
                                        delay=1.0)  # too slow: 408
            server.answers += _exchange(server.port, [_http("/access/v1/evaluations", big)], 1)  # 413
            server.answers += _exchange(server.port, [_http("/access/v1/evaluations", b"", "Transfer-Encoding: chunked")
                                                      + b"".join(b"%x\r\n%s\r\n" % (97, big[i:i + 97])
                                                                 for i in range(0, 97 * 50, 97)) + b"0\r\n\r\n"],
                                        1)  # 413, chunked
            # the client asks to close: answered, then closed (nothing more on the socket)
            server.closing = _answer_then_closed(
                server.port, _http("/access/v1/evaluation", good, "Connection: close") + _http("/v1/decide", good))
        assert fast.answers == plain.answers
        assert fast.closing == plain.closing and fast.closing[0] == 200 and fast.closing[-1] == b""
        statuses = [a[0] for a in fast.answers]
        assert statuses[-4:] == [200, 408, 413, 413] and statuses.count(200) >= 6


def test_over_uvicorn_inline_answers_are_the_ordinary_bytes():
    """The protocol's inline answers (docs/server.md#inline-answers) against a server with
    no fast path: HTTP/1.0, ``Expect: 100-continue``, a query string, a request pipelined
    behind one whose body is split, the same bodies repeated (the answer cache): byte
    for byte the same answers, in the same order."""
    LiveServer = _live_server()
    args = (CERT, "--poll-interval", "0", "--max-body", "4096")
    good, write = _body(GOOD), _body(WRITE)
    with LiveServer(*args, env={"POLICYLANG_FAST_PATH": "1"}) as fast, \
            LiveServer(*args, env={"POLICYLANG_FAST_PATH": "0"}) as plain:
        for server in (fast, plain):
            first = _http("/access/v1/evaluation", good, rid=1)
            second = _http("/v1/decide", _body(DECIDE), rid=2) + _http("/access/v1/evaluation", write, rid=3)
            server.answers = _exchange(server.port, [first[:-7], first[-7:] + second], 3, delay=0.2)
            server.answers += _exchange(server.port, [_http("/access/v1/evaluation", good, rid=4) * 3], 3)
            server.answers += _exchange(server.port, [_http("/access/v1/evaluation?x=1", good, rid=5)], 1)
            server.answers += _exchange(server.port, [_http("/access/v1/evaluation", write, "Expect: 100-continue",
                                                            rid=6)], 2)
            server.http10 = _answer_then_closed(
                server.port, _http("/access/v1/evaluation", good).replace(b"HTTP/1.1", b"HTTP/1.0"))
        assert fast.answers == plain.answers
        assert [a[0] for a in fast.answers] == [200, 200, 200, 200, 200, 200, 200, 100, 200]
        assert fast.http10 == plain.http10 and fast.http10[1]["connection"] == "close"


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20)


def _outcome(fn, *args):
    try:
        value = fn(*args)
    except Exception as e:  # noqa: BLE001 - the outcome is compared, whatever it is
        return ("error", type(e).__name__, str(e))
    return ("value", json.dumps(value, sort_keys=True), repr(value))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.dictionaries(st.text(max_size=5), _json_values, max_size=5), cut=st.integers(0, 400),
       junk=st.binary(max_size=3))
def test_parse_body_is_parse_json_body(value, cut, junk):
    """The fast path's parser gives what the ordinary one gives (the value, with its
    types, or the same error) for JSON objects, their prefixes and bytes spliced in."""
    from policylang.server.app import parse_json_body
    raw = json.dumps(value).encode()
    for body in (raw, raw[:cut], raw[:cut] + junk + raw[cut:], json.dumps(value, ensure_ascii=False).encode()):
        assert _outcome(parse_body, b"application/json", body) == _outcome(parse_json_body, "application/json", body)


# ------------------------------------------------------- the answer cache (docs/server.md#answer-cache)

def _answer_cache(app, route: str):
    cell = app._front._answer_caches
    return None if cell is None or cell[1] is None else cell[1][route]


def test_repeated_bodies_answer_the_same_from_the_answer_cache():
    """The same bytes again are answered from the fast path's answer cache: every answer
    (status, headers, bytes) and every metric is what the service's layers give, each
    time; only good decisions are kept, no answer to a bad request."""
    apps = _apps()
    singles = [(p, b) for p, b in GOOD_BODIES + BAD_BODIES if p != "/access/v1/evaluations"]
    answered: dict = {}
    for _round in range(3):
        for path, body in singles:
            status, _, answer = _same(apps, "POST", path, chunks=[_body(body)])
            assert answered.setdefault(_body(body), (status, answer)) == (status, answer)
        for raw in RAW_BODIES[:12]:
            _same(apps, "POST", "/access/v1/evaluation", chunks=[raw])
    assert _metric_lines(apps[0]) == _metric_lines(apps[1])
    fast = apps[0]
    kept = dict(_answer_cache(fast, "evaluation").data) | dict(_answer_cache(fast, "decide").data)
    good = {raw for raw, (status, answer) in answered.items() if status == 200 and not answer.get("errors")}
    assert good >= {_body(b) for p, b in GOOD_BODIES if p != "/access/v1/evaluations"}
    assert set(kept) == good  # every good single decision, and nothing else
    for raw, entry in kept.items():  # what is kept is what a miss answered
        answer, outcome = entry[0]
        assert json.loads(answer) == answered[raw][1] and outcome in ("allow", "deny")


def test_the_answer_cache_is_the_engine_s_a_reload_answers_anew(tmp_path):
    """A kept answer is never served by another engine: after a reload changes the
    decision, the same bytes get the new answer (the cache belongs to the engine)."""
    (tmp_path / "p.policy").write_text('permit user to read on record\n')
    app = create_app(ServiceConfig(path=str(tmp_path), poll_interval=0, max_body=MAX_BODY),
                     watch=False, fast_path=True)
    body = _body(GOOD)
    answers = [asyncio.run(_call(app, "POST", "/access/v1/evaluation", JSON, [body]))[2] for _ in range(2)]
    assert [json.loads(a)["decision"] for a in answers] == [True, True]
    assert len(_answer_cache(app, "evaluation")) == 1
    (tmp_path / "p.policy").write_text('permit user to write on record\n')
    assert app.state.service.load("test").ok
    again = json.loads(asyncio.run(_call(app, "POST", "/access/v1/evaluation", JSON, [body]))[2])
    assert again["decision"] is False
    assert len(_answer_cache(app, "evaluation")) == 1  # the new engine's own cache


def test_answers_with_errors_or_without_a_cache_are_not_kept(tmp_path):
    """A decision with an evaluation error is answered every time by deciding (its
    message may name what the key does not hold); with the engine's cache off, no
    answer is kept at all."""
    (tmp_path / "p.policy").write_text('permit user to read on record when resource.level > 2\n')
    app = create_app(ServiceConfig(path=str(tmp_path), poll_interval=0, max_body=MAX_BODY),
                     watch=False, fast_path=True)
    bad = _body({**GOOD, "resource": {"type": "record", "id": "r", "properties": {"level": "high"}}})
    for _ in range(2):
        answer = json.loads(asyncio.run(_call(app, "POST", "/access/v1/evaluation", JSON, [bad]))[2])
        assert answer["decision"] is False
    assert len(_answer_cache(app, "evaluation")) == 0
    off = create_app(ServiceConfig(path=str(tmp_path), poll_interval=0, max_body=MAX_BODY, cache_size=0),
                     watch=False, fast_path=True)
    for _ in range(2):
        asyncio.run(_call(off, "POST", "/access/v1/evaluation", JSON, [_body(GOOD)]))
    assert off._front._answer_caches[1] is None
