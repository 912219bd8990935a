"""The embedded store: one SQLite file in WAL mode.

Several processes on one host may share the file (SQLite's locks serialise writers;
readers never block). Writes run in ``BEGIN IMMEDIATE`` transactions with
``synchronous=FULL`` (by default), so a committed revocation survives a crash of the
process and of the machine; with ``?synchronous=normal`` it survives a crash of the
process only.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Callable

from . import APPROVAL_RETENTION, Store, StoreError, TaskState, _dumps, _loads

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    started_at REAL NOT NULL,
    ends_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS tokens (
    jti TEXT PRIMARY KEY,
    task TEXT,
    keep_until REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_by_task ON tokens(task);
CREATE TABLE IF NOT EXISTS revoked (
    jti TEXT PRIMARY KEY,
    keep_until REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS limit_counters (
    key TEXT PRIMARY KEY,
    used REAL NOT NULL,
    expires_at REAL
);
CREATE TABLE IF NOT EXISTS limit_reservations (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    entries TEXT NOT NULL,
    keep_until REAL
);
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    data TEXT NOT NULL
);
"""

#: purge forgotten rows at most this often (seconds of the caller's clock)
_PURGE_EVERY = 60.0

#: the task binding (issue 11 finding 13), added to files made before it existed
_TASK_COLUMNS = (("principal", "TEXT"), ("root", "TEXT"), ("opened_by", "TEXT"))
_TASK_SELECT = "SELECT id, started_at, ends_at, revoked_at, principal, root, opened_by FROM tasks WHERE id = ?"


def _migrate_tasks(conn: sqlite3.Connection) -> None:
    have = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
    for name, kind in _TASK_COLUMNS:
        if name not in have:
            try:
                conn.execute(f"ALTER TABLE tasks ADD COLUMN {name} {kind}")
            except sqlite3.OperationalError as e:  # another process added it meanwhile
                if "duplicate column" not in str(e).lower():
                    raise


