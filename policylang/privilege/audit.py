"""A tamper-evident audit trail (docs/zero-standing-privilege.md): one JSON line per event, hash-chained.

Each record holds ``event``, ``time``, ``id``, ``request`` (with the keys named in
``redact`` replaced by ``"[redacted]"`` at any depth, whatever their case: ``password``
also hides ``Password`` and ``PASSWORD``), the decision's fields of docs/requests.md#decision,
``tokens``, ``latency_us``, ``prev`` (the previous record's ``hash``; 64 zeros for the
first) and ``hash``: SHA-256 (hex) of the UTF-8 bytes of the record without ``hash``,
serialised as ``json.dumps(rec, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)``. A line of the log is exactly that serialisation of the whole
record (``hash`` included) and a newline: :func:`verify_file` refuses any other spelling
of a record (a duplicate key, whitespace, escapes, another key order), so that every
reader sees the very record that was hashed.

Writes are crash-safe. Each record is appended with a single ``write`` on an
``O_APPEND`` descriptor under an exclusive ``flock`` (so several processes may share a
log), then ``fsync``-ed (unless ``fsync=False``). A process killed in the middle of a
write can leave at most an unterminated fragment at the very end of the file; the next
writer moves that fragment to ``<path>.torn`` before appending, and :func:`verify_file`
reports an unterminated last line as an interrupted write rather than tampering. A
write that fails raises :class:`AuditError`, and the caller (``decide``, ``issue``…)
raises with it.

Non-finite numbers cannot be written (the serialisation forbids them); a request that
carries one is logged with the number replaced by the string ``"NaN"``,
``"Infinity"`` or ``"-Infinity"``.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import math
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..evaluation.decision import DECISION_FIELDS, decision_fields  # noqa: F401  (decision_fields is re-exported)

__all__ = ["AuditLog", "AuditError", "VerifyResult", "verify_file", "record_hash", "GENESIS"]

GENESIS = "0" * 64
REDACTED = "[redacted]"
#: the decision fields of docs/requests.md#decision, copied onto a record
_RESERVED = {"event", "time", "id", "request", "tokens", "latency_us", "prev", "hash", *DECISION_FIELDS}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

try:  # fcntl exists on every POSIX system; elsewhere the in-process lock is all we have
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


class AuditError(RuntimeError):
    """An audit record could not be written. The audited operation must fail."""


def canonical(rec: dict) -> str:
    """The serialisation the hash is computed over."""
    return json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def record_hash(rec: dict) -> str:
    """SHA-256 (hex) of ``rec`` without its ``hash`` key."""
    body = {k: v for k, v in rec.items() if k != "hash"}
    return hashlib.sha256(canonical(body).encode("utf-8")).hexdigest()


# -- building records -----------------------------------------------------------------------


def _plain(value: Any, redact: frozenset, depth: int = 0) -> Any:
    """A JSON-ready copy of ``value``: keys in ``redact`` replaced, non-finite numbers
    spelled out, unknown objects stringified, lone surrogates replaced."""
    if depth > 200:
        return "[too deep]"
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, str):
        return _clean_str(value)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = _clean_str(k if isinstance(k, str) else str(k))
            out[key] = REDACTED if redact and key.casefold() in redact else _plain(v, redact, depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [_plain(v, redact, depth + 1) for v in items]
    if hasattr(value, "to_dict"):
        try:
            return _plain(value.to_dict(), redact, depth + 1)
        except Exception:
            pass
    return _clean_str(str(value))


def _clean_str(s: str) -> str:
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "replace").decode("utf-8")


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


# -- the log ------------------------------------------------------------------------------


class AuditLog:
    """Appends hash-chained records to ``path`` (created if missing).

    ``redact``: request keys whose values are replaced by ``"[redacted]"`` at any depth,
    compared without regard to case (``str.casefold``).
    ``fsync``: flush every record to disk before ``record`` returns (default True).
    """

    def __init__(self, path: str | os.PathLike, redact: Iterable[str] = (), *, fsync: bool = True):
        self.path = os.fspath(path)
        if isinstance(redact, str):
            redact = [redact]
        #: the keys to hide, casefolded
        self.redact = frozenset(str(k).casefold() for k in redact)
        self.fsync = bool(fsync)
        self._lock = threading.Lock()
        #: (file size after our last append, that record's hash): skips re-reading the tail
        self._tail: tuple[int, str] | None = None

    def __repr__(self) -> str:
        return f"<AuditLog {self.path}>"

    def record(self, event: str, *, request: Any = None, decision: Any = None,
               tokens: Iterable[str] = (), latency_us: int | None = None, **extra: Any) -> dict:
        """Append one record and return it (with its ``hash``). Raises AuditError."""
        try:
            rec = self._build(event, request, decision, tokens, latency_us, extra)
        except AuditError:
            raise
        except Exception as e:  # a value that cannot be represented: fail the caller
            raise AuditError(f"cannot build audit record: {e}") from e
        with self._lock:
            try:
                return self._append(rec)
            except AuditError:
                raise
            except (OSError, ValueError) as e:
                raise AuditError(f"cannot write audit log {self.path}: {e}") from e

    def _build(self, event, request, decision, tokens, latency_us, extra) -> dict:
        if not isinstance(event, str) or not event:
            raise AuditError("audit event must be a non-empty string")
        clash = sorted(set(extra) & _RESERVED)
        if clash:
            raise AuditError(f"audit extra fields clash with reserved names: {', '.join(clash)}")
        rec: dict[str, Any] = {"event": event, "time": _now_iso(), "id": uuid.uuid4().hex}
        if request is not None:
            rec["request"] = _plain(request, self.redact)
        for k, v in decision_fields(decision).items():
            rec[k] = _plain(v, frozenset())
        rec["tokens"] = [str(t) for t in (tokens or ())]
        rec["latency_us"] = None if latency_us is None else int(latency_us)
        for k, v in extra.items():
            rec[k] = REDACTED if k.casefold() in self.redact else _plain(v, self.redact)
        return rec

    # -- appending -------------------------------------------------------------------

    def _append(self, rec: dict) -> dict:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self.path, flags, 0o640)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                size = os.fstat(fd).st_size
                if self._tail is not None and self._tail[0] == size:
                    prev = self._tail[1]
                else:
                    prev, size = self._read_tail(size)
                rec = dict(rec, prev=prev)
                rec["hash"] = record_hash(rec)
                data = (canonical(rec) + "\n").encode("utf-8")
                _write_all(fd, data)
                if self.fsync:
                    os.fsync(fd)
                self._tail = (size + len(data), rec["hash"])
                return rec
            finally:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _read_tail(self, size: int) -> tuple[str, int]:
        """The hash of the last complete record (GENESIS for an empty log) and the file
        size after setting aside an interrupted write. Called under the file lock."""
        if size == 0:
            return GENESIS, 0
        with open(self.path, "rb") as f:
            # read backwards until the buffer holds the last complete line and its end
            pos, buf = size, b""
            while pos > 0:
                nl = buf.rfind(b"\n")
                if nl >= 0 and buf.rfind(b"\n", 0, nl) >= 0:
                    break
                step = min(65536, pos)
                pos -= step
                f.seek(pos)
                buf = f.read(step) + buf
        nl = buf.rfind(b"\n")
        keep = pos + nl + 1 if nl >= 0 else 0
        if keep < size:  # bytes after the last newline: a writer died mid-write
            self._set_aside(buf[nl + 1:], keep)
        if keep == 0:
            return GENESIS, 0
        line = buf[buf.rfind(b"\n", 0, nl) + 1:nl]
        try:
            last = json.loads(line.decode("utf-8"))
            h = last["hash"]
            if not isinstance(h, str) or not _HEX64.match(h):
                raise ValueError("no valid hash")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as e:
            raise AuditError(f"audit log {self.path} ends with a record that is not valid "
                             f"({e}); run `policylang audit verify` on it") from e
        return h, keep

    def _set_aside(self, torn: bytes, keep: int) -> None:
        """Move an interrupted write's fragment to ``<path>.torn`` and cut it off."""
        with open(self.path + ".torn", "ab") as side:
            side.write(torn + b"\n")
            side.flush()
            os.fsync(side.fileno())
        os.truncate(self.path, keep)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        view = view[n:]


