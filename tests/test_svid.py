"""Proven workload identity (issue 13 part 3): a SPIFFE JWT-SVID (X-Workload-SVID) or an
X.509-SVID (mutual TLS) proves the decision's principal (docs/server.md#workload-identity).

The trust domains, their CAs, SVIDs and bundles are made here the way SPIRE issues them:
an X.509-SVID is a leaf with one URI SAN spiffe://example.org/agent/x signed by the trust
domain's CA, valid for an hour; a JWT-SVID is ES256 with a kid, sub = the SPIFFE id, aud,
exp; the bundle is the SPIFFE bundle JWKS (x509-svid keys with x5c, jwt-svid keys with a kid)."""

from __future__ import annotations

import base64
import datetime
import json
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest

pytest.importorskip("spiffe")

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_server_harness import SERVE, LiveServer, free_port  # noqa: E402

from policylang.server import ServiceConfig, create_app  # noqa: E402
from policylang.server.identity import TrustBundles, WorkloadVerifier  # noqa: E402

AGENT = "spiffe://example.org/agent/x"
OTHER_AGENT = "spiffe://example.org/agent/y"
AUD = "policylang-pdp"

POLICY = '''
@id("agent-x-reads")
permit agent to read on repo
  when principal.id == "spiffe://example.org/agent/x"
  because "agent x reads repositories"

@id("proven-agents-deploy")
permit agent to deploy on service
  when principal.proven_by in ["jwt-svid", "x509-svid"]
  because "only proven workloads deploy"
'''

READ = {"subject": {"type": "agent", "id": AGENT}, "action": {"name": "read"},
        "resource": {"type": "repo", "id": "acme/api"}}
DEPLOY = {"subject": {"type": "agent", "id": AGENT}, "action": {"name": "deploy"},
          "resource": {"type": "service", "id": "payments"}}


# ------------------------------------------------------------------ a trust domain, SPIRE style

def _now():
    return datetime.datetime.now(datetime.timezone.utc)


class TrustDomainCA:
    """One trust domain: its X.509 CA and its JWT signing key, issuing SVIDs as SPIRE does."""

    def __init__(self, name: str, kid: str | None = None):
        self.name = name
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.jwt_key = ec.generate_private_key(ec.SECP256R1())
        self.kid = kid or f"{name}-jwt-1"
        subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE"),
                             x509.NameAttribute(NameOID.SERIAL_NUMBER, name)])
        ski = x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key())
        self.ca = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(self.ca_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(_now() - datetime.timedelta(minutes=5))
                   .not_valid_after(_now() + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False, key_agreement=False,
                                                key_cert_sign=True, crl_sign=True, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .add_extension(ski, critical=False)
                   .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{name}")]),
                                  critical=False)
                   .sign(self.ca_key, hashes.SHA256()))

    # -- X.509-SVIDs ----------------------------------------------------------------

    def x509_svid(self, uris=None, *, dns=(), hours=1.0, not_before_minutes=5, signer=None, ca=False):
        """(leaf certificate, its key): one URI SAN, signed by this CA (or ``signer``'s)."""
        signer = signer or self
        key = ec.generate_private_key(ec.SECP256R1())
        uris = [f"spiffe://{self.name}/agent/x"] if uris is None else uris
        sans = [x509.UniformResourceIdentifier(u) for u in uris] + [x509.DNSName(d) for d in dns]
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE")]))
             .issuer_name(signer.ca.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(_now() - datetime.timedelta(minutes=not_before_minutes))
             .not_valid_after(_now() + datetime.timedelta(hours=hours))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
             .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                          data_encipherment=False, key_agreement=True, key_cert_sign=ca,
                                          crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                            critical=False)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.ca_key.public_key()),
                            critical=False))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return b.sign(signer.ca_key, hashes.SHA256()), key

    # -- JWT-SVIDs ------------------------------------------------------------------

    def jwt_svid(self, sub=None, *, aud=AUD, exp=300, kid=None, key=None, alg="ES256", **claims) -> str:
        now = int(time.time())
        payload = {"sub": sub or f"spiffe://{self.name}/agent/x", "aud": aud if isinstance(aud, list) else [aud],
                   "iat": now, "exp": now + exp, **claims}
        return jwt.encode(payload, key or self.jwt_key, algorithm=alg, headers={"kid": kid or self.kid, "typ": "JWT"})

    # -- the bundle -----------------------------------------------------------------

    def jwt_jwk(self, key=None, kid=None) -> dict:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk((key or self.jwt_key).public_key()))
        jwk.update(kid=kid or self.kid, use="jwt-svid")
        return jwk

    def bundle(self, *, jwt_keys=None, x509=True) -> dict:
        """The SPIFFE bundle (``spire-server bundle show -format spiffe``)."""
        keys = []
        if x509:
            jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ca_key.public_key()))
            jwk.update(use="x509-svid",
                       x5c=[base64.b64encode(self.ca.public_bytes(serialization.Encoding.DER)).decode()])
            keys.append(jwk)
        keys.extend(jwt_keys if jwt_keys is not None else [self.jwt_jwk()])
        return {"keys": keys, "spiffe_sequence": 1, "spiffe_refresh_hint": 300}

    def ca_pem(self) -> bytes:
        return self.ca.public_bytes(serialization.Encoding.PEM)


