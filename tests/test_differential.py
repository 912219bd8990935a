"""The compiled engine against the reference interpreter, and the cached engine against
the uncached one, on generated policies and requests: the whole SPEC §3 object must
agree (cel-python's discipline: one semantics, two evaluators)."""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import policylang
from policylang import interpreter

from policygen import policy_sets, requests

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
