"""The paths through request parsing (policylang.evaluation.request): each root's fast path
and careful path, the shortcuts that skip absent optional roots and the plain risk, and the
field and reason every refusal names. The expectations are those of the single-function
parse_parts these helpers replaced (checked against it when they were split)."""

from __future__ import annotations

import enum
from collections import UserDict, UserList
from collections.abc import Mapping

import pytest

from policylang.evaluation.request import (
    MAX_DELEGATION_DEPTH,
    MAX_VALUE_DEPTH,
    entity_lookup,
    named_actions,
    parse_parts,
    task_binding,
)
from policylang.evaluation.runtime import Entity
from policylang.language.errors import RequestError


class Env(enum.StrEnum):
    PROD = "prod"


class Level(enum.IntEnum):
    HIGH = 3


class MyFloat(float):
    pass


class CountingMap(Mapping):
    """A mapping whose len() says less than its get() finds (and that counts its reads)."""

    def __init__(self, d, length):
        self._d, self._len, self.reads = d, length, []

    def __getitem__(self, k):
        self.reads.append(k)
        return self._d[k]

    def __iter__(self):
        return iter(list(self._d)[:self._len])

    def __len__(self):
        return self._len


def req(**kw):
    base = {"principal": {"id": "a1", "kind": "agent", "attrs": {"dept": "x"}}, "action": "read",
            "resource": {"type": "doc", "id": "d1", "attrs": {"owner": "o"}}}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not ...}


def refused(raw, lookup=None, authority=None):
    with pytest.raises(RequestError) as err:
        parse_parts(raw, lookup, authority)
    return err.value.field, err.value.reason


# ------------------------------------------------------------------ what comes back

def test_a_plain_request_comes_back_as_the_very_same_objects():
    raw = req(context={"ip": "1.2.3.4", "tags": ["a", "b"]}, risk={"score": 0.5}, intent={"task_id": "T"},
              approval="ap")
    P, A, R, C, K, CH, I, approval = parse_parts(raw)
    assert P.attrs is raw["principal"]["attrs"] and R.attrs is raw["resource"]["attrs"]
    assert C is raw["context"] and K is raw["risk"] and I is raw["intent"]
    assert (P.kind, P.id, A.name, R.kind, R.id, CH, approval) == ("agent", "a1", "read", "doc", "d1", [], "ap")


@pytest.mark.parametrize("attrs,want,same", [
    ({"owner": "o", "n": 1, "x": None, "f": 0.5, "b": True}, None, True),
    ({"owner": "o", "tags": ["a", 1]}, None, True),  # a list of plain values: the very dict
    ({"owner": Env.PROD}, {"owner": "prod"}, False),
    ({"owner": "o", "t": ("a",)}, {"owner": "o", "t": ["a"]}, False),
    ({"owner": "o", "deep": {"k": Level.HIGH}}, {"owner": "o", "deep": {"k": 3}}, False),
])
def test_resource_attrs_fast_and_careful_paths(attrs, want, same):
    R = parse_parts(req(resource={"type": "doc", "id": "d1", "attrs": attrs}, risk={"score": 0.5}))[2]
    assert (R.attrs is attrs) is same
    assert R.attrs == (attrs if want is None else want)
    if not same:
        assert all(type(v) in (str, int, list, dict) for v in R.attrs.values())


def test_only_the_required_roots_give_empty_optional_parts():
    assert parse_parts(req())[3:] == ({}, None, [], None, None)


@pytest.mark.parametrize("extra", [{"context": None}, {"risk": None}, {"unknown": 1}, {"delegation": []},
                                   {"context": None, "risk": None, "intent": None, "approval": None}])
def test_keys_that_are_null_or_unknown_still_leave_every_optional_root_read(extra):
    assert parse_parts(req(**extra))[3:] == ({}, None, [], None, None)


def test_keys_after_context_and_risk_are_still_read():
    raw = req(context={"a": 1}, risk={"score": 0.1}, approval=3)
    assert refused(raw) == ("approval", "expected a string, got number")
    raw = req(risk={"score": 0.1}, delegation=[{"id": "d", "kind": "human"}])
    assert [e.id for e in parse_parts(raw)[5]] == ["d"]


def test_a_mapping_whose_len_is_short_has_every_root_looked_up():
    inner = req(risk={"score": 0.2}, intent={"task_id": "T"}, approval="ap")
    raw = CountingMap(inner, 3)
    parts = parse_parts(raw)
    assert parts[6] == {"task_id": "T"} and parts[7] == "ap"
    assert "intent" in raw.reads and "approval" in raw.reads