def write_pair(path: Path, cert, key) -> tuple[str, str]:
    cp, kp = path.with_suffix(".pem"), path.with_suffix(".key")
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    return str(cp), str(kp)


def write_bundle(directory: Path, td: TrustDomainCA, **kw) -> Path:
    directory.mkdir(exist_ok=True)
    p = directory / f"{td.name}.json"
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(td.bundle(**kw)))
    os.replace(tmp, p)
    return p


def policy_dir(tmp: Path, text: str = POLICY) -> Path:
    d = tmp / "policies"
    d.mkdir(exist_ok=True)
    (d / "p.policy").write_text(text)
    return d


def svid_header(token: str) -> dict:
    return {"X-Workload-SVID": token}


def delegation_path(r) -> list:
    return r.json()["context"]["delegation_path"]


@pytest.fixture(scope="module")
def domains():
    return {"example.org": TrustDomainCA("example.org"), "other.org": TrustDomainCA("other.org")}


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, domains):
    d = tmp_path_factory.mktemp("bundles") / "bundles"
    for td in domains.values():
        write_bundle(d, td)
    return d


def _app(tmp: Path, bundle_dir: Path, **kw):
    cfg = ServiceConfig(path=str(policy_dir(tmp)), svid_bundle=str(bundle_dir), svid_audience=AUD, **kw)
    return create_app(cfg, watch=False)


# ------------------------------------------------------------------------------ JWT-SVID, in process

def test_a_jwt_svid_is_the_principal_of_the_decision(tmp_path, domains, bundle_dir):
    with TestClient(_app(tmp_path, bundle_dir)) as c:
        tok = domains["example.org"].jwt_svid()
        # the body names no id: the proven one is filled in, and the decision names it
        body = {**READ, "subject": {"type": "agent", "id": ""}}
        r = c.post("/access/v1/evaluation", json=body, headers=svid_header(tok))
        assert r.status_code == 200, r.text
        assert r.json()["decision"] is True and delegation_path(r) == [AGENT]
        # the same id in the body is fine; the proof adds proven_by for the policy
        r = c.post("/access/v1/evaluation", json=DEPLOY, headers=svid_header(tok))
        assert r.json()["decision"] is True, r.text
        assert r.json()["context"]["rules"] == ["proven-agents-deploy"]
        # /v1/decide binds principal.id the same way
        r = c.post("/v1/decide", json={"principal": {"kind": "agent"}, "action": "read",
                                       "resource": {"type": "repo", "id": "acme/api"}}, headers=svid_header(tok))
        assert r.status_code == 200, r.text
        assert r.json()["decision"] == "allow" and r.json()["delegation_path"] == [AGENT]


def test_without_proof_the_body_is_decided_as_before_and_proven_by_cannot_be_asserted(tmp_path, bundle_dir):
    with TestClient(_app(tmp_path, bundle_dir)) as c:
        r = c.post("/access/v1/evaluation", json=READ)
        assert r.status_code == 200 and r.json()["decision"] is True  # asserted, as without the option
        spoof = {**DEPLOY, "subject": {"type": "agent", "id": AGENT, "properties": {"proven_by": "jwt-svid"}}}
        r = c.post("/access/v1/evaluation", json=spoof)
        assert r.status_code == 200
        assert r.json()["decision"] is False and r.json()["context"]["rules"] == []


