"""`policylang token …`, `policylang approvals …` and the two example flows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from policylang.approvals import Approvals
from policylang.cli import main
from policylang.credentials import Issuer, KeySet
from policylang.store import open_store

try:
    from redis_fixture import closed_port_url, redis_server, store_url  # noqa: F401
except ImportError:  # tests/ as a package
    from tests.redis_fixture import closed_port_url, redis_server, store_url  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, input=None):
    r = CliRunner().invoke(main, [str(a) for a in args], input=input)
    return r.exit_code, r.stdout, r.stderr


DECISION = {"decision": "allow", "rules": ["r"], "reasons": [], "approvers": [], "errors": [],
            "grants": [{"rule": "r", "scopes": ["repo:read:acme/api"], "ttl": 600}],
            "delegation_path": ["user:alice", "bot"], "policy_version": "sha256:v"}
REQUEST = {"principal": {"id": "bot", "kind": "agent"}, "action": "read",
           "resource": {"type": "repo", "id": "acme/api"}, "delegation": [{"id": "user:alice", "kind": "human"}],
           "intent": {"task_id": "T-1"}}


@pytest.fixture
def minted(tmp_path, store_url):
    keys = KeySet.generate()
    keys.save(tmp_path / "keys.json")
    issuer = Issuer(keys, open_store(store_url), issuer="https://pdp.test")
    return issuer, issuer.issue(DECISION, REQUEST), str(tmp_path / "keys.json"), store_url


# -- token verify ---------------------------------------------------------------------------


def test_verify_prints_the_claims(minted):
    issuer, tok, keys, url = minted
    code, out, err = run("token", "verify", tok.jwt, "--keys", keys, "--scope", "repo:read:acme/api",
                         "--store", url, "--issuer", "https://pdp.test")
    assert code == 0, err
    assert json.loads(out)["jti"] == tok.jti and err == ""


def test_verify_without_a_store_warns(minted):
    _, tok, keys, _ = minted
    code, out, err = run("token", "verify", tok.jwt, "--keys", keys)
    assert code == 0 and json.loads(out)["sub"] == "user:alice"
    assert "revocation was not checked" in err and "issuer not checked" in err


def test_verify_reads_stdin(minted):
    _, tok, keys, url = minted
    assert run("token", "verify", "-", "--keys", keys, "--store", url, input=tok.jwt + "\n")[0] == 0


@pytest.mark.parametrize("extra, reason", [
    (["--scope", "repo:write:acme/api"], "ScopeNotGranted"),
    (["--audience", "other"], "ScopeNotGranted"),
    (["--issuer", "https://evil"], "BadSignature"),
])
def test_verify_rejections_are_one_line(minted, extra, reason):
    _, tok, keys, url = minted
    code, out, err = run("token", "verify", tok.jwt, "--keys", keys, "--store", url, *extra)
    assert code == 1 and out == ""
    assert err.startswith(f"error: token rejected ({reason})") and len(err.strip().splitlines()) == 1


def test_verify_with_a_jwks_file(tmp_path, minted):
    issuer, tok, _, url = minted
    (tmp_path / "jwks.json").write_text(json.dumps(issuer.jwks()))
    assert run("token", "verify", tok.jwt, "--keys", tmp_path / "jwks.json", "--store", url)[0] == 0


def test_revoke_then_verify_fails(minted):
    _, tok, keys, url = minted
    code, out, _ = run("token", "revoke", tok.jti, "--store", url)
    assert code == 0 and tok.jti in out
    code, _, err = run("token", "verify", tok.jwt, "--keys", keys, "--store", url)
    assert code == 1 and "(Revoked)" in err


def test_revoke_a_task(minted, tmp_path):
    _, tok, keys, url = minted
    code, out, _ = run("token", "revoke", "--task", "T-1", "--store", url, "--audit", tmp_path / "a.jsonl")
    assert code == 0 and "revoked task T-1 (1 live token)" in out and tok.jti in out
    assert run("token", "verify", tok.jwt, "--keys", keys, "--store", url)[0] == 1
    assert run("audit", "verify", tmp_path / "a.jsonl")[0] == 0


@pytest.mark.parametrize("args, code, words", [
    (["token", "verify", "x"], 2, "--keys"),
    (["token", "revoke", "--store", "sqlite:///x.db"], 2, "exactly one"),
    (["token", "revoke", "ab", "--task", "T", "--store", "sqlite:///x.db"], 2, "exactly one"),
    (["token", "revoke", "ab"], 2, "--store"),
    (["token", "verify", "x", "--keys", "k", "--leeway", "-1"], 2, "leeway"),
    (["token", "bogus"], 2, "No such command"),
])
def test_usage_errors(tmp_path, monkeypatch, args, code, words):
    monkeypatch.chdir(tmp_path)
    got, out, err = run(*args)
    assert got == code and words in out + err


def test_bad_inputs_are_one_line_errors(tmp_path, minted):
    _, tok, keys, url = minted
    (tmp_path / "bad.json").write_text("{not json")
    cases = [
        (["token", "verify", tok.jwt, "--keys", tmp_path / "missing.json"], "cannot read key file"),
        (["token", "verify", tok.jwt, "--keys", tmp_path / "bad.json"], "bad key file"),
        (["token", "verify", "garbage", "--keys", keys], "(Malformed)"),
        (["token", "verify", tok.jwt, "--keys", keys, "--leeway", "301"], "max_leeway"),
        (["token", "verify", tok.jwt, "--keys", keys, "--store", "ftp://x"], "unsupported store"),
        (["token", "verify", tok.jwt, "--keys", keys, "--store", closed_port_url()], "store unreachable"),
        (["token", "revoke", "NOT-A-JTI", "--store", url], "not a token id"),
        (["token", "revoke", "ab", "--store", closed_port_url()], "store unreachable"),
        # a mistyped store path is an error, not a fresh store that knows no revocation
        (["token", "verify", tok.jwt, "--keys", keys, "--store", f"sqlite:///{tmp_path}/typo.db"], "no such file"),
        (["token", "revoke", "ab", "--store", f"sqlite:///{tmp_path}/typo.db"], "no such file"),
    ]
    for args, words in cases:
        code, out, err = run(*args)
        assert code == 1 and words in err and len(err.strip().splitlines()) == 1, (args, err)
        assert "Traceback" not in err


def test_keygen_rotate_jwks(tmp_path, store_url):
    path = tmp_path / "k.json"
    assert run("token", "keygen", path)[0] == 0
    assert run("token", "keygen", path)[0] == 1, "never overwrites by accident"
    keys = KeySet.load(path)
    old = Issuer(keys, open_store(store_url), issuer="i").issue(DECISION, REQUEST)
    code, out, _ = run("token", "rotate", "--keys", path)
    assert code == 0 and "now signing with kid" in out
    kids = [k["kid"] for k in json.loads(run("token", "jwks", "--keys", path)[1])["keys"]]
    assert len(kids) == 2 and kids[0] == keys.kid
    # the rotated file still verifies tokens of the old key
    assert run("token", "verify", old.jwt, "--keys", path, "--store", store_url)[0] == 0


# -- approvals -------------------------------------------------------------------------------

PEOPLE = {"human": {"user:alice": {"groups": ["sre-oncall"]}, "user:bob": {"groups": ["sre-oncall"]},
                    "user:dave": {"groups": ["marketing"]}}}
GATE = {"decision": "require_approval", "rules": ["gate"], "reasons": ["prod"], "grants": [],
        "approvers": ["sre-oncall"], "errors": [], "delegation_path": ["user:alice", "agent:deployer"],
        "policy_version": "sha256:v"}
DEPLOY = {"principal": {"id": "agent:deployer", "kind": "agent"}, "action": "deploy",
          "resource": {"type": "service", "id": "payments"}, "delegation": [{"id": "user:alice", "kind": "human"}],
          "intent": {"task_id": "T-9"}}


@pytest.fixture
def ticket(tmp_path, store_url):
    (tmp_path / "people.json").write_text(json.dumps(PEOPLE))
    t = Approvals(open_store(store_url), entities=PEOPLE).open(GATE, DEPLOY, ttl=600)
    return t.id, store_url, str(tmp_path / "people.json")


def test_list_approve_deny(ticket):
    tid, url, people = ticket
    code, out, _ = run("approvals", "list", "--store", url)
    assert code == 0 and tid in out and "pending" in out and "agent:deployer -> deploy service payments" in out
    assert tid in run("approvals", "list", "--store", url, "--entities", people, "--as", "user:bob")[1]
    assert tid not in run("approvals", "list", "--store", url, "--entities", people, "--as", "user:alice")[1]
    code, out, err = run("approvals", "approve", tid, "--store", url, "--entities", people, "--as", "user:alice")
    assert code == 1 and "may not decide on a request they made or delegated" in err
    code, out, err = run("approvals", "approve", tid, "--store", url, "--entities", people, "--as", "user:dave")
    assert code == 1 and "none of the approver groups" in err
    code, out, _ = run("approvals", "approve", tid, "--store", url, "--entities", people, "--as", "user:bob")
    assert code == 0 and f"approved {tid} as user:bob" in out
    listed = json.loads(run("approvals", "list", "--store", url, "--format", "json")[1])["approvals"]
    assert listed[0]["status"] == "approved" and listed[0]["approvals"][0]["approver"] == "user:bob"
    assert run("approvals", "deny", tid, "--store", url, "--entities", people, "--as", "user:bob")[0] == 0
    code, _, err = run("approvals", "approve", tid, "--store", url, "--entities", people, "--as", "user:bob")
    assert code == 1 and "final" in err
    assert tid not in run("approvals", "list", "--store", url)[1]
    assert "denied" in run("approvals", "list", "--store", url, "--all")[1]


def test_approvals_errors(tmp_path, ticket):
    tid, url, people = ticket
    (tmp_path / "bad.json").write_text('{"human": []}')
    cases = [
        (["approvals", "approve", "apr_nope", "--store", url, "--entities", people, "--as", "user:bob"], 1, "no approval"),
        (["approvals", "approve", tid, "--store", url, "--entities", tmp_path / "bad.json", "--as", "user:bob"], 1, "E001"),
        (["approvals", "approve", tid, "--store", url, "--entities", tmp_path / "nope.json", "--as", "user:bob"], 1, "cannot read"),
        (["approvals", "approve", tid, "--store", closed_port_url(), "--entities", people, "--as", "user:bob"], 1, "store unreachable"),
        (["approvals", "list", "--store", closed_port_url()], 1, "store unreachable"),
        (["approvals", "list", "--store", f"sqlite:///{tmp_path}/typo.db"], 1, "no such file"),
        (["approvals", "approve", tid, "--store", url, "--as", "user:bob"], 2, "--entities"),
        (["approvals", "approve", tid, "--store", url, "--entities", people], 2, "--as"),
        (["approvals", "list", "--store", url, "--as", "user:bob"], 2, "--as needs --entities"),
        (["approvals", "list"], 2, "--store"),
    ]
    for args, code, words in cases:
        got, out, err = run(*args)
        assert got == code and words in out + err, (args, got, out, err)
        assert "Traceback" not in out + err


# -- the examples ------------------------------------------------------------------------------


@pytest.mark.parametrize("example", ["jit-flow", "approval-flow"])
def test_example_runs(tmp_path, example):
    script = os.path.join(ROOT, "examples", example, "run.py")
    started = time.monotonic()
    r = subprocess.run([sys.executable, script, "--workdir", str(tmp_path)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.rstrip().endswith("ok")
    assert time.monotonic() - started < 30
    # the trail it left is intact
    assert run("audit", "verify", tmp_path / "audit.jsonl")[0] == 0


def test_examples_run_on_redis(tmp_path, redis_server):
    redis_server.flush()
    for example in ("jit-flow", "approval-flow"):
        script = os.path.join(ROOT, "examples", example, "run.py")
        r = subprocess.run([sys.executable, script, "--workdir", str(tmp_path / example), "--store", redis_server.url],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr


def test_example_fails_cleanly_without_a_store(tmp_path):
    script = os.path.join(ROOT, "examples", "jit-flow", "run.py")
    r = subprocess.run([sys.executable, script, "--workdir", str(tmp_path), "--store", closed_port_url()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "StoreError" in r.stderr and "Traceback" not in r.stderr
