"""decide_many re-raises a bad item's RequestError under its index, with the same message
(issue 12 item 10: the field comes from the error, not from parsing its text)."""

import pytest

import policylang

POLICY = 'permit agent to read on doc\n'


@pytest.mark.parametrize("bad", [
    {"principal": {"id": "u"}, "action": "read", "resource": {"type": "doc", "id": "d"}},
    {"principal": {"kind": "agent", "id": "u"}, "action": "read",
     "resource": {"type": "doc", "id": "d"}, "context": "not: an object"},
    "not a request",
])
def test_decide_many_names_the_index_and_keeps_the_message(bad):
    engine = policylang.Engine(policylang.loads(POLICY), cache_size=0)
    with pytest.raises(policylang.RequestError) as alone:
        engine.decide(bad)
    good = {"principal": {"kind": "agent", "id": "a"}, "action": "read", "resource": {"type": "doc", "id": "d"}}
    with pytest.raises(policylang.RequestError) as many:
        engine.decide_many([good, bad])
    inner = alone.value
    assert many.value.field == (f"[1].{inner.field}" if inner.field else "[1]")
    message = str(inner)[len(inner.field) + 2:] if inner.field else str(inner)
    assert str(many.value) == f"{many.value.field}: {message}"


def test_decide_each_answers_per_item_like_the_http_batch():
    import policylang
    from policylang import RequestError

    engine = policylang.Engine(policylang.loads("permit agent to read on repo"))
    good = {"principal": {"id": "agent:a", "kind": "agent"}, "action": "read", "resource": {"type": "repo", "id": "r"}}
    bad = {"principal": {"id": 7, "kind": "agent"}, "action": "read", "resource": {"type": "repo", "id": "r"}}
    out = engine.decide_each([good, bad, good, {}])
    # (the third is the first's cache hit: a CachedDecision, which is a Decision)
    assert [isinstance(x, policylang.Decision) for x in out] == [True, False, True, False]
    assert out[0].allowed and out[2].allowed
    assert isinstance(out[1], RequestError) and out[1].field == "[1].principal.id"
    assert out[3].field.startswith("[3]")
    with pytest.raises(RequestError) as e:  # decide_many still raises on the first bad one
        engine.decide_many([good, bad])
    assert e.value.field == "[1].principal.id"