@pytest.mark.parametrize("action,name,attrs", [
    ({"name": "read"}, "read", {}),
    ({"name": "read", "attrs": None}, "read", {}),
    ({"name": "read", "attrs": {}}, "read", {}),
    ({"name": "read", "attrs": {"n": 2, "tags": ["a"]}}, "read", {"n": 2, "tags": ["a"]}),
    ({"name": "read", "attrs": {"env": Env.PROD, "t": (1,)}}, "read", {"env": "prod", "t": [1]}),
    ({"name": Env.PROD, "attrs": {"n": 1}}, "prod", {"n": 1}),  # a str-subclass name: the careful path
    (UserDict({"name": "read", "attrs": {"n": 1}}), "read", {"n": 1}),
])
def test_an_action_object_is_its_name_and_attrs(action, name, attrs):
    # the exact-dict-with-a-string-name shortcut (what AuthZEN requests map to) and the
    # careful path give the same action: a plain name, plain attrs, the very dict when plain
    A = parse_parts(req(action=action))[1]
    assert type(A.name) is str and A.name == name and A.attrs == attrs
    assert all(type(v) in (int, str, list) for v in A.attrs.values())
    given = action.get("attrs") if action.__class__ is dict else None
    if given and all(type(v) in (int, list) for v in given.values()):
        assert A.attrs is given


@pytest.mark.parametrize("risk", [{"score": 0}, {"score": 1}, {"score": 0.0}, {"score": 1.0}, {"score": -0.0}])
def test_a_plain_risk_is_kept_as_it_is(risk):
    assert parse_parts(req(risk=risk))[4] is risk


@pytest.mark.parametrize("risk,field,reason", [
    ({"score": float("nan")}, "risk.score", "must be between 0 and 1, got nan"),
    ({"score": 1.5}, "risk.score", "must be between 0 and 1, got 1.5"),
    ({"score": -1}, "risk.score", "must be between 0 and 1, got -1"),
    ({"score": 10**400}, "risk.score", f"must be between 0 and 1, got {10**400}"),
    ({"score": True}, "risk.score", "expected a number, got bool"),
    ({"score": "0.5"}, "risk.score", "expected a number, got string"),
    ({"score": [0.5]}, "risk.score", "expected a number, got list"),
    ({"score": b"x"}, "risk.score",
     "expected a JSON value (string, number, boolean, null, list or object), got bytes"),
    ({"signals": "new"}, "risk.signals", "expected a list of strings, got string"),
    ({"signals": ["a", 1]}, "risk.signals[1]", "expected a string, got number"),
    ({"score": 0.5, "signals": [Env.PROD, 2]}, "risk.signals[1]", "expected a string, got number"),
    ("high", "risk", "expected an object, got string"),
])
def test_risk_refusals(risk, field, reason):
    assert refused(req(risk=risk)) == (field, reason)


def test_a_risk_that_is_not_plain_is_normalised():
    K = parse_parts(req(risk=UserDict({"score": MyFloat(0.25), "signals": UserList([Env.PROD])})))[4]
    assert K == {"score": 0.25, "signals": ["prod"]}
    assert type(K) is dict and type(K["score"]) is float and type(K["signals"][0]) is str


def test_an_int_enum_score_is_checked_as_its_int():
    assert refused(req(risk={"score": Level.HIGH})) == ("risk.score", "must be between 0 and 1, got 3")
    assert type(parse_parts(req(risk={"score": MyFloat(0.5)}))[4]["score"]) is float


def test_subclass_values_and_mappings_become_plain():
    raw = req(principal=UserDict({"id": Env.PROD, "kind": Env.PROD, "attrs": {"a": Level.HIGH, "b": (1, "x")}}),
              action=Env.PROD, resource={"type": Env.PROD, "id": Env.PROD, "attrs": UserDict({"k": [Env.PROD]})})
    P, A, R = parse_parts(raw)[:3]
    assert (type(P.id), type(P.kind), type(A.name), type(R.kind), type(R.id)) == (str,) * 5
    assert P.attrs == {"a": 3, "b": [1, "x"]} and type(P.attrs["a"]) is int and type(P.attrs["b"]) is list
    assert R.attrs == {"k": ["prod"]} and type(R.attrs["k"][0]) is str


# ------------------------------------------------------------------ the field each refusal names

