"""Approvals over AuthZEN (AARP, docs/server.md#aarp) end to end, over a real
`policylang serve` on 127.0.0.1: PEP -> PDP (requestable denial) -> access request ->
an authenticated approver approves -> the PEP polls the task -> re-evaluation with the
approval is allowed, once, for exactly that request. Plus the attacks: a changed request,
an expired, a tampered or a forged binding token, approval replay and substitution,
approvers and pollers who are not entitled to act."""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_server_harness import LiveServer  # noqa: E402

POLICY = '''
@id("big-refunds-need-finance")
require approval for agent to refund on payment
  when context.amount > 100
  by "finance"
  because "refunds over 100 need a finance approver"

@id("support-refunds")
permit agent to refund on payment
  because "support agents refund payments"
'''
ENTITIES = {"human": {"user:fin": {"groups": ["finance"]}, "user:fin2": {"groups": ["finance"]},
                      "user:eve": {"groups": []}, "user:alice": {"groups": ["finance"]}}}
AUD = "policylang-pdp"
ISS = "https://idp.test"
CAP = "urn:openid:authzen:capability:access-request"
ERR = "urn:openid:authzen:access-request:error:"

SUBJECT = {"type": "agent", "id": "agent:support"}
RESOURCE = {"type": "payment", "id": "p-1"}
ACTION = {"name": "refund"}
CONTEXT = {"amount": 150, "currency": "EUR", "delegation": [{"type": "human", "id": "user:alice"}]}
EVAL = {"subject": SUBJECT, "resource": RESOURCE, "action": ACTION, "context": CONTEXT}


def _token(key, sub: str, exp: int = 600) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "aud": AUD, "iss": ISS, "iat": now, "exp": now + exp}, key, algorithm="ES256",
                      headers={"kid": "k1"})


