#!/usr/bin/env python3
"""A coding agent's tools behind the policy guard, end to end (docs/agents.md).

Inside one task for alice, the coder agent: reads a repository of its tenant (allow),
tries another tenant's (deny), pushes with a just-in-time token that the tool itself
verifies (allow + grant), asks for a production deploy (require approval) that bob
approves and the retry runs, and a different deploy stays gated. When the task ends
its tokens are revoked and the tool refuses them.

    python examples/agent-guard/run.py [--workdir DIR] [--store URL]

Exits 0 when every step behaved as described, 1 (naming the step) otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile

import policylang
from policylang.approvals import Approvals
from policylang.audit import AuditLog, verify_file
from policylang.credentials import Issuer, KeySet, TokenError
from policylang.integrations.guard import ApprovalRequired, Denied, Guard, arg, current_token
from policylang.store import open_store

HERE = os.path.dirname(os.path.abspath(__file__))
CODER = {"id": "agent:coder", "kind": "agent"}
ALICE = {"id": "user:alice", "kind": "human"}


class StepFailed(Exception):
    pass


def expect(ok: bool, what: str) -> None:
    if not ok:
        raise StepFailed(what)


def build(workdir: str, store_url: str):
    policies = policylang.load(os.path.join(HERE, "policies"))
    store = open_store(store_url)
    audit = AuditLog(os.path.join(workdir, "audit.jsonl"))
    approvals = Approvals(store, entities=policies, audit=audit)
    engine = policylang.Engine(policies, approvals=approvals.checker, audit=audit)
    issuer = Issuer(KeySet.generate(), store, issuer="https://pdp.example", audit=audit)
    guard = Guard(engine, issuer=issuer, approvals=approvals)
    pushed: list = []

    @guard.tool(resource={"type": "repo", "id": arg("repo")})
    def read(repo: str) -> str:
        return f"README of {repo}"

    @guard.tool(resource={"type": "repo", "id": arg("repo")})
    def push(repo: str, branch: str) -> str:
        # the tool trusts no caller: it checks the token it was handed for this call
        token = current_token()
        claims = issuer.verify(token.jwt, scope=f"repo:push:{repo}", audience=repo)
        pushed.append(token)
        return f"pushed {branch} to {repo} for {claims['sub']} (task {claims['task']})"

    @guard.tool(resource={"type": "service", "id": arg("service")}, context={"version": arg("version")})
    async def deploy(service: str, version: str) -> str:
        claims = issuer.verify(current_token().jwt, scope=f"deploy:{service}", audience=service)
        return f"deployed {service}@{version} with scope {claims['scope']}"

    return guard, issuer, approvals, audit, pushed, read, push, deploy


async def run(workdir: str, store_url: str) -> None:
    guard, issuer, approvals, audit, pushed, read, push, deploy = build(workdir, store_url)
    task_id = "T-7-" + secrets.token_hex(3)  # task ids are never reused

    async with guard.task(principal=CODER, delegation=[ALICE], task_id=task_id) as task:
        print(f"task {task.task_id}: {CODER['id']} working for {ALICE['id']}")
        print("1. allow:", read("acme/api"))

        try:
            read("globex/billing")
            raise StepFailed("reading another tenant's repository must be denied")
        except Denied as e:
            print("2. deny:", e.decision.decision, "-", "; ".join(e.reasons) or "no rule permits it")

        out = push("acme/api", branch="fix-42")
        token = pushed[-1]
        print("3. JIT token:", out)
        print("   token", token.jti, "scopes", list(token.scopes), "expires", token.expires_at)
        try:
            issuer.verify(token.jwt, scope="repo:push:acme/web", audience="acme/web")
            raise StepFailed("the push token must not work for another repository")
        except TokenError as e:
            print("   and it is refused for another repository:", type(e).__name__)

        try:
            await deploy("payments", "2.0")
            raise StepFailed("a production deploy must wait for a person")
        except ApprovalRequired as e:
            ticket = e.ticket
            print("4. approval required:", ticket.id, "approvers", ", ".join(e.approvers))
        approvals.approve(ticket.id, approver="user:bob")
        print("   user:bob approves; the agent retries the same call")
        print("   approval-then-allow:", await deploy("payments", "2.0"))
        try:
            await deploy("payments", "3.0")
            raise StepFailed("another deploy must not ride on that approval")
        except ApprovalRequired as e:
            expect(e.ticket_id != ticket.id, "a different call gets its own ticket")
            print("   a different deploy (3.0) stays gated: ticket", e.ticket_id)

    print(f"5. task {task.task_id} ended: revoked {len(task.revoked)} token(s)")
    expect(len(task.revoked) == len(task.tokens) == 2, "every token of the task is revoked at its end")
    try:
        issuer.verify(token.jwt, scope="repo:push:acme/api", audience="acme/api")
        raise StepFailed("a revoked token must be refused")
    except TokenError as e:
        print("   the push tool now refuses the token:", type(e).__name__)

    result = verify_file(audit.path)
    expect(result.ok, f"the audit chain is intact: {result}")
    print(f"6. audit log: {result.records} records, chain intact")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", help="keep the state and the audit log here (default: a temporary directory)")
    ap.add_argument("--store", help="a store URL (default: a SQLite file in the work directory)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or tmp
        os.makedirs(workdir, exist_ok=True)
        store_url = args.store or f"sqlite:///{os.path.join(workdir, 'state.db')}"
        try:
            asyncio.run(run(workdir, store_url))
        except StepFailed as e:
            print(f"FAILED: {e}", file=sys.stderr)
            return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
