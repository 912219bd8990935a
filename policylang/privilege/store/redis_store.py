"""The shared store for several hosts: Redis (5.0 or later).

Keys (all under ``key_prefix``, default ``policylang:``):

* ``meta``             the store's marker ("policylang-store/1"), set when it is created
                       (``serve --create-store``); a database without it is not a store
* ``task:<id>``        hash {started_at, ends_at, revoked_at, principal, root, opened_by};
                       never expires
* ``tasktokens:<id>``  sorted set jti -> keep_until of the task's tokens
* ``token:<jti>``      keep_until of an issued token; expires then
* ``revoked:<jti>``    keep_until of a revoked token; expires then
* ``approval:<id>``    a ticket's JSON; expires APPROVAL_RETENTION after the ticket
* ``approvals``        sorted set of ticket ids in the order they were opened
* ``approvals:seq``    the sequence number behind that order
* ``limit:<counter>``  what a limit counter used (docs/language.md#limits); expires at
                       the end of its window (never, without a window)
* ``limitres:<id>``    hash {state, entries} of a reservation; expires with its last window

Expiries are set relative to the caller's ``now`` (``PX``), so a caller's clock and the
server's need not agree. Durability is the server's: run it with ``appendonly yes``
(``appendfsync always`` for no loss at all) so that a restart loses no revocation.
"""

from __future__ import annotations

import math
from typing import Callable

from . import APPROVAL_RETENTION, Store, StoreError, TaskState, _dumps, _loads


def _ms(seconds: float) -> int:
    return max(1, int(math.ceil(seconds * 1000)))


_MARKER = "policylang-store/1"

# KEYS: task ; ARGV: now, ends_at, principal, root, create (1/0)
_CLAIM_TASK = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[5] ~= '1' then return {} end
  redis.call('HSET', KEYS[1], 'started_at', ARGV[1], 'ends_at', ARGV[2], 'principal', ARGV[3], 'root', ARGV[4])
elseif redis.call('HEXISTS', KEYS[1], 'principal') == 0 and redis.call('HEXISTS', KEYS[1], 'revoked_at') == 0 then
  redis.call('HSET', KEYS[1], 'principal', ARGV[3], 'root', ARGV[4])
