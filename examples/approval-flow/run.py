#!/usr/bin/env python3
"""A human approval gate, end to end.

The deploy agent, working for alice, asks to deploy to production -> the gate answers
require_approval -> a ticket is opened -> alice tries to approve her own agent's deploy
and is refused, so is someone outside the on-call groups -> bob, on call, approves ->
the agent retries with the ticket and is allowed, with a credential for that deploy.

    python examples/approval-flow/run.py [--workdir DIR] [--store URL]

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
from policylang.approvals import ApprovalError, Approvals
from policylang.audit import AuditLog, verify_file
from policylang.credentials import Issuer, KeySet
from policylang.store import open_store

HERE = os.path.dirname(os.path.abspath(__file__))


class StepFailed(Exception):
    pass


def expect(ok: bool, what: str) -> None:
    if not ok:
        raise StepFailed(what)


def run(workdir: str, store_url: str) -> None:
    policies = policylang.load(os.path.join(HERE, "policies"))  # the entity file comes with it
    store = open_store(store_url)
    audit = AuditLog(os.path.join(workdir, "audit.jsonl"))
    approvals = Approvals(store, entities=policies, audit=audit)
    engine = policylang.Engine(policies, approvals=approvals.checker, audit=audit)
    issuer = Issuer(KeySet.generate(), store, issuer="https://pdp.example", audit=audit)
    with open(os.path.join(HERE, "request.json"), encoding="utf-8") as f:
        request = json.load(f)
    request["intent"]["task_id"] += "-" + secrets.token_hex(3)  # task ids are never reused

    decision = engine.decide(request)
    print("1. the agent asks to deploy payments for alice:", decision.decision,
          "by", ", ".join(decision.approvers))
    expect(decision.decision == "require_approval", "a production deploy must wait for a human")

    ticket = approvals.open(decision, request, ttl=900)
    print("2. ticket opened:", ticket.id, "expires", ticket.expires_at)

    for who in ("user:alice", "user:dave"):
        try:
            approvals.approve(ticket.id, approver=who)
            raise StepFailed(f"{who} must not be able to approve")
        except ApprovalError as e:
            print(f"3. {who} tries to approve: refused ({e.code}): {e}")

    still = engine.decide({**request, "approval": ticket.id})
    expect(still.decision == "require_approval", "an unapproved ticket unlocks nothing")

    approved = approvals.approve(ticket.id, approver="user:bob")
    print("4. user:bob approves:", approved.status)

    retry = {**request, "approval": ticket.id}
    decision = engine.decide(retry)
    print("5. the agent retries with the ticket:", decision.decision, decision.rules, decision.grants)
    expect(decision.decision == "allow", "the approved deploy is allowed")

    token = issuer.issue(decision, retry)
    claims = issuer.verify(token.jwt, scope="deploy:payments", audience="payments")
    print("   deploy credential:", claims["scope"], "for", claims["sub"], "until", claims["exp"])

    staging = {**retry, "resource": {"type": "service", "id": "payments-staging"}}
    other = {**retry, "resource": {"type": "service", "id": "ledger", "attrs": {"env": "prod"}}}
    expect(engine.decide(other).decision == "require_approval", "the ticket is bound to payments")
    print("6. the same ticket for another prod service:", engine.decide(other).decision,
          "| staging needs no ticket:", engine.decide(staging).decision)

    result = verify_file(os.path.join(workdir, "audit.jsonl"))
    expect(result.ok, f"audit log broken at line {result.line}: {result.message}")
    print(f"7. audit log: {result.records} records, chain intact")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="where the audit log and state go (default: a temporary directory)")
    parser.add_argument("--store", help="store URL (default: sqlite:///WORKDIR/state.db)")
    args = parser.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="approval-flow-")
    os.makedirs(workdir, exist_ok=True)
    store_url = args.store or f"sqlite:///{os.path.join(os.path.abspath(workdir), 'state.db')}"
    try:
        run(workdir, store_url)
    except StepFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # a store that is down, a directory that cannot be written …
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