@pytest.mark.parametrize("raw,field,reason", [
    ([], "", "a request must be a JSON object, got list"),
    (req(principal=...), "principal", "required"),
    (req(principal="a1"), "principal", "expected an object with id and kind, got string"),
    (req(principal={"kind": "agent"}), "principal.id", "required"),
    (req(principal={"id": 3, "kind": "agent"}), "principal.id", "expected a string, got number"),
    (req(principal={"id": "a", "kind": None}), "principal.kind", "required"),
    (req(principal={"id": "a", "kind": "agent", "attrs": [1]}), "principal.attrs", "expected an object, got list"),
    (req(principal={"id": "a", "kind": "agent", "attrs": {"x": {"y": {1, 2}}}}), "principal.attrs.x.y",
     "expected a JSON value (string, number, boolean, null, list or object), got set"),
    (req(action=...), "action", "required"),
    (req(action=3), "action", "expected a string or an object with name, got number"),
    (req(action={"attrs": {}}), "action.name", "required"),
    (req(action={"name": "read", "attrs": "x"}), "action.attrs", "expected an object, got string"),
    (req(action={"name": "read", "attrs": {"a": {1, 2}}}), "action.attrs.a",
     "expected a JSON value (string, number, boolean, null, list or object), got set"),
    (req(action={"name": 5}), "action.name", "expected a string, got number"),
    (req(action={"name": None, "attrs": {}}), "action.name", "required"),
    (req(resource=...), "resource", "required"),
    (req(resource=["doc"]), "resource", "expected an object with type, got list"),
    (req(resource={"id": "d"}), "resource.type", "required"),
    (req(resource={"type": "doc", "id": 7}), "resource.id", "expected a string, got number"),
    (req(resource={"type": "doc", "attrs": {"a": [1, b"x"]}}), "resource.attrs.a[1]",
     "expected a JSON value (string, number, boolean, null, list or object), got bytes"),
    (req(context=[1]), "context", "expected an object, got list"),
    (req(context={"a": {1: "x"}}), "context.a", "object keys must be strings, got number"),
    (req(intent="t"), "intent", "expected an object, got string"),
    (req(approval=["a"]), "approval", "expected a string, got list"),
    # the first bad root in document order is the one named
    (req(principal={"id": 1, "kind": "agent"}, action=3, context=[1]), "principal.id",
     "expected a string, got number"),
    (req(action=3, resource=None), "action", "expected a string or an object with name, got number"),
    (req(context=[1], risk={"score": 2}), "context", "expected an object, got list"),
    (req(risk={"score": 2}, delegation="x"), "risk.score", "must be between 0 and 1, got 2"),
    (req(delegation="x", intent=1), "delegation", "expected a list, got string"),
    (req(intent=1, approval=2), "intent", "expected an object, got number"),
])
def test_refusals_name_the_field(raw, field, reason):
    assert refused(raw) == (field, reason)


def test_values_nested_past_the_cap_are_refused_at_their_path():
    v: object = 1
    for _ in range(MAX_VALUE_DEPTH):
        v = {"a": v}
    field, reason = refused(req(context={"a": v}))
    assert reason == f"nested deeper than {MAX_VALUE_DEPTH} levels"
    assert field == "context" + ".a" * MAX_VALUE_DEPTH
    w: object = 1
    for _ in range(MAX_VALUE_DEPTH - 1):
        w = [w]
    assert parse_parts(req(context={"a": w}))[3] == {"a": w}
    field, reason = refused(req(context={"a": [w]}))
    assert field == "context.a" + "[0]" * (MAX_VALUE_DEPTH - 1)


# ------------------------------------------------------------------ delegation

@pytest.mark.parametrize("delegation,field,reason", [
    ("agents", "delegation", "expected a list, got string"),
    ("", "delegation", "expected a list, got string"),
    (0, "delegation", "expected a list, got number"),
    (b"", "delegation", "expected a list, got bytes"),
    ({"id": "x"}, "delegation", "expected a list, got object"),
    ([None], "delegation[0]", "null entry"),
    ([{"id": "d", "kind": "agent"}, "d2"], "delegation[1]", "expected an object with id and kind, got string"),
    ([{"id": "d", "kind": "agent"}, {"id": "e"}], "delegation[1].kind", "required"),
    ([{"id": "d", "kind": "agent", "attrs": {"a": object()}}], "delegation[0].attrs.a",
     "expected a JSON value (string, number, boolean, null, list or object), got object"),
    ([{"id": f"d{i}", "kind": "agent"} for i in range(MAX_DELEGATION_DEPTH + 1)], "delegation",
     f"at most {MAX_DELEGATION_DEPTH} entries, got {MAX_DELEGATION_DEPTH + 1}"),
])
def test_delegation_refusals(delegation, field, reason):
    assert refused(req(delegation=delegation)) == (field, reason)


@pytest.mark.parametrize("delegation", [[], (), UserList(), range(0)])
def test_an_empty_sequence_is_no_chain(delegation):
    assert parse_parts(req(delegation=delegation))[5] == []


