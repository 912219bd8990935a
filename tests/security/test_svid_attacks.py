"""Attacks on proven workload identity (docs/server.md#workload-identity): forged, expired,
wrong-audience, foreign-trust-domain, alg=none / HS256 JWT-SVIDs; X.509 certificates that
are no SVID of the trust domain they name; bodies that name another principal than the
proven one. Every attack must be refused (401/403) and never decided as the attacker asks."""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import jwt
import pytest

pytest.importorskip("spiffe")

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from test_svid import (AGENT, AUD, DEPLOY, OTHER_AGENT, READ, TrustDomainCA, delegation_path,  # noqa: E402
                       policy_dir, svid_header, write_bundle)

from policylang.server import ServiceConfig, create_app  # noqa: E402
from policylang.server.identity import ProofError, TrustBundles, WorkloadVerifier  # noqa: E402

THIRD = "third.org"


@pytest.fixture(scope="module")
def tds():
    ex = TrustDomainCA("example.org")
    # other.org's JWT key uses the SAME kid as example.org's: a kid must never select a
    # key across trust domains
    other = TrustDomainCA("other.org", kid=ex.kid)
    third = TrustDomainCA(THIRD)
    return {"example.org": ex, "other.org": other, THIRD: third}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, tds):
    d = tmp_path_factory.mktemp("attack-bundles") / "bundles"
    for td in tds.values():
        write_bundle(d, td)
    return d


def _client(tmp_path_factory, bundles, **kw):
    tmp = tmp_path_factory.mktemp("attack-app")
    cfg = ServiceConfig(path=str(policy_dir(tmp)), svid_bundle=str(bundles), svid_audience=AUD,
                        svid_trust_domains=("example.org", "other.org"), **kw)
    return TestClient(create_app(cfg, watch=False))


@pytest.fixture(scope="module")
def optional(tmp_path_factory, bundles):
    with _client(tmp_path_factory, bundles) as c:
        yield c


@pytest.fixture(scope="module")
def required(tmp_path_factory, bundles):
    with _client(tmp_path_factory, bundles, require_proven_principal=True) as c:
        yield c


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict, payload: dict, signature: bytes = b"") -> str:
    return ".".join([_b64(json.dumps(header).encode()), _b64(json.dumps(payload).encode()), _b64(signature)])


def _claims(sub=AGENT, exp=300):
    return {"sub": sub, "aud": [AUD], "exp": int(time.time()) + exp, "iat": int(time.time())}


def _bad_tokens(tds) -> dict:
    ex, other, third = tds["example.org"], tds["other.org"], tds[THIRD]
    stranger = ec.generate_private_key(ec.SECP256R1())
    pub_pem = ex.jwt_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return {
        # signed by a key no bundle holds, under example.org's kid
        "forged": ex.jwt_svid(key=stranger),
        "expired": ex.jwt_svid(exp=-120),
        "wrong-audience": ex.jwt_svid(aud="someone-else"),
        # other.org's key (and the same kid!) signing a token for an example.org id
        "foreign-trust-domain-key": other.jwt_svid(sub=AGENT),
        # a valid SVID of a trust domain that has a bundle but is not accepted (--trust-domain)
        "trust-domain-not-accepted": third.jwt_svid(),
        "alg-none": _unsigned({"alg": "none", "typ": "JWT", "kid": ex.kid}, _claims()),
        # the bundle's public key used as an HMAC secret (algorithm confusion)
        "alg-hs256": _unsigned({"alg": "HS256", "typ": "JWT", "kid": ex.kid}, _claims(),
                               __import__("hmac").new(pub_pem, b"x", "sha256").digest()),
        "no-kid": jwt.encode(_claims(), ex.jwt_key, algorithm="ES256"),
        "sub-not-spiffe": ex.jwt_svid(sub="agent:x"),
        "garbage": "not-a-jwt",
    }


BAD = ["forged", "expired", "wrong-audience", "foreign-trust-domain-key", "trust-domain-not-accepted",
       "alg-none", "alg-hs256", "no-kid", "sub-not-spiffe", "garbage"]


@pytest.mark.parametrize("mode", ["optional", "required"])
@pytest.mark.parametrize("bad", BAD)
def test_a_bad_jwt_svid_is_401_and_nothing_is_decided(request, tds, mode, bad):
    c = request.getfixturevalue(mode)
    tok = _bad_tokens(tds)[bad]
    for path, body in (("/access/v1/evaluation", READ),
                       ("/v1/decide", {"principal": {"kind": "agent", "id": AGENT}, "action": "read",
                                       "resource": {"type": "repo", "id": "r"}})):
        r = c.post(path, json=body, headers=svid_header(tok))
        assert r.status_code == 401, (bad, path, r.text)
        assert "decision" not in r.json()


def test_a_valid_svid_passes_the_same_gate(optional, required, tds):
    """The control for the attacks above: the real SVID is accepted in both modes."""
    for c in (optional, required):
        r = c.post("/access/v1/evaluation", json=READ, headers=svid_header(tds["example.org"].jwt_svid()))
        assert r.status_code == 200 and r.json()["decision"] is True and delegation_path(r) == [AGENT]
        # other.org is accepted too, with its own key: it proves other.org ids only
        other_id = "spiffe://other.org/agent/x"
        r = c.post("/access/v1/evaluation", json={**READ, "subject": {"type": "agent", "id": ""}},
                   headers=svid_header(tds["other.org"].jwt_svid()))
        assert r.status_code == 200 and delegation_path(r) == [other_id] and r.json()["decision"] is False


