"""The shared state of the zero-standing-privilege pieces (docs/zero-standing-privilege.md).

Revoked token ids, issued tokens per task, task lifetimes and approval tickets live in
a store, so that several replicas of a decision service agree on them. One interface,
two implementations:

* ``sqlite:///state.db`` (relative path) or ``sqlite:////var/lib/pdp/state.db``
  (absolute): the embedded default, one file in WAL mode, safe for several processes
  on one host. ``sqlite:///:memory:`` keeps the state in this process only. Every
  commit is fsync-ed (``synchronous=FULL``); ``?synchronous=normal`` trades that for
  speed: still safe when a process dies, but the last commits may be lost when the
  machine loses power.
* ``redis://host:6379/0`` (or ``rediss://`` for TLS, ``unix:///path.sock``): for
  several hosts.

Opening a store never connects; the first operation does. Every failure to reach or
use the backend raises :class:`StoreError`, and callers fail closed on it: a token is
never accepted, and an approval never confirmed, when the store could not be asked.

All times are POSIX seconds passed in by the caller (the store has no clock of its own,
so the issuer's and the approvals' clocks are the only ones that count).
"""

from __future__ import annotations

import abc
import json
import re
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["StoreError", "Store", "TaskState", "open_store", "APPROVAL_RETENTION"]

#: how long an approval ticket is kept after it expired (for `approvals list --all`)
APPROVAL_RETENTION = 7 * 24 * 3600


class StoreError(Exception):
    """The store could not be reached or used. Callers fail closed."""