# -- verification --------------------------------------------------------------------------


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(f"duplicate key {key!r}")
        self.key = key


def _no_duplicates(pairs: list) -> dict:
    out = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


@dataclass
class VerifyResult:
    ok: bool
    #: number of intact records
    records: int
    #: hash of the last intact record (GENESIS for an empty log)
    head: str
    #: the first bad line (1-based) when not ok
    line: int | None = None
    message: str = ""
    #: an unterminated last line (an interrupted write), ignored
    torn_line: int | None = None


def _check_head(head: str | None) -> str | None:
    """``head`` normalised (stripped, lower case); ValueError when it is not a hash."""
    if head is not None:
        head = head.strip().lower()
        if not _HEX64.match(head):
            raise ValueError("head must be a SHA-256 hash: 64 hexadecimal digits")
    return head


def _whole_last_line(raw: bytes, prev: str) -> bool:
    """Is an unterminated last line nevertheless a whole, chained, canonical record (and
    so not an interrupted write)?"""
    try:
        rec = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
        return (isinstance(rec, dict) and rec.get("prev") == prev
                and rec.get("hash") == record_hash(rec)
                and canonical(rec).encode("utf-8") == raw)
    except (ValueError, TypeError, UnicodeDecodeError, RecursionError):
        return False


def _parse_line(raw: bytes) -> tuple[Any, str | None]:
    """``(value, None)`` for a line that is JSON, else ``(None, what is wrong)``."""
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates), None
    except UnicodeDecodeError:
        return None, "not UTF-8"
    except _DuplicateKey as e:
        return None, f"record has a duplicate key {e.key!r}: readers would disagree on its value"
    except ValueError as e:
        return None, "empty line" if not raw.strip() else f"not a JSON record ({e})"
    except RecursionError:
        return None, "not a JSON record (nested too deeply)"


