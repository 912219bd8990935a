"""``serve --workers N`` forks its workers after the parent loaded the set
(docs/server.md#workers): every worker answers with that set at once, and a SIGHUP to the
parent makes each worker reload (incrementally) from its own copy."""

from __future__ import annotations

import shutil
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

try:
    from test_server_harness import TODO, LiveServer, wait_until
    from test_server_reload import FREEZE, READ_TODOS
except ImportError:  # tests/ as a package
    from tests.test_server_harness import TODO, LiveServer, wait_until
    from tests.test_server_reload import FREEZE, READ_TODOS

@pytest.fixture
def policy_dir(tmp_path) -> Path:
    dst = tmp_path / "policies"
    shutil.copytree(TODO / "policies", dst)
    return dst


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers fork on Linux")


def _rules_seen(url: str, n: int = 12) -> set:
    """The rule lists of ``n`` decisions, each on a new connection (spread over the workers)."""
    seen = set()
    for _ in range(n):
        r = httpx.post(url + "/access/v1/evaluation", json=READ_TODOS, timeout=10)
        assert r.status_code == 200, r.text
        seen.add(tuple(r.json()["context"]["rules"]))
    return seen


def test_forked_workers_serve_the_parents_set_and_reload_on_sighup(policy_dir):
    base = policy_dir / "todo.policy"
    with LiveServer(policy_dir, "--workers", "2", "--poll-interval", "0") as server:
        assert "forked after the load" in server.log()
        versions = {httpx.get(server.url + "/healthz", timeout=10).json()["policy_version"] for _ in range(8)}
        assert len(versions) == 1
        before = _rules_seen(server.url)
        assert ("maintenance-freeze",) not in before
        # /metrics adds up every worker's counters (the multiprocess directory)
        text = httpx.get(server.url + "/metrics", timeout=10).text
        total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                    if line.startswith("policylang_decisions_total"))
        assert total >= 12, text
        base.write_text(base.read_text() + FREEZE)
        time.sleep(0.05)
        server.signal(signal.SIGHUP)
        assert wait_until(lambda: _rules_seen(server.url) == {("maintenance-freeze",)}, timeout=10), server.log()
        assert server.proc.poll() is None
