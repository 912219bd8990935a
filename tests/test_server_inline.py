"""Inline answers (policylang/server/protocol.py, docs/server.md#inline-answers): a single
decision whose head and body arrive in one read is answered inside the protocol, with
no ASGI cycle and no task; everything else takes uvicorn's ordinary way. The protocol is
driven here directly, with a recording transport, so that the test sees which way each
request went; tests/test_server_fastpath.py compares the bytes on real sockets with a
server that has no fast path."""

from __future__ import annotations

import asyncio
import json

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from policylang.server import ServiceConfig, create_app
from policylang.server.protocol import fast_path_of, protocol_class

try:
    from test_server_harness import CERT
except ImportError:  # tests/ as a package
    from tests.test_server_harness import CERT

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

GOOD = json.dumps({"subject": {"type": "user", "id": "alice"}, "action": {"name": "read"},
                   "resource": {"type": "record", "id": "record-1"}}).encode()


class Transport(asyncio.Transport):
    def __init__(self):
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data) -> None:
        assert not self.closed, "a write after close"
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Recording(set):
    """uvicorn's task set, remembering every task it was given (done ones leave the set)."""

    def __init__(self):
        super().__init__()
        self.started: list = []

    def add(self, task) -> None:
        self.started.append(task)
        super().add(task)

    def __eq__(self, other):
        return self.started == other

    def __len__(self):
        return len(self.started)

    __hash__ = None  # type: ignore[assignment]


def _request(path: str, body: bytes, *extra: str, version: str = "1.1") -> bytes:
    head = [f"POST {path} HTTP/{version}", "Host: x", "Content-Type: application/json", *extra]
    if not any(h.lower().startswith(("transfer-encoding", "content-length")) for h in extra):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _answers(data: bytes) -> list[tuple[int, dict, bytes]]:
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(ln.split(": ", 1) for ln in lines[1:])
        n = int(headers.get("content-length", 0))
        out.append((int(lines[0].split()[1]), headers, rest[:n]))
        data = rest[n:]
    return out


@pytest.fixture(scope="module")
def app():
    return create_app(ServiceConfig(path=str(CERT), poll_interval=0, max_body=4096), watch=False, fast_path=True)


def _drive(app, reads: list[bytes], *, access_log: bool = False, settle: float = 0.3):
    """Feed ``reads`` to one connection of the protocol (each its own data_received);
    returns (answers, the tasks uvicorn started, the transport)."""
    async def run():
        config = Config(app, http=protocol_class(10.0), access_log=access_log, log_level="warning",
                        lifespan="off", server_header=False)
        config.load()
        state = ServerState()
        state.tasks = started = _Recording()
        state.default_headers = [(b"date", b"Thu, 03 Dec 2026 09:00:00 GMT")]  # what the server's loop sets
        protocol = config.http_protocol_class(config=config, server_state=state, app_state={})
        if access_log:
            protocol.access_log = True
        transport = Transport()
        protocol.connection_made(transport)
        for data in reads:
            protocol.data_received(data)
            await asyncio.sleep(0.05)
        await asyncio.sleep(settle)
        protocol._unset_keepalive_if_required()
        protocol._disarm()
        return _answers(b"".join(transport.written)), started, transport
    return asyncio.run(run())


def test_a_whole_single_decision_is_answered_without_a_task(app):
    assert fast_path_of(app) is app._front
    answers, tasks, transport = _drive(app, [_request("/access/v1/evaluation", GOOD, "X-Request-ID: r-1")])
    assert tasks == []  # no ASGI cycle, no task: answered in the parser's callback
    assert len(transport.written) == 1  # head and body in one write
    [(status, headers, body)] = answers
    assert status == 200 and json.loads(body)["decision"] is True
    assert headers["x-request-id"] == "r-1" and headers["content-type"] == "application/json"
    assert headers["date"] == "Thu, 03 Dec 2026 09:00:00 GMT"  # the server's default headers, first
    assert list(headers)[0] == "date" and "connection" not in headers and not transport.closed


