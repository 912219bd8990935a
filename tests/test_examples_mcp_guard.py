"""examples/mcp-guard/run.py runs end to end (it starts and stops `policylang serve` and
the guarded MCP server itself) and exits 0: the tools run with their just-in-time tokens,
and the task's tokens stop verifying when the session ends and at an explicit end of task."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mcp")
pytest.importorskip("celpy")

ROOT = Path(__file__).resolve().parent.parent


def test_mcp_guard_example_runs():
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "mcp-guard" / "run.py")], capture_output=True, check=False,
                       text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "alice's tools: ['read_doc', 'write_doc', 'transfer_funds']" in out
    assert "allow   read_doc" in out
    assert "gated   transfer_funds -> -32001 Approval required" in out
    assert "allow   transfer_funds (approved) -> 'transferred 5000 from acct-1 to acct-9'" in out
    assert "single use: the approval is spent" in out
    assert "bob's tools: ['read_doc']" in out
    assert "deny    write_doc (bob, naming alice in an argument) -> -32001" in out
    # just-in-time tokens for the grants, bound to the session's task, revoked at its end
    assert "jit     read_doc ran with its token: scope tools:call:read_doc, sub alice@example.com, " \
           "act https://agents.example/assistant, task mcp-" in out
    assert "jit     transfer_funds ran with its token: scope payments:transfer:acct-1, the same task" in out
    assert "live    2 tokens of task mcp-" in out
    assert "revoked the session ended: its 2 tokens no longer verify (Revoked)" in out
    assert "end     read_doc with _meta end_task: task mcp-" in out and "its 2 tokens no longer verify (Revoked)" in out
    assert "next    the session's next call runs in a new task (mcp-" in out
    assert out.rstrip().endswith("ok")