end
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: task ; ARGV: now, ends_at, principal, root, opened_by
_OPEN_TASK = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {} end
redis.call('HSET', KEYS[1], 'started_at', ARGV[1], 'ends_at', ARGV[2], 'principal', ARGV[3], 'root', ARGV[4],
           'opened_by', ARGV[5])
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: revoked:<jti>, task:<id> (or any key when there is no task), token:<jti>
# ARGV: px, keep_until, has_task (1/0)
_REVOKE_IF_LIVE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if ARGV[3] == '1' and redis.call('HEXISTS', KEYS[2], 'revoked_at') == 1 then return 0 end
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
return 1
"""


# docs/language.md#limits: check and consume in one step (a script runs atomically).
# KEYS: limitres:<id>, limit:<c1>, limit:<c2> ... ; ARGV: n, then per counter amount, bound,
# px (0 = no expiry), then the reservation's entries JSON and its px (0 = no expiry).
# Numbers go back as strings: Redis truncates Lua numbers to integers.
_RESERVE = """
local n = tonumber(ARGV[1])
local used = {}
for i = 1, n do used[i] = tonumber(redis.call('GET', KEYS[i + 1]) or '0') end
if redis.call('HGET', KEYS[1], 'state') == 'active' then
  local out = {'replayed', '0'}
  for i = 1, n do out[#out + 1] = tostring(used[i]) end
  return out
end
for i = 1, n do
  if used[i] + tonumber(ARGV[3 * i - 1]) > tonumber(ARGV[3 * i]) then
    local out = {'refused', tostring(i)}
    for j = 1, n do out[#out + 1] = tostring(used[j]) end
    return out
  end
end
local out = {'reserved', '0'}
for i = 1, n do
  local v = redis.call('INCRBYFLOAT', KEYS[i + 1], ARGV[3 * i - 1])
  local px = tonumber(ARGV[3 * i + 1])
  if px > 0 then redis.call('PEXPIRE', KEYS[i + 1], px) end
  out[#out + 1] = v
end
redis.call('HSET', KEYS[1], 'state', 'active', 'entries', ARGV[3 * n + 2])
local rpx = tonumber(ARGV[3 * n + 3])
if rpx > 0 then redis.call('PEXPIRE', KEYS[1], rpx) else redis.call('PERSIST', KEYS[1]) end
return out
"""

# KEYS: limitres:<id>, limit:<c1> ... (the reservation's counters); ARGV: the entries JSON
# read before, then the amounts. Released only if still active with those entries.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'active' then return 0 end
if redis.call('HGET', KEYS[1], 'entries') ~= ARGV[1] then return -1 end
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local v = tonumber(redis.call('INCRBYFLOAT', KEYS[i], '-' .. ARGV[i]))
    if v < 0 then redis.call('INCRBYFLOAT', KEYS[i], tostring(-v)) end
  end
end
redis.call('HSET', KEYS[1], 'state', 'released')
return 1
"""


def _pairs(flat) -> dict:
    if isinstance(flat, dict):
        return flat
    return dict(zip(flat[0::2], flat[1::2]))


class RedisStore(Store):
    def __init__(self, url: str, *, timeout: float = 2.0, key_prefix: str = "policylang:",
                 create: bool = True):  # create: meaningful for files only
        try:
            import redis
            from redis.backoff import ExponentialBackoff
            from redis.retry import Retry
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise StoreError("the redis store needs the 'redis' package "
                             "(pip install 'policylang[credentials]')") from e
        self._redis = redis
        self.url = url
        self.prefix = key_prefix
        try:
            # from_url only parses; the first command connects.
            self._client = redis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
                retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
                decode_responses=True,
                health_check_interval=30,
            )
        except (ValueError, TypeError, redis.exceptions.RedisError) as e:
            raise StoreError(f"bad Redis URL {url!r}: {e}") from e

    # -- plumbing ---------------------------------------------------------------------

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _call(self, fn):
        try:
            return fn(self._client)
        except self._redis.exceptions.RedisError as e:
            raise StoreError(f"Redis store {self._safe_url()}: {e}") from e
        except OSError as e:  # a socket error that escaped redis-py's wrapping
            raise StoreError(f"Redis store {self._safe_url()}: {e}") from e

    def _safe_url(self) -> str:
        """The URL without a password, for error messages."""
        import re

        return re.sub(r"//([^/@]*)@", "//***@", self.url)

    def __repr__(self) -> str:
        return f"<RedisStore {self._safe_url()}>"

    # -- tasks and tokens ----------------------------------------------------------------

    @staticmethod
    def _task(task_id: str, h: dict) -> TaskState | None:
        if not h or "started_at" not in h:
            return None
        try:
            revoked = h.get("revoked_at")
            return TaskState(task_id, float(h["started_at"]), float(h["ends_at"]),
                             float(revoked) if revoked is not None else None,
                             h.get("principal"), h.get("root"), h.get("opened_by"))
        except (KeyError, ValueError) as e:
            raise StoreError(f"corrupt task record {task_id!r}: {e}") from e

    def start_task(self, task_id: str, now: float, ends_at: float) -> TaskState:
        key = self._k("task", task_id)

        def fn(r):
            pipe = r.pipeline(transaction=True)
            pipe.hsetnx(key, "started_at", repr(float(now)))
            pipe.hsetnx(key, "ends_at", repr(float(ends_at)))
            pipe.hgetall(key)
            return pipe.execute()[-1]

        return self._task(task_id, self._call(fn))

    def get_task(self, task_id: str) -> TaskState | None:
        return self._task(task_id, self._call(lambda r: r.hgetall(self._k("task", task_id))))

    def record_token(self, jti: str, task_id: str | None, keep_until: float, now: float) -> None:
        if keep_until <= now:
            return

        def fn(r):
            pipe = r.pipeline(transaction=True)
            pipe.set(self._k("token", jti), repr(float(keep_until)), px=_ms(keep_until - now))
            if task_id is not None:
                tkey = self._k("tasktokens", task_id)
                pipe.zadd(tkey, {jti: float(keep_until)})
                pipe.zremrangebyscore(tkey, "-inf", f"({float(now)!r}")
            pipe.execute()

        self._call(fn)

    def token_keep_until(self, jti: str) -> float | None:
        raw = self._call(lambda r: r.get(self._k("token", jti)))
        if raw is None:
            return None
        try:
            return float(raw)
        except ValueError as e:
            raise StoreError(f"corrupt token record {jti!r}") from e

    def revoke_token(self, jti: str, keep_until: float, now: float) -> None:
        if keep_until <= now:
            return  # the token has expired (plus leeway): nothing left to refuse

        key = self._k("revoked", jti)

        def fn(r):
            old = r.pttl(key)
            want = _ms(keep_until - now)
            if old is None or old < want:
                r.set(key, repr(float(keep_until)), px=want)

        self._call(fn)

    def revoke_task(self, task_id: str, now: float) -> list[str]:
        key = self._k("task", task_id)
        tkey = self._k("tasktokens", task_id)

        def fn(r):
            pipe = r.pipeline(transaction=True)
            pipe.hsetnx(key, "started_at", repr(float(now)))
            pipe.hsetnx(key, "ends_at", repr(float(now)))
            pipe.hsetnx(key, "revoked_at", repr(float(now)))
            pipe.zrangebyscore(tkey, f"{float(now)!r}", "+inf", withscores=True)
            tokens = pipe.execute()[-1]
            if tokens:
                pipe = r.pipeline(transaction=True)
                for jti, keep_until in tokens:
                    pipe.set(self._k("revoked", jti), repr(float(keep_until)),
                             px=_ms(keep_until - now))
                pipe.execute()
            return [jti for jti, _ in tokens]

        return self._call(fn)

    def is_revoked(self, jti: str, task_id: str | None = None) -> bool:
        def fn(r):
            pipe = r.pipeline(transaction=False)
            pipe.exists(self._k("revoked", jti))
            if task_id is not None:
                pipe.hexists(self._k("task", task_id), "revoked_at")
            return any(pipe.execute())

        return bool(self._call(fn))

    # -- allow-list, task binding, compare-and-revoke -----------------------------------

    def token_status(self, jti: str, task_id: str | None = None) -> str:
        def fn(r):
            pipe = r.pipeline(transaction=True)
            pipe.exists(self._k("revoked", jti))
            pipe.exists(self._k("token", jti))
            if task_id is not None:
                pipe.hexists(self._k("task", task_id), "revoked_at")
            return pipe.execute()

        out = self._call(fn)
        if out[0] or (task_id is not None and out[2]):
            return "revoked"
        return "live" if out[1] else "unknown"

    def claim_task(self, task_id: str, now: float, ends_at: float, *, principal: str, root: str,
                   create: bool = True) -> TaskState | None:
        flat = self._call(lambda r: r.eval(_CLAIM_TASK, 1, self._k("task", task_id), repr(float(now)),
                                           repr(float(ends_at)), principal, root, "1" if create else "0"))
        return self._task(task_id, _pairs(flat or []))

    def open_task(self, task_id: str, now: float, ends_at: float, *, principal: str, root: str,
                  opened_by: str) -> TaskState | None:
        flat = self._call(lambda r: r.eval(_OPEN_TASK, 1, self._k("task", task_id), repr(float(now)),
                                           repr(float(ends_at)), principal, root, opened_by))
        return self._task(task_id, _pairs(flat or []))

    def revoke_if_live(self, jti: str, task_id: str | None, keep_until: float, now: float) -> bool:
        keys = (self._k("revoked", jti), self._k("task", task_id if task_id is not None else ""),
                self._k("token", jti))
        done = self._call(lambda r: r.eval(_REVOKE_IF_LIVE, 3, *keys, _ms(keep_until - now),
                                           repr(float(keep_until)), "1" if task_id is not None else "0"))
        return bool(done)

    def exists(self) -> bool:
        return bool(self._call(lambda r: r.exists(self._k("meta"))))

    def initialize(self, now: float) -> None:
        self._call(lambda r: r.set(self._k("meta"), _MARKER, nx=True))

    # -- limits (docs/language.md#limits) -----------------------------------------------

    def reserve_limits(self, reservation_id, entries, now):
        keys = [self._k("limitres", reservation_id)] + [self._k("limit", c) for c, _a, _b, _e in entries]
        argv: list = [len(entries)]
        for _c, amount, bound, expires in entries:
            argv += [repr(float(amount)), repr(float(bound)), 0 if expires is None else _ms(expires - now)]
        ends = [e for _c, _a, _b, e in entries]
        argv += [_dumps([[c, a] for c, a, _b, _e in entries]),
                 0 if any(e is None for e in ends) else _ms(max(ends) - now)]
        out = self._call(lambda r: r.eval(_RESERVE, len(keys), *keys, *argv))
        try:
            status, index = out[0], int(out[1])
            used = [float(v) for v in out[2:]]
        except (IndexError, TypeError, ValueError) as e:
            raise StoreError(f"Redis store {self._safe_url()}: bad reply to a limit reservation: {out!r}") from e
        return status, (index - 1 if status == "refused" else None), used

    def release_limits(self, reservation_id, now):
        key = self._k("limitres", reservation_id)
        for _attempt in range(3):
            h = self._call(lambda r: r.hgetall(key))
            if not h or h.get("state") != "active":
                return False
            text = h.get("entries", "[]")
            try:
                pairs = _loads(text)
            except Exception as e:  # noqa: BLE001
                raise StoreError(f"corrupt limit reservation {reservation_id!r}: {e}") from e
            keys = [key] + [self._k("limit", c) for c, _a in pairs]
            done = self._call(lambda r: r.eval(_RELEASE, len(keys), *keys, text, *[repr(float(a)) for _c, a in pairs]))
            if int(done) >= 0:
                return int(done) == 1
        raise StoreError(f"limit reservation {reservation_id!r} kept changing while it was released")

    def limit_used(self, counter, now):
        v = self._call(lambda r: r.get(self._k("limit", counter)))
        return 0 if v is None else float(v)

    # -- approvals ---------------------------------------------------------------------

    def create_approval(self, approval_id: str, data: dict, created_at: float, expires_at: float) -> None:
        text = _dumps(data)
        key = self._k("approval", approval_id)
        keep = _ms(max(expires_at - created_at, 0) + APPROVAL_RETENTION)

        def fn(r):
            if not r.set(key, text, px=keep, nx=True):
                raise StoreError(f"approval {approval_id} already exists")
            # scored by a sequence number: listing is in the order tickets were opened
            r.zadd(self._k("approvals"), {approval_id: r.incr(self._k("approvals:seq"))})

        self._call(fn)

    def get_approval(self, approval_id: str) -> dict | None:
        raw = self._call(lambda r: r.get(self._k("approval", approval_id)))
        return None if raw is None else _loads(raw)

    def update_approval(self, approval_id: str, change: Callable[[dict], dict]) -> dict | None:
        key = self._k("approval", approval_id)
        WatchError = self._redis.exceptions.WatchError

        def fn(r):
            with r.pipeline(transaction=True) as pipe:
                for _ in range(100):
                    try:
                        pipe.watch(key)
                        raw = pipe.get(key)
                        if raw is None:
                            return None
                        new = change(_loads(raw))
                        text = _dumps(new)
                        pipe.multi()
                        pipe.set(key, text, keepttl=True)
                        pipe.execute()
                        return new
                    except WatchError:
                        continue
                raise StoreError(f"approval {approval_id}: too much contention")

        return self._call(fn)

    def list_approvals(self, now: float) -> list[dict]:
        index = self._k("approvals")

        def fn(r):
            ids = r.zrange(index, 0, -1)
            if not ids:
                return []
            raws = r.mget([self._k("approval", i) for i in ids])
            gone = [i for i, raw in zip(ids, raws) if raw is None]
            if gone:
                r.zrem(index, *gone)
            return [raw for raw in raws if raw is not None]

        return [_loads(raw) for raw in self._call(fn)]

    # -- lifecycle ---------------------------------------------------------------------

    def ping(self) -> None:
        self._call(lambda r: r.ping())

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # pragma: no cover - closing never matters for correctness
            pass