def test_a_batch_binds_every_item_to_the_proof(tmp_path, domains, bundle_dir):
    with TestClient(_app(tmp_path, bundle_dir)) as c:
        tok = domains["example.org"].jwt_svid()
        body = {"subject": {"type": "agent", "id": AGENT},
                "evaluations": [{"action": {"name": "read"}, "resource": {"type": "repo", "id": "a"}},
                                {"subject": {"type": "agent", "id": ""}, "action": {"name": "deploy"},
                                 "resource": {"type": "service", "id": "s"}}],
                "options": {"decision_context": True}}  # batch items: context only when asked
        r = c.post("/access/v1/evaluations", json=body, headers=svid_header(tok))
        assert r.status_code == 200, r.text
        assert [e["decision"] for e in r.json()["evaluations"]] == [True, True]
        assert [e["context"]["delegation_path"] for e in r.json()["evaluations"]] == [[AGENT], [AGENT]]


def test_required_proof_refuses_no_proof_401_and_another_principal_403(tmp_path, domains, bundle_dir):
    with TestClient(_app(tmp_path, bundle_dir, require_proven_principal=True)) as c:
        r = c.post("/access/v1/evaluation", json=READ)
        assert r.status_code == 401 and "X-Workload-SVID" in r.json()["error"]["message"]
        r = c.post("/v1/decide", json={"principal": {"kind": "agent", "id": AGENT}, "action": "read",
                                       "resource": {"type": "repo", "id": "r"}})
        assert r.status_code == 401
        tok = domains["example.org"].jwt_svid(sub=OTHER_AGENT)
        r = c.post("/access/v1/evaluation", json=READ, headers=svid_header(tok))
        assert r.status_code == 403 and OTHER_AGENT in r.json()["error"]["message"]
        ok = c.post("/access/v1/evaluation", json=READ, headers=svid_header(domains["example.org"].jwt_svid()))
        assert ok.status_code == 200 and ok.json()["decision"] is True


def test_the_jwt_bundle_is_re_read_when_it_rotates(tmp_path, domains):
    td = domains["example.org"]
    bundles = tmp_path / "rot"
    write_bundle(bundles, td)
    with TestClient(_app(tmp_path, bundles)) as c:
        new_key = ec.generate_private_key(ec.SECP256R1())
        fresh = td.jwt_svid(kid="rotated-2", key=new_key)
        assert c.post("/access/v1/evaluation", json=READ, headers=svid_header(fresh)).status_code == 401
        write_bundle(bundles, td, jwt_keys=[td.jwt_jwk(key=new_key, kid="rotated-2")])  # the old key goes
        r = c.post("/access/v1/evaluation", json=READ, headers=svid_header(fresh))
        assert r.status_code == 200 and delegation_path(r) == [AGENT], r.text
        time.sleep(1.1)  # past the recheck interval: the removed key no longer verifies
        assert c.post("/access/v1/evaluation", json=READ, headers=svid_header(td.jwt_svid())).status_code == 401


# ------------------------------------------------------------------------- X.509-SVID, the verifier

def test_an_x509_svid_client_certificate_proves_its_spiffe_id(domains, bundle_dir):
    v = WorkloadVerifier(TrustBundles(str(bundle_dir)), audience=AUD)
    cert, _ = domains["example.org"].x509_svid()
    scope = {"headers": [], "extensions": {"tls": {"client_cert_chain": [
        cert.public_bytes(serialization.Encoding.PEM).decode()]}}}
    proof = v.prove(scope)
    assert proof is not None and (proof.spiffe_id, proof.trust_domain, proof.method) == (AGENT, "example.org",
                                                                                           "x509-svid")
    # the JWT-SVID header wins over the certificate (a PEP forwarding an agent's SVID)
    scope["headers"] = [(b"x-workload-svid", domains["example.org"].jwt_svid(sub=OTHER_AGENT).encode())]
    assert v.prove(scope).spiffe_id == OTHER_AGENT


