"""The short path of the AuthZEN mapping (policylang/server/authzen.py: the common shape
mapped without the general checks) gives exactly what the general mapping gives: the same
request dict, or the same 400 naming the same field, on generated bodies good and bad."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policylang.server import authzen
from policylang.server.authzen import BadRequest

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(-1, 2, allow_nan=False),
                    st.sampled_from(["", "a", "user", "read", "x-1"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.sampled_from(["a", "b", "score"]),
                                                                       inner, max_size=3)), max_leaves=6)
#: True five times in six (integers() would favour its low end)
USUALLY = st.sampled_from([True, True, True, True, True, False])
strings = st.sampled_from(["user", "alice", "record", "r-1", "", "read"])
#: a member's value: mostly the right type, sometimes not
typed = st.one_of(strings, strings, strings, scalars, st.lists(scalars, max_size=2))
props = st.one_of(st.none(), st.dictionaries(st.sampled_from(["a", "b", "proven_by", "x"]), values, max_size=3),
                  scalars, st.lists(scalars, max_size=2))


@st.composite
def entity(draw, fields=("type", "id")):
    """An entity (or action) object: its own members, maybe properties, maybe extras;
    half of them well-formed (the shape the short path maps)."""
    out: dict = {}
    if draw(st.booleans()):
        for f in fields:
            out[f] = draw(strings)
        if draw(st.booleans()):
            out["properties"] = draw(st.dictionaries(st.sampled_from(["a", "b", "x"]), values, max_size=3))
        return out
    for f in fields:
        if draw(USUALLY):  # usually present
            out[f] = draw(typed)
    if draw(st.booleans()):
        out["properties"] = draw(props)
    for k in draw(st.lists(st.sampled_from(["ownerID", "proven_by", "extra"]), max_size=2, unique=True)):
        out[k] = draw(values)
    return out


part = st.one_of(entity(), entity(), entity(), st.none(), scalars)
action = st.one_of(entity(("name",)), entity(("name",)), entity(("name",)), st.none(), scalars)
risk = st.one_of(st.fixed_dictionaries({"score": st.one_of(st.floats(-0.5, 1.5, allow_nan=False), st.integers(0, 1),
                                                           st.booleans(), st.none(), strings)}),
                 st.fixed_dictionaries({"score": st.floats(0, 1), "signals": st.one_of(st.lists(strings, max_size=2),
                                                                                       scalars)}),
                 scalars, st.lists(scalars, max_size=2))
reserved = {
    "risk": risk,
    "delegation": st.one_of(st.lists(st.one_of(entity(), st.none()), max_size=2), scalars),
    "intent": st.one_of(st.dictionaries(st.sampled_from(["goal", "a"]), values, max_size=2), scalars),
    "approval": st.one_of(strings, st.dictionaries(st.sampled_from(["ticket", "a"]), values, max_size=2), scalars),
    "agent": st.one_of(st.fixed_dictionaries({"type": strings, "id": strings}), entity(), scalars),
}


@st.composite
def context(draw):
    kind = draw(st.sampled_from(range(7)))
    if kind == 6:  # the benchmark's shape
        return {"risk": {"score": draw(st.floats(0, 1))}, **draw(st.dictionaries(st.sampled_from(["ip", "a"]),
                                                                                 values, max_size=2))}
    if kind == 0:
        return draw(st.one_of(st.none(), scalars, st.lists(scalars, max_size=2)))
    out = draw(st.dictionaries(st.sampled_from(["tenant", "ip", "score", "coaz_subject_type", "a"]), values,
                               max_size=3))
    for key in draw(st.lists(st.sampled_from(sorted(reserved)), max_size=2 if kind > 1 else 4, unique=True)):
        out[key] = draw(reserved[key])
    return out


@st.composite
def body(draw):
    out: dict = {}
    for key, strategy in (("subject", part), ("action", action), ("resource", part), ("context", context())):
        if draw(USUALLY):
            out[key] = draw(strategy)
    return out


@st.composite
def good_entity(draw, fields=("type", "id")):
    out = {f: draw(strings) for f in fields}
    if draw(st.booleans()):
        out["properties"] = draw(st.dictionaries(st.sampled_from(["a", "b", "x"]), values, max_size=3))
    return out


@st.composite
def good_body(draw, parts=("subject", "action", "resource")):
    """A well-formed body (the shape the short path maps), its context anything."""
    out = {k: draw(good_entity(("name",) if k == "action" else ("type", "id"))) for k in parts}
    if draw(st.booleans()):
        out["context"] = draw(context())
    return out


def _outcome(fn, *args, **kw):
    try:
        return "ok", fn(*args, **kw)
    except BadRequest as e:
        return "bad", (e.status, e.message)


def _same(a, b) -> None:
    assert a == b
    assert repr(a) == repr(b)  # the same types too (1 vs 1.0 vs True)


@SETTINGS
@given(body(), st.sampled_from([None, "subject", "resource", "action"]), st.sampled_from(["", "evaluations[3]."]))
def test_to_request_fast_is_general(b, search, prefix):
    _same(_outcome(authzen.to_request, b, prefix, search=search),
          _outcome(authzen._to_request_general, b, prefix, search=search))


@SETTINGS
@given(good_body(), st.sampled_from([None, "subject", "resource", "action"]))
def test_to_request_fast_is_general_on_good_bodies(b, search):
    _same(_outcome(authzen.to_request, b, search=search), _outcome(authzen._to_request_general, b, search=search))


@st.composite
def batch(draw):
    out = draw(good_body(("subject",)) if draw(st.booleans()) else body())
    out["evaluations"] = draw(st.lists(st.one_of(good_body(("action", "resource")), body(), scalars), max_size=4))
    if draw(st.booleans()):
        out["options"] = draw(st.one_of(st.fixed_dictionaries({"evaluations_semantic": st.sampled_from(
            ["execute_all", "deny_on_first_deny", "nope"])}), scalars))
    return out


def _batch(fn, b):
    kind, value = _outcome(fn, b)
    if kind == "bad":
        return kind, value
    items = None if value.items is None else [
        ("bad", (i.status, i.message)) if isinstance(i, BadRequest) else ("ok", i) for i in value.items]
    return kind, (value.semantic, items)


@SETTINGS
@given(batch())
def test_parse_batch_fast_is_general(b):
    _same(_batch(authzen.parse_batch, b), _batch(authzen._parse_batch_general, b))


GOOD = {"subject": {"type": "user", "id": "alice", "properties": {"team": "a"}},
        "action": {"name": "read"},
        "resource": {"type": "record", "id": "r-1", "properties": {"owner": "alice"}},
        "context": {"risk": {"score": 0.25}, "ip": "10.0.0.1"}}


@pytest.mark.parametrize("b", [
    GOOD,
    {**GOOD, "context": {"tenant": "t"}},
    {**GOOD, "context": {}},
    {**GOOD, "context": {"risk": {"score": True}}},       # not risk-shaped: stays in context
    {**GOOD, "context": {"risk": None, "ip": "x"}},        # a null reserved key is absent
    {**GOOD, "subject": {"type": "user", "id": "alice", "properties": None}},
    {**GOOD, "subject": {"type": "user", "id": "alice", "ownerID": "b"}},
    {**GOOD, "action": {"name": "read", "properties": {"a": 1}}},
    {**GOOD, "action": {"name": "read", "why": "x"}},
    {**GOOD, "resource": {"type": "record", "id": 3}},
])
def test_known_shapes(b):
    _same(_outcome(authzen.to_request, b), _outcome(authzen._to_request_general, b))
    items = {"subject": b["subject"], "evaluations": [{k: v for k, v in b.items() if k != "subject"}] * 2}
    _same(_batch(authzen.parse_batch, items), _batch(authzen._parse_batch_general, items))


def test_the_short_path_is_taken():
    """The benchmark's shape is mapped without the general path (it is what is timed)."""
    calls = []
    general = authzen._context

    def spy(*a):
        calls.append(a)
        return general(*a)

    authzen._context = spy
    try:
        req = authzen.to_request(GOOD)
        authzen.parse_batch({"subject": GOOD["subject"], "evaluations": [
            {k: v for k, v in GOOD.items() if k != "subject"}]})
    finally:
        authzen._context = general
    assert calls == []
    assert req == {"principal": {"id": "alice", "kind": "user", "attrs": {"team": "a"}},
                   "action": {"name": "read", "attrs": {}},
                   "resource": {"type": "record", "id": "r-1", "attrs": {"owner": "alice"}},
                   "context": {"ip": "10.0.0.1"}, "risk": {"score": 0.25}}
