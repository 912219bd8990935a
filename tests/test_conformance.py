"""Conformance cases as data (tests/conformance/*.yaml): one file per SPEC section,
each case a policy, a request and the expected decision (or the request error). Every
case runs against the compiled engine (uncached and cached, twice), and the reference
interpreter; all must give the expected answer and the very same docs/requests.md#decision object."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import policylang
from policylang.evaluation import interpreter

HERE = Path(__file__).parent / "conformance"


def _cases():
    for path in sorted(HERE.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for case in doc["cases"]:
            yield pytest.param(path.stem, doc, case, id=f"{path.stem}: {case['name']}")


def _checker(spec):
    if spec is None:
        return None
    if spec == "raise":
        def boom(approval_id, request, approvers):
            raise RuntimeError("approval store down")
        return boom
    if isinstance(spec, list):
        return lambda approval_id, request, approvers: approval_id in spec
    return lambda approval_id, request, approvers: bool(set(spec.get(approval_id, ())) & set(approvers))


@pytest.mark.parametrize("section, doc, case", list(_cases()))
def test_conformance(section, doc, case):
    policies = policylang.loads(case.get("policy", doc.get("policy")), name=f"{section}.policy")
    entities = case.get("entities", doc.get("entities"))
    approvals = _checker(case.get("approved"))
    engines = [
        policylang.Engine(policies, entities=entities, approvals=approvals, cache_size=0),
        policylang.Engine(policies, entities=entities, approvals=approvals, cache_size=16),
    ]
    request = case["request"]
    if "request_error" in case:
        for engine in engines:
            with pytest.raises(policylang.RequestError) as info:
                engine.decide(request)
            assert info.value.field == case["request_error"]
        with pytest.raises(policylang.RequestError):
            interpreter.decide(policies, request, entities=entities, approvals=approvals)
        return
    reference = interpreter.decide(policies, request, entities=entities, approvals=approvals).to_dict()
    for key, want in case["expect"].items():
        assert reference[key] == want, f"interpreter: {key}"
    for engine in engines:
        for _ in range(2):  # the second time may come from the cache
            got = engine.decide(request).to_dict()
            assert got == reference
    assert reference["policy_version"] == policies.version