def _record_problem(rec: Any, raw: bytes, prev: str, n: int) -> str | None:
    """What is wrong with the parsed line ``n`` (``raw``, without its newline) as the
    record after the one hashed ``prev``; None when it is intact and chained."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    h = rec.get("hash")
    if not isinstance(h, str) or not _HEX64.match(h):
        return "record has no valid hash"
    try:
        actual = record_hash(rec)
    except (ValueError, TypeError, RecursionError) as e:
        return f"record cannot be serialised ({e})"
    if actual != h:
        return "record altered: its hash does not match its content"
    try:
        spelled = canonical(rec).encode("utf-8")
    except (ValueError, TypeError, UnicodeEncodeError, RecursionError):
        spelled = None
    if spelled != raw:
        return ("record is not in its canonical form (sorted keys, no whitespace, no "
                "escapes beyond JSON's): the line was rewritten")
    if rec.get("prev") != prev:
        if n == 1:
            return ("chain does not start at the beginning (prev is not 64 zeros): "
                    "records before it were removed")
        return (f"chain broken: prev does not match the hash of line {n - 1} "
                "(a record was removed, inserted or reordered)")
    return None


def _missing_head(head: str, count: int) -> str:
    """The failure message when no record of ``count`` has the anchored ``head``."""
    if count:
        return f"no record has the anchored head hash {head}: the log was cut off after line {count}"
    return f"no record has the anchored head hash {head}: the log is empty"


#: a line's status in :func:`check_lines`
LINE_OK, LINE_TAMPERED, LINE_BROKEN, LINE_TORN = "ok", "tampered", "broken", "torn"
#: the reason given for an unterminated last line
TORN_REASON = "incomplete last record (an interrupted write), ignored"


def check_lines(lines: Iterable[bytes], head: str | None = None,
                on_line: Callable[[int, str, str, Any, bytes], None] | None = None) -> tuple[VerifyResult, int]:
    """Check the chain of a log's lines (each with its newline, as a binary file iterates
    them): the one verification loop, behind :func:`verify_file` and the audit viewer.

    ``on_line(n, status, reason, record, raw)``, when given, is called for every line in
    order: ``status`` is ``"ok"``, ``"tampered"`` (the first bad line; ``reason`` says
    why), ``"broken"`` (every line after it: not verified) or ``"torn"`` (an
    unterminated last line, ignored); ``record`` is the line's parsed JSON object or None,
    ``raw`` the line without its newline. Without ``on_line`` the check stops at the
    first bad line. Returns the :class:`VerifyResult` and the number of lines read.
    Raises ValueError for a malformed ``head``.
    """
    head = _check_head(head)
    prev, count, seen_head = GENESIS, 0, head is None
    bad: tuple[int, str] | None = None
    torn_line = None
    n = 0
    for n, raw in enumerate(lines, start=1):
        if bad is not None:  # only reached with on_line
            body = raw.rstrip(b"\n")
            rec, problem = _parse_line(body)
            reason = f"not verified: the chain is broken at line {bad[0]}"
            if problem is not None:
                reason += f"; this line: {problem}"
            on_line(n, LINE_BROKEN, reason, rec if isinstance(rec, dict) else None, body)
            continue
        if not raw.endswith(b"\n") and not _whole_last_line(raw, prev):
            torn_line = n
            if on_line is not None:
                rec, _ = _parse_line(raw)
                on_line(n, LINE_TORN, TORN_REASON, rec if isinstance(rec, dict) else None, raw)
            break
        body = raw.rstrip(b"\n")
        rec, problem = _parse_line(body)
        if problem is None:
            problem = _record_problem(rec, body, prev, n)
        if problem is not None:
            bad = (n, problem)
            if on_line is None:
                break
            on_line(n, LINE_TAMPERED, problem, rec if isinstance(rec, dict) else None, body)
            continue
        prev = rec["hash"]
        count += 1
        if not seen_head and prev == head:
            seen_head = True
        if on_line is not None:
            on_line(n, LINE_OK, "", rec, body)
    if bad is not None:
        return VerifyResult(False, count, prev, bad[0], bad[1], torn_line), n
    if not seen_head:
        return VerifyResult(False, count, prev, count + 1, _missing_head(head, count), torn_line), n
    return VerifyResult(True, count, prev, None, "", torn_line), n


def verify_file(path: str | os.PathLike, head: str | None = None) -> VerifyResult:
    """Check the chain of ``path``. With ``head``, also require a record with that hash
    (an anchor kept elsewhere) to be in the chain, which detects a cut-off tail.

    Raises OSError when the file cannot be read, ValueError for a malformed ``head``.
    """
    head = _check_head(head)
    with open(path, "rb") as f:
        return check_lines(f, head)[0]