def test_chain_entries_fast_and_careful_paths_and_entity_data():
    stored = {"agent": {"d0": {"team": "red"}}, "human": {"alice": {"team": "blue"}}}
    raw = req(delegation=({"id": "d0", "kind": "agent", "attrs": {"x": 1}},
                          UserDict({"id": Env.PROD, "kind": "human"}), {"id": "alice", "kind": "human"}))
    chain = parse_parts(raw, entity_lookup(stored))[5]
    assert chain == [Entity("principal", "agent", "d0", {"team": "red", "x": 1}),
                     Entity("principal", "human", "prod", {}),
                     Entity("principal", "human", "alice", {"team": "blue"})]
    assert chain[0].attrs == {"team": "red", "x": 1} and chain[2].attrs == {"team": "blue"}
    assert [e.id for e in parse_parts(req(delegation=[{"id": f"d{i}", "kind": "a"} for i in range(
        MAX_DELEGATION_DEPTH)]))[5]] == [f"d{i}" for i in range(MAX_DELEGATION_DEPTH)]


class Authority:
    def principal(self, kind):
        return kind == "agent"

    def resource(self, rtype):
        return rtype == "doc"


def test_entity_data_merges_and_authoritative_records_win():
    stored = {"agent": {"a1": {"dept": "stored", "level": 2}}, "doc": {"d1": {"owner": "stored"}},
              "human": {"h": {"dept": "stored"}}}
    lookup = entity_lookup(stored)
    P, _A, R = parse_parts(req(), lookup)[:3]
    assert P.attrs == {"dept": "x", "level": 2} and R.attrs == {"owner": "o"}
    P, _A, R = parse_parts(req(), lookup, Authority())[:3]
    assert P.attrs == {"dept": "stored", "level": 2} and R.attrs == {"owner": "stored"}
    raw = req(principal={"id": "h", "kind": "human", "attrs": {"dept": None}}, resource={"type": "doc"})
    P, _A, R = parse_parts(raw, lookup, Authority())[:3]
    assert P.attrs == {"dept": "stored"} and R.attrs == {}  # no resource id: no lookup


# ------------------------------------------------------------------ task_binding

def binding(**kw):
    return {"principal": {"id": "a1", "kind": "agent"}, "action": "read", "resource": {"type": "doc", "id": "d1"},
            **kw}


def test_task_binding_reads_the_identity_fields():
    b = task_binding(binding(action={"name": "deploy"}, delegation=[{"id": "h"}],
                             intent={"task_id": "T", "purpose": 3}), strict=True)
    assert b == {"principal": "a1", "action": "deploy", "resource_type": "doc", "resource_id": "d1", "task": "T",
                 "delegation": ["h"], "purpose": None}
    assert task_binding(binding(delegation="", intent={"purpose": "p"}), strict=False)["delegation"] == []


@pytest.mark.parametrize("request_,strict,field,reason", [
    ([], True, "request", "must be an object"),
    (binding(principal={"id": ""}), True, "principal.id", "a non-empty string is required"),
    (binding(principal="a1"), False, "principal.id", "a non-empty string is required"),
    (binding(action={"name": ""}), True, "action.name", "a non-empty string is required"),
    (binding(action=None), False, "action.name", "a non-empty string is required"),
    (binding(resource={"id": "d"}), True, "resource.type", "a non-empty string is required"),
    (binding(resource={"type": "doc", "id": 3}), False, "resource.id", "must be a string"),
    (binding(delegation=""), True, "delegation", "must be a list"),
    (binding(delegation=({"id": "h"},)), False, "delegation", "must be a list"),
    (binding(delegation=[{"id": ""}]), True, "delegation[0].id", "a non-empty string is required"),
    (binding(delegation=[{"id": "h"}, {"id": 1}]), False, "delegation[1].id", "a string is required"),
    (binding(intent="T"), True, "intent", "must be an object"),
    (binding(intent={"task_id": ""}), True, "intent.task_id", "must be a non-empty string"),
    (binding(intent={"task_id": 3}), False, "intent.task_id", "must be a string"),
])
def test_task_binding_refusals(request_, strict, field, reason):
    with pytest.raises(RequestError) as err:
        task_binding(request_, strict=strict)
    assert (err.value.field, err.value.reason) == (field, reason)


def test_named_actions_are_handed_out_for_plain_string_actions_only():
    actions = named_actions(["read", "write"])
    A = parse_parts(req(action="read"), None, None, actions)[1]
    assert A is actions["read"] and A.name == "read" and A.attrs == {}
    # a name the table lacks, an action object, a str subclass: made as without the table
    other = parse_parts(req(action="delete"), None, None, actions)[1]
    assert other.name == "delete" and other not in actions.values()
    obj = parse_parts(req(action={"name": "read", "attrs": {"n": 1}}), None, None, actions)[1]
    assert obj is not actions["read"] and obj.attrs == {"n": 1}
    sub = parse_parts(req(action=Env.PROD), None, None, {"prod": actions["read"]})[1]
    assert type(sub.name) is str and sub.name == "prod" and sub is not actions["read"]
