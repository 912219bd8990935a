"""Engine.decide_json: a request as JSON text, and the cache keyed by its exact bytes
(docs/engine.md#json-requests). A hit neither parses nor validates, so these tests attack
the one thing that could go wrong: a hit answering differently from what a miss (or an
engine without a cache) answers for the same bytes."""

from __future__ import annotations

import json

import pytest
from cost import python_steps
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import policylang
from policylang import RequestError
from policylang.evaluation import engine as engine_module

POLICY = '''\
@id("read")
permit agent to read on repo
  when risk.score < 0.5 and resource.owner == principal.tenant
  grant "repo:read:" + resource.id for 10m

@id("deploy")
permit agent to deploy on service because "agents deploy, with an approval"

@id("gate")
require approval for agent to deploy on service
  by "sre"

@id("deny-high")
forbid agent to * on * when risk.score > 0.9 because "risky"
'''

REQUEST = {"principal": {"id": "spiffe://acme.io/agents/coder", "kind": "agent", "attrs": {"tenant": "acme"}},
           "action": "read", "resource": {"type": "repo", "id": "acme/api", "attrs": {"owner": "acme"}},
           "risk": {"score": 0.2}}


def _engines(**kw):
    ps = policylang.loads(POLICY)
    return policylang.Engine(ps, **kw), policylang.Engine(ps, cache_size=0, **kw)


def _outcome(fn):
    try:
        d = fn()
    except RequestError as e:
        return ("error", e.field)
    return ("decision", d.to_dict())


def test_the_same_bytes_twice_are_a_hit_equal_to_a_fresh_decision():
    cached, plain = _engines()
    body = json.dumps(REQUEST).encode()
    first = cached.decide_json(body)
    hits = cached.counters.cache_hits
    second = cached.decide_json(body)
    assert cached.counters.cache_hits == hits + 1
    assert first.to_dict() == second.to_dict() == plain.decide(REQUEST).to_dict()
    assert second.allowed and second.grants[0]["scopes"] == ["repo:read:acme/api"]
    assert cached.decide_json(body.decode()).to_dict() == first.to_dict()  # str is accepted too


def test_a_hit_does_not_parse_or_validate_and_costs_a_quarter_of_a_miss_at_most(monkeypatch):
    cached, plain = _engines()
    body = json.dumps(REQUEST).encode()
    cached.decide_json(body)
    miss = python_steps(lambda: plain.decide(json.loads(body)))
    hit = python_steps(lambda: cached.decide_json(body))
    assert hit * 4 <= miss, (hit, miss)
    calls = []
    monkeypatch.setattr(engine_module, "parse_parts", lambda *a: calls.append(a))
    monkeypatch.setattr(engine_module, "parse_json_request", lambda *a: calls.append(a))
    assert cached.decide_json(body).allowed and calls == []


def test_a_caller_changing_the_decision_it_got_changes_no_later_hit():
    cached, _ = _engines()
    body = json.dumps(REQUEST).encode()
    d = cached.decide_json(body)
    d.rules.append("forged")
    d.grants[0]["scopes"].append("admin")
    again = cached.decide_json(body)
    assert again.rules == ["read"] and again.grants[0]["scopes"] == ["repo:read:acme/api"]


@pytest.mark.parametrize("body, field", [
    (b"", ""), (b"[1, 2]", ""), (b'"x"', ""), (b"null", ""), (b"{", ""), (b"\xff\xfe\x00", ""),
    (b'{"principal": NaN}', ""), (b'{"principal": {"id": "a", "kind": "agent"}, "risk": {"score": Infinity}}', ""),
    (b"[" * 100_000 + b"]" * 100_000, ""),
    (b'{"principal": {"id": "a", "kind": "agent"}, "action": "read"}', "resource"),
    ((b'{"principal": {"id": "a", "kind": "agent"}, "action": "read", "resource": {"type": "repo"}, '
     b'"risk": {"score": 7}}'), "risk.score"),
])
def test_text_a_miss_rejects_is_rejected_every_time_with_the_same_field(body, field):
    cached, _ = _engines()
    for _ in range(3):
        with pytest.raises(RequestError) as err:
            cached.decide_json(body)
        assert err.value.field == field
    assert cached.cache_info()["hits"] == 0


