"""`policylang serve` as a user runs it: start-up checks, usage errors, and several
workers that answer alike (no per-process state), reload together on SIGHUP and report
one set of metrics."""

from __future__ import annotations

import shutil
import signal
import subprocess

import pytest

try:
    from test_server_harness import CERT, ROOT, SERVE, TODO, LiveServer, free_port, wait_until
except ImportError:  # tests/ as a package
    from tests.test_server_harness import CERT, ROOT, SERVE, TODO, LiveServer, free_port, wait_until


def run_serve(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(SERVE + [str(a) for a in args] + ["--port", str(free_port())], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def test_a_set_with_errors_is_not_served(tmp_path):
    bad = tmp_path / "bad.policy"
    bad.write_text('@id("r")\npermit agent to read on repo\n  when ownr == principal.tenant\n'
                   '  because "x"\n\n@id("r")\nforbid * to * on *\n')
    p = run_serve(bad)
    assert p.returncode == 1, p.stderr
    assert f"{bad}:3:" in p.stderr and "error[E002]" in p.stderr  # the diagnostic, with its place
    assert "error[E006]" in p.stderr and "2 errors" in p.stderr  # every error, not just the first
    assert "^" in p.stderr  # the source line and a caret
    assert "not serving" in p.stderr
    assert "Traceback" not in p.stderr


def test_a_missing_path_is_not_served(tmp_path):
    p = run_serve(tmp_path / "nope")
    # a PATH that does not exist is a usage error (2), as for every other command
    assert p.returncode == 2 and "does not exist" in p.stderr


def test_a_bad_entities_file_is_not_served(tmp_path):
    ents = tmp_path / "users.entities.json"
    ents.write_text("{not json")
    p = run_serve(CERT, "--entities", ents)
    assert p.returncode == 1 and str(ents) in p.stderr and "E001" in p.stderr


@pytest.mark.parametrize("args,message", [
    (["--keys", "k.json"], "--keys needs --store"),
    (["--workers", "0"], "--workers"),
    (["--max-body", "0"], "--max-body"),
    (["--bogus"], "No such option"),
])
def test_usage_errors_exit_2(args, message):
    p = run_serve(CERT, *args)
    assert p.returncode == 2 and message in p.stderr


def test_usage_without_path_exits_2():
    p = subprocess.run(SERVE, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 2 and "PATH" in p.stderr


def test_workers_answer_alike_reload_together_and_share_metrics(tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(TODO / "policies", policies)
    beth = "CiRmZDM2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"
    read = {"subject": {"type": "user", "id": beth}, "action": {"name": "can_read_todos"},
            "resource": {"type": "todo", "id": "todo-1"}}
    with LiveServer(policies, "--workers", "2", "--poll-interval", "0", startup_timeout=60) as server:
        # each request may reach either worker: they must all agree, with no shared state
        answers = set()
        for _ in range(40):
            with_new_connection = server.client.post("/access/v1/evaluation", json=read,
                                                     headers={"connection": "close"})
            ctx = with_new_connection.json()["context"]
            answers.add((ctx["decision"], ctx["policy_version"]))
        assert len(answers) == 1 and next(iter(answers))[0] == "allow"
        # a page token from one worker resumes on the other
        body = {"subject": {"type": "user", "id": beth}, "action": {"name": "can_read_user"},
                "resource": {"type": "user"}, "page": {"limit": 3}}
        pages = []
        token = None
        while True:
            page = dict(body["page"], **({"token": token} if token else {}))
            out = server.client.post("/access/v1/search/resource", json={**body, "page": page},
                                     headers={"connection": "close"}).json()
            pages.extend(r["id"] for r in out["results"])
            token = out["page"]["next_token"]
            if not token:
                break
        assert len(pages) == 10 and len(set(pages)) == 10
        # SIGHUP to the parent reloads every worker in place
        (policies / "freeze.policy").write_text(
            '@id("freeze")\nforbid user to can_read_todos on todo\n  because "frozen"\n')
        server.signal(signal.SIGHUP)

        def all_frozen():
            got = {server.client.post("/access/v1/evaluation", json=read, headers={"connection": "close"}
                                      ).json()["context"]["decision"] for _ in range(12)}
            return got == {"deny"}
        assert wait_until(all_frozen, timeout=10), server.log()
        # /metrics adds up every worker's counts, whichever worker answers the scrape
        text = server.client.get("/metrics").text
        total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                    if line.startswith("policylang_decisions_total{") and 'endpoint="evaluation"' in line)
        assert total >= 52


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_exits_1(workers):
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        p = subprocess.run(SERVE + [str(CERT), "--port", str(port), "--workers", workers], capture_output=True,
                           text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 1, p.stderr
    assert "address already in use" in p.stderr.lower()
