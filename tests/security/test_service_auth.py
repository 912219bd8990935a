"""Authentication of the service's own routes (issue 11): bearer JWTs against a JWKS,
mutual TLS with the client certificate's URI SAN, the admin policy set, and the loopback
rule. Every test runs a real `policylang serve` on 127.0.0.1; keys, a CA and
certificates are made here with `cryptography`."""

from __future__ import annotations

import datetime
import json
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from test_server_harness import SERVE, LiveServer  # noqa: E402

POLICY = '''
@id("deploys-need-a-human")
require approval for agent to deploy on service
  by "sre"
  because "deploys are high impact"

@id("readers-read")
permit agent to read on repo
  grant "repo:read:" + resource.id for 10m
  because "agents read repositories"
'''
ENTITIES = {"human": {"user:alice": {"groups": ["sre"]}, "user:mallory": {"groups": []},
                      "spiffe://example.org/ops/alice": {"groups": ["sre"]}}}
DEPLOY = {"principal": {"id": "agent:deployer", "kind": "agent"}, "action": "deploy",
          "resource": {"type": "service", "id": "payments"}, "intent": {"task_id": "T-2"}}
READ = {"principal": {"id": "agent:reader", "kind": "agent"}, "action": "read",
        "resource": {"type": "repo", "id": "acme/api"}, "intent": {"task_id": "T-1"}}
AUD = "policylang-admin"
ISS = "https://idp.test"

ADMIN = '''
@id("only-sre-approve")
permit caller to approve, deny, open_approval, list_approvals, get_approval on approval
  when principal.role == "sre"
  because "SREs decide approvals"

@id("minters")
permit caller to issue_token, refresh_token, verify_token, revoke_token on token
  because "any caller mints"
'''


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _jwks(key, kid="k1") -> dict:
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid=kid, alg="ES256", use="sig")
    return {"keys": [jwk]}


def _token(key, sub="user:alice", kid="k1", aud=AUD, iss=ISS, exp=300, **claims) -> str:
    now = int(time.time())
    payload = {"sub": sub, "aud": aud, "iss": iss, "iat": now, "exp": now + exp, **claims}
    return jwt.encode(payload, key, algorithm="ES256", headers={"kid": kid})


def _policy_dir(tmp: Path) -> Path:
    d = tmp / "policies"
    d.mkdir()
    (d / "p.policy").write_text(POLICY)
    (d / "people.entities.json").write_text(json.dumps(ENTITIES))
    return d


def _keys_file(tmp: Path) -> Path:
    from policylang.credentials import KeySet
    p = tmp / "signing.json"
    KeySet.generate().save(p)
    return p


@pytest.fixture(scope="module")
def jwt_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jwtauth")
    key = _key()
    (tmp / "jwks.json").write_text(json.dumps(_jwks(key)))
    admin = tmp / "admin"
    admin.mkdir()
    (admin / "admin.policy").write_text(ADMIN)
    args = [_policy_dir(tmp), "--store", f"sqlite:///{tmp / 'state.db'}", "--create-store", "--keys", _keys_file(tmp),
            "--jwks", tmp / "jwks.json", "--jwt-audience", AUD, "--jwt-issuer", ISS, "--admin-policies", admin]
    with LiveServer(*args) as server:
        yield server, key


def _auth(tok: str) -> dict:
    return {"Authorization": f"Bearer {tok}"}


def _open_ticket(server, tok) -> str:
    r = server.client.post("/v1/approvals", json={"request": DEPLOY}, headers=_auth(tok))
    assert r.status_code == 201, r.text
    return r.json()["approval"]["id"]


def test_a_valid_jwt_is_the_caller_and_the_recorded_approver(jwt_env):
    server, key = jwt_env
    tok = _token(key, sub="user:alice", role="sre")
    tid = _open_ticket(server, tok)
    # the body names someone else: the authenticated caller is recorded all the same
    r = server.client.post(f"/v1/approvals/{tid}/approve", json={"approver": "user:mallory"}, headers=_auth(tok))
    assert r.status_code == 200, r.text
    recorded = [a["approver"] if isinstance(a, dict) else a for a in r.json()["approval"]["approvals"]]
    assert recorded and all(a == "user:alice" for a in recorded), r.json()


