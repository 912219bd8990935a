"""Issue 20: the request cache (policylang/evaluation/cache.py), whose hit skips validation.

"A cache can never change a decision": on adversarial streams an engine with the cache
and one without it give the same decision or the same RequestError (same field), the
hit included; a request a miss rejects is rejected by the cached engine too; what must
bypass the cache (approvals, entity callables, limits, errors) does; the cache is
bounded, its reads take no lock, and it is safe under threads.
"""

from __future__ import annotations

import enum
import json
import math
import threading
from collections import UserDict

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from policygen import hostile_requests, policy_sets, requests

import policylang
from policylang import RequestError
from policylang.evaluation.cache import (
    MAX_KEY_BYTES,
    RequestCache,
    request_copy,
    request_key,
)

POLICY = """const ZERO = 0
permit agent to read on doc when context.n == 1 because "n is one"
permit agent to write on doc when context.n == ZERO and principal.dept == "eng" grant "w", context.scope for 10m
forbid agent to read on doc when risk.score > 0.9 because "risky"
require approval for agent to deploy on doc by "ops" because "needs ops"
permit agent to list on doc when "x" in context.tags
permit agent to see on doc when resource.owner == principal.tenant
permit agent to deploy on doc
"""


def approvals(approval_id, request, approvers):
    return approval_id == "ok" and "ops" in approvers


def _engines(text=POLICY, **kw):
    ps = policylang.loads(text, name="fast.policy")
    return (policylang.Engine(ps, approvals=approvals, **kw),
            policylang.Engine(ps, cache_size=0, approvals=approvals, **kw))


def _outcome(engine, req):
    try:
        return engine.decide(req).to_dict()
    except RequestError as e:
        return ("request error", e.field)


def _req(**context):
    return {"principal": {"id": "p", "kind": "agent", "attrs": {"dept": "eng", "tenant": "t"}},
            "action": "read", "resource": {"type": "doc", "id": "d", "attrs": {"owner": "t"}},
            "risk": {"score": 0.1}, "context": context}


# ------------------------------------------------------------------ the key

class Word(enum.StrEnum):
    X = "x"


class Num(enum.IntEnum):
    ONE = 1


class MyFloat(float):
    pass


@pytest.mark.parametrize("value", [Word.X, Num.ONE, MyFloat(1.0), UserDict(a=1), "x" * (MAX_KEY_BYTES + 1)],
                         ids=["StrEnum", "IntEnum", "float subclass", "UserDict", "too long"])
def test_requests_marshal_refuses_or_too_long_get_no_key(value):
    assert request_key(_req(v=value)) is None


def test_the_key_tells_apart_what_equality_does_not():
    keys = [request_key(_req(n=v)) for v in (1, 1.0, True, 0, 0.0, -0.0, False)]
    assert len(set(keys)) == len(keys)
    assert request_key({"a": 1, "b": 2}) != request_key({"b": 2, "a": 1})
    assert request_key(_req(t=[1])) != request_key(_req(t=(1,)))
    assert request_key({1: "x"}) != request_key({"1": "x"})


def test_the_key_does_not_depend_on_who_else_holds_the_request():
    """marshal format 2: the bytes are types and values only (formats 3+ flag objects by
    their reference count, so a request held twice would miss its own entry)."""
    req = _req(n=1)
    before = request_key(req)
    held = [req, req["context"], req["principal"]["id"]]
    assert request_key(req) == before == request_key(json.loads(json.dumps(req)))
    assert held


def test_a_shared_nan_decides_as_two_nans():
    """The copy a miss decides does not share objects the request shares: no decision
    depends on identity (a NaN is unequal to itself, however it is held)."""
    text = "permit agent to read on doc when context.x in context.l\npermit agent to write on doc when context.l == context.m\n"
    cached, plain = _engines(text)
    nan = math.nan
    for action in ("read", "write", "read", "write"):
        shared = {**_req(x=nan, l=[nan], m=[nan]), "action": action}
        distinct = {**_req(x=float("nan"), l=[float("nan")], m=[float("nan")]), "action": action}
        assert _outcome(cached, shared) == _outcome(plain, shared) == _outcome(plain, distinct)