@dataclass(frozen=True)
class TaskState:
    """What the store knows of a task: when it started, when it must end, and whether
    it was revoked (``revoked_at`` is None while it is not)."""

    task_id: str
    started_at: float
    ends_at: float
    revoked_at: float | None = None
    #: the principal the task is bound to (the agent that gets its tokens); None for a
    #: task recorded before tasks were bound, or only revoked
    principal: str | None = None
    #: the root of the delegation chain it is bound to (the principal when there is none)
    root: str | None = None
    #: who opened it (Issuer.open_task, POST /v1/tasks); None when its first issue bound it
    opened_by: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class Store(abc.ABC):
    """The operations the issuer and the approvals need. Every method raises
    :class:`StoreError` when the backend cannot be used; none returns a guess."""

    url: str

    # -- tokens and tasks ---------------------------------------------------------

    @abc.abstractmethod
    def start_task(self, task_id: str, now: float, ends_at: float) -> TaskState:
        """Record the start of ``task_id`` unless it is already known (atomically), and
        return its state. A task id is never forgotten, so it cannot be reused."""

    @abc.abstractmethod
    def get_task(self, task_id: str) -> TaskState | None:
        """The state of a task, or None if it never started nor was revoked."""

    @abc.abstractmethod
    def record_token(self, jti: str, task_id: str | None, keep_until: float, now: float) -> None:
        """Remember an issued token (for revoke_task and for how long to keep a
        revocation) until ``keep_until``."""

    @abc.abstractmethod
    def token_keep_until(self, jti: str) -> float | None:
        """When a recorded token may be forgotten (its expiry plus leeway), or None."""

    @abc.abstractmethod
    def revoke_token(self, jti: str, keep_until: float, now: float) -> None:
        """Mark ``jti`` revoked until ``keep_until``."""

    @abc.abstractmethod
    def revoke_task(self, task_id: str, now: float) -> list[str]:
        """Mark the task revoked (recording it if it never started, so it can never
        issue) and revoke every token recorded for it. Returns those jtis."""

    @abc.abstractmethod
    def is_revoked(self, jti: str, task_id: str | None = None) -> bool:
        """True when ``jti`` was revoked, or ``task_id`` (when given) was."""

    # -- allow-listed tokens, bound tasks, compare-and-revoke (issue 11) -----------------
    # Not abstract, so that a third-party Store still instantiates; both stores here
    # implement them, and the issuer needs them.

    def token_status(self, jti: str, task_id: str | None = None) -> str:
        """``"revoked"`` (the token or its task was revoked), ``"unknown"`` (this store
        never recorded it as issued, or forgot it after its expiry) or ``"live"``. A
        token verifies only when it is live: the store is an allow-list, so a store that
        lost its data refuses every token instead of accepting revoked ones again.
        (This default asks twice; the stores here ask in one round trip.)"""
        if self.is_revoked(jti, task_id):
            return "revoked"
        return "unknown" if self.token_keep_until(jti) is None else "live"

    def claim_task(self, task_id: str, now: float, ends_at: float, *, principal: str, root: str,
                   create: bool = True) -> TaskState | None:
        """Atomically: when ``task_id`` is unknown, record it bound to ``principal`` and
        ``root`` (if ``create``; else return None); when it is known but unbound (a
        record from before binding), bind it. Returns the task's state; the caller
        compares the binding."""
        raise NotImplementedError(f"{type(self).__name__} does not implement claim_task")

    def open_task(self, task_id: str, now: float, ends_at: float, *, principal: str, root: str,
                  opened_by: str) -> TaskState | None:
        """Record a new task opened by ``opened_by``, bound to ``principal`` and ``root``.
        Returns its state, or None (nothing written) when the id was ever used."""
        raise NotImplementedError(f"{type(self).__name__} does not implement open_task")

    def revoke_if_live(self, jti: str, task_id: str | None, keep_until: float, now: float) -> bool:
        """Atomically: if ``jti`` is live (recorded, not revoked, its task not revoked),
        revoke it until ``keep_until`` and return True; otherwise change nothing and
        return False. Refresh uses it so that one token is replaced at most once."""
        raise NotImplementedError(f"{type(self).__name__} does not implement revoke_if_live")

    def exists(self) -> bool:
        """Whether the store was created (a SQLite file that exists; a Redis database
        carrying the store's marker key). ``serve`` refuses a store that does not
        exist unless told to create it (``--create-store``)."""
        return True

    def initialize(self, now: float) -> None:
        """Create the store (idempotent): the SQLite file and tables, the Redis marker."""
        self.ping()

    # -- limits (docs/language.md#limits) ---------------------------------------------
    # Not abstract, so that a third-party Store still instantiates; it then keeps no
    # limits, and limited permits fail closed with this error in the decision.

    def reserve_limits(self, reservation_id: str, entries: list[tuple[str, float, float, float | None]],
                       now: float) -> tuple[str, int | None, list[float]]:
        """Check and consume every counter of one permit in one atomic step.

        ``entries``: ``(counter, amount, bound, expires_at or None)``. If a reservation
        ``reservation_id`` is active, nothing is consumed: ``("replayed", None, used)``.
        Else if every ``used + amount <= bound``, all are consumed and the reservation is
        recorded: ``("reserved", None, used after)``. Else nothing is consumed:
        ``("refused", index of the first counter that would exceed, used now)``."""
        raise StoreError(f"{type(self).__name__} does not keep limits")

    def release_limits(self, reservation_id: str, now: float) -> bool:
        """Give an active reservation's amounts back to its counters (those whose window
        has not ended). True if it was active, False if unknown or released already."""
        raise StoreError(f"{type(self).__name__} does not keep limits")

    def limit_used(self, counter: str, now: float) -> float:
        """What a counter holds now (0 for an unknown or expired one)."""
        raise StoreError(f"{type(self).__name__} does not keep limits")

    # -- approvals ------------------------------------------------------------------

    @abc.abstractmethod
    def create_approval(self, approval_id: str, data: dict, created_at: float, expires_at: float) -> None:
        """Store a new ticket; StoreError if the id exists."""

    @abc.abstractmethod
    def get_approval(self, approval_id: str) -> dict | None:
        """A ticket's data, or None."""

    @abc.abstractmethod
    def update_approval(self, approval_id: str, change: Callable[[dict], dict]) -> dict | None:
        """Atomically replace a ticket's data with ``change(data)``; returns the new
        data, or None when there is no such ticket. ``change`` may raise to abort
        (the exception propagates and nothing is written)."""

    @abc.abstractmethod
    def list_approvals(self, now: float) -> list[dict]:
        """Every ticket still kept (expired ones for APPROVAL_RETENTION), oldest first."""

    # -- lifecycle ------------------------------------------------------------------

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise StoreError unless the backend answers."""

    def close(self) -> None:  # pragma: no cover - trivial default
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


def _dumps(data: Any) -> str:
    try:
        return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise StoreError(f"cannot store value: {e}") from e


def _loads(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError) as e:
        raise StoreError(f"corrupt value in store: {e}") from e


_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.I)


def open_store(url: str, **options: Any) -> Store:
    """Open (without connecting) the store at ``url``.

    ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``sqlite:///:memory:``,
    ``redis://[:password@]host[:port][/db]``, ``rediss://…`` or ``unix://…``.
    An unsupported or malformed URL raises :class:`StoreError`. ``options`` go to the
    implementation: ``timeout`` (seconds) for both; ``create=False`` makes a missing
    SQLite file a StoreError instead of a new empty store (the command line uses it);
    ``key_prefix`` for Redis.
    """
    if isinstance(url, Store):
        return url
    if not isinstance(url, str) or not url.strip():
        raise StoreError("store URL must be a non-empty string")
    m = _SCHEME.match(url)
    if not m:
        raise StoreError(f"not a store URL: {url!r} (use sqlite:///FILE or redis://HOST:PORT/DB)")
    scheme = m.group(1).lower()
    if scheme == "sqlite":
        from .sqlite_store import SQLiteStore

        rest = url[m.end():]
        rest, _, query = rest.partition("?")
        if not rest.startswith("/") or rest == "/":
            raise StoreError(f"not a SQLite URL: {url!r} (use sqlite:///relative.db or sqlite:////abs.db)")
        from urllib.parse import parse_qsl

        for key, value in parse_qsl(query, keep_blank_values=True):
            if key == "synchronous" and value.lower() in ("full", "normal"):
                options.setdefault("synchronous", value.lower())
            else:
                raise StoreError(f"unsupported SQLite URL option {key}={value!r} "
                                 "(only synchronous=full|normal)")
        return SQLiteStore(rest[1:], url=url, **options)
    if scheme in ("redis", "rediss", "unix"):
        from .redis_store import RedisStore

        return RedisStore(url, **options)
    raise StoreError(f"unsupported store scheme {scheme!r} in {url!r} (use sqlite or redis)")