def test_a_caller_who_is_no_approver_cannot_approve_by_naming_one(jwt_env):
    server, key = jwt_env
    alice = _token(key, sub="user:alice", role="sre")
    tid = _open_ticket(server, alice)
    mallory = _token(key, sub="user:mallory", role="sre")  # the admin policy lets her try
    r = server.client.post(f"/v1/approvals/{tid}/approve", json={"approver": "user:alice"}, headers=_auth(mallory))
    assert r.status_code == 403, r.text
    assert server.client.get(f"/v1/approvals/{tid}", headers=_auth(alice)).json()["approval"]["status"] == "pending"


@pytest.mark.parametrize("bad", ["none", "forged", "expired", "audience", "issuer", "alg-none", "garbage", "basic"])
def test_bad_credentials_are_401(jwt_env, bad):
    server, key = jwt_env
    other = _key()
    headers = {
        "none": {},
        "forged": _auth(_token(other, role="sre")),  # signed by a key not in the JWKS, same kid
        "expired": _auth(_token(key, role="sre", exp=-3600)),
        "audience": _auth(_token(key, role="sre", aud="someone-else")),
        "issuer": _auth(_token(key, role="sre", iss="https://evil.test")),
        "alg-none": _auth(jwt.encode({"sub": "user:alice", "aud": AUD, "iss": ISS, "exp": int(time.time()) + 60},
                                     None, algorithm="none")),
        "garbage": _auth("not-a-jwt"),
        "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
    }[bad]
    for method, path, body in (("POST", "/v1/approvals", {"request": DEPLOY}), ("POST", "/v1/tokens", {"request": READ}),
                               ("POST", "/v1/tokens/revoke", {"task": "T-1"}), ("GET", "/v1/approvals", None)):
        r = server.client.request(method, path, json=body, headers=headers)
        assert r.status_code == 401, (bad, path, r.text)
        assert r.headers.get("www-authenticate", "").startswith("Bearer")


def test_the_admin_policy_denies_a_caller_403(jwt_env):
    server, key = jwt_env
    dev = _token(key, sub="user:dev", role="dev")
    r = server.client.post("/v1/approvals", json={"request": DEPLOY}, headers=_auth(dev))
    assert r.status_code == 403 and "may not open_approval" in r.json()["error"]["message"], r.text
    # the same caller may mint: the admin policy permits issue_token to anyone authenticated
    r = server.client.post("/v1/tokens", json={"request": READ}, headers=_auth(dev))
    assert r.status_code == 201, r.text
    # a route no admin rule names (revoke_task through /v1/tokens/revoke) is refused
    r = server.client.post("/v1/tokens/revoke", json={"task": "T-1"}, headers=_auth(dev))
    assert r.status_code == 403, r.text


def test_decision_routes_and_jwks_need_no_caller_credentials(jwt_env):
    server, _key_ = jwt_env
    assert server.client.post("/v1/decide", json=READ).status_code == 200
    assert server.client.get("/.well-known/jwks.json").status_code == 200


def test_a_rotated_jwks_file_is_picked_up(tmp_path):
    old, new = _key(), _key()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(_jwks(old, "old")))
    args = [_policy_dir(tmp_path), "--store", f"sqlite:///{tmp_path / 'state.db'}", "--create-store", "--keys", _keys_file(tmp_path),
            "--jwks", jwks, "--jwt-audience", AUD]
    with LiveServer(*args) as server:
        assert server.client.post("/v1/tokens", json={"request": READ},
                                  headers=_auth(_token(old, kid="old"))).status_code == 201
        assert server.client.post("/v1/tokens", json={"request": READ},
                                  headers=_auth(_token(new, kid="new"))).status_code == 401
        jwks.write_text(json.dumps({"keys": _jwks(new, "new")["keys"]}))
        r = server.client.post("/v1/tokens", json={"request": READ}, headers=_auth(_token(new, kid="new")))
        assert r.status_code == 201, r.text
        assert server.client.post("/v1/tokens", json={"request": READ},
                                  headers=_auth(_token(old, kid="old"))).status_code == 401


# --------------------------------------------------------------------------- mTLS