def test_the_copy_is_the_request_value_for_value_and_type_for_type():
    req = _req(n=-0.0, t=[1, 1.0, True, None, {"k": "v"}], nan=math.nan)
    copy = request_copy(request_key(req))
    assert copy is not req and copy["context"] is not req["context"]
    assert json.dumps(copy) == json.dumps(req)
    assert math.copysign(1, copy["context"]["n"]) == -1
    assert [type(x) for x in copy["context"]["t"]] == [int, float, bool, type(None), dict]


# ------------------------------------------------------------------ hit == miss

def test_a_hit_is_the_uncached_decision_and_a_fresh_object():
    cached, plain = _engines()
    req = _req(n=1)
    first = cached.decide(req)
    hit = cached.decide(req)
    assert cached.counters.cache_hits == 1
    assert hit.to_dict() == first.to_dict() == plain.decide(req).to_dict()
    assert hit is not first and hit.rules is not first.rules
    assert hit.explain() == first.explain() == plain.decide(req).explain()
    hit.rules.append("tampered")  # a caller changing its decision changes no later hit
    assert cached.decide(req).to_dict() == first.to_dict()


def test_grants_of_a_hit_are_not_the_first_callers_lists():
    cached, plain = _engines()
    req = {**_req(n=0, scope="s1"), "action": "write"}
    first = cached.decide(req)
    assert first.grants and first.grants[0]["scopes"] == ["w", "s1"]
    first.grants[0]["scopes"].append("extra")
    assert cached.decide(req).to_dict() == plain.decide(req).to_dict()


def test_a_hit_made_field_by_field_is_a_whole_decision_every_way_it_is_used():
    import copy

    cached, plain = _engines()
    req = {**_req(n=0, scope="s1"), "action": "write"}
    miss = cached.decide(req)
    hits = [cached.decide(req), cached.decide_json(json.dumps(req)), cached.decide_json(json.dumps(req))]
    want = plain.decide(req).to_dict()
    assert want["grants"] and want["delegation_path"]
    for hit in hits[::2]:
        assert isinstance(hit, policylang.Decision) and hit == miss and hit.to_dict() == want
    # each field is a fresh list per hit, the caller's to change; changing one changes
    # no other hit, no field read later and not the cache
    a, b = hits[1], hits[2]
    for name in ("rules", "reasons", "grants", "approvers", "errors", "delegation_path"):
        assert getattr(a, name) == want[name] and getattr(a, name) is not getattr(b, name), name
        assert getattr(a, name) is getattr(a, name), name  # made once, then kept
    a.rules.append("tampered")
    a.grants[0]["scopes"].append("extra")
    a.delegation_path = ["someone"]
    a.errors.append({"rule": "x", "message": "y"})
    assert a.rules[-1] == "tampered" and a.delegation_path == ["someone"]
    assert b.to_dict() == want and cached.decide(req).to_dict() == want
    assert cached.decide_json(json.dumps(req)).to_dict() == want
    # a copy carries what was read and changed, and makes the rest as the original would
    assert copy.copy(a).to_dict() == a.to_dict() != want
    fresh = cached.decide(req)
    assert copy.copy(fresh).to_dict() == want
    assert fresh.explain() == plain.decide(req).explain() and repr(fresh) == repr(miss)


def test_a_hit_copied_is_a_plain_decision_of_its_fields():
    import copy

    cached, plain = _engines()
    req = {**_req(n=0, scope="s1"), "action": "write"}
    cached.decide(req)
    want = plain.decide(req).to_dict()
    hit = cached.decide(req)
    assert type(hit) is not policylang.Decision  # a hit
    hit.reasons = ["set before any read"]
    dup = copy.copy(hit)
    assert type(dup) is policylang.Decision
    assert dup.to_dict() == {**want, "reasons": ["set before any read"]}
    assert dup.explain() == hit.explain()
    # a copy's field set afterwards is the copy's alone; the hit keeps its own
    dup = copy.copy(hit)
    dup.rules = ["other"]
    assert hit.rules == want["rules"] and cached.decide(req).to_dict() == want


