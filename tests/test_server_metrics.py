"""/metrics and /healthz (docs/server.md): decisions by outcome, a latency histogram, cache
hits and misses, reloads; the serving version and the last reload."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

try:
    from test_server_harness import CERT, LiveServer
except ImportError:  # tests/ as a package
    from tests.test_server_harness import CERT, LiveServer

ALICE = {"type": "user", "id": "alice"}
BOB = {"type": "user", "id": "bob"}
REC1 = {"type": "record", "id": "record-1"}


@pytest.fixture(scope="module")
def server():
    with LiveServer(CERT, "--poll-interval", "0") as s:
        yield s


def scrape(server) -> dict:
    r = server.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(metrics: dict, name: str, **labels) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def test_decisions_are_counted_by_endpoint_and_outcome(server):
    before = scrape(server)
    c = server.client
    for _ in range(3):
        c.post("/access/v1/evaluation", json={"subject": ALICE, "action": {"name": "read"}, "resource": REC1})
    c.post("/access/v1/evaluation", json={"subject": BOB, "action": {"name": "write"}, "resource": REC1})
    c.post("/access/v1/evaluation", json={"subject": BOB})
    c.post("/access/v1/evaluations", json={"subject": ALICE, "action": {"name": "write"}, "evaluations": [
        {"resource": REC1}, {"resource": {"type": "record", "id": "record-2"}}, {"resource": {"type": "record"}}]})
    c.post("/v1/decide", json={"principal": {"id": "alice", "kind": "user"}, "action": "read",
                               "resource": {"type": "record", "id": "record-1"}})
    after = scrape(server)

    def delta(endpoint, outcome):
        name = "policylang_decisions_total"
        return value(after, name, endpoint=endpoint, outcome=outcome) - value(before, name, endpoint=endpoint,
                                                                              outcome=outcome)
    assert delta("evaluation", "allow") == 3
    assert delta("evaluation", "deny") == 1
    assert delta("evaluation", "invalid") == 1
    assert (delta("evaluations", "allow"), delta("evaluations", "deny"), delta("evaluations", "invalid")) == (1, 1, 1)
    assert delta("decide", "allow") == 1
    # the latency histogram counts every answered decision request
    count = "policylang_request_duration_seconds_count"
    assert value(after, count, endpoint="evaluation") - value(before, count, endpoint="evaluation") == 4
    assert value(after, count, endpoint="evaluations") - value(before, count, endpoint="evaluations") == 1
    buckets = [v for (n, labels), v in after.items()
               if n == "policylang_request_duration_seconds_bucket" and ("endpoint", "evaluation") in labels]
    assert buckets and max(buckets) == value(after, count, endpoint="evaluation")


def test_cache_hits_and_misses(server):
    before = scrape(server)
    # the cache key is what the rules read: a status no request had yet is a miss, then hits
    req = {"subject": ALICE, "action": {"name": "write"},
           "resource": {"type": "record", "id": "record-7", "properties": {"status": "metrics-test"}}}
    for _ in range(4):
        server.client.post("/access/v1/evaluation", json=req)
    after = scrape(server)
    misses = value(after, "policylang_decision_cache_misses_total") - value(before, "policylang_decision_cache_misses_total")
    hits = value(after, "policylang_decision_cache_hits_total") - value(before, "policylang_decision_cache_hits_total")
    assert (misses, hits) == (1, 3)


def test_reloads_are_counted(server):
    metrics = scrape(server)
    assert value(metrics, "policylang_reloads_total", trigger="startup", result="ok") == 1
    assert value(metrics, "policylang_policy_last_reload_ok") == 1


def test_healthz(server):
    r = server.client.get("/healthz")
    assert r.status_code == 200
    h = r.json()
    assert h["status"] == "ok" and h["policy_version"].startswith("sha256:")
    assert h["rules"] == 4
    assert h["last_reload"]["ok"] is True and h["last_reload"]["trigger"] == "startup"
    assert h["last_reload"]["diagnostics"] == []
    # the version is the one decisions carry
    d = server.client.post("/v1/decide", json={"principal": {"id": "alice", "kind": "user"}, "action": "read",
                                               "resource": {"type": "record", "id": "record-1"}}).json()
    assert d["policy_version"] == h["policy_version"]