@pytest.mark.parametrize("mode", ["optional", "required"])
def test_a_body_naming_another_principal_than_the_proven_one_is_403(request, tds, mode):
    c = request.getfixturevalue(mode)
    y = tds["example.org"].jwt_svid(sub=OTHER_AGENT)  # proves agent y
    r = c.post("/access/v1/evaluation", json=READ, headers=svid_header(y))  # body names agent x
    assert r.status_code == 403, r.text
    r = c.post("/v1/decide", json={"principal": {"kind": "agent", "id": AGENT}, "action": "read",
                                   "resource": {"type": "repo", "id": "r"}}, headers=svid_header(y))
    assert r.status_code == 403, r.text
    # one item of a batch naming x is enough to refuse the whole batch
    batch = {"subject": {"type": "agent", "id": OTHER_AGENT},
             "evaluations": [{"action": {"name": "deploy"}, "resource": {"type": "service", "id": "s"}},
                             {"subject": {"type": "agent", "id": AGENT}, "action": {"name": "read"},
                              "resource": {"type": "repo", "id": "r"}}]}
    r = c.post("/access/v1/evaluations", json=batch, headers=svid_header(y))
    assert r.status_code == 403, r.text
    r = c.post("/access/v1/search/resource", json={"subject": {"type": "agent", "id": AGENT},
                                                   "action": {"name": "read"}, "resource": {"type": "repo"}},
               headers=svid_header(y))
    assert r.status_code == 403, r.text


def test_required_proof_refuses_requests_without_it(required):
    r = required.post("/access/v1/evaluation", json=READ)
    assert r.status_code == 401
    r = required.post("/access/v1/evaluations", json={"evaluations": [READ]})
    assert r.status_code == 401
    r = required.post("/v1/decide", json={"principal": {"kind": "agent", "id": AGENT}, "action": "read",
                                          "resource": {"type": "repo", "id": "r"}})
    assert r.status_code == 401


def test_required_proof_refuses_a_subject_search(required, tds):
    body = {"subject": {"type": "agent"}, "action": {"name": "read"}, "resource": {"type": "repo", "id": "r"}}
    r = required.post("/access/v1/search/subject", json=body, headers=svid_header(tds["example.org"].jwt_svid()))
    assert r.status_code == 403, r.text


def test_proven_by_cannot_be_asserted_in_the_body(optional):
    spoof = {**DEPLOY, "subject": {"type": "agent", "id": AGENT, "properties": {"proven_by": "x509-svid"}}}
    r = optional.post("/access/v1/evaluation", json=spoof)
    assert r.status_code == 200 and r.json()["decision"] is False, r.text
    r = optional.post("/v1/decide", json={"principal": {"kind": "agent", "id": AGENT,
                                                        "attrs": {"proven_by": "jwt-svid"}},
                                          "action": "deploy", "resource": {"type": "service", "id": "s"}})
    assert r.status_code == 200 and r.json()["decision"] == "deny", r.text


def test_two_svid_headers_are_refused(optional, tds):
    good = tds["example.org"].jwt_svid()
    evil = tds["example.org"].jwt_svid(sub=OTHER_AGENT)
    r = optional.post("/access/v1/evaluation", json=READ,
                      headers=[("X-Workload-SVID", good), ("X-Workload-SVID", evil)])
    assert r.status_code == 401, r.text


def test_a_bundle_that_becomes_unreadable_keeps_its_last_good_keys(tmp_path, tds):
    ex = tds["example.org"]
    d = tmp_path / "b"
    p = write_bundle(d, ex)
    v = WorkloadVerifier(TrustBundles(str(d), recheck=0), audience=AUD)
    assert v.verify_jwt_svid(ex.jwt_svid()).spiffe_id == AGENT
    p.write_text("{ not json")
    assert v.verify_jwt_svid(ex.jwt_svid()).spiffe_id == AGENT  # still the old, verified keys
    with pytest.raises(ProofError):  # and nothing from the broken file
        v.verify_jwt_svid(ex.jwt_svid(key=ec.generate_private_key(ec.SECP256R1())))


# ------------------------------------------------------------------------------ X.509-SVIDs

def _scope(cert) -> dict:
    return {"headers": [], "extensions": {"tls": {"client_cert_chain": [
        cert.public_bytes(serialization.Encoding.PEM).decode()]}}}


@pytest.fixture(scope="module")
def x509_verifier(bundles):
    return WorkloadVerifier(TrustBundles(str(bundles)), audience=AUD, trust_domains=("example.org", "other.org"))


def test_x509_attacks_are_refused(x509_verifier, tds):
    ex, other = tds["example.org"], tds["other.org"]
    attacks = {
        # other.org's CA issuing an example.org id
        "foreign-ca": other.x509_svid([AGENT], signer=other),
        # a self-made CA with example.org's name
        "rogue-ca": TrustDomainCA("example.org").x509_svid([AGENT]),
        "expired": ex.x509_svid([AGENT], hours=-0.5, not_before_minutes=120),
        "two-uri-sans": ex.x509_svid([AGENT, OTHER_AGENT]),
        "ca-as-leaf": ex.x509_svid([AGENT], ca=True),
    }
    for name, (cert, _) in attacks.items():
        with pytest.raises(ProofError) as e:
            x509_verifier.prove(_scope(cert))
        assert e.value.status == 401, name
    # the control: a proper X.509-SVID of example.org proves its id
    assert x509_verifier.prove(_scope(ex.x509_svid([AGENT])[0])).spiffe_id == AGENT
