"""A short run of ``benchmarks/load_faults.py`` (a few seconds per phase): saturation
with no failed request, policy reloads every second under load with no failed request,
SIGKILL mid-load losing no acknowledged audit record (the chain verifies), and Redis
stopped and restarted mid-run (requests that need it fail closed with 503; the service
recovers by itself). The full run is ``python benchmarks/load_faults.py --seconds 60``."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import load_faults  # noqa: E402

SECONDS = 3
THREADS = 4


@pytest.mark.parametrize("phase", ["saturation", "reload", "sigkill", "redis"])
def test_load_and_faults(phase, tmp_path):
    if phase == "redis" and load_faults.REDIS_SERVER is None:
        pytest.skip("redis-server binary not found on PATH: apt-get install redis-server")
    # the Redis phase splits its time in thirds (up, down, up again): give the outage over a second
    result = load_faults.PHASES[phase](tmp_path, 4 if phase == "redis" else SECONDS, THREADS)
    print(f"\n{phase}: {result}")
    assert result["passed"], result
    assert result["failed"] == 0 and result["ok"] > 0
    if phase == "reload":
        assert result["versions_seen"] >= 2
    if phase == "sigkill":
        assert result["lost"] == 0 and result["verify_exit"] == 0 and result["acknowledged"] > 0
    if phase == "redis":
        assert result["during_outage"] and set(result["during_outage"]) == {"503"}
        assert result["recovered_after_s"] is not None
