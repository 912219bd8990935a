"""The store contract, run on SQLite and on a real Redis (tests/redis_fixture.py)."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from policylang.store import StoreError, TaskState, open_store

try:
    from redis_fixture import dead_store_url, redis_factory, redis_server, store, store_url  # noqa: F401
except ImportError:  # tests/ as a package
    from tests.redis_fixture import dead_store_url, redis_factory, redis_server, store, store_url  # noqa: F401

NOW = time.time()


# -- opening ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["", "state.db", "postgres://x/y", "sqlite://", "sqlite:", "http://x", 42,
                                 "sqlite:///s.db?synchronous=off", "sqlite:///s.db?journal=delete"])
def test_bad_urls_raise_store_error(url):
    with pytest.raises(StoreError):
        open_store(url)


def test_opening_does_not_connect_and_use_fails_closed(dead_store_url):
    s = open_store(dead_store_url)  # no exception: nothing was contacted
    started = time.monotonic()
    with pytest.raises(StoreError):
        s.ping()
    with pytest.raises(StoreError):
        s.is_revoked("ab")
    with pytest.raises(StoreError):
        s.start_task("T-1", NOW, NOW + 10)
    with pytest.raises(StoreError):
        s.get_approval("apr_x")
    assert time.monotonic() - started < 5, "an unreachable store must fail fast"


def test_sqlite_is_one_file_in_wal_mode(tmp_path):
    path = tmp_path / "state.db"
    s = open_store(f"sqlite:///{path}")
    assert not path.exists(), "opening must not touch the file"
    s.ping()
    assert path.exists()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    s.close()


@pytest.mark.parametrize("query, level", [("", 2), ("?synchronous=normal", 1), ("?synchronous=FULL", 2)])
def test_sqlite_durability_option(tmp_path, query, level):
    s = open_store(f"sqlite:///{tmp_path / 'state.db'}{query}")
    assert s._run(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0]) == level
    s.close()


def test_sqlite_can_refuse_to_create_a_missing_file(tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 'typo.db'}", create=False)
    with pytest.raises(StoreError, match="no such file"):
        s.is_revoked("ab")
    assert not (tmp_path / "typo.db").exists()


def test_sqlite_relative_url_is_relative_to_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = open_store("sqlite:///state.db")
    s.ping()
    s.close()
    assert (tmp_path / "state.db").exists()


# -- tasks and tokens ---------------------------------------------------------------------------


def test_task_start_is_recorded_once(store):
    first = store.start_task("T-1", NOW, NOW + 100)
    assert first == TaskState("T-1", NOW, NOW + 100, None)
    again = store.start_task("T-1", NOW + 50, NOW + 150)
    assert again.started_at == NOW and again.ends_at == NOW + 100
    assert store.get_task("T-1") == first
    assert store.get_task("T-unknown") is None


def test_revoke_task_revokes_its_live_tokens_and_marks_it(store):
    store.start_task("T-1", NOW, NOW + 100)
    store.record_token("aa", "T-1", NOW + 60, NOW)
    store.record_token("bb", "T-1", NOW + 90, NOW)
    store.record_token("cc", "T-2", NOW + 90, NOW)
    store.record_token("dd", None, NOW + 90, NOW)
    assert not store.is_revoked("aa", "T-1")
    assert sorted(store.revoke_task("T-1", NOW + 1)) == ["aa", "bb"]
    assert store.is_revoked("aa") and store.is_revoked("bb")
    assert store.is_revoked("zz", "T-1"), "any token of a revoked task is revoked"
    assert not store.is_revoked("cc", "T-2") and not store.is_revoked("dd")
    assert store.get_task("T-1").revoked


def test_revoking_an_unknown_task_blocks_it_for_good(store):
    assert store.revoke_task("T-9", NOW) == []
    state = store.start_task("T-9", NOW + 1, NOW + 100)
    assert state.revoked


def test_token_revocation_and_keep_until(store):
    store.record_token("ab12", None, NOW + 300, NOW)
    assert store.token_keep_until("ab12") == pytest.approx(NOW + 300)
    assert store.token_keep_until("ffff") is None
    assert not store.is_revoked("ab12")
    store.revoke_token("ab12", NOW + 300, NOW)
    store.revoke_token("ab12", NOW + 10, NOW)  # never shortens
    assert store.is_revoked("ab12")


def test_state_survives_reopening(store_url):
    a = open_store(store_url)
    a.start_task("T-1", NOW, NOW + 100)
    a.revoke_token("ab", NOW + 100, NOW)
    a.create_approval("apr_1", {"id": "apr_1", "n": 1}, NOW, NOW + 100)
    a.close()
    b = open_store(store_url)
    assert b.get_task("T-1").started_at == NOW
    assert b.is_revoked("ab")
    assert b.get_approval("apr_1") == {"id": "apr_1", "n": 1}
    b.close()


# -- approvals -------------------------------------------------------------------------------


def test_approval_crud(store):
    store.create_approval("apr_1", {"id": "apr_1", "v": 1}, NOW, NOW + 100)
    store.create_approval("apr_2", {"id": "apr_2", "v": 2}, NOW + 1, NOW + 100)
    with pytest.raises(StoreError):
        store.create_approval("apr_1", {"id": "apr_1"}, NOW, NOW + 100)
    assert store.get_approval("apr_1") == {"id": "apr_1", "v": 1}
    assert store.get_approval("nope") is None
    assert store.update_approval("apr_1", lambda d: {**d, "v": 3}) == {"id": "apr_1", "v": 3}
    assert store.get_approval("apr_1")["v"] == 3
    assert store.update_approval("nope", lambda d: d) is None
    assert [d["id"] for d in store.list_approvals(NOW)] == ["apr_1", "apr_2"]


def test_a_failing_change_writes_nothing(store):
    store.create_approval("apr_1", {"id": "apr_1", "v": 1}, NOW, NOW + 100)

    def boom(d):
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        store.update_approval("apr_1", boom)
    assert store.get_approval("apr_1") == {"id": "apr_1", "v": 1}


def test_updates_are_atomic_under_contention(store_url):
    setup = open_store(store_url)
    setup.create_approval("apr_c", {"id": "apr_c", "items": []}, NOW, NOW + 100)
    setup.close()
    errors = []

    def worker(n: int):
        s = open_store(store_url)  # one connection per thread, as replicas would have
        try:
            for i in range(10):
                s.update_approval("apr_c", lambda d: {**d, "items": d["items"] + [f"{n}-{i}"]})
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            s.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    check = open_store(store_url)
    assert len(check.get_approval("apr_c")["items"]) == 60
    check.close()


# -- Redis going away -----------------------------------------------------------------------


def test_redis_outage_fails_closed_and_loses_nothing(redis_factory):
    server = redis_factory()
    s = open_store(server.url)
    s.start_task("T-1", NOW, NOW + 100)
    s.record_token("aa", "T-1", NOW + 100, NOW)
    s.revoke_token("bb", NOW + 100, NOW)
    s.create_approval("apr_1", {"id": "apr_1"}, NOW, NOW + 100)

    server.stop(kill=True)  # gone mid-test, without a chance to save
    for op in (lambda: s.is_revoked("bb"), lambda: s.get_approval("apr_1"),
               lambda: s.revoke_task("T-1", NOW), lambda: s.start_task("T-2", NOW, NOW + 1)):
        with pytest.raises(StoreError):
            op()

    server.start()  # same port, same data directory
    assert s.is_revoked("bb"), "a revocation written before the outage was lost"
    assert s.get_task("T-1").started_at == NOW
    assert s.get_approval("apr_1") == {"id": "apr_1"}
    assert s.revoke_task("T-1", NOW + 1) == ["aa"]
    s.close()
