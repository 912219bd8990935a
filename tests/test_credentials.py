"""Just-in-time credentials (docs/zero-standing-privilege.md Tokens), on both stores."""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass, field

import jwt as pyjwt
import pytest

import policylang
from policylang.audit import AuditError, AuditLog, verify_file
from policylang.credentials import (BadSignature, Expired, Issuer, KeySet, Malformed, NotAllowed,
                                    NotYetValid, Revoked, ScopeNotGranted, TokenError)
from policylang.store import StoreError, open_store

try:
    from redis_fixture import dead_store_url, redis_server, store, store_url  # noqa: F401
except ImportError:  # tests/ as a package
    from tests.redis_fixture import dead_store_url, redis_server, store, store_url  # noqa: F401

T0 = float(int(time.time()))  # the real time: independent verifiers use their own clock
ISS = "https://pdp.example"


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class FakeDecision:
    """A hand-built decision with the attributes of policylang's Decision."""

    decision: str = "allow"
    rules: list = field(default_factory=lambda: ["coder-reads"])
    reasons: list = field(default_factory=list)
    grants: list = field(default_factory=lambda: [{"rule": "coder-reads", "scopes": ["repo:read:acme/api"], "ttl": 600}])
    approvers: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    delegation_path: list = field(default_factory=lambda: ["user:alice", "orch", "coder"])
    policy_version: str = "sha256:abc"

    def to_dict(self):
        return {k: getattr(self, k) for k in ("decision", "rules", "reasons", "grants", "approvers",
                                              "errors", "delegation_path", "policy_version")}


def request(task="T-42", chain=("user:alice", "orch"), principal="coder", resource_id="acme/api"):
    r = {"principal": {"id": principal, "kind": "agent"}, "action": "read",
         "resource": {"type": "repo", "id": resource_id},
         "delegation": [{"id": c, "kind": "human" if c.startswith("user:") else "agent"} for c in chain]}
    if task is not None:
        r["intent"] = {"task_id": task, "purpose": "fix-bug"}
    return r


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def keys():
    return KeySet.generate(now=T0)


@pytest.fixture
def issuer(keys, store, clock):
    return Issuer(keys, store, issuer=ISS, max_task_lifetime=8 * 3600, clock=clock)


# -- minting -------------------------------------------------------------------------------


def test_claims_follow_the_spec(issuer, keys):
    d = FakeDecision(grants=[{"rule": "a", "scopes": ["repo:read:acme/api", "repo:list:acme"], "ttl": 900},
                             {"rule": "b", "scopes": ["repo:list:acme", "issues:read"], "ttl": 600}],
                     rules=["a", "b"])
    tok = issuer.issue(d, request())
    header = pyjwt.get_unverified_header(tok.jwt)
    assert header["alg"] == "EdDSA" and header["kid"] == keys.kid
    claims = pyjwt.decode(tok.jwt, options={"verify_signature": False})
    assert claims == {
        "iss": ISS, "sub": "user:alice",
        "act": {"sub": "coder", "act": {"sub": "orch"}},
        "aud": "acme/api", "scope": "repo:read:acme/api repo:list:acme issues:read",
        "iat": int(T0), "nbf": int(T0), "exp": int(T0) + 600,
        "jti": tok.jti, "task": "T-42", "rules": ["a", "b"], "policy_version": "sha256:abc",
    }
    assert all(c in "0123456789abcdef" for c in tok.jti) and len(tok.jti) == 32
    assert tok.expires_at == int(T0) + 600
    assert tok.scopes == ("repo:read:acme/api", "repo:list:acme", "issues:read")


def test_act_chain_is_nested_with_current_actor_outermost(issuer):
    chain = ("user:alice", "a1", "a2", "a3")
    d = FakeDecision(delegation_path=[*chain, "coder"])
    claims = issuer.verify(issuer.issue(d, request(chain=chain)).jwt)
    assert claims["sub"] == "user:alice"
    assert claims["act"] == {"sub": "coder", "act": {"sub": "a3", "act": {"sub": "a2", "act": {"sub": "a1"}}}}


