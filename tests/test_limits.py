"""Limits on permits (docs/language.md#limits): syntax, checker codes, engine semantics on
both stores, exactness under concurrency, idempotent retries, release, windows, fail
closed. Tests drive a clock; the Redis ones start their own redis-server (redis_fixture)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import policylang
from policylang.evaluation import interpreter
from policylang.evaluation.engine import Engine
from policylang.evaluation.limits import reservation_of
from policylang.language.formatter import format_source
from policylang.language.parser import parse
from policylang.privilege.store import StoreError
from policylang.privilege.store.sqlite_store import SQLiteStore
from policylang.store import open_store
from redis_fixture import closed_port_url, redis_factory, redis_server, store, store_url  # noqa: F401

REFUNDS = '''
const REFUND_BUDGET = 500
@id("refunds")
permit agent to refund on order
  when action.amount > 0
  limit sum(action.amount) <= REFUND_BUDGET per intent.task_id
  because "support agents refund within a per-task budget"
@id("no-big-refunds")
forbid agent to refund on order when action.amount > 400 because "over 400 needs a human"
@id("mails")
permit agent to email on mailbox
  limit count <= 20 per principal.id per 1h
  because "20 mails an hour"
@id("deploy-gate")
require approval for agent to deploy on service when resource.env == "prod" by "sre" because "prod"
@id("deploys")
permit agent to deploy on service
  limit count <= 3 per principal.tenant per 1d
  because "three deploys a day per tenant"
'''


class Clock:
    def __init__(self, t: float = 1_700_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def refund(amount, task="t1", agent="a1", idem=None):
    r = {"principal": {"kind": "agent", "id": agent}, "action": {"name": "refund", "attrs": {"amount": amount}},
         "resource": {"type": "order", "id": "o1"}, "intent": {"task_id": task}}
    if idem is not None:
        r["idempotency_key"] = idem
    return r


def mail(agent="a1"):
    return {"principal": {"kind": "agent", "id": agent}, "action": "email", "resource": {"type": "mailbox"}}


def deploy(env="staging", tenant="acme"):
    return {"principal": {"kind": "agent", "id": "a1", "attrs": {"tenant": tenant}}, "action": "deploy",
            "resource": {"type": "service", "id": "api", "attrs": {"env": env}}}


@pytest.fixture
def sqlite_store(tmp_path):
    s = SQLiteStore(str(tmp_path / "limits.db"))
    yield s
    s.close()


def engine(store, clock=None, **kw):
    return Engine(policylang.loads(REFUNDS), limits=store, clock=clock or Clock(), **kw)


# ------------------------------------------------------------------ syntax and formatter

def test_limit_clause_parses_into_its_node():
    rule = parse('permit agent to refund on order limit sum(action.amount) <= 500 per intent.task_id '
                 'limit count <= 20 per principal.id per 1h limit count <= 3 per 1d').statements[0]
    a, b, c = rule.limits
    assert (a.measure, a.bound.value, a.key.name, a.window) == ("sum", 500, "task_id", None)
    assert (b.measure, b.amount, b.key.name, b.window) == ("count", None, "id", 3600)
    assert (c.key, c.window) == (None, 86400)


def test_limit_words_are_not_reserved():
    ps = policylang.loads('const limit = 2\nconst per = 1\n@id("r")\npermit * to * on * when context.count == '
                          'limit + per because "x"\n')
    assert ps.constants["limit"] == 2


@pytest.mark.parametrize("text, message", [
    ("limit count <= 1 per principal.id per 1h per 1d", "at most two `per`"),
    ("limit count <= 1 per principal.id per principal.kind", "second `per` of a limit takes a window"),
    ("limit count <= 1 per 1h per 1d", "one window"),
    ("limit total <= 1", "expected"),
])
def test_bad_limit_syntax_is_e001(text, message):
    with pytest.raises(policylang.PolicyError) as e:
        policylang.loads(f"permit agent to refund on order {text}\n")
    d = e.value.diagnostics[0]
    assert d.code == "E001" and message in d.message


def test_formatter_round_trips_limits():
    src = ('@id("r")\npermit agent to refund on order when action.amount > 0 '
           'limit sum(action.amount*2)<=500 per intent.task_id limit count<=20 per principal.id per 60m '
           'because "x"\n')
    out = format_source(src)
    assert "  limit sum(action.amount * 2) <= 500 per intent.task_id\n" in out
    assert "  limit count <= 20 per principal.id per 1h\n" in out
    assert format_source(out) == out
    assert parse(out) == parse(src)


# ------------------------------------------------------------------ checker

def codes(src):
    try:
        ps = policylang.loads(src)
    except policylang.PolicyError as e:
        return [(d.code, d.message) for d in e.diagnostics]
    return [(d.code, d.message) for d in ps.diagnostics]


def test_e008_limit_on_forbid_and_gate():
    found = codes('@id("f")\nforbid agent to x on y limit count <= 1 per principal.id because "b"\n'
                  '@id("g")\nrequire approval for agent to x on y by "a" limit count <= 1 per principal.id '
                  'because "b"\n')
    e008 = [m for c, m in found if c == "E008"]
    assert len(e008) == 2
    assert "not on a forbid" in e008[0] and "not on a require approval rule" in e008[1]


@pytest.mark.parametrize("clause, message", [
    ("limit count <= principal.quota per principal.id", "known when the set loads"),
    ("limit count <= -1 per principal.id", "at least 0"),
    ("limit count <= 1 per principal.id per 0s", "longer than 0s"),
    ("limit count <= 1 per principal.id limit count <= 2 per principal.id", "twice on one rule"),
])
def test_e008_bad_limits(clause, message):
    found = codes(f'@id("r")\npermit agent to x on y {clause} because "b"\n')
    assert any(c == "E008" and message in m for c, m in found), found


@pytest.mark.parametrize("clause, message", [
    ("limit sum(principal.id) <= 10 per principal.id", "a limit amount must be a number, but this is a string"),
    ('limit count <= "ten" per principal.id', "a limit bound must be a number"),
    ("limit count <= 1 per [principal.id]", "a limit key must be a string, number or boolean"),
])
def test_e005_limit_types(clause, message):
    found = codes(f'@id("r")\npermit agent to x on y {clause} because "b"\n')
    assert any(c == "E005" and message in m for c, m in found), found


def test_e002_unknown_name_in_a_limit():
    found = codes('@id("r")\npermit agent to x on y limit sum(acton.amount) <= 1 per principal.id because "b"\n')
    assert any(c == "E002" and "did you mean 'action'" in m for c, m in found), found


@pytest.mark.parametrize("clause, wording", [
    ("limit count <= 100 per 1d", "has no key"),
    ('limit count <= 100 per "all" per 1d', "reads nothing from the request"),
])
def test_w109_unbound_key(clause, wording):
    found = codes(f'const K = "x"\n@id("r")\npermit agent to x on y {clause} because "b"\n')
    assert [c for c, m in found if c == "W109" and wording in m] == ["W109"]


def test_a_good_limit_has_no_diagnostics():
    assert codes(REFUNDS) == []


# ------------------------------------------------------------------ semantics

def test_sum_limit_allows_until_the_budget_then_refuses_with_what_is_left(sqlite_store):
    e = engine(sqlite_store)
    used = []
    for amount in (200, 250, 100):
        d = e.decide(refund(amount))
        used.append((d.decision, d.limits[0]["used"], d.limits[0]["left"], d.limits[0]["outcome"]))
    assert used == [("allow", 200, 300, "reserved"), ("allow", 450, 50, "reserved"),
                    ("deny", 450, 50, "refused")]
    d = e.decide(refund(100))
    body = d.to_dict()
    assert body["rules"] == [] and body["limits"][0]["needed"] == 100
    assert "limit reached (refunds)" in body["reasons"][0] and "50 left" in body["reasons"][0]
    assert e.decide(refund(50)).decision == "allow"  # exactly to the bound
    assert e.decide(refund(1, task="t2")).decision == "allow"  # another task has its own budget


def test_a_deny_or_require_approval_consumes_nothing(sqlite_store):
    e = engine(sqlite_store)
    d = e.decide(refund(450))  # the forbid wins: nothing reserved
    assert d.decision == "deny" and d.rules == ["no-big-refunds"] and d.limits == ()
    for _ in range(5):
        assert e.decide(deploy(env="prod")).decision == "require_approval"
    for _ in range(3):
        assert e.decide(deploy()).decision == "allow"
    d = e.decide(deploy())
    assert d.decision == "deny" and d.limits[0]["used"] == 3


def test_a_permit_without_a_limit_decides_without_consuming(sqlite_store):
    src = REFUNDS + '@id("admins")\npermit agent "admin-*" to refund on order because "admins"\n'
    e = Engine(policylang.loads(src), limits=sqlite_store, clock=Clock())
    d = e.decide(refund(300, agent="admin-1"))
    assert d.decision == "allow" and d.rules == ["admins"] and d.limits == ()
    assert e.decide(refund(300)).limits[0]["used"] == 300


def test_idempotent_retry_consumes_once_and_release_gives_back(sqlite_store):
    e = engine(sqlite_store)
    first = e.decide(refund(300, idem="req-1"))
    again = e.decide(refund(300, idem="req-1"))
    assert first.limits[0]["outcome"] == "reserved" and again.limits[0]["outcome"] == "replayed"
    assert again.limits[0]["used"] == 300 and reservation_of(first) == reservation_of(again)
    assert e.decide(refund(300)).decision == "deny"
    assert e.release(reservation_of(first)) is True
    assert e.release(reservation_of(first)) is False  # once
    d = e.decide(refund(300))
    assert d.decision == "allow" and d.limits[0]["used"] == 300


def test_idempotency_key_must_be_a_short_string(sqlite_store):
    e = engine(sqlite_store)
    for bad in (7, "", "x" * 201):
        with pytest.raises(policylang.RequestError) as err:
            e.decide(refund(1, idem=bad))
        assert err.value.field == "idempotency_key"


def test_windows_roll_over_on_the_clock(sqlite_store):
    clock = Clock(1_700_000_000.0 - 1_700_000_000.0 % 3600)  # the start of an hour
    e = engine(sqlite_store, clock)
    for _ in range(20):
        assert e.decide(mail()).decision == "allow"
    d = e.decide(mail())
    assert d.decision == "deny" and d.limits[0]["window_end"] is not None
    clock.t += 3599
    assert e.decide(mail()).decision == "deny"
    clock.t += 1  # the next window
    d = e.decide(mail())
    assert d.decision == "allow" and d.limits[0]["used"] == 1
    assert e.decide(mail(agent="a2")).limits[0]["used"] == 1  # per principal


def test_no_store_fails_closed_with_the_error():
    e = Engine(policylang.loads(REFUNDS), clock=Clock())
    d = e.decide(refund(10))
    assert d.decision == "deny"
    assert d.errors == [{"rule": "refunds", "message": "no limit store is configured, so this limited permit "
                                                        "does not hold (fail closed)"}]
    assert d.limits[0]["outcome"] == "error"


def test_unreachable_redis_fails_closed():
    s = open_store(closed_port_url(), timeout=0.2)
    d = engine(s).decide(refund(10))
    assert d.decision == "deny" and d.limits[0]["outcome"] == "error"
    assert "limit store error" in d.errors[0]["message"]


def test_an_amount_that_raises_fails_closed(sqlite_store):
    src = '@id("r")\npermit agent to refund on order limit sum(context.cost) <= 5 per principal.id because "x"\n'
    e = Engine(policylang.loads(src), limits=sqlite_store, clock=Clock())
    d = e.decide(refund(1))
    assert d.decision == "deny" and d.errors[0]["rule"] == "r"
    d = e.decide({**refund(1), "context": {"cost": -3}})  # a negative amount would refill the budget
    assert d.decision == "deny" and "at least 0" in d.errors[0]["message"]


def test_limited_decisions_are_never_cached(sqlite_store):
    e = engine(sqlite_store)
    for _ in range(3):
        e.decide(deploy())
    assert e.decide(deploy()).decision == "deny"
    assert e.cache_info()["size"] == 0


def test_reference_interpreter_reserves_the_same(sqlite_store, tmp_path):
    ps = policylang.loads(REFUNDS)
    other = SQLiteStore(str(tmp_path / "other.db"))
    e = Engine(ps, limits=sqlite_store, clock=Clock())
    seq = [refund(a, task=t) for a, t in [(100, "a"), (300, "a"), (150, "a"), (399, "b"), (120, "b"), (50, "a")]]
    seq += [deploy(), deploy(tenant="x"), deploy(), deploy(), deploy()]
    for r in seq:
        got = e.decide(r).to_dict()
        want = interpreter.decide(ps, r, limits=other, clock=Clock()).to_dict()
        for entry in got.get("limits", []) + want.get("limits", []):
            entry["reservation"] = None  # random per reservation
        assert got == want
    other.close()


def test_explain_shows_the_limits(sqlite_store):
    e = engine(sqlite_store)
    e.decide(refund(400))
    text = e.decide(refund(200)).explain()
    assert "limit (refunds) refused: limit sum(action.amount) <= REFUND_BUDGET per intent.task_id: 400 of 500 used, " \
           "100 left" in text


def test_attenuation_denial_gives_the_reservation_back(sqlite_store):
    src = ('option attenuate_delegation = true\n@id("r")\npermit agent to refund on order '
           'limit sum(action.amount) <= 100 per intent.task_id because "x"\n')
    e = Engine(policylang.loads(src), limits=sqlite_store, clock=Clock())
    r = {**refund(60), "delegation": [{"kind": "human", "id": "u1"}]}
    assert e.decide(r).decision == "deny"  # the human is not allowed to refund
    assert e.decide(refund(100)).limits[0]["used"] == 100  # nothing was kept from the denied one


def test_a_failing_audit_write_gives_the_reservation_back(sqlite_store):
    class Broken:
        def record(self, *a, **k):
            raise OSError("disk full")

    e = engine(sqlite_store, audit=Broken())
    with pytest.raises(OSError):
        e.decide(refund(300))
    d = engine(sqlite_store).decide(refund(400))
    assert d.decision == "allow" and d.limits[0]["used"] == 400


# ------------------------------------------------------------------ exact under concurrency

def _race(engines, n, request):
    barrier = threading.Barrier(n)

    def one(i):
        barrier.wait()
        return engines[i % len(engines)].decide(request).decision

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_sqlite_threads_exactly_the_budget(tmp_path):
    stores = [SQLiteStore(str(tmp_path / "shared.db")) for _ in range(2)]  # two connections, one file
    src = '@id("m")\npermit agent to email on mailbox limit count <= 20 per principal.id per 1h because "x"\n'
    ps = policylang.loads(src)
    clock = Clock()
    engines = [Engine(ps, limits=s, clock=clock) for s in stores]
    out = _race(engines, 100, mail())
    assert out.count("allow") == 20 and out.count("deny") == 80
    d = engines[0].decide(mail())
    assert d.decision == "deny" and d.limits[0]["used"] == 20
    for s in stores:
        s.close()


def test_redis_two_clients_exactly_the_budget(redis_server):  # noqa: F811
    redis_server.flush()
    src = '@id("m")\npermit agent to email on mailbox limit count <= 20 per principal.id per 1h because "x"\n'
    ps = policylang.loads(src)
    stores = [open_store(redis_server.url) for _ in range(2)]
    clock = Clock()
    engines = [Engine(ps, limits=s, clock=clock) for s in stores]
    out = _race(engines, 100, mail())
    assert out.count("allow") == 20 and out.count("deny") == 80
    assert engines[1].decide(mail()).limits[0]["used"] == 20
    for s in stores:
        s.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_store_contract(kind, tmp_path, redis_server):  # noqa: F811
    if kind == "sqlite":
        s = SQLiteStore(str(tmp_path / "c.db"))
    else:
        redis_server.flush()
        s = open_store(redis_server.url)
    now = 1000.0
    assert s.reserve_limits("r1", [("c1", 3, 5, now + 60), ("c2", 1, 1, None)], now) == ("reserved", None, [3, 1])
    assert s.reserve_limits("r1", [("c1", 3, 5, now + 60), ("c2", 1, 1, None)], now) == ("replayed", None, [3, 1])
    assert s.reserve_limits("r2", [("c1", 2, 5, now + 60), ("c2", 1, 1, None)], now) == ("refused", 1, [3, 1])
    assert s.limit_used("c1", now) == 3  # all or nothing: c1 was not consumed by r2
    assert s.release_limits("r1", now) is True and s.release_limits("r1", now) is False
    assert (s.limit_used("c1", now), s.limit_used("c2", now)) == (0, 0)
    assert s.release_limits("unknown", now) is False
    s.close()


def test_killing_redis_mid_load_fails_closed_and_over_consumes_nothing(redis_factory):  # noqa: F811
    server = redis_factory()
    src = '@id("m")\npermit agent to email on mailbox limit count <= 30 per principal.id because "x"\n'
    store = open_store(server.url, timeout=0.3)
    e = Engine(policylang.loads(src), limits=store, clock=Clock())
    before = [e.decide(mail()).decision for _ in range(10)]
    assert before == ["allow"] * 10
    server.stop(kill=True)
    during = [e.decide(mail()) for _ in range(5)]
    assert all(d.decision == "deny" and d.limits[0]["outcome"] == "error" for d in during)
    server.start()
    after = _race([e], 40, mail())
    assert after.count("allow") == 20 and after.count("deny") == 20
    assert e.decide(mail()).limits[0]["used"] == 30
    store.close()


def test_release_without_a_store_raises():
    # a usage error, not a store failure (evaluation/ imports nothing of privilege/)
    with pytest.raises(ValueError, match="no limit store"):
        Engine(policylang.loads(REFUNDS)).release("x")