@pytest.mark.parametrize("a, b", [(1, 1.0), (1, True), (0, -0.0), (0, 0.0), (0, False), (1.0, True)])
def test_equal_numbers_of_other_types_or_signs_each_get_their_own_decision(a, b):
    cached, plain = _engines()
    for v in (a, b, a, b):
        for action in ("read", "write"):
            req = {**_req(n=v, scope=v), "action": action}
            assert _outcome(cached, req) == _outcome(plain, req), (v, action)


def test_nan_and_mutated_after_the_call():
    cached, plain = _engines()
    req = _req(n=math.nan, tags=["x"])
    req["action"] = "list"
    assert _outcome(cached, req) == _outcome(plain, req)
    req["context"]["tags"].clear()     # mutated after the call: the next answer is the new one
    assert _outcome(cached, req) == _outcome(plain, req) == _outcome(plain, {**req})
    req["context"]["tags"].append("x")
    assert _outcome(cached, req) == _outcome(plain, req)


def test_a_request_a_miss_rejects_is_rejected_by_the_cached_engine():
    cached, plain = _engines()
    good = _req(n=1)
    cached.decide(good)
    cached.decide(good)  # now a hit
    bad_variants = [
        {**good, "risk": {"score": 2}},
        {**good, "risk": {"score": math.nan}},
        {**good, "risk": {"score": 0.5, "signals": ["x", 1]}},
        {**good, "principal": {**good["principal"], "id": 5}},
        {**good, "principal": {**good["principal"], "kind": None}},
        {**good, "resource": {"type": "doc", "id": 3}},
        {**good, "action": ["read"]},
        {**good, "context": {"n": 1, "deep": {1: "non-string key below the top"}}},
        {**good, "context": {"n": 1, "b": b"bytes"}},
        {**good, "delegation": "not a list"},
        {**good, "delegation": [None]},
    ]
    for bad in bad_variants:
        for _ in range(2):  # twice: a rejected request is never stored
            with pytest.raises(RequestError) as got:
                cached.decide(bad)
            with pytest.raises(RequestError) as want:
                plain.decide(bad)
            assert (got.value.field, got.value.reason) == (want.value.field, want.value.reason), bad


def _mutations():
    """Edits that make a request differ in ways equality or validation may not see."""
    scalars = st.sampled_from([1, 1.0, True, 0, -0.0, 0.0, False, math.nan, math.inf, None, "1", "", "x",
                               2, 0.95, 0.9100000000000001, 10 ** 30, -1])
    bad = st.sampled_from([b"x", ("x",), {1: "x"}, {"a": {2: 3}}, object, 2 ** 70, Word.X, Num.ONE,
                           MyFloat(0.5), UserDict(a=1), {"n": [[[[]]]]}])
    return st.one_of(scalars, bad)


ROOTS = ["principal", "action", "resource", "context", "risk", "delegation", "intent"]


@st.composite
def mutated_streams(draw):
    base = draw(st.lists(requests(), min_size=1, max_size=4))
    stream = []
    for req in base:
        stream.append(req)
        for _ in range(draw(st.integers(0, 3))):
            m = json.loads(json.dumps(req))
            how = draw(st.sampled_from(["scalar", "root", "reorder", "attr", "deep"]))
            value = draw(_mutations())
            if how == "scalar":
                m.setdefault("context", {})[draw(st.sampled_from(["a", "b", "tags"]))] = value
            elif how == "root":
                m[draw(st.sampled_from(ROOTS))] = value
            elif how == "reorder":
                m = dict(reversed(list(m.items())))
                if isinstance(m.get("context"), dict):
                    m["context"] = dict(reversed(list(m["context"].items())))
            elif how == "attr":
                target = m[draw(st.sampled_from(["principal", "resource"]))]
                target.setdefault("attrs", {})[draw(st.sampled_from(["a", "b", "id"]))] = value
                if draw(st.booleans()):
                    target[draw(st.sampled_from(["id", "kind", "type"]))] = value
            else:
                v: object = value
                for _ in range(draw(st.sampled_from([1, 62, 63, 64, 65]))):
                    v = {"a": v}
                m.setdefault("context", {})["a"] = v
            stream.append(m)
    repeats = [draw(st.sampled_from(stream)) for _ in range(len(stream))]
    return stream + repeats


def _load(text):
    try:
        return policylang.loads(text, name="gen.policy")
    except policylang.PolicyError:
        assume(False)