def test_one_hop_and_direct_principals(issuer):
    one = issuer.verify(issuer.issue(FakeDecision(delegation_path=["user:alice", "coder"]),
                                     request(chain=("user:alice",))).jwt)
    assert one["sub"] == "user:alice" and one["act"] == {"sub": "coder"}
    direct = issuer.verify(issuer.issue(FakeDecision(delegation_path=["user:bob"]),
                                        request(chain=(), principal="user:bob", task="T-7")).jwt)
    assert direct["sub"] == "user:bob" and "act" not in direct


def test_audience_is_the_type_without_a_resource_id(issuer):
    req = request()
    del req["resource"]["id"]
    assert issuer.verify(issuer.issue(FakeDecision(), req).jwt)["aud"] == "repo"


def test_no_task_means_no_task_claim_and_a_lifetime_cap(keys, store, clock):
    issuer = Issuer(keys, store, issuer=ISS, max_task_lifetime=120, clock=clock)
    tok = issuer.issue(FakeDecision(), request(task=None))
    assert "task" not in tok.claims
    assert tok.expires_at == int(T0) + 120


def test_ttl_capped_by_max_ttl(keys, store, clock):
    issuer = Issuer(keys, store, issuer=ISS, max_ttl=300, clock=clock)
    assert issuer.issue(FakeDecision(), request()).expires_at == int(T0) + 300


def test_no_token_outlives_its_task(keys, store, clock):
    issuer = Issuer(keys, store, issuer=ISS, max_task_lifetime=1000, clock=clock)
    issuer.issue(FakeDecision(), request(task="T-1"))  # the task starts now
    clock.advance(700)
    late = issuer.issue(FakeDecision(), request(task="T-1"))
    assert late.expires_at == int(T0) + 1000, "capped at start + max_task_lifetime, not now + ttl"
    clock.advance(300)
    with pytest.raises(NotAllowed, match="past its lifetime"):
        issuer.issue(FakeDecision(), request(task="T-1"))
    # the start is kept: the id cannot be reused later either
    clock.advance(10_000)
    with pytest.raises(NotAllowed):
        issuer.issue(FakeDecision(), request(task="T-1"))


def test_task_lifetime_is_shared_through_the_store(keys, store_url, clock):
    a = Issuer(keys, open_store(store_url), issuer=ISS, max_task_lifetime=1000, clock=clock)
    b = Issuer(keys, open_store(store_url), issuer=ISS, max_task_lifetime=1000, clock=clock)
    a.issue(FakeDecision(), request(task="T-s"))
    clock.advance(900)
    assert b.issue(FakeDecision(), request(task="T-s")).expires_at == int(T0) + 1000


@pytest.mark.parametrize("decision, message", [
    (FakeDecision(decision="deny", grants=[]), "not 'allow'"),
    (FakeDecision(decision="require_approval", grants=[], approvers=["sre"]), "not 'allow'"),
    (FakeDecision(grants=[]), "no grant"),
    (FakeDecision(grants=[{"rule": "x", "scopes": ["has space"], "ttl": 60}]), "whitespace"),
    (FakeDecision(grants=[{"rule": "x", "scopes": ["s"], "ttl": 0}]), "ttl"),
    (FakeDecision(grants=[{"rule": "x", "scopes": [], "ttl": 60}]), "no scopes"),
    (FakeDecision(delegation_path=["user:mallory", "coder"]), "another delegation path"),
])
def test_refusals_to_issue(issuer, decision, message):
    with pytest.raises(NotAllowed, match=message):
        issuer.issue(decision, request())


@pytest.mark.parametrize("bad", [
    None, [], {"principal": {"kind": "agent"}, "action": "read", "resource": {"type": "repo"}},
    {**request(), "delegation": [None]}, {**request(), "intent": {"task_id": 42}},
    {**request(), "resource": {"id": "x"}},
])
def test_malformed_requests_are_refused_not_crashed(issuer, bad):
    with pytest.raises(NotAllowed, match="malformed request"):
        issuer.issue(FakeDecision(delegation_path=[]), bad)


def test_issue_accepts_decision_dicts(issuer):
    assert issuer.issue(FakeDecision().to_dict(), request()).scopes == ("repo:read:acme/api",)


# -- verifying -----------------------------------------------------------------------------


