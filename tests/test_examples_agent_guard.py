"""examples/agent-guard/run.py runs end to end (allow, deny, JIT token, approval then
allow, revocation at the task's end)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("jwt")

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "agent-guard", "run.py")


def test_the_agent_guard_example_runs_end_to_end(tmp_path):
    proc = subprocess.run([sys.executable, EXAMPLE, "--workdir", str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for line in ("1. allow: README of acme/api",
                 "2. deny: deny",
                 "3. JIT token: pushed fix-42 to acme/api for user:alice",
                 "and it is refused for another repository: ScopeNotGranted",
                 "4. approval required: apr_",
                 "approval-then-allow: deployed payments@2.0 with scope deploy:payments",
                 "a different deploy (3.0) stays gated",
                 "ended: revoked 2 token(s)",
                 "the push tool now refuses the token: Revoked",
                 "chain intact"):
        assert line in out, out
    assert out.rstrip().endswith("ok")
    assert (tmp_path / "audit.jsonl").exists() and (tmp_path / "state.db").exists()
