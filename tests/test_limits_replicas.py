"""The acceptance test of issue 16: a budget shared by real replicas. Two `policylang serve`
processes share one real redis-server (``--store redis://127.0.0.1:PORT/0``); 100 requests
sent at once from 100 threads, half to each replica, half over ``/v1/decide`` and half
over AuthZEN, against a budget of 20: exactly 20 are allowed and 80 refused, and the
counter in Redis is 20 (read with the store's ``limit_used`` and through a decision's
``used``). Everything runs on loopback and is stopped at the end."""

from __future__ import annotations

import re
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from redis_fixture import REDIS_SERVER, SKIP_REASON, RedisServer  # noqa: E402
from test_server_harness import LiveServer  # noqa: E402

pytestmark = pytest.mark.slow

BUDGET = 20
REQUESTS = 100

POLICY = f'''
@id("task-budget")
permit agent to refund on order
  limit count <= {BUDGET} per intent.task_id
  because "at most {BUDGET} refunds per task, across every replica"
'''


def _decide_body(i: int) -> dict:
    return {"principal": {"id": f"agent:{i % 7}", "kind": "agent"}, "action": "refund",
            "resource": {"type": "order", "id": f"o-{i}"}, "intent": {"task_id": "T-shared"}}


def _authzen_body(i: int) -> dict:
    return {"subject": {"type": "agent", "id": f"agent:{i % 7}"}, "action": {"name": "refund"},
            "resource": {"type": "order", "id": f"o-{i}"}, "context": {"intent": {"task_id": "T-shared"}}}


@pytest.fixture
def replicas(tmp_path):
    if REDIS_SERVER is None:
        pytest.skip(SKIP_REASON)
    redis = RedisServer(str(tmp_path / "redis")).start()
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "refunds.policy").write_text(POLICY)
    servers = []
    try:
        for _ in range(2):
            servers.append(LiveServer(policies, "--store", redis.url, "--create-store", "--poll-interval", "0",
                                      "--max-connections", "500").start())
        yield redis, servers
    finally:
        for s in servers:
            s.stop()
        redis.stop()


def test_two_replicas_sharing_redis_allow_exactly_the_budget(replicas):
    redis, servers = replicas
    clients = [httpx.Client(base_url=s.url, timeout=60, limits=httpx.Limits(max_connections=REQUESTS))
               for s in servers]
    barrier = threading.Barrier(REQUESTS)
    results: list = [None] * REQUESTS

    def send(i: int) -> None:
        client = clients[i % 2]
        barrier.wait()  # all at once
        try:
            if i % 4 < 2:
                r = client.post("/v1/decide", json=_decide_body(i))
                body = r.json()
                results[i] = (r.status_code, body["decision"], body.get("limits"))
            else:
                r = client.post("/access/v1/evaluation", json=_authzen_body(i))
                body = r.json()
                ctx = body.get("context") or {}
                results[i] = (r.status_code, ctx.get("decision"), ctx.get("limits"))
        except Exception as e:  # recorded, so the assertion below shows it
            results[i] = ("error", repr(e), None)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(REQUESTS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert all(not t.is_alive() for t in threads)
        assert all(r is not None and r[0] == 200 for r in results), [r for r in results if r is None or r[0] != 200]
        allowed = [r for r in results if r[1] == "allow"]
        refused = [r for r in results if r[1] == "deny"]
        assert len(allowed) == BUDGET and len(refused) == REQUESTS - BUDGET
        assert all(lim[0]["outcome"] == "reserved" for _s, _d, lim in allowed)
        assert all(lim[0]["outcome"] == "refused" and lim[0]["used"] == BUDGET for _s, _d, lim in refused)
        # each allow saw a distinct count: the reservations were serialised, none lost or doubled
        assert sorted(lim[0]["used"] for _s, _d, lim in allowed) == list(range(1, BUDGET + 1))
        # both replicas took part
        per_replica = [sum(1 for i, r in enumerate(results) if i % 2 == k and r[1] == "allow") for k in (0, 1)]
        assert sum(per_replica) == BUDGET

        # the counter in Redis, read with the store
        from policylang import loads
        from policylang.evaluation.limits import counter_key, key_value, specs_of
        from policylang.store import open_store

        ps = loads(POLICY)
        (spec,) = specs_of(ps.rules[0], ps.constants)
        store = open_store(redis.url)
        try:
            assert store.limit_used(counter_key(spec, None, key_value("T-shared")), time.time()) == BUDGET
        finally:
            store.close()
        # and through a decision on either replica
        for client in clients:
            d = client.post("/v1/decide", json=_decide_body(1000)).json()
            assert d["decision"] == "deny" and d["limits"][0]["used"] == BUDGET

        # /metrics of both replicas add up to the same story
        totals = {"reservations": 0.0, "refusals": 0.0}
        for client in clients:
            text = client.get("/metrics").text
            for name in totals:
                m = re.search(rf'^policylang_limit_{name}_total{{rule="task-budget"}} ([0-9.e+]+)$', text, re.M)
                totals[name] += float(m.group(1)) if m else 0.0
        assert totals == {"reservations": BUDGET, "refusals": REQUESTS - BUDGET + 2}

        # a release on one replica frees a slot the other replica can use
        rid = allowed[0][2][0]["reservation"]
        r = clients[0].post("/v1/limits/release", json={"reservation": rid})
        assert r.status_code == 200 and r.json() == {"released": True}
        d = clients[1].post("/v1/decide", json=_decide_body(2000)).json()
        assert d["decision"] == "allow" and d["limits"][0]["used"] == BUDGET
    finally:
        for c in clients:
            c.close()