def test_verify_checks_scope_and_audience(issuer):
    tok = issuer.issue(FakeDecision(), request())
    assert issuer.verify(tok.jwt, scope="repo:read:acme/api", audience="acme/api")["jti"] == tok.jti
    with pytest.raises(ScopeNotGranted):
        issuer.verify(tok.jwt, scope="repo:write:acme/api")
    with pytest.raises(ScopeNotGranted):
        issuer.verify(tok.jwt, scope="repo:read")  # no prefix matching
    with pytest.raises(ScopeNotGranted):
        issuer.verify(tok.jwt, audience="acme/other")


def test_expiry_not_before_and_leeway(issuer, clock):
    tok = issuer.issue(FakeDecision(), request())
    clock.advance(599)
    issuer.verify(tok.jwt)
    clock.advance(1)
    with pytest.raises(Expired):
        issuer.verify(tok.jwt)
    issuer.verify(tok.jwt, leeway=30)
    clock.t = T0 - 10
    with pytest.raises(NotYetValid):
        issuer.verify(tok.jwt)
    issuer.verify(tok.jwt, leeway=10)
    with pytest.raises(ValueError):
        issuer.verify(tok.jwt, leeway=301)
    with pytest.raises(ValueError):
        issuer.verify(tok.jwt, leeway=-1)


def _resign(issuer, claims, headers=None, key=None):
    k = issuer.keys._signing()
    return pyjwt.encode(claims, key or k.private, algorithm="EdDSA",
                        headers={"kid": k.kid, **(headers or {})})


def test_bad_signatures(issuer, keys, store, clock):
    tok = issuer.issue(FakeDecision(), request())
    head, payload, sig = tok.jwt.split(".")
    claims = json.loads(pyjwt.utils.base64url_decode(payload))
    forged = pyjwt.utils.base64url_encode(json.dumps({**claims, "scope": "admin"}).encode()).decode()
    with pytest.raises(BadSignature):
        issuer.verify(f"{head}.{forged}.{sig}")
    with pytest.raises(BadSignature):  # wrong issuer
        Issuer(keys, store, issuer="https://evil", clock=clock).verify(tok.jwt)
    other = Issuer(KeySet.generate(now=T0), store, issuer=ISS, clock=clock)
    with pytest.raises(BadSignature, match="unknown"):  # signed by a key we do not know
        issuer.verify(other.issue(FakeDecision(), request(task="T-o")).jwt)
    # a foreign key claiming our kid
    foreign = KeySet.generate(now=T0)._signing().private
    with pytest.raises(BadSignature):
        issuer.verify(_resign(issuer, claims, key=foreign))
    with pytest.raises(BadSignature, match="no kid"):
        issuer.verify(pyjwt.encode(claims, keys._signing().private, algorithm="EdDSA"))
    with pytest.raises(BadSignature, match="algorithm"):
        issuer.verify(pyjwt.encode(claims, "a-shared-secret-of-at-least-32-bytes!!", algorithm="HS256",
                                   headers={"kid": keys.kid}))
    unsigned = (pyjwt.utils.base64url_encode(b'{"alg":"none","kid":"%s"}' % keys.kid.encode()).decode()
                + "." + payload + ".")
    with pytest.raises(BadSignature):
        issuer.verify(unsigned)


@pytest.mark.parametrize("mutate", [
    lambda c: c.pop("scope"), lambda c: c.pop("jti"), lambda c: c.pop("policy_version"),
    lambda c: c.pop("rules"), lambda c: c.pop("nbf"),
    lambda c: c.update(exp="tomorrow"), lambda c: c.update(rules="r1"), lambda c: c.update(jti="NOT-HEX"),
    lambda c: c.update(aud=["a", "b"]), lambda c: c.update(act={"sub": 5}), lambda c: c.update(task=7),
    lambda c: c.update(iat=True),
])
def test_missing_or_mistyped_claims_are_malformed(issuer, mutate):
    claims = dict(issuer.issue(FakeDecision(), request()).claims)
    mutate(claims)
    with pytest.raises(Malformed):
        issuer.verify(_resign(issuer, claims))


@pytest.mark.parametrize("junk", ["", "x", "a.b.c", "a.b", "....", "eyJhbGciOiJFZERTQSJ9.e30", 42, None, b"\xff.\xfe.\xfd"])
def test_junk_is_malformed(issuer, junk):
    with pytest.raises(TokenError) as info:
        issuer.verify(junk)
    assert isinstance(info.value, (Malformed, BadSignature))


