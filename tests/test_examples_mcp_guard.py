"""examples/mcp-guard/run.py runs end to end (it starts and stops `policylang serve` and
the guarded MCP server itself) and exits 0."""

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
    assert out.rstrip().endswith("ok")