def test_pipelined_singles_are_answered_in_order_inline(app):
    deny = GOOD.replace(b'"read"', b'"write"').replace(b"record-1", b"record-2")
    reads = [b"".join(_request("/access/v1/evaluation", b, f"X-Request-ID: n{i}")
                      for i, b in enumerate([GOOD, deny, GOOD, deny]))]
    answers, tasks, _ = _drive(app, reads)
    assert tasks == []
    assert [h["x-request-id"] for _, h, _ in answers] == ["n0", "n1", "n2", "n3"]
    assert [json.loads(b)["decision"] for _, _, b in answers] == [True, False, True, False]


def test_a_body_split_over_reads_goes_to_uvicorn_with_what_arrived(app):
    raw = _request("/access/v1/evaluation", GOOD)
    answers, tasks, _ = _drive(app, [raw[:-10], raw[-10:]])
    assert len(tasks) == 1  # promoted: uvicorn's cycle, under the body deadline
    [(status, _, body)] = answers
    assert status == 200 and json.loads(body)["decision"] is True


@pytest.mark.parametrize("raw", [
    _request("/access/v1/evaluation", GOOD, "Expect: 100-continue"),
    _request("/access/v1/evaluation?x=1", GOOD),
    _request("/access/v1/evaluations", GOOD),                   # a batch route yields as it goes
    _request("/access/v1/evaluation", b"5\r\n" + GOOD[:5] + b"\r\n" + b"%x\r\n" % (len(GOOD) - 5) + GOOD[5:]
             + b"\r\n0\r\n\r\n", "Transfer-Encoding: chunked"),
    _request("/access/v1/evaluation", GOOD + b" " * 5000),     # beyond the cap: the reader's 413
])
def test_requests_the_inline_way_does_not_take_go_to_uvicorn(app, raw):
    answers, tasks, _ = _drive(app, [raw])
    assert len(tasks) == 1
    assert [a[0] for a in answers][-1] in (200, 413) and len(answers) <= 2  # (uvicorn's 100 Continue first)


def test_a_request_behind_one_still_answered_waits_its_turn(app):
    """The first request's body is split (uvicorn answers it); the second, whole in the
    second read, must not overtake it: it goes to uvicorn's queue, answers in order."""
    first = _request("/access/v1/evaluation", GOOD, "X-Request-ID: first")
    second = _request("/v1/decide", json.dumps({"principal": {"kind": "user", "id": "alice"}, "action": "read",
                                                "resource": {"type": "record", "id": "record-1"}}).encode(),
                      "X-Request-ID: second")
    answers, tasks, _ = _drive(app, [first[:-5], first[-5:] + second], settle=0.5)
    assert [h["x-request-id"] for _, h, _ in answers] == ["first", "second"]
    assert len(tasks) == 2


def test_http_1_0_and_connection_close_are_answered_then_closed(app):
    for raw in (_request("/access/v1/evaluation", GOOD, version="1.0"),
                _request("/access/v1/evaluation", GOOD, "Connection: close")):
        answers, tasks, transport = _drive(app, [raw + _request("/access/v1/evaluation", GOOD)])
        assert tasks == [] and transport.closed
        assert len(answers) == 1 and answers[0][1]["connection"] == "close"


def test_with_an_access_log_every_request_is_uvicorn_s(app):
    _answers_, tasks, _ = _drive(app, [_request("/access/v1/evaluation", GOOD)], access_log=True)
    assert len(tasks) == 1


def test_without_the_fast_path_nothing_is_inline():
    plain = create_app(ServiceConfig(path=str(CERT), poll_interval=0, max_body=4096), watch=False, fast_path=False)
    assert fast_path_of(plain) is None
    answers, tasks, _ = _drive(plain, [_request("/access/v1/evaluation", GOOD)])
    assert len(tasks) == 1 and answers[0][0] == 200