def test_payload_that_is_not_an_object(issuer):
    k = issuer.keys._signing()
    bad = pyjwt.api_jws.PyJWS().encode(b"[1,2]", k.private, algorithm="EdDSA", headers={"kid": k.kid})
    with pytest.raises(Malformed):
        issuer.verify(bad)


def test_every_refusal_is_its_own_token_error():
    for cls in (BadSignature, Expired, NotYetValid, Revoked, ScopeNotGranted, Malformed, NotAllowed):
        assert issubclass(cls, TokenError)
    assert not issubclass(StoreError, TokenError)


# -- revoking -------------------------------------------------------------------------------


def test_revoke_one_token(issuer):
    a = issuer.issue(FakeDecision(), request())
    b = issuer.issue(FakeDecision(), request())
    issuer.revoke(a.jti)
    with pytest.raises(Revoked):
        issuer.verify(a.jwt)
    issuer.verify(b.jwt)
    with pytest.raises(ValueError):
        issuer.revoke("Not a jti")


def test_revoke_task_revokes_all_and_refuses_later_issues(issuer):
    a = issuer.issue(FakeDecision(), request(task="T-9"))
    b = issuer.issue(FakeDecision(), request(task="T-9"))
    other = issuer.issue(FakeDecision(), request(task="T-10"))
    assert sorted(issuer.revoke_task("T-9")) == sorted([a.jti, b.jti])
    for t in (a, b):
        with pytest.raises(Revoked):
            issuer.verify(t.jwt)
    issuer.verify(other.jwt)
    with pytest.raises(NotAllowed, match="revoked"):
        issuer.issue(FakeDecision(), request(task="T-9"))


def test_revocation_is_shared_by_replicas(keys, store_url, clock):
    a = Issuer(keys, open_store(store_url), issuer=ISS, clock=clock)
    b = Issuer(keys, open_store(store_url), issuer=ISS, clock=clock)
    tok = a.issue(FakeDecision(), request())
    b.revoke(tok.jti)
    with pytest.raises(Revoked):
        a.verify(tok.jwt)


def test_unreachable_store_never_accepts(keys, dead_store_url, clock, issuer):
    tok = issuer.issue(FakeDecision(), request())
    blind = Issuer(keys, open_store(dead_store_url), issuer=ISS, clock=clock)
    with pytest.raises(StoreError):
        blind.verify(tok.jwt)
    with pytest.raises(StoreError):
        blind.issue(FakeDecision(), request())
    with pytest.raises(StoreError):
        blind.revoke(tok.jti)
    # refusals that need no store still say why
    with pytest.raises(BadSignature):
        blind.verify(tok.jwt[:-4] + "AAAA")


# -- refreshing ----------------------------------------------------------------------------


class FakeEngine:
    def __init__(self, decision):
        self.decision = decision
        self.calls = []

    def decide(self, req):
        self.calls.append(req)
        return self.decision


def test_refresh_decides_again_and_revokes_the_old_token(issuer, clock):
    old = issuer.issue(FakeDecision(), request())
    clock.advance(300)
    engine = FakeEngine(FakeDecision(grants=[{"rule": "r", "scopes": ["repo:list:acme"], "ttl": 900}]))
    req = request()
    new = issuer.refresh(old.jwt, engine, req)
    assert engine.calls == [req]
    claims = issuer.verify(new.jwt)
    assert claims["scope"] == "repo:list:acme" and claims["exp"] == int(T0) + 300 + 900
    assert claims["sub"] == "user:alice" and claims["task"] == "T-42"
    with pytest.raises(Revoked):
        issuer.verify(old.jwt)


def test_refresh_refuses_when_no_longer_allowed(issuer):
    old = issuer.issue(FakeDecision(), request())
    with pytest.raises(NotAllowed, match="no longer allowed"):
        issuer.refresh(old.jwt, FakeEngine(FakeDecision(decision="deny", grants=[], reasons=["risk"])), request())
    issuer.verify(old.jwt)  # a refused refresh changes nothing


@pytest.mark.parametrize("other", [
    request(chain=("user:bob", "orch")), request(chain=("user:alice",)),
    request(resource_id="acme/web"), request(task="T-43"), request(principal="coder2"),
])
def test_refresh_for_another_sub_act_aud_or_task_is_refused(issuer, other):
    old = issuer.issue(FakeDecision(), request())
    engine = FakeEngine(FakeDecision(delegation_path=[d["id"] for d in other["delegation"]] + [other["principal"]["id"]]))
    with pytest.raises(NotAllowed, match="another"):
        issuer.refresh(old.jwt, engine, other)
    assert engine.calls == []


