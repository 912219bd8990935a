#!/usr/bin/env python3
"""Just-in-time credentials, end to end.

An agent asks to write a repository for a task -> the policy allows it with a grant ->
a five-minute token is minted for that task -> the tool checks the token before acting
-> the task ends and its tokens are revoked -> the tool refuses the token.

    python examples/jit-flow/run.py [--workdir DIR] [--store URL]

Exits 0 when every step behaved as described, 1 (naming the step) otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile

import policylang
from policylang.audit import AuditLog, verify_file
from policylang.credentials import Issuer, KeySet, NotAllowed, Revoked, ScopeNotGranted
from policylang.store import open_store

HERE = os.path.dirname(os.path.abspath(__file__))


class StepFailed(Exception):
    pass


def expect(ok: bool, what: str) -> None:
    if not ok:
        raise StepFailed(what)


def git_push(issuer: Issuer, token: str, repo: str) -> str:
    """A tool: it acts only for a valid token that grants this exact repository."""
    claims = issuer.verify(token, scope=f"repo:write:{repo}", audience=repo)
    return f"pushed to {repo} for task {claims['task']} on behalf of {claims['sub']}"


def run(workdir: str, store_url: str) -> None:
    policies = policylang.load(os.path.join(HERE, "policies"))
    audit = AuditLog(os.path.join(workdir, "audit.jsonl"), redact=["api_key"])
    engine = policylang.Engine(policies, audit=audit)
    keys = KeySet.generate()
    keys.save(os.path.join(workdir, "keys.json"))
    issuer = Issuer(keys, open_store(store_url), issuer="https://pdp.example", audit=audit)
    with open(os.path.join(HERE, "request.json"), encoding="utf-8") as f:
        request = json.load(f)
    # a task id is never reused (its start and revocation stay in the store), so every
    # run is a task of its own
    task = f"{request['intent']['task_id']}-{secrets.token_hex(3)}"
    request["intent"]["task_id"] = task

    print("1. the agent asks:", request["principal"]["id"], request["action"], request["resource"]["id"],
          "for task", task)
    decision = engine.decide(request)
    print("   decision:", decision.decision, decision.rules, decision.grants)
    expect(decision.decision == "allow" and decision.grants, "the write should be allowed with a grant")

    token = issuer.issue(decision, request)
    print("2. token minted: jti", token.jti, "scopes", list(token.scopes), "expires", token.expires_at)
    claims = token.claims
    print("   sub", claims["sub"], "act", json.dumps(claims["act"]))
    expect(claims["sub"] == "user:alice", "the token's subject is the human the task runs for")
    expect(claims["exp"] - claims["iat"] <= 300, "the token lives no longer than the grant")

    print("3. the tool checks the token:", git_push(issuer, token.jwt, "acme/api"))
    try:
        git_push(issuer, token.jwt, "globex/billing")
        raise StepFailed("a token for acme/api must not open globex/billing")
    except ScopeNotGranted as e:
        print("   and refuses another repository:", f"{e.reason}: {e}")

    revoked = issuer.revoke_task(task)
    print(f"4. task {task} ends: revoked {len(revoked)} token(s)")
    expect(token.jti in revoked, "the task's token is revoked with it")

    try:
        git_push(issuer, token.jwt, "acme/api")
        raise StepFailed("a revoked token must be rejected")
    except Revoked as e:
        print("5. the tool now rejects the token:", f"{e.reason}: {e}")
    try:
        issuer.issue(engine.decide(request), request)
        raise StepFailed("a finished task must not get new tokens")
    except NotAllowed as e:
        print("   and the task gets no new one:", e)

    result = verify_file(os.path.join(workdir, "audit.jsonl"))
    expect(result.ok, f"audit log broken at line {result.line}: {result.message}")
    print(f"6. audit log: {result.records} records, chain intact, head {result.head}")
    print(f"   files in {workdir}: audit.jsonl, keys.json" + (", state.db" if store_url.startswith("sqlite") else ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="where the audit log, keys and state go (default: a temporary directory)")
    parser.add_argument("--store", help="store URL (default: sqlite:///WORKDIR/state.db)")
    args = parser.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="jit-flow-")
    os.makedirs(workdir, exist_ok=True)
    store_url = args.store or f"sqlite:///{os.path.join(os.path.abspath(workdir), 'state.db')}"
    try:
        run(workdir, store_url)
    except StepFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # a store that is down, a key file that cannot be written …
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
