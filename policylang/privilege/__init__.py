"""Zero standing privilege: the pieces that grant an agent access only for a task.

Nothing here is part of the policy core (parser, checker, compiler, Engine): the core
decides; this package turns decisions into short-lived, scoped privilege and records
it. Importing :mod:`policylang` never imports this package.

* :mod:`policylang.privilege.credentials`: JIT tokens (task-bound, short-lived JWTs)
  and the key sets that sign and verify them;
* :mod:`policylang.privilege.approvals`: approval tickets a person confirms before an
  ``approval``-gated action is allowed;
* :mod:`policylang.privilege.audit`: the hash-chained audit log of every decision,
  issue, revocation and approval;
* :mod:`policylang.privilege.store`: the shared state behind them (SQLite, Redis).

The documented import paths ``policylang.credentials``, ``policylang.approvals``,
``policylang.audit`` and ``policylang.store`` (with ``policylang.store.sqlite_store``
and ``policylang.store.redis_store``) stay valid: each is the same module object as
the one here, so ``isinstance`` checks and monkeypatching work through either name.
See docs/zero-standing-privilege.md.
"""
