"""Strict requests: unknown keys are errors with a did-you-mean (docs/requests.md#strict)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import policylang
from policylang import RequestError
from policylang.cli import main

POLICY = 'permit agent to read on repo when principal.region == "eu"'
GOOD = {"principal": {"id": "agent:a", "kind": "agent", "attrs": {"region": "eu"}}, "action": "read",
        "resource": {"type": "repo", "id": "r"}, "context": {"anything": 1}, "risk": {"score": 0.1, "x": 2},
        "intent": {"task_id": "t"}, "delegation": [{"id": "user:a", "kind": "human", "attrs": {}}]}


def _strict():
    return policylang.Engine(policylang.loads(POLICY), strict=True)


@pytest.mark.parametrize("change,field,hint", [
    ({"contxt": {}}, "contxt", "did you mean 'context'?"),
    ({"principle": {"id": "x", "kind": "agent"}}, "principle", "did you mean 'principal'?"),
    ({"principal": {"id": "agent:a", "kind": "agent", "region": "eu"}}, "principal.region",
     "principal.attrs.region"),
    ({"resource": {"type": "repo", "id": "r", "owner": "x"}}, "resource.owner", "resource.attrs.owner"),
    ({"action": {"name": "read", "atrs": {}}}, "action.atrs", "did you mean 'attrs'?"),
    ({"delegation": [{"id": "user:a", "kind": "human", "knd": "x"}]}, "delegation[0].knd", "did you mean 'kind'?"),
])
def test_an_unknown_key_is_a_request_error_naming_it(change, field, hint):
    with pytest.raises(RequestError) as e:
        _strict().decide({**GOOD, **change})
    assert e.value.field == field and hint in e.value.reason


def test_free_form_objects_stay_free_and_lenient_engines_ignore_unknown_keys():
    assert _strict().decide(GOOD).allowed
    lenient = policylang.Engine(policylang.loads(POLICY))
    assert lenient.decide({**GOOD, "contxt": {}}).allowed  # the default: ignored, as documented


def test_eval_decides_strictly(tmp_path):
    (tmp_path / "p.policy").write_text(POLICY + "\n")
    req = tmp_path / "r.json"
    req.write_text(json.dumps({**GOOD, "principal": {"id": "agent:a", "kind": "agent", "region": "eu"}}))
    r = CliRunner().invoke(main, ["eval", str(tmp_path / "p.policy"), "--request", str(req)])
    assert r.exit_code == 1 and "principal.region" in r.output and "principal.attrs.region" in r.output