def _cert(subject_cn, issuer_key, issuer_name, public_key, *, ca=False, uris=(), dns=()):
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
         .public_key(public_key).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    sans = [x509.UniformResourceIdentifier(u) for u in uris] + [x509.DNSName(d) for d in dns]
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path: Path, key, cert) -> tuple[Path, Path]:
    kp, cp = path.with_suffix(".key"), path.with_suffix(".pem")
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cp, kp


@pytest.fixture(scope="module")
def mtls_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mtls")
    ca_key = _key()
    ca = _cert("test CA", ca_key, None, ca_key.public_key(), ca=True)
    ca_pem = tmp / "ca.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    skey = _key()
    server_cert, server_key = _write(tmp / "server", skey, _cert("localhost", ca_key, ca.subject, skey.public_key(),
                                                                 dns=["localhost"]))
    clients = {}
    for name, uris in (("alice", ["spiffe://example.org/ops/alice"]), ("eve", ["spiffe://example.org/ops/eve"])):
        k = _key()
        clients[name] = _write(tmp / name, k, _cert(name, ca_key, ca.subject, k.public_key(), uris=uris))
    rogue_ca_key = _key()
    rogue_ca = _cert("rogue CA", rogue_ca_key, None, rogue_ca_key.public_key(), ca=True)
    k = _key()
    clients["rogue"] = _write(tmp / "rogue", k, _cert("alice", rogue_ca_key, rogue_ca.subject, k.public_key(),
                                                      uris=["spiffe://example.org/ops/alice"]))
    args = [_policy_dir(tmp), "--store", f"sqlite:///{tmp / 'state.db'}", "--create-store", "--keys", _keys_file(tmp),
            "--tls-cert", server_cert, "--tls-key", server_key, "--client-ca", ca_pem, "--host", "127.0.0.1"]
    port = _free_port()
    log = tmp / "serve.log"
    proc = subprocess.Popen(SERVE + [str(a) for a in args] + ["--port", str(port)], stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)

    def client(name=None):
        ctx = ssl.create_default_context(cafile=str(ca_pem))
        if name:
            ctx.load_cert_chain(*[str(p) for p in clients[name]])
        return httpx.Client(base_url=f"https://localhost:{port}", verify=ctx, timeout=10)

    deadline = time.monotonic() + 30
    while True:
        try:
            if client("alice").get("/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    try:
        yield client
    finally:
        proc.terminate()
        proc.wait(15)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mtls_client_uri_san_is_the_caller_and_the_approver(mtls_env):
    with mtls_env("alice") as alice:
        r = alice.post("/v1/approvals", json={"request": DEPLOY})
        assert r.status_code == 201, r.text
        tid = r.json()["approval"]["id"]
        r = alice.post(f"/v1/approvals/{tid}/approve", json={"approver": "user:alice"})
        assert r.status_code == 200, r.text
        recorded = [a["approver"] if isinstance(a, dict) else a for a in r.json()["approval"]["approvals"]]
        assert recorded == ["spiffe://example.org/ops/alice"]


def test_mtls_a_caller_not_in_the_approver_groups_cannot_approve(mtls_env):
    with mtls_env("alice") as alice, mtls_env("eve") as eve:
        tid = alice.post("/v1/approvals", json={"request": DEPLOY}).json()["approval"]["id"]
        r = eve.post(f"/v1/approvals/{tid}/approve", json={"approver": "spiffe://example.org/ops/alice"})
        assert r.status_code == 403, r.text


@pytest.mark.parametrize("who", [None, "rogue"])
def test_mtls_without_a_trusted_certificate_is_refused(mtls_env, who):
    with mtls_env(who) as c:
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            c.post("/v1/approvals", json={"request": DEPLOY})


# --------------------------------------------------------------------------- the loopback rule

def test_no_auth_on_a_non_loopback_host_refuses_to_start(tmp_path):
    p = subprocess.run(SERVE + [str(_policy_dir(tmp_path)), "--store", f"sqlite:///{tmp_path / 's.db'}",
                                "--host", "0.0.0.0", "--port", str(_free_port())],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "--jwks" in p.stderr and "--client-ca" in p.stderr and "127.0.0.1" in p.stderr


def test_jwks_without_audience_is_a_usage_error(tmp_path):
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(_jwks(_key())))
    p = subprocess.run(SERVE + [str(_policy_dir(tmp_path)), "--jwks", str(jwks)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2 and "--jwt-audience" in p.stderr
