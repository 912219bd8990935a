"""The compiled engine against the reference interpreter, and the cached engine against
the uncached one, on generated policies and requests: the whole docs/requests.md#decision object must
agree (cel-python's discipline: one semantics, two evaluators)."""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import policylang
from policylang.evaluation import interpreter

from policygen import hostile_requests, policy_sets, requests

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def approvals(approval_id, request, approvers):
    return approval_id == "ok" and "ops" in approvers


def _load(text):
    try:
        return policylang.loads(text, name="gen.policy")
    except policylang.PolicyError:
        assume(False)


@SETTINGS
@given(policy_sets(), st.lists(requests(), min_size=1, max_size=8))
def test_compiled_equals_interpreted(text, reqs):
    ps = _load(text)
    engine = policylang.Engine(ps, cache_size=0, approvals=approvals)
    for req in reqs:
        got = engine.decide(req).to_dict()
        want = interpreter.decide(ps, req, approvals=approvals).to_dict()
        assert got == want, (text, req)


@SETTINGS
@given(policy_sets(), st.lists(requests(), min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_cached_equals_uncached(text, reqs, rnd):
    ps = _load(text)
    cached = policylang.Engine(ps, cache_size=64, approvals=approvals)
    plain = policylang.Engine(ps, cache_size=0, approvals=approvals)
    stream = reqs + [rnd.choice(reqs) for _ in range(len(reqs))]  # repeats hit the cache
    for req in stream:
        assert cached.decide(req).to_dict() == plain.decide(req).to_dict(), (text, req)


# ------------------------------------------------------------------ hostile requests

def _outcome(fn, req):
    """The decision's dict, or the field a RequestError names (never another error)."""
    try:
        return fn(req).to_dict()
    except policylang.RequestError as e:
        return ("request error", e.field)


HOSTILE = settings(max_examples=40, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


@HOSTILE
@given(policy_sets(), st.lists(hostile_requests(), min_size=1, max_size=6))
def test_compiled_equals_interpreted_on_hostile_requests(text, pairs):
    """Subclass values (StrEnum, IntEnum, str/int/float subclasses, Mapping and Sequence
    types), empty and long chains, attenuation and deep values: the engine, the reference
    interpreter and the plain-JSON request all agree."""
    ps = _load(text)
    engine = policylang.Engine(ps, cache_size=0, approvals=approvals)
    for disguised, plain in pairs:
        want = _outcome(lambda r: interpreter.decide(ps, r, approvals=approvals), plain)
        assert _outcome(engine.decide, disguised) == want, (text, plain)
        assert _outcome(lambda r: interpreter.decide(ps, r, approvals=approvals), disguised) == want, (text, plain)
        assert _outcome(engine.decide, plain) == want, (text, plain)


@HOSTILE
@given(policy_sets(), st.lists(hostile_requests(), min_size=1, max_size=8), st.randoms(use_true_random=False))
def test_cached_equals_uncached_on_hostile_requests(text, pairs, rnd):
    ps = _load(text)
    cached = policylang.Engine(ps, cache_size=64, approvals=approvals)
    plain_engine = policylang.Engine(ps, cache_size=0, approvals=approvals)
    stream = [r for pair in pairs for r in pair]
    stream += [rnd.choice(stream) for _ in range(len(stream))]  # repeats hit the cache
    for req in stream:
        assert _outcome(cached.decide, req) == _outcome(plain_engine.decide, req), (text, req)