def test_a_pem_bundle_file_with_trust_domain(tmp_path, domains):
    td = domains["example.org"]
    pem = tmp_path / "ca.pem"
    pem.write_bytes(td.ca_pem())
    with pytest.raises(ValueError, match="--trust-domain"):
        TrustBundles(str(pem))
    v = WorkloadVerifier(TrustBundles(str(pem), "example.org"))
    cert, _ = td.x509_svid()
    assert v.verify_x509_svid(cert, AGENT).spiffe_id == AGENT


# ------------------------------------------------------------------ over a real serve: mTLS and JWT

@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory, domains):
    """``policylang serve`` over mutual TLS: the client CA file holds both trust domains'
    CAs, the SVID bundle directory both bundles, --trust-domain example.org only."""
    tmp = tmp_path_factory.mktemp("svid-mtls")
    ex, other = domains["example.org"], domains["other.org"]
    bundles = tmp / "bundles"
    write_bundle(bundles, ex)
    write_bundle(bundles, other)
    client_ca = tmp / "client-ca.pem"
    client_ca.write_bytes(ex.ca_pem() + other.ca_pem())
    server_cert, server_key = write_pair(tmp / "server", *ex.x509_svid(["spiffe://example.org/policylang"],
                                                                       dns=["localhost"]))
    certs = {
        "x": write_pair(tmp / "x", *ex.x509_svid([AGENT])),
        "y": write_pair(tmp / "y", *ex.x509_svid([OTHER_AGENT])),
        # signed by other.org's CA (which the TLS layer trusts) but claiming example.org
        "impostor": write_pair(tmp / "impostor", *other.x509_svid([AGENT], signer=other)),
        "two-sans": write_pair(tmp / "two", *ex.x509_svid([AGENT, OTHER_AGENT])),
        "foreign": write_pair(tmp / "foreign", *other.x509_svid(["spiffe://other.org/agent/z"])),
    }
    audit = tmp / "audit.jsonl"
    args = [policy_dir(tmp), "--tls-cert", server_cert, "--tls-key", server_key, "--client-ca", client_ca,
            "--svid-bundle", bundles, "--svid-audience", AUD, "--trust-domain", "example.org",
            "--require-proven-principal", "--audit", audit]
    port = free_port()
    log = tmp / "serve.log"
    proc = subprocess.Popen(SERVE + [str(a) for a in args] + ["--port", str(port)], stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    ca_file = tmp / "server-ca.pem"
    ca_file.write_bytes(ex.ca_pem())

    def client(name):
        ctx = ssl.create_default_context(cafile=str(ca_file))
        ctx.load_cert_chain(*certs[name])
        return httpx.Client(base_url=f"https://localhost:{port}", verify=ctx, timeout=10)

    deadline = time.monotonic() + 30
    while True:
        try:
            with client("x") as c:
                if c.get("/healthz").status_code == 200:
                    break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    try:
        yield client, audit
    finally:
        proc.terminate()
        proc.wait(15)


def test_mtls_x509_svid_is_the_principal_and_the_audit_records_it(mtls_server):
    client, audit = mtls_server
    with client("x") as c:
        body = {**DEPLOY, "subject": {"type": "agent", "id": ""}}
        r = c.post("/access/v1/evaluation", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["decision"] is True and delegation_path(r) == [AGENT]
        assert r.json()["context"]["rules"] == ["proven-agents-deploy"]
    records = [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]
    principals = [rec["request"]["principal"] for rec in records if rec.get("event") == "decide"]
    assert principals and principals[-1]["id"] == AGENT
    assert principals[-1]["attrs"]["proven_by"] == "x509-svid"


def test_mtls_a_body_naming_another_principal_is_403(mtls_server):
    client, _ = mtls_server
    with client("y") as c:
        r = c.post("/access/v1/evaluation", json=READ)  # y's certificate, x's id in the body
        assert r.status_code == 403, r.text
        r = c.post("/v1/decide", json={"principal": {"kind": "agent", "id": AGENT}, "action": "read",
                                       "resource": {"type": "repo", "id": "r"}})
        assert r.status_code == 403, r.text


@pytest.mark.parametrize("who", ["impostor", "two-sans"])
def test_mtls_a_certificate_that_is_no_svid_of_its_trust_domain_is_401(mtls_server, who):
    client, _ = mtls_server
    with client(who) as c:
        r = c.post("/access/v1/evaluation", json=READ)
        assert r.status_code == 401, r.text


def test_mtls_a_foreign_trust_domain_proves_nothing_so_required_proof_is_401(mtls_server):
    client, _ = mtls_server
    with client("foreign") as c:
        body = {**READ, "subject": {"type": "agent", "id": "spiffe://other.org/agent/z"}}
        assert c.post("/access/v1/evaluation", json=body).status_code == 401


def test_mtls_a_jwt_svid_header_wins_over_the_certificate(mtls_server, domains):
    client, _ = mtls_server
    with client("y") as c:  # a PEP with its own certificate forwards agent x's JWT-SVID
        r = c.post("/access/v1/evaluation", json=READ, headers=svid_header(domains["example.org"].jwt_svid()))
        assert r.status_code == 200 and r.json()["decision"] is True and delegation_path(r) == [AGENT]


def test_serve_jwt_svid_over_http(tmp_path, domains):
    bundles = tmp_path / "bundles"
    write_bundle(bundles, domains["example.org"])
    with LiveServer(policy_dir(tmp_path), "--svid-bundle", bundles, "--svid-audience", AUD,
                    "--require-proven-principal") as server:
        r = server.client.post("/access/v1/evaluation", json=READ,
                               headers=svid_header(domains["example.org"].jwt_svid()))
        assert r.status_code == 200 and r.json()["decision"] is True and delegation_path(r) == [AGENT]
        assert server.client.post("/access/v1/evaluation", json=READ).status_code == 401


# ------------------------------------------------------------- the proven kind (--svid-kind)

KIND_POLICY = POLICY + '''
@id("people-approve")
permit human to approve on payment
  because "any person may approve"
'''
APPROVE = {"action": {"name": "approve"}, "resource": {"type": "payment", "id": "p-1"}}
KINDS = (("spiffe://example.org/agent/*", "agent"), ("spiffe://example.org/people/**", "human"))


def _kind_app(tmp: Path, bundle_dir: Path):
    cfg = ServiceConfig(path=str(policy_dir(tmp, KIND_POLICY)), svid_bundle=str(bundle_dir), svid_audience=AUD,
                        svid_kinds=KINDS)
    return create_app(cfg, watch=False)


def test_without_svid_kinds_a_proven_workload_may_claim_any_kind(tmp_path, domains, bundle_dir):
    """The attack --svid-kind closes: the kind selects rules, and by default it is the body's."""
    app = create_app(ServiceConfig(path=str(policy_dir(tmp_path, KIND_POLICY)), svid_bundle=str(bundle_dir),
                                   svid_audience=AUD), watch=False)
    with TestClient(app) as c:
        r = c.post("/access/v1/evaluation", json={**APPROVE, "subject": {"type": "human", "id": AGENT}},
                   headers=svid_header(domains["example.org"].jwt_svid()))
        assert r.status_code == 200 and r.json()["decision"] is True  # an agent decided as a person


def test_svid_kinds_bind_the_kind_to_the_proven_id(tmp_path, domains, bundle_dir):
    with TestClient(_kind_app(tmp_path, bundle_dir)) as c:
        tok = domains["example.org"].jwt_svid()  # spiffe://example.org/agent/x: an agent
        # claiming to be a person is refused, naming the field and the proven kind
        for body, path in (({**APPROVE, "subject": {"type": "human", "id": AGENT}}, "/access/v1/evaluation"),
                           ({"principal": {"kind": "human", "id": AGENT}, "action": "approve",
                             "resource": {"type": "payment", "id": "p-1"}}, "/v1/decide")):
            r = c.post(path, json=body, headers=svid_header(tok))
            assert r.status_code == 403, r.text
            assert "names 'human'" in r.json()["error"]["message"] and "'agent'" in r.json()["error"]["message"]
        # a batch item claiming another kind refuses the whole batch
        batch = {"subject": {"type": "agent", "id": AGENT},
                 "evaluations": [{"action": {"name": "read"}, "resource": {"type": "repo", "id": "a"}},
                                 {"subject": {"type": "human", "id": AGENT}, **APPROVE}]}
        r = c.post("/access/v1/evaluations", json=batch, headers=svid_header(tok))
        assert r.status_code == 403 and "evaluations[1].subject.type" in r.json()["error"]["message"]
        # the proven kind is filled in when the body names none, and decided as such
        r = c.post("/access/v1/evaluation", json={**READ, "subject": {"type": "", "id": ""}},
                   headers=svid_header(tok))
        assert r.status_code == 200 and r.json()["decision"] is True and delegation_path(r) == [AGENT]
        r = c.post("/v1/decide", json={"principal": {"id": AGENT}, "action": "read",
                                       "resource": {"type": "repo", "id": "acme/api"}}, headers=svid_header(tok))
        assert r.status_code == 200 and r.json()["decision"] == "allow", r.text
        # a person's SVID is a human, and approves
        person = domains["example.org"].jwt_svid(sub="spiffe://example.org/people/eng/ana")
        r = c.post("/access/v1/evaluation", json={**APPROVE, "subject": {"type": "human", "id": ""}},
                   headers=svid_header(person))
        assert r.status_code == 200 and r.json()["decision"] is True
        # a proven id no pattern matches has no known kind: 403, whatever the body says
        odd = domains["example.org"].jwt_svid(sub="spiffe://example.org/ci/runner")
        r = c.post("/access/v1/evaluation", json={**READ, "subject": {"type": "agent", "id": ""}},
                   headers=svid_header(odd))
        assert r.status_code == 403 and "matches no --svid-kind pattern" in r.json()["error"]["message"]
        # without a proof the body is decided as it says (unless proof is required)
        r = c.post("/access/v1/evaluation", json=READ)
        assert r.status_code == 200 and r.json()["decision"] is True


def test_the_service_config_keeps_svid_kinds_through_its_dict():
    cfg = ServiceConfig(path="p", svid_bundle="b", svid_audience=AUD, svid_kinds=KINDS)
    again = ServiceConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again.svid_kinds == KINDS


def test_serve_svid_kind_over_http(tmp_path, domains):
    bundles = tmp_path / "bundles"
    write_bundle(bundles, domains["example.org"])
    with LiveServer(policy_dir(tmp_path, KIND_POLICY), "--svid-bundle", bundles, "--svid-audience", AUD,
                    "--svid-kind", "spiffe://example.org/agent/*=agent") as server:
        tok = domains["example.org"].jwt_svid()
        r = server.client.post("/access/v1/evaluation", json={**APPROVE, "subject": {"type": "human", "id": AGENT}},
                               headers=svid_header(tok))
        assert r.status_code == 403 and "--svid-kind" in r.json()["error"]["message"]
        r = server.client.post("/access/v1/evaluation", json=READ, headers=svid_header(tok))
        assert r.status_code == 200 and r.json()["decision"] is True


# ------------------------------------------------------------------------------- option checks

@pytest.mark.parametrize("args, code, text", [
    (["--require-proven-principal"], 2, "--svid-bundle"),
    (["--svid-audience", AUD], 2, "--svid-bundle"),
    (["--svid-bundle", "{bundles}"], 2, "--svid-audience"),
    (["--svid-bundle", "{pem}", "--svid-audience", AUD], 1, "--trust-domain"),
    (["--svid-bundle", "{bundles}", "--svid-audience", AUD, "--trust-domain", "Not A Domain"], 1, "trust domain"),
    (["--svid-kind", "spiffe://example.org/agent/*=agent"], 2, "--svid-kind needs --svid-bundle"),
    (["--svid-bundle", "{bundles}", "--svid-audience", AUD, "--svid-kind", "agent"], 2, "expected PATTERN=KIND"),
    (["--svid-bundle", "{bundles}", "--svid-audience", AUD, "--svid-kind", "example.org/*=agent"], 2,
     "expected PATTERN=KIND"),
    (["--svid-bundle", "{bundles}", "--svid-audience", AUD, "--svid-kind", "spiffe://example.org/*=not a kind"],
     2, "expected PATTERN=KIND"),
])
def test_bad_identity_options_refuse_to_start(tmp_path, domains, args, code, text):
    bundles = tmp_path / "bundles"
    write_bundle(bundles, domains["example.org"])
    pem = tmp_path / "ca.pem"
    pem.write_bytes(domains["example.org"].ca_pem())
    args = [a.format(bundles=bundles, pem=pem) for a in args]
    p = subprocess.run(SERVE + [str(policy_dir(tmp_path))] + args + ["--port", str(free_port())],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == code, (p.returncode, p.stderr)
    assert text in p.stderr
