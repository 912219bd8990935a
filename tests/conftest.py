"""Suite-wide test settings.

``-m "not slow"`` is the quick run (README): it leaves out the files below, which start
real servers (uvicorn, redis-server, MCP servers), build wheels, run the examples end to
end, or search with hypothesis for long; CI (``.ci/run``) runs everything. A test may
also be marked ``@pytest.mark.slow`` on its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

#: files (relative to tests/) whose every test is slow
SLOW_FILES = frozenset({
    # property, fuzz and differential searches
    "test_differential.py", "test_cedar_differential.py", "test_fuzz.py", "test_frontend_fuzz.py",
    "test_adversarial.py", "test_load_faults.py",
    # real servers and processes
    "test_server_harness.py", "test_server_reload.py", "test_server_cli.py", "test_server_metrics.py",
    "test_zsp_http.py", "test_zsp_cli.py", "test_aarp_http.py", "test_svid.py", "test_store.py",
    "test_wheel.py", "test_examples.py", "test_examples_agent_guard.py", "test_examples_mcp_guard.py",
    "test_mcp_guard.py", "test_limits_concurrency.py", "test_limits_redis.py",
    "security/test_service_attacks.py", "security/test_service_auth.py", "security/test_svid_attacks.py",
    "security/test_token_attacks.py", "test_server_errors.py",
    # headless Chromium against a playground on loopback
    "browser/test_playground_browser.py", "browser/test_audit_viewer_browser.py",
})

#: single tests (by function name) that take seconds: hypothesis searches, crash loops,
#: installed-script runs
SLOW_TESTS = frozenset({
    "test_random_policies_round_trip_with_comments", "test_layout_does_not_matter",
    "test_sigkill_mid_write_leaves_a_verifiable_log", "test_any_request_is_logged_and_verifies",
    "test_driver_matches_stock_lark_on_generated_policies", "test_driver_matches_stock_lark_on_mutated_corpora",
    "test_any_json_body_maps_or_is_a_400", "test_w104_index_keeps_many_forbids_and_permits_linear",
    "test_any_coaz_shape_maps_or_is_a_400", "test_installed_script_checks_files",
    "test_no_request_of_the_domain_contradicts_a_lint", "test_diff_is_sound_and_misses_no_sampled_change",
})

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath)).resolve()
        try:
            rel = path.relative_to(_HERE).as_posix()
        except ValueError:
            rel = None
        # the benchmarks directory (pytest-benchmark, run as smoke tests here) is slow too
        if rel in SLOW_FILES or rel is None or getattr(item, "originalname", item.name) in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
