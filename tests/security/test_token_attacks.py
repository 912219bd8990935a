"""Issue 11 ("every promise holds under attack"), findings 10, 11, 13, 14 and 15: attacks on
task credentials, each performed for real (real SQLite files, a real redis-server, a
real ``policylang serve`` subprocess for key rotation + SIGHUP).

10  a store that lost its data (Redis FLUSHALL, a new SQLite file) must not make revoked
    or never-recorded tokens verify; serve refuses a store that does not exist
11  ``token rotate`` + SIGHUP reaches a running service
13  task ids are bound to their principal and delegation root; deployments can require
    tasks to be opened by a delegator first; a revoked task id is never reused
14  refresh is an atomic compare-and-revoke of the old token
15  more than MAX_DELEGATION_DEPTH hops is refused at issue
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import policylang
from policylang.credentials import (MAX_DELEGATION_DEPTH, Issuer, KeySet, NotAllowed, NotIssued, Revoked,
                                    TaskIdInUse, TokenError)
from policylang.store import open_store

try:
    from redis_fixture import redis_factory, redis_server, store, store_url  # noqa: F401
    from test_server_harness import LiveServer
except ImportError:  # tests/ as a package
    from tests.redis_fixture import redis_factory, redis_server, store, store_url  # noqa: F401
    from tests.test_server_harness import LiveServer

ROOT = Path(__file__).resolve().parents[2]
ISS = "https://pdp.test"
CLI = [sys.executable, "-c", "from policylang.cli import main; main()"]

POLICY = '''
@id("readers-read")
permit agent to read on repo
  grant "repo:read:" + resource.id for 10m
  because "agents read repositories"
'''


def req(task="T-1", principal="agent:reader", chain=("user:alice",)):
    r = {"principal": {"id": principal, "kind": "agent"}, "action": "read",
         "resource": {"type": "repo", "id": "acme/api"},
         "delegation": [{"id": d, "kind": "human" if i == 0 else "agent"} for i, d in enumerate(chain)]}
    if task is not None:
        r["intent"] = {"task_id": task}
    return r


def decision_for(request):
    path = [d["id"] for d in request["delegation"]] + [request["principal"]["id"]]
    return {"decision": "allow", "rules": ["readers-read"], "policy_version": "sha256:x",
            "grants": [{"rule": "readers-read", "scopes": ["repo:read:acme/api"], "ttl": 600}],
            "delegation_path": path}


ENGINE = policylang.Engine(policylang.loads(POLICY))


# -- 10: revocation is an allow-list --------------------------------------------------------


def test_flushall_does_not_bring_revoked_tokens_back(redis_factory):
    server = redis_factory()
    keys = KeySet.generate()
    issuer = Issuer(keys, open_store(server.url), issuer=ISS)
    revoked = issuer.issue(decision_for(req("T-a")), req("T-a"))
    live = issuer.issue(decision_for(req("T-b")), req("T-b"))
    issuer.revoke(revoked.jti)
    with pytest.raises(Revoked):
        issuer.verify(revoked.jwt)
    assert issuer.verify(live.jwt)["jti"] == live.jti

    server.flush()  # FLUSHALL: the store forgot every revocation and every issued token
    with pytest.raises(NotIssued):
        issuer.verify(revoked.jwt)
    with pytest.raises(NotIssued):  # fail closed: nothing the store cannot vouch for verifies
        issuer.verify(live.jwt)


def test_fresh_sqlite_file_does_not_bring_revoked_tokens_back(tmp_path):
    keys = KeySet.generate()
    issuer = Issuer(keys, open_store(f"sqlite:///{tmp_path / 'state.db'}"), issuer=ISS)
    tok = issuer.issue(decision_for(req()), req())
    issuer.revoke(tok.jti)
    # the operator's service comes back on an empty file (lost volume, typo in the path)
    other = Issuer(keys, open_store(f"sqlite:///{tmp_path / 'fresh.db'}"), issuer=ISS)
    with pytest.raises(NotIssued):
        other.verify(tok.jwt)


def test_token_the_store_never_recorded_is_refused(store):
    keys = KeySet.generate()
    elsewhere = Issuer(keys, open_store("sqlite:///:memory:"), issuer=ISS)  # same keys, another store
    tok = elsewhere.issue(decision_for(req()), req())
    with pytest.raises(NotIssued):
        Issuer(keys, store, issuer=ISS).verify(tok.jwt)


def _serve(*args, timeout=20):
    return subprocess.run([*CLI, "serve", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def served_dir(tmp_path):
    d = tmp_path / "policies"
    d.mkdir()
    (d / "read.policy").write_text(POLICY)
    keys = tmp_path / "keys.json"
    KeySet.generate().save(keys)
    return d, keys


def test_serve_refuses_a_missing_sqlite_store(served_dir, tmp_path):
    d, keys = served_dir
    db = tmp_path / "typo.db"
    p = _serve(d, "--store", f"sqlite:///{db}", "--keys", keys, "--port", "0")
    assert p.returncode == 1, p.stderr
    assert "does not exist" in p.stderr and "--create-store" in p.stderr
    assert not db.exists(), "serve created an empty store it was not asked to create"


def test_serve_refuses_a_flushed_redis(served_dir, redis_factory):
    d, keys = served_dir
    server = redis_factory()
    p = _serve(d, "--store", server.url, "--keys", keys, "--port", "0")
    assert p.returncode == 1 and "does not exist" in p.stderr, p.stderr
    open_store(server.url).initialize(time.time())  # what --create-store does
    server.flush()
    p = _serve(d, "--store", server.url, "--keys", keys, "--port", "0")
    assert p.returncode == 1 and "does not exist" in p.stderr, p.stderr


# -- 11: key rotation reaches a running service ----------------------------------------------


def _kid(jwt_text: str) -> str:
    import jwt as pyjwt
    return pyjwt.get_unverified_header(jwt_text)["kid"]


def test_rotation_and_sighup_reach_a_running_serve(served_dir, tmp_path):
    d, keys = served_dir
    with LiveServer(d, "--store", f"sqlite:///{tmp_path / 'state.db'}", "--create-store", "--keys", keys,
                    "--poll-interval", "0") as server:
        c = server.client
        r = c.post("/v1/tokens", json={"request": req("T-rot")})
        assert r.status_code == 201, r.text
        old = r.json()["token"]
        old_kid = _kid(old)
        # the key is compromised: rotate it out with no grace period, then tell the service
        rot = subprocess.run([*CLI, "token", "rotate", "--keys", str(keys),
                              "--keep", "0"], cwd=ROOT, capture_output=True, text=True, timeout=20)
        assert rot.returncode == 0, rot.stderr
        os.kill(server.proc.pid, signal.SIGHUP)
        new_kid = KeySet.load(keys).kid
        assert new_kid != old_kid
        deadline = time.monotonic() + 5
        while True:
            r = c.post("/v1/tokens", json={"request": req("T-rot2")})
            assert r.status_code == 201, r.text
            if _kid(r.json()["token"]) == new_kid or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert _kid(r.json()["token"]) == new_kid, "the service still signs with the rotated-out key"
        v = c.post("/v1/tokens/verify", json={"token": old}).json()
        assert v["valid"] is False and v["reason"] == "BadSignature", v
        assert c.post("/v1/tokens/verify", json={"token": r.json()["token"]}).json()["valid"] is True
        jwks = c.get("/.well-known/jwks.json").json()
        assert [k["kid"] for k in jwks["keys"]] == [new_kid]


def test_issuer_on_a_key_file_follows_rotation(tmp_path):
    path = tmp_path / "keys.json"
    KeySet.generate().save(path)
    issuer = Issuer(str(path), open_store("sqlite:///:memory:"), issuer=ISS)
    before = issuer.issue(decision_for(req("T-1")), req("T-1"))
    ks = KeySet.load(path)
    ks.rotate(keep_for=600)  # a grace period: tokens of the old key keep verifying
    ks.save(path)
    after = issuer.issue(decision_for(req("T-2")), req("T-2"))
    assert _kid(after.jwt) == ks.kid != _kid(before.jwt)
    assert issuer.verify(before.jwt)["jti"] == before.jti
    path.write_text("{not json")  # a broken file keeps the last good keys
    assert issuer.verify(after.jwt)["jti"] == after.jti and issuer.keys_error


# -- 13: tasks are bound ------------------------------------------------------------------


def test_another_agent_cannot_join_a_task(store):
    issuer = Issuer(KeySet.generate(), store, issuer=ISS)
    issuer.issue(decision_for(req("T-1")), req("T-1"))
    intruder = req("T-1", principal="agent:intruder")
    with pytest.raises(NotAllowed, match="another principal"):
        issuer.issue(decision_for(intruder), intruder)
    other_root = req("T-1", chain=("user:mallory",))
    with pytest.raises(NotAllowed, match="another principal"):
        issuer.issue(decision_for(other_root), other_root)


def test_revoked_agent_cannot_escape_with_a_new_task_id(store):
    issuer = Issuer(KeySet.generate(), store, issuer=ISS, require_open_tasks=True)
    issuer.open_task("T-1", "agent:reader", "user:alice", opened_by="user:alice")
    tok = issuer.issue(decision_for(req("T-1")), req("T-1"))
    issuer.revoke_task("T-1")
    with pytest.raises(Revoked):
        issuer.verify(tok.jwt)
    for escape in ("T-2", "T-1-again"):
        with pytest.raises(NotAllowed, match="not opened"):
            issuer.issue(decision_for(req(escape)), req(escape))
    with pytest.raises(NotAllowed, match="no task"):  # nor by asking for a token of no task at all
        issuer.issue(decision_for(req(None)), req(None))
    with pytest.raises(NotAllowed):  # the agent opening a task for itself
        issuer.open_task("T-3", "agent:reader", "user:alice", opened_by="agent:reader")
    with pytest.raises(TaskIdInUse):  # a revoked task id is never reused
        issuer.open_task("T-1", "agent:reader", "user:alice", opened_by="user:alice")
    with pytest.raises(NotAllowed):
        issuer.issue(decision_for(req("T-1")), req("T-1"))


def test_self_bound_task_does_not_count_as_opened(store):
    lax = Issuer(KeySet.generate(), store, issuer=ISS)
    lax.issue(decision_for(req("T-self")), req("T-self"))  # bound by its first issue, no opener
    strict = Issuer(KeySet.generate(), store, issuer=ISS, require_open_tasks=True)
    with pytest.raises(NotAllowed, match="not opened"):
        strict.issue(decision_for(req("T-self")), req("T-self"))


def _task_client(store, *, caller_header=True):
    fastapi = pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from policylang.server import auth
    from policylang.server.zsp import make_router

    issuer = Issuer(KeySet.generate(), store, issuer=ISS, require_open_tasks=True)
    app = fastapi.FastAPI()
    app.include_router(make_router(issuer=issuer, engine_getter=lambda: ENGINE))

    @app.middleware("http")
    async def authenticate(request, call_next):  # stands in for AuthMiddleware
        who = request.headers.get("x-test-caller")
        if who:
            request.scope[auth.SCOPE_KEY] = auth.Caller(id=who, method="jwt", claims={"sub": who})
        return await call_next(request)

    return TestClient(app)


def test_http_tasks_opener_is_the_authenticated_caller(store):
    c = _task_client(store)
    as_agent = {"x-test-caller": "agent:reader"}
    as_alice = {"x-test-caller": "user:alice"}
    # the agent names someone else as opener in the body: the caller counts, and it is the agent
    r = c.post("/v1/tasks", json={"task": "T-9", "principal": "agent:reader", "root": "user:alice",
                                  "opened_by": "user:alice"}, headers=as_agent)
    assert r.status_code == 403, r.text
    assert c.post("/v1/tokens", json={"request": req("T-9")}).status_code == 403
    r = c.post("/v1/tasks", json={"task": "T-9", "principal": "agent:reader", "root": "user:alice"},
               headers=as_alice)
    assert r.status_code == 201 and r.json()["task"]["opened_by"] == "user:alice", r.text
    assert c.post("/v1/tokens", json={"request": req("T-9")}).status_code == 201
    assert c.get("/v1/tasks/T-9").json()["task"]["principal"] == "agent:reader"
    assert c.post("/v1/tasks/T-9/revoke").status_code == 200
    r = c.post("/v1/tasks", json={"task": "T-9", "principal": "agent:reader"}, headers=as_alice)
    assert r.status_code == 409, r.text
    assert c.post("/v1/tokens", json={"request": req("T-9")}).status_code == 403
    for bad in ({}, {"task": 1, "principal": "a"}, {"task": "", "principal": "a"},
                {"task": "T-10", "principal": "a", "ttl": -1}):
        assert c.post("/v1/tasks", json=bad, headers=as_alice).status_code == 400
    assert c.get("/v1/tasks/nope").status_code == 404


# -- 14: refresh is compare-and-revoke -----------------------------------------------------


class _Engine:
    """Decides like ENGINE, running ``hook`` first (where an attacker's revoke lands)."""

    def __init__(self, hook):
        self.hook = hook

    def decide(self, request):
        self.hook()
        return ENGINE.decide(request)


def test_revoke_between_verify_and_mint_wins(store):
    issuer = Issuer(KeySet.generate(), store, issuer=ISS)
    tok = issuer.issue(decision_for(req()), req())
    with pytest.raises(NotAllowed, match="revoked or already refreshed"):
        issuer.refresh(tok.jwt, _Engine(lambda: issuer.revoke(tok.jti)), req())
    tok2 = issuer.issue(decision_for(req("T-2")), req("T-2"))
    with pytest.raises(NotAllowed):
        issuer.refresh(tok2.jwt, _Engine(lambda: issuer.revoke_task("T-2")), req("T-2"))


def test_concurrent_refreshes_of_one_token_yield_one_token(store_url):
    keys = KeySet.generate()
    issuer = Issuer(keys, open_store(store_url), issuer=ISS)
    tok = issuer.issue(decision_for(req()), req())
    n = 4
    barrier = threading.Barrier(n)  # every refresh has verified the old token before any revokes it
    results: list = []

    def run():
        own = Issuer(keys, open_store(store_url), issuer=ISS)  # one replica each
        try:
            results.append(own.refresh(tok.jwt, _Engine(lambda: barrier.wait(5)), req()))
        except NotAllowed as e:
            results.append(e)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    new = [r for r in results if not isinstance(r, Exception)]
    assert len(results) == n and len(new) == 1, results
    assert issuer.verify(new[0].jwt)["jti"] == new[0].jti
    with pytest.raises(TokenError):
        issuer.verify(tok.jwt)


# -- 15: the hop limit --------------------------------------------------------------------


def test_more_hops_than_verify_accepts_are_refused_at_issue(store):
    issuer = Issuer(KeySet.generate(), store, issuer=ISS)
    ok = req("T-64", chain=[f"a{i}" for i in range(MAX_DELEGATION_DEPTH)])
    assert issuer.verify(issuer.issue(decision_for(ok), ok).jwt)["sub"] == "a0"
    too_deep = req("T-65", chain=[f"a{i}" for i in range(MAX_DELEGATION_DEPTH + 1)])
    with pytest.raises(NotAllowed, match="hops"):
        issuer.issue(decision_for(too_deep), too_deep)
    huge = req("T-1800", chain=[f"a{i}" for i in range(1800)])
    with pytest.raises(NotAllowed, match="hops"):
        issuer.issue(decision_for(huge), huge)


def test_http_1800_hops_is_a_client_error_not_500(store):
    pytest.importorskip("fastapi")
    c = _task_client(store)
    huge = req("T-deep", chain=[f"a{i}" for i in range(1800)])
    r = c.post("/v1/tokens", json={"request": huge})
    assert r.status_code in (400, 403), r.text
    r = c.post("/v1/tokens/refresh", json={"token": "x.y.z", "request": huge})
    assert r.status_code in (400, 403), r.text
