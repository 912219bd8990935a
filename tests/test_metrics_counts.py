"""The decision counts and latencies of policylang/server/metrics.py, kept as plain numbers
and carried into the Prometheus metrics when the registry is collected, show on /metrics
exactly what counting each one directly into prometheus_client shows."""

from __future__ import annotations

import asyncio
import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from policylang.server import ServiceConfig, create_app
from policylang.server.metrics import BUCKETS, ENDPOINTS, OUTCOMES, Metrics

try:
    from test_server_harness import CERT
except ImportError:  # tests/ as a package
    from tests.test_server_harness import CERT


def _samples(metrics: Metrics) -> list[str]:
    """The exposition without the ``_created`` timestamps (which differ per object)."""
    return [line for line in metrics.render().decode().splitlines() if "_created" not in line]


seconds = st.one_of(st.sampled_from([*BUCKETS, 0.0, -1.0, math.inf, math.nan, 3.0]),
                    st.floats(0, 3, allow_nan=False))
events = st.lists(st.one_of(
    st.tuples(st.just("decided"), st.sampled_from(ENDPOINTS), st.sampled_from(OUTCOMES), st.integers(1, 200)),
    st.tuples(st.just("observe"), st.sampled_from(ENDPOINTS), seconds),
    st.just(("render",))), max_size=40)


@settings(max_examples=150, deadline=None)
@given(events)
def test_deferred_shows_what_direct_counting_shows(sequence):
    deferred, direct = Metrics(), Metrics(defer=False)
    assert deferred.deferred and not direct.deferred
    for event in sequence:
        if event[0] == "render":
            assert _samples(deferred) == _samples(direct)
            continue
        for m in (deferred, direct):
            getattr(m, event[0])(*event[1:])
    assert _samples(deferred) == _samples(direct)
    assert _samples(deferred) == _samples(direct)  # a second collection adds nothing


def test_sample_value_reads_the_counts():
    m = Metrics()
    m.decided("evaluation", "allow", 3)
    m.observe("evaluation", 0.0002)
    assert m.registry.get_sample_value("policylang_decisions_total",
                                       {"endpoint": "evaluation", "outcome": "allow"}) == 3
    assert m.registry.get_sample_value("policylang_request_duration_seconds_bucket",
                                       {"endpoint": "evaluation", "le": "0.00025"}) == 1


# ------------------------------------------------------- a known sequence through the app

async def _post(app, path: str, body: dict) -> int:
    raw = json.dumps(body).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(raw))],
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000), "state": {}}
    sent = []

    async def receive():
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"]


READ = {"subject": {"type": "user", "id": "alice"}, "action": {"name": "read"},
        "resource": {"type": "record", "id": "record-1"}}
BAD = {"subject": {"type": "user"}, "action": {"name": "read"}, "resource": {"type": "record", "id": "r"}}


def _counts(app) -> dict:
    text = app.state.metrics.render().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "policylang_decisions_total" and s.value:
                out[s.labels["endpoint"], s.labels["outcome"]] = s.value
            elif s.name == "policylang_request_duration_seconds_count" and s.value:
                out[s.labels["endpoint"], "requests"] = s.value
    return out


def test_a_known_sequence_counts_on_metrics():
    cfg = ServiceConfig(path=str(CERT), poll_interval=0)
    for fast in (True, False):
        app = create_app(cfg, watch=False, fast_path=fast)

        async def run(app=app):
            statuses = [await _post(app, "/access/v1/evaluation", READ) for _ in range(3)]
            statuses.append(await _post(app, "/access/v1/evaluation", BAD))
            statuses.append(await _post(app, "/access/v1/evaluations",
                                        {"subject": READ["subject"], "evaluations": [
                                            {"action": READ["action"], "resource": READ["resource"]},
                                            {"action": {"name": "read"}, "resource": {"type": "record"}}]}))
            return statuses

        statuses = asyncio.run(run())
        assert statuses == [200, 200, 200, 400, 200]
        counts = _counts(app)
        allow = counts.get(("evaluation", "allow"), 0) + counts.get(("evaluation", "deny"), 0)
        assert allow == 3, counts
        assert counts[("evaluation", "invalid")] == 1
        assert counts[("evaluation", "requests")] == 3  # a 400 is counted, not timed
        assert counts[("evaluations", "invalid")] == 1
        assert counts[("evaluations", "requests")] == 1
        assert _counts(app) == counts  # scraping again changes nothing