ADVERSARIAL = settings(max_examples=40, deadline=None,
                       suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                              HealthCheck.filter_too_much])


@ADVERSARIAL
@given(policy_sets(), mutated_streams())
def test_cached_equals_uncached_on_mutated_streams(text, stream):
    """Same decision, or the same RequestError (type and field), hits included."""
    ps = _load(text)
    cached = policylang.Engine(ps, cache_size=16, approvals=approvals)
    plain = policylang.Engine(ps, cache_size=0, approvals=approvals)
    for req in stream:
        assert _outcome(cached, req) == _outcome(plain, req), (text, req)


@ADVERSARIAL
@given(policy_sets(), st.lists(hostile_requests(), min_size=1, max_size=5))
def test_cached_equals_uncached_on_subclass_values(text, pairs):
    ps = _load(text)
    cached = policylang.Engine(ps, cache_size=16, approvals=approvals)
    plain = policylang.Engine(ps, cache_size=0, approvals=approvals)
    stream = [r for pair in pairs for r in pair]
    for req in stream + stream:
        assert _outcome(cached, req) == _outcome(plain, req), (text, req)


# ------------------------------------------------------------------ what bypasses

def test_requests_with_an_approval_ask_the_checker_every_time():
    calls = []

    def checker(approval_id, request, approvers):
        calls.append(approval_id)
        return len(calls) == 1  # confirms once, then no more

    ps = policylang.loads(POLICY, name="fast.policy")
    engine = policylang.Engine(ps, approvals=checker)
    req = {**_req(), "action": "deploy", "approval": "a1"}
    assert engine.decide(req).decision == "allow"
    assert engine.decide(req).decision == "require_approval"
    assert len(calls) == 2 and engine.cache_info()["requests"] == 0


def test_an_entity_callable_is_asked_every_time():
    answers = {"dept": "eng"}

    def lookup(kind, eid):
        return dict(answers) if eid == "p" else None

    ps = policylang.loads(POLICY, name="fast.policy")
    engine = policylang.Engine(ps, entities=lookup)
    req = {"principal": {"id": "p", "kind": "agent"}, "action": "write", "resource": {"type": "doc"},
           "context": {"n": 0, "scope": "s"}}
    assert engine.decide(req).decision == "allow"
    answers["dept"] = "sales"
    assert engine.decide(req).decision == "deny"
    assert engine.cache_info()["requests"] == 0


def test_entity_mappings_are_the_engines_own_copy():
    """The request cache keys requests alone: the engine copies entity mappings at
    construction, so a caller changing its mapping afterwards changes no decision, cached
    or not (and the two never disagree)."""
    people = {"agent": {"p": {"dept": "eng"}}}
    ps = policylang.loads(POLICY, name="fast.policy")
    cached = policylang.Engine(ps, entities=people)
    plain = policylang.Engine(ps, entities=people, cache_size=0)
    req = {"principal": {"id": "p", "kind": "agent"}, "action": "write", "resource": {"type": "doc"},
           "context": {"n": 0, "scope": "s"}}
    assert cached.decide(req).decision == plain.decide(req).decision == "allow"
    people["agent"]["p"]["dept"] = "sales"
    assert cached.decide(req).decision == plain.decide(req).decision == "allow"


def test_decisions_with_errors_are_not_stored():
    cached, plain = _engines("permit agent to read on doc when context.n + 1 > 1\n")
    req = _req(n="text")
    for _ in range(3):
        assert cached.decide(req).to_dict() == plain.decide(req).to_dict()
    assert cached.decide(req).errors and cached.cache_info()["requests"] == 0


def test_limited_decisions_reserve_every_time(tmp_path):
    from policylang.privilege.store.sqlite_store import SQLiteStore

    ps = policylang.loads("permit agent to read on doc\n  limit count <= 2 per principal.id per 1h\n",
                          name="lim.policy")
    engine = policylang.Engine(ps, limits=SQLiteStore(str(tmp_path / "l.db")), clock=lambda: 1000.0)
    req = _req()
    got = [engine.decide(req).decision for _ in range(3)]
    assert got == ["allow", "allow", "deny"]
    assert engine.cache_info()["requests"] == 0


