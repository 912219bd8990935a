"""benchmarks/service_compare.py without servers: the prepared bodies decide as expected
in-process (through the service's fast path), the Cerbos translation has the scenario's
shape, and a missing tool is a clean skip (not benchmarks)."""

import asyncio
import json
import tempfile
from pathlib import Path

from . import _support as sup
from . import service_compare as svc


def _post(app, path: str, body: str) -> dict:
    sent = []

    async def receive():
        return {"type": "http.request", "body": body.encode(), "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"content-type", b"application/json")]}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 200, sent
    return json.loads(sent[1]["body"])


def test_policylang_bodies_decide_as_expected():
    from policylang.server import ServiceConfig, create_app
    scn = sup.scenario("M")
    st = svc.streams(scn)
    bodies = svc.policylang_bodies(st)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "m.policy").write_text(scn.text)
        app = create_app(ServiceConfig(path=tmp, poll_interval=0), watch=False)
        assert app.state.fast_path == "on"
        path, texts = bodies["single"]
        for i in range(0, len(texts), 7):
            assert svc._policylang_decisions("single", _post(app, path, texts[i])) == [st["single"]["expected"][i]]
        path, texts = bodies["batch"]
        for i, text in enumerate(texts[:5]):
            assert svc._policylang_decisions("batch", _post(app, path, text)) == st["batch"]["expected"][i]
    allowed = sum(st["single"]["expected"])
    assert 0.2 < allowed / len(st["single"]["expected"]) < 0.8  # both answers are exercised


def test_cerbos_translation_has_the_scenarios_shape():
    scn = sup.scenario("M")
    policies = svc.cerbos_policies(scn)
    assert set(policies) == set(scn.types)
    n_rules = sum(len(p["resourcePolicy"]["rules"]) for p in policies.values())
    # each permit in its type's policy; the type-less forbids in every policy, the risky-type ones in theirs
    typeless = [r for r in scn.forbids if r.types is None]
    assert n_rules == len(scn.permits) + len(typeless) * len(scn.types) + (len(scn.forbids) - len(typeless))
    vault = {r["name"]: r for r in policies["vault"]["resourcePolicy"]["rules"]}
    assert vault["forbid-risky-vault"] == {"name": "forbid-risky-vault", "actions": ["*"], "effect": "EFFECT_DENY",
                                           "roles": ["*"], "condition": {"match": {"expr": "R.attr.risk > 0.6"}}}
    permit = next(r for r in vault.values() if r["effect"] == "EFFECT_ALLOW")
    expr = permit["condition"]["match"]["expr"]
    assert "P.attr.dept ==" in expr and "R.attr.risk <" in expr and "R.attr.owner == P.attr.tenant" in expr


def test_cerbos_bodies_carry_one_principal_and_the_risk_per_resource():
    st = svc.streams(sup.scenario("M"))
    _, texts = svc.cerbos_bodies(st)["batch"]
    body = json.loads(texts[0])
    assert len(body["resources"]) == svc.BATCH
    reqs = st["batch"]["requests"][0]
    assert body["principal"]["attr"] == reqs[0]["principal"]["attrs"]
    assert [r["resource"]["attr"]["risk"] for r in body["resources"]] == [r["risk"]["score"] for r in reqs]


def test_a_skipped_result_renders():
    assert svc.markdown({"skipped": "wrk is not installed"}).startswith("Service comparison skipped: wrk")