def test_a_strict_engine_refuses_an_unknown_key_every_time():
    cached, _ = _engines(strict=True)
    body = json.dumps({**REQUEST, "contxt": {}}).encode()
    for _ in range(2):
        with pytest.raises(RequestError):
            cached.decide_json(body)


def test_approvals_are_never_answered_from_the_json_cache():
    calls = []

    def checker(approval_id, request, approvers):
        calls.append(approval_id)
        return len(calls) == 1  # approved the first time only (then revoked)
    ps = policylang.loads(POLICY)
    cached = policylang.Engine(ps, approvals=checker)
    body = json.dumps({"principal": {"id": "a", "kind": "agent"}, "action": "deploy",
                       "resource": {"type": "service", "id": "s"}, "risk": {"score": 0.1},
                       "approval": "t-1"}).encode()
    assert cached.decide_json(body).allowed
    assert not cached.decide_json(body).allowed  # the checker was asked again, and said no
    assert calls == ["t-1", "t-1"] and len(cached._json) == 0


def test_every_audited_decision_is_recorded(tmp_path):
    from policylang.audit import AuditLog, verify_file

    log = tmp_path / "audit.log"
    ps = policylang.loads(POLICY)
    engine = policylang.Engine(ps, audit=AuditLog(str(log)))
    body = json.dumps(REQUEST).encode()
    for _ in range(3):
        engine.decide_json(body)
    assert verify_file(str(log)).records == 3


def test_an_entity_callable_keeps_requests_off_the_json_cache():
    answers = {"acme": {"owner": "acme"}}
    ps = policylang.loads(POLICY)
    engine = policylang.Engine(ps, entities=lambda kind, id: answers.get("acme") if kind == "repo" else None)
    body = json.dumps({**REQUEST, "resource": {"type": "repo", "id": "acme/api"}}).encode()
    assert engine.decide_json(body).allowed
    answers["acme"] = {"owner": "other"}  # the source changed its answer: the next call must see it
    assert not engine.decide_json(body).allowed


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False, allow_infinity=False),
                     st.sampled_from(["acme", "other", "", "acme/api", "read", "repo"]))
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                          st.dictionaries(st.sampled_from(["id", "kind", "attrs",
                                                                                           "score", "owner"]),
                                                                          inner, max_size=3)), max_leaves=6)


@st.composite
def _bodies(draw):
    req = json.loads(json.dumps(REQUEST))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from([("principal", "attrs", "tenant"), ("resource", "attrs", "owner"),
                                     ("risk", "score"), ("action",), ("principal", "kind"), ("resource", "id"),
                                     ("principal",), ("context",), ("resource", "type")]))
        target = req
        for k in path[:-1]:
            if not isinstance(target.get(k), dict):
                target[k] = {}
            target = target[k]
        if draw(st.booleans()):
            target[path[-1]] = draw(_VALUES)
        else:
            target.pop(path[-1], None)
    text = json.dumps(req, indent=draw(st.sampled_from([None, 1])))
    if draw(st.booleans()):  # byte-level damage: whatever json makes of it
        i = draw(st.integers(0, len(text)))
        text = text[:i] + draw(st.sampled_from(["", "}", "{", ",", "\"", "0", "NaN", "\\u0000"])) + text[i + 1:]
    return text.encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_bodies(), min_size=1, max_size=6))
def test_cached_json_decisions_equal_uncached_ones_on_mutated_streams(stream):
    cached, plain = _engines()
    for body in stream + stream:  # the second pass is answered by hits where the first stored
        got = _outcome(lambda body=body: cached.decide_json(body))

        def fresh(body=body):
            try:
                request = json.loads(body, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
            except (ValueError, RecursionError):
                raise RequestError("", "not JSON") from None
            if not isinstance(request, dict):
                raise RequestError("", "not an object")
            return plain.decide(request)
        assert got == _outcome(fresh), body
