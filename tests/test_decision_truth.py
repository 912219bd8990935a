"""`if engine.decide(req):` must not let a deny through: a Decision has no truth value."""

import pytest

import policylang

POLICY = '''
@id("read")
permit agent to read on repo
@id("gate")
require approval for agent to deploy on repo by "ops"
'''


def _req(action):
    return {"principal": {"id": "agent:a", "kind": "agent"}, "action": action,
            "resource": {"type": "repo", "id": "r"}}


@pytest.mark.parametrize("action,allowed", [("read", True), ("write", False), ("deploy", False)])
def test_truth_testing_a_decision_raises_and_allowed_is_the_answer(action, allowed):
    d = policylang.Engine(policylang.loads(POLICY)).decide(_req(action))
    assert d.allowed is allowed
    with pytest.raises(TypeError, match=r"\.allowed"):
        if d:  # the bug this refuses: a deny would be truthy
            pass
    with pytest.raises(TypeError):
        bool(d)
    with pytest.raises(TypeError):
        assert not d


def test_decisions_still_compare_and_serialise():
    engine = policylang.Engine(policylang.loads(POLICY))
    a, b = engine.decide(_req("read")), engine.decide(_req("read"))
    assert a == b and a.to_dict()["decision"] == "allow"
    assert [x.decision for x in engine.decide_many([_req("read"), _req("write")])] == ["allow", "deny"]


def test_a_made_decision_is_the_decision_the_class_makes():
    from policylang.evaluation.decision import Decision, made

    args = ("allow", ["r1"], ["why"], [{"rule": "r1", "scopes": ["s"], "ttl": 60}], [], [],
            ["alice", "agent"], "sha256:x", None)
    a, b = made(*args), Decision(*args)
    assert type(a) is Decision and a == b and a.to_dict() == b.to_dict()
    assert all(getattr(a, f) is getattr(b, f) for f in Decision.__slots__)
    assert a.explain() == b.explain() and repr(a) == repr(b)