def test_refresh_of_a_bad_token_is_not_allowed(issuer, clock):
    old = issuer.issue(FakeDecision(), request())
    clock.advance(601)
    with pytest.raises(NotAllowed, match="Expired"):
        issuer.refresh(old.jwt, FakeEngine(FakeDecision()), request())


def test_refresh_wraps_request_errors(issuer):
    old = issuer.issue(FakeDecision(), request())

    class Raising:
        def decide(self, req):
            raise policylang.RequestError("risk.score", "must be in [0, 1]")

    with pytest.raises(NotAllowed, match="risk.score"):
        issuer.refresh(old.jwt, Raising(), request())


# -- keys ----------------------------------------------------------------------------------


def test_keyset_save_and_load(tmp_path, keys, store, clock):
    path = tmp_path / "keys.json"
    keys.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = KeySet.load(path)
    assert loaded.kid == keys.kid
    tok = Issuer(loaded, store, issuer=ISS, clock=clock).issue(FakeDecision(), request())
    Issuer(keys, store, issuer=ISS, clock=clock).verify(tok.jwt)


def test_jwks_verifies_elsewhere_and_loads_as_public_keys(tmp_path, issuer, store, clock):
    tok = issuer.issue(FakeDecision(), request())
    doc = issuer.jwks()
    assert [k["kid"] for k in doc["keys"]] == [issuer.keys.kid]
    assert all("d" not in k for k in doc["keys"]), "private parts must never be published"
    # an independent verifier (PyJWT's own JWKS support) accepts the token
    jwk = pyjwt.PyJWKSet.from_dict(doc)[issuer.keys.kid]
    assert pyjwt.decode(tok.jwt, jwk.key, algorithms=["EdDSA"], audience="acme/api")["jti"] == tok.jti
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(doc))
    public = KeySet.load(path)
    verifier = Issuer(public, store, issuer=ISS, clock=clock)
    assert verifier.verify(tok.jwt)["jti"] == tok.jti
    with pytest.raises(ValueError, match="signing key"):
        verifier.issue(FakeDecision(), request())


@pytest.mark.parametrize("content", ["not json", "[]", '{"keys": "x"}', '{"keys": []}',
                                     '{"format": "policylang-keyset/1", "keys": [{"kid": "k"}]}'])
def test_bad_key_files(tmp_path, content):
    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(ValueError):
        KeySet.load(path)


def test_rotation_keeps_old_tokens_verifiable_until_they_expire(issuer, clock):
    old_kid = issuer.keys.kid
    old = issuer.issue(FakeDecision(), request())  # exp = T0 + 600
    new_kid = issuer.keys.rotate(now=clock())
    assert new_kid != old_kid
    new = issuer.issue(FakeDecision(), request())
    assert pyjwt.get_unverified_header(new.jwt)["kid"] == new_kid
    issuer.verify(old.jwt)
    assert [k["kid"] for k in issuer.jwks()["keys"]] == [old_kid, new_kid]
    clock.advance(600 + 300)  # last token's expiry + max_leeway: still kept
    assert old_kid in [k["kid"] for k in issuer.jwks()["keys"]]
    clock.advance(1)
    assert [k["kid"] for k in issuer.jwks()["keys"]] == [new_kid]
    with pytest.raises(BadSignature):
        issuer.verify(old.jwt, leeway=300)


def test_rotated_key_survives_save_and_load(tmp_path, issuer, clock, store):
    old = issuer.issue(FakeDecision(), request())
    issuer.keys.rotate(now=clock())
    issuer.keys.save(tmp_path / "k.json")
    reloaded = Issuer(KeySet.load(tmp_path / "k.json"), store, issuer=ISS, clock=clock)
    reloaded.verify(old.jwt)
    saved = json.loads((tmp_path / "k.json").read_text())
    assert [("private" in k) for k in saved["keys"]] == [False, True], "a retired key keeps no private part"


# -- audit ---------------------------------------------------------------------------------