def _setup(tmp: Path, *extra: str) -> list:
    from policylang.credentials import KeySet
    d = tmp / "policies"
    d.mkdir()
    (d / "p.policy").write_text(POLICY)
    (d / "people.entities.json").write_text(json.dumps(ENTITIES))
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", alg="ES256", use="sig")
    (tmp / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    KeySet.generate().save(tmp / "binding.json")
    args = [d, "--store", f"sqlite:///{tmp / 'state.db'}", "--create-store", "--binding-keys", tmp / "binding.json",
            "--audit", tmp / "audit.jsonl", "--jwks", tmp / "jwks.json", "--jwt-audience", AUD,
            "--jwt-issuer", ISS, *extra]
    return args, key


class Env:
    def __init__(self, server, key, tmp):
        self.server, self.key, self.tmp = server, key, tmp
        self.c = server.client

    def auth(self, who: str) -> dict:
        return {"Authorization": f"Bearer {_token(self.key, who)}"}

    def evaluate(self, body=None) -> dict:
        r = self.c.post("/access/v1/evaluation", json=body or EVAL)
        assert r.status_code == 200, r.text
        return r.json()

    def submit(self, denial_ctx: dict, body=None, who="pep:gateway", **over):
        ar = denial_ctx["access_request"]
        sub = {"subject": SUBJECT, "resource": RESOURCE, "action": ACTION,
               "context": {**CONTEXT, "business_justification": "customer complaint #42"},
               "denial": {"evaluation_id": denial_ctx["evaluation_id"], "expires_at": ar["expires_at"],
                          "reason": denial_ctx["reason"], "binding_token": ar["binding_token"]}}
        sub.update(body or {})
        sub.update(over)
        return self.c.post("/access/v1/requests", json=sub, headers=self.auth(who))

    def approve(self, approval_id: str, who="user:fin"):
        # the body names someone else: the authenticated caller is the approver
        return self.c.post(f"/v1/approvals/{approval_id}/approve", json={"approver": "user:eve"},
                           headers=self.auth(who))

    def status(self, task: dict, who="pep:gateway"):
        return self.c.get(task["status_endpoint"].replace(self.server.url, ""), headers=self.auth(who))

    def approved(self) -> tuple[dict, dict]:
        """A fresh denial, submitted and approved: (denial context, approval object)."""
        ctx = self.evaluate()["context"]
        r = self.submit(ctx)
        assert r.status_code == 202, r.text
        task = r.json()["task"]
        ticket = "apr_" + task["id"][4:]
        assert self.approve(ticket).status_code == 200
        done = self.status(task).json()
        assert done["task"]["status"] == "approved", done
        return ctx, done["result"]["approval"]

    def audit(self) -> list[dict]:
        return [json.loads(line) for line in (self.tmp / "audit.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("aarp")
    args, key = _setup(tmp)
    with LiveServer(*args) as server:
        yield Env(server, key, tmp)


@pytest.fixture(scope="module")
def short(tmp_path_factory):
    """A service whose requestable denials expire after one second."""
    tmp = tmp_path_factory.mktemp("aarp-short")
    args, key = _setup(tmp, "--binding-ttl", "1")
    with LiveServer(*args) as server:
        yield Env(server, key, tmp)


def _b64json(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


# --------------------------------------------------------------------------- the flow

def test_pep_pdp_access_request_approve_poll_reevaluate(env):
    # 1. the PEP evaluates: a requestable denial
    denied = env.evaluate()
    assert denied["decision"] is False
    ctx = denied["context"]
    assert ctx["decision"] == "require_approval" and ctx["reason"] == "approval_required"
    assert ctx["evaluation_id"].startswith("eval_")
    ar = ctx["access_request"]
    assert ar["endpoint"] == env.server.url + "/access/v1/requests"
    assert set(ar) >= {"expires_at", "binding_token"}
    # the binding token verifies with the published JWKS, and binds evaluation and expiry
    jwks = env.c.get("/access/v1/jwks").json()
    header = jwt.get_unverified_header(ar["binding_token"])
    assert header["alg"] == "EdDSA" and header["typ"] == "aarp-binding+jwt"
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    claims = jwt.decode(ar["binding_token"], jwt.PyJWK(jwk).key, algorithms=["EdDSA"], audience="policylang")
    assert claims["evaluation_id"] == ctx["evaluation_id"]
    assert claims["denial_expires_at"] == ar["expires_at"]
    assert claims["request_digest"].startswith("sha256:")
    assert claims["binding_context_members"] == ["amount", "currency", "delegation"]

    # 2. the PEP submits the access request (with a justification of its own)
    r = env.submit(ctx)
    assert r.status_code == 202, r.text
    task = r.json()["task"]
    assert task["status"] == "pending" and task["id"].startswith("arq_")
    assert r.headers["location"] == task["status_endpoint"]
    assert task["links"]["cancel"] == task["status_endpoint"] + "/cancel"
    assert env.status(task).json()["task"]["status"] == "pending"

    # 3. the approver finds it (the ticket names the evaluation) and approves, authenticated
    listed = env.c.get("/v1/approvals", params={"approver": "user:fin"}, headers=env.auth("user:fin")).json()
    ticket = next(t for t in listed["approvals"] if t.get("meta", {}).get("access_request") == task["id"])
    assert ticket["meta"]["evaluation_id"] == ctx["evaluation_id"]
    assert ticket["meta"]["justification"] == {"business_justification": "customer complaint #42"}
    r = env.approve(ticket["id"])
    assert r.status_code == 200, r.text
    assert [a["approver"] for a in r.json()["approval"]["approvals"]] == ["user:fin"]

    # 4. the PEP polls: approved, with a re-evaluation result
    done = env.status(task).json()
    assert done["task"]["status"] == "approved"
    assert done["result"]["mode"] == "reevaluate"
    approval = done["result"]["approval"]
    assert approval["id"] == ticket["id"] and set(approval) == {"id", "approved_at", "approved_until", "state"}

    # 5. the PEP re-evaluates with the approval: allowed, and told until when
    again = env.evaluate({**EVAL, "context": {**CONTEXT, "approval": approval}})
    assert again["decision"] is True, again
    assert again["context"]["approval"] == {"id": approval["id"], "approved_until": approval["approved_until"]}

    # 6. the audit log ties denial, access request, approval and re-evaluation together
    linked = [rec["event"] for rec in env.audit() if rec.get("evaluation_id") == ctx["evaluation_id"]]
    assert linked == ["aarp_denial", "approval_open", "approve", "aarp_reevaluation"], linked
    reeval = [rec for rec in env.audit() if rec.get("evaluation_id") == ctx["evaluation_id"]][-1]
    assert reeval["outcome"] == "allow" and reeval["access_request"] == task["id"]


def test_discovery_advertises_the_profile_and_jwks_serves_the_binding_keys(env):
    doc = env.c.get("/.well-known/authzen-configuration").json()
    assert doc["access_request_endpoint"] == env.server.url + "/access/v1/requests"
    assert doc["jwks_uri"] == env.server.url + "/access/v1/jwks"
    assert CAP in doc["capabilities"]
    keys = env.c.get(doc["jwks_uri"].replace(env.server.url, "")).json()["keys"]
    assert keys and all(k["kty"] == "OKP" and k["crv"] == "Ed25519" and k["use"] == "sig" and "d" not in k
                        for k in keys)
    from policylang.credentials import KeySet
    assert [k["kid"] for k in keys] == KeySet.load(env.tmp / "binding.json").kids()


def test_batch_items_carry_the_requestable_denial(env):
    small = {"subject": SUBJECT, "resource": RESOURCE, "action": ACTION, "context": {"amount": 5}}
    r = env.c.post("/access/v1/evaluations", json={"evaluations": [small, EVAL]})
    assert r.status_code == 200, r.text
    first, second = r.json()["evaluations"]
    # an allowed item answers {"decision": true} alone (batch items carry their context
    # only when asked); the requestable denial keeps its whole context (docs/server.md#decision-context)
    assert first == {"decision": True}
    assert second["decision"] is False and second["context"]["access_request"]["binding_token"]
    # and it can be submitted like the single evaluation's
    assert env.submit(second["context"]).status_code == 202


# ---------------------------------------------------------------- exactly that request

@pytest.mark.parametrize("change", ["amount", "delegation", "resource", "subject", "action_context"])
def test_an_approval_allows_nothing_but_the_approved_request(env, change):
    _ctx, approval = env.approved()
    other = json.loads(json.dumps(EVAL))
    if change == "amount":
        other["context"]["amount"] = 10_000_000
    elif change == "delegation":
        other["context"]["delegation"] = [{"type": "human", "id": "user:bob"}]
    elif change == "resource":
        other["resource"] = {"type": "payment", "id": "p-2"}
    elif change == "subject":
        other["subject"] = {"type": "agent", "id": "agent:other"}
    else:
        other["context"]["note"] = "something else"
    other["context"]["approval"] = approval
    r = env.evaluate(other)
    assert r["decision"] is False, r
    assert r["context"]["reason"] == "out_of_scope" and r["context"]["next_action"] == "request"
    assert r["context"]["access_request"]["binding_token"]  # a fresh requestable denial
    # the failed attempt spent nothing: the approved request is still allowed, once
    assert env.evaluate({**EVAL, "context": {**CONTEXT, "approval": approval}})["decision"] is True


def test_an_approval_is_single_use(env):
    _ctx, approval = env.approved()
    body = {**EVAL, "context": {**CONTEXT, "approval": approval}}
    assert env.evaluate(body)["decision"] is True
    replay = env.evaluate(body)
    assert replay["decision"] is False
    assert replay["context"]["reason"] == "approval_expired" and replay["context"]["next_action"] == "request"
    # the bare id (the legacy string form) is refused as well
    assert env.evaluate({**EVAL, "context": {**CONTEXT, "approval": approval["id"]}})["decision"] is False
    assert env.status({"status_endpoint": env.server.url + "/access/v1/requests/arq_" + approval["id"][4:]}
                      ).json()["task"]["status"] == "approved"


def test_a_tampered_or_swapped_approval_state_is_not_used(env):
    _c1, first = env.approved()
    _c2, second = env.approved()
    h, p, s = first["state"].split(".")
    claims = _b64json(p)
    forged = ".".join([h, _b64({**claims, "exp": claims["exp"] + 86400}), s])
    for bad in ({**first, "state": forged},                 # altered payload
                {**first, "state": second["state"]},        # another approval's state
                {**first, "state": first["state"][:-4] + "AAAA"}):
        r = env.evaluate({**EVAL, "context": {**CONTEXT, "approval": bad}})
        assert r["decision"] is False, r
        assert r["context"]["reason"] == "approval_unverifiable" and r["context"]["next_action"] == "none"
    # a binding token is no approval state (typ), even though the same key signed it
    binding = env.evaluate()["context"]["access_request"]["binding_token"]
    r = env.evaluate({**EVAL, "context": {**CONTEXT, "approval": {**first, "state": binding}}})
    assert r["decision"] is False and r["context"]["reason"] == "approval_unverifiable"
    # none of that spent the approvals
    assert env.evaluate({**EVAL, "context": {**CONTEXT, "approval": first}})["decision"] is True
    assert env.evaluate({**EVAL, "context": {**CONTEXT, "approval": second}})["decision"] is True


def test_a_pending_approval_allows_nothing(env):
    ctx = env.evaluate()["context"]
    task = env.submit(ctx).json()["task"]
    guessed = {"id": "apr_" + task["id"][4:], "approved_until": "2999-01-01T00:00:00Z"}
    r = env.evaluate({**EVAL, "context": {**CONTEXT, "approval": guessed}})
    assert r["decision"] is False and r["context"]["reason"] == "grant_pending"


# ------------------------------------------------------------------- binding tokens

def test_a_submission_for_another_request_is_refused(env):
    ctx = env.evaluate()["context"]
    for over in ({"context": {**CONTEXT, "amount": 10_000_000}},
                 {"context": {**CONTEXT, "delegation": [{"type": "human", "id": "user:bob"}]}},
                 {"context": {"amount": 150, "currency": "EUR"}},  # a bound member dropped
                 {"resource": {"type": "payment", "id": "p-2"}},
                 {"subject": {"type": "agent", "id": "agent:other"}}):
        r = env.submit(ctx, over)
        assert r.status_code == 400, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["type"] == ERR + "invalid_denial_binding"
    # the evaluation id and the expiry are bound too
    r = env.submit(ctx, denial={**env_denial(ctx), "evaluation_id": "eval_someone_else"})
    assert r.status_code == 400 and r.json()["type"] == ERR + "invalid_denial_binding"
    r = env.submit(ctx, denial={**env_denial(ctx), "expires_at": "2999-01-01T00:00:00Z"})
    assert r.status_code == 400 and r.json()["type"] == ERR + "invalid_denial_binding"


def env_denial(ctx: dict) -> dict:
    return {"evaluation_id": ctx["evaluation_id"], "expires_at": ctx["access_request"]["expires_at"],
            "binding_token": ctx["access_request"]["binding_token"]}


def test_a_tampered_binding_token_is_refused(env):
    ctx = env.evaluate()["context"]
    token = ctx["access_request"]["binding_token"]
    h, p, s = token.split(".")
    claims = _b64json(p)
    other = env.evaluate({**EVAL, "context": {**CONTEXT, "amount": 10_000_000}})["context"]
    other_claims = _b64json(other["access_request"]["binding_token"].split(".")[1])
    forged_digest = ".".join([h, _b64({**claims, "request_digest": other_claims["request_digest"]}), s])
    forged_exp = ".".join([h, _b64({**claims, "exp": claims["exp"] + 86400}), s])
    none_alg = ".".join([_b64({"alg": "none", "typ": "aarp-binding+jwt"}), p, ""])
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    foreign = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA",
                         headers={"kid": jwt.get_unverified_header(token)["kid"], "typ": "aarp-binding+jwt"})
    for bad in (forged_digest, forged_exp, none_alg, foreign, token[:-6] + "AAAAAA", "not.a.jws", "x"):
        r = env.submit(ctx, denial={**env_denial(ctx), "binding_token": bad})
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["type"] == ERR + "invalid_denial_binding"
    # an approval state is no binding token
    _c, approval = env.approved()
    r = env.submit(ctx, denial={**env_denial(ctx), "binding_token": approval["state"]})
    assert r.status_code == 400 and r.json()["type"] == ERR + "invalid_denial_binding"
    # the genuine token still works
    assert env.submit(ctx).status_code == 202


def test_an_expired_binding_token_is_refused(short):
    ctx = short.evaluate()["context"]
    time.sleep(2.1)
    r = short.submit(ctx)
    assert r.status_code == 410, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"] == ERR + "expired_denial"
    assert not [rec for rec in short.audit() if rec["event"] == "approval_open"]


def test_a_denial_is_one_task_resubmitting_returns_it_and_a_changed_body_conflicts(env):
    ctx = env.evaluate()["context"]
    first = env.submit(ctx)
    assert first.status_code == 202
    again = env.submit(ctx)
    assert again.status_code == 202 and again.json()["task"]["id"] == first.json()["task"]["id"]
    r = env.submit(ctx, requested_access={"requested_until": "2999-01-01T00:00:00Z"})
    assert r.status_code == 409 and r.json()["type"] == ERR + "duplicate_request"
    r = env.submit(ctx, who="pep:other")
    assert r.status_code == 409 and r.json()["type"] == ERR + "duplicate_request"


# ----------------------------------------------------------------- who may act

def test_submitting_and_polling_need_an_authenticated_caller(env):
    ctx = env.evaluate()["context"]
    r = env.c.post("/access/v1/requests", json={"subject": SUBJECT, "resource": RESOURCE, "action": ACTION,
                                                "context": CONTEXT, "denial": env_denial(ctx)})
    assert r.status_code == 401
    task = env.submit(ctx).json()["task"]
    assert env.c.get(task["status_endpoint"].replace(env.server.url, "")).status_code == 401
    # another authenticated caller sees no such task
    r = env.status(task, who="pep:other")
    assert r.status_code == 404 and r.json()["type"] == ERR + "unknown_task"
    assert env.c.post(task["links"]["cancel"].replace(env.server.url, ""), headers=env.auth("pep:other")
                      ).status_code == 404
    r = env.status({"status_endpoint": env.server.url + "/access/v1/requests/arq_0000"})
    assert r.status_code == 404 and r.json()["type"] == ERR + "unknown_task"


def test_only_an_eligible_authenticated_approver_approves(env):
    ctx = env.evaluate()["context"]
    task = env.submit(ctx, who="user:fin2").json()["task"]  # a finance member submits it herself
    ticket = "apr_" + task["id"][4:]
    assert env.approve(ticket, who="user:eve").status_code == 403     # in no approver group
    assert env.approve(ticket, who="user:alice").status_code == 403   # the delegator of the request
    assert env.approve(ticket, who="user:fin2").status_code == 403    # the requester
    r = env.c.post(f"/v1/approvals/{ticket}/approve", json={"approver": "user:fin"})  # no credentials
    assert r.status_code == 401
    assert env.status(task, who="user:fin2").json()["task"]["status"] == "pending"
    assert env.approve(ticket, who="user:fin").status_code == 200
    assert env.status(task, who="user:fin2").json()["task"]["status"] == "approved"


def test_denied_and_cancelled_tasks(env):
    ctx = env.evaluate()["context"]
    task = env.submit(ctx).json()["task"]
    r = env.c.post(f"/v1/approvals/apr_{task['id'][4:]}/deny", json={}, headers=env.auth("user:fin"))
    assert r.status_code == 200
    assert env.status(task).json()["task"]["status"] == "denied"
    r = env.c.post(task["links"]["cancel"].replace(env.server.url, ""), headers=env.auth("pep:gateway"))
    assert r.status_code == 409 and r.json()["type"] == ERR + "invalid_task_state"

    ctx = env.evaluate()["context"]
    task = env.submit(ctx).json()["task"]
    cancel = task["links"]["cancel"].replace(env.server.url, "")
    r = env.c.post(cancel, json={"reason": "no_longer_needed", "comment": "resolved"},
                   headers=env.auth("pep:gateway"))
    assert r.status_code == 200, r.text
    assert r.json()["task"]["status"] == "cancelled"
    assert env.status(task).json()["task"]["status"] == "cancelled"
    assert env.c.delete(cancel, headers=env.auth("pep:gateway")).status_code == 409
    assert env.approve("apr_" + task["id"][4:]).status_code == 409  # a cancellation is final
    assert "result" not in env.status(task).json()
    ev = [rec for rec in env.audit() if rec["event"] == "approval_cancel"]
    assert ev and ev[-1]["evaluation_id"] == ctx["evaluation_id"] and ev[-1]["by"] == "pep:gateway"


def test_an_unapproved_task_expires(env):
    ctx = env.evaluate()["context"]
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))
    task = env.submit(ctx, requested_access={"requested_until": until}).json()["task"]
    assert task["status"] == "pending"
    time.sleep(2.5)
    assert env.status(task).json()["task"]["status"] == "expired"
    assert env.approve("apr_" + task["id"][4:]).status_code == 409


# ------------------------------------------------------------------- bad input

@pytest.mark.parametrize("over, field", [
    ({"subject": None}, "subject"),
    ({"subject": "agent:support"}, "subject"),
    ({"resource": None}, "resource"),
    ({"action": {"name": 3}}, "action.name"),
    ({"context": []}, "context"),
    ({"denial": None}, "denial"),
    ({"denial": {"expires_at": "2030-01-01T00:00:00Z"}}, "denial.binding_token"),
    ({"items": [{"resource": RESOURCE, "action": ACTION}]}, "items"),
    ({"callback": {"endpoint": "https://pep.test/cb"}}, "callback"),
    ({"requested_access": {"requested_until": "tomorrow"}}, "requested_access.requested_until"),
    ({"requested_access": {"requested_until": "2001-01-01T00:00:00Z"}}, "requested_access.requested_until"),
])
def test_a_malformed_submission_is_400_naming_the_field(env, over, field):
    ctx = env.evaluate()["context"]
    r = env.submit(ctx, over)
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith(field), r.json()


def test_a_malformed_denial_expiry_and_approval_are_400(env):
    ctx = env.evaluate()["context"]
    r = env.submit(ctx, denial={**env_denial(ctx), "expires_at": "soon"})
    assert r.status_code == 400 and r.json()["detail"].startswith("denial.expires_at")
    r = env.c.post("/access/v1/evaluation", json={**EVAL, "context": {**CONTEXT, "approval": {"id": 7}}})
    assert r.status_code == 400 and "context.approval.id" in r.text
    r = env.c.post("/access/v1/requests", content=b"{", headers={**env.auth("pep:gateway"),
                                                                "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["type"] == "about:blank"