class SQLiteStore(Store):
    def __init__(self, path: str, *, url: str | None = None, timeout: float = 5.0,
                 synchronous: str = "full", create: bool = True):
        if not path:
            raise StoreError("SQLite store needs a file path")
        if synchronous not in ("full", "normal"):
            raise StoreError("synchronous must be 'full' or 'normal'")
        self.synchronous = synchronous
        #: False: refuse to create a missing file (a tool pointed at a mistyped path must
        #: not check revocations against a new, empty store)
        self.create = create
        self.path = path
        self.url = url or f"sqlite:///{path}"
        self.timeout = float(timeout)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._last_purge = float("-inf")

    # -- connection -------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        if not self.create and self.path != ":memory:" and not os.path.isfile(self.path):
            raise StoreError(f"SQLite store {self.path}: no such file")
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                                   check_same_thread=False)
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                if self.path != ":memory:":
                    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                    if str(mode).lower() != "wal":
                        raise StoreError(f"{self.path}: cannot switch to WAL mode (got {mode})")
                conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
                conn.executescript(_SCHEMA)
                _migrate_tasks(conn)
            except BaseException:
                conn.close()
                raise
        except sqlite3.Error as e:
            raise StoreError(f"SQLite store {self.path}: {e}") from e
        self._conn = conn
        return conn

    def _run(self, fn, *, write: bool = False):
        """Run ``fn(conn)`` under the lock, in a transaction when writing."""
        with self._lock:
            conn = self._connect()
            try:
                if not write:
                    return fn(conn)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result
            except sqlite3.Error as e:
                raise StoreError(f"SQLite store {self.path}: {e}") from e

    def _maybe_purge(self, conn: sqlite3.Connection, now: float) -> None:
        if now - self._last_purge < _PURGE_EVERY:
            return
        self._last_purge = now
        conn.execute("DELETE FROM tokens WHERE keep_until < ?", (now,))
        conn.execute("DELETE FROM revoked WHERE keep_until < ?", (now,))
        conn.execute("DELETE FROM approvals WHERE expires_at < ?", (now - APPROVAL_RETENTION,))
        conn.execute("DELETE FROM limit_counters WHERE expires_at IS NOT NULL AND expires_at < ?", (now,))
        conn.execute("DELETE FROM limit_reservations WHERE keep_until IS NOT NULL AND keep_until < ?", (now,))

    # -- tasks and tokens ----------------------------------------------------------------

    @staticmethod
    def _task(row) -> TaskState | None:
        if row is None:
            return None
        return TaskState(*row)

    def start_task(self, task_id: str, now: float, ends_at: float) -> TaskState:
        def fn(conn):
            conn.execute("INSERT OR IGNORE INTO tasks (id, started_at, ends_at) VALUES (?, ?, ?)",
                         (task_id, now, ends_at))
            return self._task(conn.execute(
                _TASK_SELECT, (task_id,)).fetchone())

        return self._run(fn, write=True)

    def get_task(self, task_id: str) -> TaskState | None:
        return self._run(lambda conn: self._task(conn.execute(
            _TASK_SELECT, (task_id,)).fetchone()))

    def record_token(self, jti: str, task_id: str | None, keep_until: float, now: float) -> None:
        def fn(conn):
            self._maybe_purge(conn, now)
            conn.execute("INSERT OR REPLACE INTO tokens (jti, task, keep_until) VALUES (?, ?, ?)",
                         (jti, task_id, keep_until))

        self._run(fn, write=True)

    def token_keep_until(self, jti: str) -> float | None:
        row = self._run(lambda conn: conn.execute(
            "SELECT keep_until FROM tokens WHERE jti = ?", (jti,)).fetchone())
        return None if row is None else row[0]

    def revoke_token(self, jti: str, keep_until: float, now: float) -> None:
        def fn(conn):
            self._maybe_purge(conn, now)
            conn.execute(
                "INSERT INTO revoked (jti, keep_until) VALUES (?, ?) "
                "ON CONFLICT(jti) DO UPDATE SET keep_until = max(keep_until, excluded.keep_until)",
                (jti, keep_until))

        self._run(fn, write=True)

    def revoke_task(self, task_id: str, now: float) -> list[str]:
        def fn(conn):
            conn.execute("INSERT OR IGNORE INTO tasks (id, started_at, ends_at) VALUES (?, ?, ?)",
                         (task_id, now, now))
            conn.execute("UPDATE tasks SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                         (now, task_id))
            rows = conn.execute("SELECT jti, keep_until FROM tokens WHERE task = ? AND keep_until >= ? "
                                "ORDER BY rowid", (task_id, now)).fetchall()
            conn.executemany(
                "INSERT INTO revoked (jti, keep_until) VALUES (?, ?) "
                "ON CONFLICT(jti) DO UPDATE SET keep_until = max(keep_until, excluded.keep_until)", rows)
            return [r[0] for r in rows]

        return self._run(fn, write=True)

    def is_revoked(self, jti: str, task_id: str | None = None) -> bool:
        def fn(conn):
            if conn.execute("SELECT 1 FROM revoked WHERE jti = ?", (jti,)).fetchone():
                return True
            if task_id is not None:
                row = conn.execute("SELECT revoked_at FROM tasks WHERE id = ?", (task_id,)).fetchone()
                return row is not None and row[0] is not None
            return False

        return self._run(fn)

    # -- allow-list, task binding, compare-and-revoke -----------------------------------

    @staticmethod
    def _status(conn, jti: str, task_id: str | None) -> str:
        if conn.execute("SELECT 1 FROM revoked WHERE jti = ?", (jti,)).fetchone():
            return "revoked"
        if task_id is not None:
            row = conn.execute("SELECT revoked_at FROM tasks WHERE id = ?", (task_id,)).fetchone()
            if row is not None and row[0] is not None:
                return "revoked"
        if conn.execute("SELECT 1 FROM tokens WHERE jti = ?", (jti,)).fetchone() is None:
            return "unknown"
        return "live"

    def token_status(self, jti: str, task_id: str | None = None) -> str:
        return self._run(lambda conn: self._status(conn, jti, task_id))

    def claim_task(self, task_id: str, now: float, ends_at: float, *, principal: str, root: str,
                   create: bool = True) -> TaskState | None:
        def fn(conn):
            if create:
                conn.execute("INSERT OR IGNORE INTO tasks (id, started_at, ends_at, principal, root) "
                             "VALUES (?, ?, ?, ?, ?)", (task_id, now, ends_at, principal, root))
            conn.execute("UPDATE tasks SET principal = ?, root = ? WHERE id = ? AND principal IS NULL "
                         "AND revoked_at IS NULL", (principal, root, task_id))
            return self._task(conn.execute(_TASK_SELECT, (task_id,)).fetchone())

        return self._run(fn, write=True)

    def open_task(self, task_id: str, now: float, ends_at: float, *, principal: str, root: str,
                  opened_by: str) -> TaskState | None:
        def fn(conn):
            cur = conn.execute("INSERT OR IGNORE INTO tasks (id, started_at, ends_at, principal, root, opened_by) "
                               "VALUES (?, ?, ?, ?, ?, ?)", (task_id, now, ends_at, principal, root, opened_by))
            if cur.rowcount != 1:
                return None
            return self._task(conn.execute(_TASK_SELECT, (task_id,)).fetchone())

        return self._run(fn, write=True)

    def revoke_if_live(self, jti: str, task_id: str | None, keep_until: float, now: float) -> bool:
        def fn(conn):
            if self._status(conn, jti, task_id) != "live":
                return False
            conn.execute("INSERT INTO revoked (jti, keep_until) VALUES (?, ?)", (jti, keep_until))
            return True

        return self._run(fn, write=True)

    def exists(self) -> bool:
        return self.path == ":memory:" or os.path.isfile(self.path)

    def initialize(self, now: float) -> None:
        with self._lock:
            create, self.create = self.create, True
            try:
                self._run(lambda conn: None)
            finally:
                self.create = create

    # -- approvals ---------------------------------------------------------------------

    def create_approval(self, approval_id: str, data: dict, created_at: float, expires_at: float) -> None:
        text = _dumps(data)

        def fn(conn):
            self._maybe_purge(conn, created_at)
            try:
                conn.execute("INSERT INTO approvals (id, created_at, expires_at, data) VALUES (?, ?, ?, ?)",
                             (approval_id, created_at, expires_at, text))
            except sqlite3.IntegrityError as e:
                raise StoreError(f"approval {approval_id} already exists") from e

        self._run(fn, write=True)

    def get_approval(self, approval_id: str) -> dict | None:
        row = self._run(lambda conn: conn.execute(
            "SELECT data FROM approvals WHERE id = ?", (approval_id,)).fetchone())
        return None if row is None else _loads(row[0])

    def update_approval(self, approval_id: str, change: Callable[[dict], dict]) -> dict | None:
        def fn(conn):
            row = conn.execute("SELECT data FROM approvals WHERE id = ?", (approval_id,)).fetchone()
            if row is None:
                return None
            new = change(_loads(row[0]))
            conn.execute("UPDATE approvals SET data = ? WHERE id = ?", (_dumps(new), approval_id))
            return new

        return self._run(fn, write=True)

    def list_approvals(self, now: float) -> list[dict]:
        rows = self._run(lambda conn: conn.execute(
            "SELECT data FROM approvals WHERE expires_at >= ? ORDER BY created_at, rowid",
            (now - APPROVAL_RETENTION,)).fetchall())
        return [_loads(r[0]) for r in rows]

    # -- limits (docs/language.md#limits) -----------------------------------------------

    @staticmethod
    def _used(conn, counter: str, now: float) -> float:
        row = conn.execute("SELECT used, expires_at FROM limit_counters WHERE key = ?", (counter,)).fetchone()
        if row is None or (row[1] is not None and row[1] <= now):
            return 0
        return row[0]

    def reserve_limits(self, reservation_id, entries, now):
        def fn(conn):  # one BEGIN IMMEDIATE transaction: writers are serialised across processes
            self._maybe_purge(conn, now)
            row = conn.execute("SELECT state FROM limit_reservations WHERE id = ?", (reservation_id,)).fetchone()
            if row is not None and row[0] == "active":
                return ("replayed", None, [self._used(conn, c, now) for c, _a, _b, _e in entries])
            used = [self._used(conn, c, now) for c, _a, _b, _e in entries]
            for i, ((_c, amount, bound, _e), u) in enumerate(zip(entries, used)):
                if u + amount > bound:
                    return ("refused", i, used)
            after = []
            for (c, amount, _b, expires), u in zip(entries, used):
                conn.execute("INSERT INTO limit_counters (key, used, expires_at) VALUES (?, ?, ?) "
                             "ON CONFLICT(key) DO UPDATE SET used = excluded.used, expires_at = excluded.expires_at",
                             (c, u + amount, expires))
                after.append(u + amount)
            ends = [e for _c, _a, _b, e in entries]
            keep = None if any(e is None for e in ends) else max(ends)
            conn.execute("INSERT OR REPLACE INTO limit_reservations (id, state, entries, keep_until) "
                         "VALUES (?, 'active', ?, ?)",
                         (reservation_id, _dumps([[c, a] for c, a, _b, _e in entries]), keep))
            return ("reserved", None, after)

        return self._run(fn, write=True)

    def release_limits(self, reservation_id, now):
        def fn(conn):
            row = conn.execute("SELECT state, entries FROM limit_reservations WHERE id = ?",
                               (reservation_id,)).fetchone()
            if row is None or row[0] != "active":
                return False
            for counter, amount in _loads(row[1]):
                conn.execute("UPDATE limit_counters SET used = max(0, used - ?) "
                             "WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)", (amount, counter, now))
            conn.execute("UPDATE limit_reservations SET state = 'released' WHERE id = ?", (reservation_id,))
            return True

        return self._run(fn, write=True)

    def limit_used(self, counter, now):
        return self._run(lambda conn: self._used(conn, counter, now))

    # -- lifecycle ---------------------------------------------------------------------

    def ping(self) -> None:
        self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None
