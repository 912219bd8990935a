"""The engine's request cache: decisions memoised by the request's exact bytes
(docs/engine.md#the-decision-cache).

A hit costs one ``marshal.dumps`` of the request (C, no validation), one dict lookup
and one :class:`~policylang.evaluation.decision.Decision` built from a frozen entry.
Why it can never change a decision:

* :func:`request_key` is ``marshal.dumps(request, 2)``, which refuses every value that is
  not an exact ``dict``, ``list``, ``str``, ``int``, ``float``, ``bool``, ``None`` (or
  another exact built-in type): subclasses (StrEnum, IntEnum, UserDict …) raise, and such
  requests take the engine's full path with its own cache. The bytes keep the types
  (``1``, ``1.0`` and ``True`` differ), the float bits (``-0.0`` is not ``0.0``) and key
  order. Format 2, not the default 4: from format 3 on, marshal flags every object whose
  reference count is above one and interned strings, so the same request would get
  other bytes depending on who else holds its parts. Format 2 depends on types and
  values alone; it does not record which objects the request shares, which no decision
  depends on (the evaluators compare values, never identities: a NaN shared by two
  places compares as two NaNs do).
* On a miss the engine decides ``marshal.loads(key)``, a private copy of the request
  rebuilt from the key, not the caller's object; so the decision stored under a key is
  a function of that key alone (a caller mutating its dicts during or after the call
  changes nothing that was keyed or stored), and a hit returns the decision a miss would
  compute for the same key. The copy equals the request value for value and type for
  type (what ``marshal`` round-trips), so the decision is the one the request gets from
  an engine without a cache.
* An entry is stored only after a full decision of that copy succeeded (validation
  included), so a request that a miss rejects with a RequestError has a key that was
  never stored: it is rejected, with the same error, cached or not.
* What a decision reads besides the request is fixed for the engine's life (the policy
  set, its constants, entity mappings, copied at construction) or keeps the request off
  this cache: entity callables (their answers may change), requests with an ``approval``
  (the checker's answer may change), decisions that touched a limit or carry errors.

Thread-safety: :meth:`RequestCache.get` takes no lock. It is one ``dict.get`` with a
``bytes`` key (hashed and compared in C; atomic under the GIL, and per-object locked in
free-threaded builds) and one store into the entry's flag; it never reorders. Writers
(:meth:`put`) hold the cache's lock. Eviction is CLOCK (second chance): a hit sets the
entry's flag, and the evictor, taking entries oldest first, gives a flagged entry one
more round at the back instead of evicting it, so the hot entries stay as with an LRU
without a reordering read.
"""

from __future__ import annotations

import marshal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

#: The longest request (in marshal bytes) the cache keeps: longer ones are decided
#: normally (by the engine's value-keyed cache). With ``maxsize`` entries the keys take
#: at most ``maxsize * MAX_KEY_BYTES`` bytes (10,000 entries: 40 MB; a typical request is
#: 150-400 bytes).
MAX_KEY_BYTES = 4096

_dumps = marshal.dumps
_loads = marshal.loads


def request_key(request: Any) -> bytes | None:
    """The cache key of an exact-``dict`` request: its marshal bytes, or ``None`` when it
    holds a value marshal refuses (subclasses, other types, nesting too deep), when it is
    longer than :data:`MAX_KEY_BYTES`, or when it changes while being read."""
    try:
        key = _dumps(request, 2)
    except Exception:  # noqa: BLE001 - ValueError (unmarshallable, too deep), RuntimeError (changed size)
        return None
    return key if len(key) <= MAX_KEY_BYTES else None


def request_copy(key: bytes) -> dict:
    """The request a key was made from, rebuilt: what the engine decides on a miss."""
    return _loads(key)


class RequestCache:
    """A bounded map ``request key -> frozen decision`` with lock-free reads (see the
    module docstring). ``ttl``: seconds an entry lives (``None``: until evicted).
    ``data`` maps a key to its entry ``[value, expiry or None, referenced]``; the engine's
    hit path reads it as :meth:`get` does, without the call."""

    __slots__ = ("_lock", "_ttl", "clock", "data", "maxsize")

    def __init__(self, maxsize: int, ttl: float | None = None, clock: Callable[[], float] = time.monotonic):
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.data: OrderedDict = OrderedDict()
        self.maxsize = maxsize
        self._ttl = ttl if ttl else None
        self.clock = clock
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.data)

    def get(self, key: bytes) -> Any:
        """The value stored under ``key``, or ``None``. No lock (module docstring)."""
        entry = self.data.get(key)
        if entry is None:
            return None
        if entry[1] is not None and entry[1] <= self.clock():
            return None  # expired: put() replaces it, eviction drops it
        entry[2] = True  # the CLOCK reference flag: one store, no reordering
        return entry[0]

    def put(self, key: bytes, value: Any) -> None:
        """Store ``value`` under ``key`` (replacing what was there), evicting to stay
        within ``maxsize``."""
        ttl = self._ttl
        entry = [value, None if ttl is None else self.clock() + ttl, False]
        data = self.data
        with self._lock:
            if key in data:
                data[key] = entry
                return
            sweeps = len(data)  # each flagged entry gets one more round, then goes
            while len(data) >= self.maxsize:
                old_key, old = data.popitem(last=False)
                if old[2] and sweeps > 0 and (old[1] is None or old[1] > self.clock()):
                    sweeps -= 1
                    old[2] = False
                    data[old_key] = old
            data[key] = entry

    def clear(self) -> None:
        with self._lock:
            self.data.clear()