def test_strict_mode_refuses_unknown_keys_on_a_hit_too():
    ps = policylang.loads(POLICY, name="fast.policy")
    engine = policylang.Engine(ps, strict=True)
    req = _req(n=1)
    engine.decide(req)
    engine.decide(req)
    with pytest.raises(RequestError):
        engine.decide({**req, "contxt": {}})


def test_every_hit_is_audited():
    class Log:
        def __init__(self):
            self.events = []

        def record(self, event, *, request, decision, latency_us):
            self.events.append((request, decision.decision))

    log = Log()
    ps = policylang.loads(POLICY, name="fast.policy")
    engine = policylang.Engine(ps, audit=log)
    req = _req(n=1)
    for _ in range(3):
        engine.decide(req)
    assert [d for _r, d in log.events] == ["allow"] * 3
    assert all(r is req for r, _d in log.events)  # the caller's request, not the engine's copy
    assert engine.counters.cache_hits == 2


def test_cache_off_means_no_request_cache():
    ps = policylang.loads(POLICY, name="fast.policy")
    engine = policylang.Engine(ps, cache_size=0)
    engine.decide(_req(n=1))
    assert engine._fast is None and engine.cache_info()["requests"] == 0


# ------------------------------------------------------------------ the cache itself

def test_the_cache_is_bounded_and_keeps_what_is_hit():
    cache = RequestCache(3)
    for k in (b"a", b"b", b"c"):
        cache.put(k, k)
    assert cache.get(b"a") == b"a"   # flagged: survives the next eviction
    cache.put(b"d", b"d")
    assert len(cache) == 3
    assert cache.get(b"b") is None and cache.get(b"a") == b"a" and cache.get(b"d") == b"d"
    for i in range(100):
        cache.put(str(i).encode(), i)
        assert len(cache) <= 3


def test_every_entry_flagged_still_evicts():
    cache = RequestCache(2)
    cache.put(b"a", 1)
    cache.put(b"b", 2)
    cache.get(b"a")
    cache.get(b"b")
    cache.put(b"c", 3)
    assert len(cache) == 2 and cache.get(b"c") == 3


def test_entries_expire_after_the_ttl():
    now = [0.0]
    cache = RequestCache(10, ttl=5, clock=lambda: now[0])
    cache.put(b"a", 1)
    now[0] = 4.9
    assert cache.get(b"a") == 1
    now[0] = 5.0
    assert cache.get(b"a") is None
    cache.put(b"a", 2)
    assert cache.get(b"a") == 2


def test_engine_ttl_reaches_the_request_cache():
    ps = policylang.loads(POLICY, name="fast.policy")
    engine = policylang.Engine(ps, cache_ttl=30)
    assert engine._fast._ttl == 30


def test_many_threads_with_a_churning_cache_agree_with_the_uncached_engine():
    ps = policylang.loads(POLICY, name="fast.policy")
    cached = policylang.Engine(ps, cache_size=8)
    plain = policylang.Engine(ps, cache_size=0)
    reqs = [{**_req(n=i % 3, scope=str(i % 5)), "action": a} for i in range(30) for a in ("read", "write")]
    want = [plain.decide(r).to_dict() for r in reqs]
    bad: list = []

    def run(offset):
        for round_ in range(40):
            for i in range(len(reqs)):
                j = (i + offset + round_) % len(reqs)
                if cached.decide(reqs[j]).to_dict() != want[j]:
                    bad.append(j)

    threads = [threading.Thread(target=run, args=(k * 7,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad
    assert len(cached._fast) <= 8


def test_a_hit_neither_validates_nor_keys_by_value(monkeypatch):
    """The cheap hit: the second decision of an identical request is the request cache's,
    without parse_parts (validation) or the value-keyed cache."""
    from policylang.evaluation import engine as engine_module

    cached, _plain = _engines()
    req = _req(n=1)
    cached.decide(req)
    calls = []
    real = engine_module.parse_parts
    monkeypatch.setattr(engine_module, "parse_parts", lambda *a: calls.append(a) or real(*a))
    assert cached.decide(json.loads(json.dumps(req))).decision == "allow"
    assert calls == [] and cached.cache_info()["requests"] == 1