def test_issuer_events_are_audited(tmp_path, keys, store, clock):
    log = AuditLog(tmp_path / "audit.jsonl", redact=["secret"])
    issuer = Issuer(keys, store, issuer=ISS, audit=log, clock=clock)
    req = {**request(), "context": {"secret": "hunter2"}}
    tok = issuer.issue(FakeDecision(), req)
    new = issuer.refresh(tok.jwt, FakeEngine(FakeDecision()), req)
    issuer.revoke(new.jti)
    issuer.revoke_task("T-42")
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [r["event"] for r in lines] == ["issue", "refresh", "revoke", "revoke_task"]
    assert lines[0]["tokens"] == [tok.jti] and lines[0]["decision"] == "allow"
    assert lines[0]["request"]["context"]["secret"] == "[redacted]"
    assert lines[1]["tokens"] == [new.jti] and lines[1]["revoked"] == [tok.jti]
    assert lines[2]["jti"] == new.jti and lines[3]["task"] == "T-42"
    assert verify_file(tmp_path / "audit.jsonl").ok


def test_a_failed_audit_write_fails_the_issue_and_the_token(tmp_path, keys, store, clock):
    log = AuditLog(tmp_path / "missing-dir" / "audit.jsonl")
    issuer = Issuer(keys, store, issuer=ISS, audit=log, clock=clock)
    revoked = []
    real = store.revoke_token
    store.revoke_token = lambda jti, *a: (revoked.append(jti), real(jti, *a))
    with pytest.raises(AuditError):
        issuer.issue(FakeDecision(), request())
    assert len(revoked) == 1 and store.is_revoked(revoked[0]), "the unaudited token stays usable"


# -- with the real engine ------------------------------------------------------------------


POLICY = '''
@id("coder-reads-own-repos")
permit agent "spiffe://acme.io/agents/*" to read on repo
  when resource.owner == principal.tenant
  when risk.score < 0.7
  grant "repo:read:" + resource.id for 10m
  because "coding agents read their own tenant's repositories"
'''


def test_end_to_end_with_the_engine(issuer):
    engine = policylang.Engine(policylang.loads(POLICY))
    req = {"principal": {"id": "spiffe://acme.io/agents/coder", "kind": "agent", "attrs": {"tenant": "acme"}},
           "action": "read", "resource": {"type": "repo", "id": "acme/api", "attrs": {"owner": "acme"}},
           "risk": {"score": 0.1}, "delegation": [{"id": "user:alice", "kind": "human"}],
           "intent": {"task_id": "T-e2e"}}
    d = engine.decide(req)
    tok = issuer.issue(d, req)
    claims = issuer.verify(tok.jwt, scope="repo:read:acme/api")
    assert claims["rules"] == ["coder-reads-own-repos"] and claims["policy_version"] == d.policy_version
    assert claims["act"] == {"sub": "spiffe://acme.io/agents/coder"}
    # the risk rises: refresh decides again and refuses
    with pytest.raises(NotAllowed, match="no longer allowed"):
        issuer.refresh(tok.jwt, engine, {**req, "risk": {"score": 0.9}})
    new = issuer.refresh(tok.jwt, engine, req)
    issuer.verify(new.jwt, scope="repo:read:acme/api")


# -- properties ------------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=300),
                      st.lists(st.text(alphabet="AaZz09-_=", max_size=40), min_size=1, max_size=5).map(".".join)))
def test_verify_of_anything_is_a_token_error(tmp_path, text):
    keys = KeySet.generate()
    issuer = Issuer(keys, open_store(f"sqlite:///{tmp_path / 'p.db'}"), issuer=ISS)
    with pytest.raises(TokenError):
        issuer.verify(text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(claims=st.dictionaries(st.sampled_from(["iss", "sub", "aud", "scope", "iat", "nbf", "exp", "jti", "rules",
                                               "policy_version", "act", "task"]),
                              st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                                           max_leaves=6)))
def test_signed_garbage_claims_are_refused_cleanly(tmp_path, claims):
    keys = KeySet.generate()
    issuer = Issuer(keys, open_store(f"sqlite:///{tmp_path / 'p.db'}"), issuer=ISS)
    k = keys._signing()
    token = pyjwt.api_jws.PyJWS().encode(json.dumps(claims).encode(), k.private, algorithm="EdDSA",
                                         headers={"kid": k.kid})
    try:
        issuer.verify(token)
    except TokenError:
        pass  # anything else (TypeError, KeyError …) fails the test
