"""The served policy set: load, check, swap, watch (docs/server.md hot reload).

A :class:`PolicyService` owns one reference, ``current``, to an immutable
:class:`Snapshot` (the checked set, its compiled :class:`~policylang.Engine`, the entity
data and the search candidates). A request reads ``current`` once and uses that snapshot
to the end, so a reload (which builds the new snapshot completely, then assigns the one
reference) never drops or changes an in-flight request. A reload that fails its checks
assigns nothing: the old snapshot keeps serving and :meth:`PolicyService.health` reports
the diagnostics.

The :class:`Reloader` thread polls the files' (mtime, size, inode) every
``poll_interval`` seconds and reloads once a changed signature has held still for one
interval (a file is re-read only after it stopped changing); SIGHUP asks it for a reload
at once. A reload is incremental (docs/server.md#hot-reload): files whose bytes did not
change are not parsed again and their rules' compiled code is reused, while every check
runs over the whole set. Workers of ``serve --workers N`` start from the set their parent
loaded (:meth:`PolicyService.adopt`, docs/server.md#workers) and reload on their own;
replicas load the files by themselves.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..language.errors import Diagnostic
from ..language.loader import check_path, parse_entities
from ..language.policyset import PolicySet, merge_entities

log = logging.getLogger("policylang.server")

__all__ = ["ServiceConfig", "Snapshot", "PolicyService", "Reloader", "ReloadResult"]


@dataclass(frozen=True)
class ServiceConfig:
    """What ``policylang serve`` was asked to serve. Plain data (JSON-able), so that each
    worker process can rebuild the same service from it."""

    path: str
    entities: tuple[str, ...] = ()
    cache_size: int = 10_000
    cache_ttl: float | None = None
    #: seconds between polls of the files; 0 turns watching off (SIGHUP still reloads)
    poll_interval: float = 0.5
    max_body: int = 1 << 20
    public_url: str | None = None
    #: shared state for approvals and tokens: a store URL (``sqlite:///…``, ``redis://…``)
    store: str | None = None
    keys: str | None = None
    issuer: str | None = None
    audit: str | None = None
    #: seconds a request body may take to arrive in full (408 after that)
    body_timeout: float = 30.0
    #: authentication of the approval/token/task routes (policylang.server.auth)
    jwks: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_algorithms: tuple[str, ...] = ()
    jwt_caller_claim: str = "sub"
    #: client certificates are required and verified by the TLS layer (serve --client-ca)
    mtls: bool = False
    #: the policy set deciding which caller may use which of those routes
    admin_policies: str | None = None
    #: create the store when it does not exist (a SQLite file, the Redis marker); False
    #: refuses a missing store (``serve`` without ``--create-store``), so that a typo in a
    #: path or a flushed Redis is not served as an empty store
    create_store: bool = True
    #: tokens only for tasks opened first by a delegator (POST /v1/tasks)
    require_open_tasks: bool = False
    #: proven workload identity (policylang.server.identity): the SPIFFE trust bundles,
    #: the aud of JWT-SVIDs, the accepted trust domains, and whether proof is required
    svid_bundle: str | None = None
    svid_audience: str | None = None
    svid_trust_domains: tuple[str, ...] = ()
    require_proven_principal: bool = False
    #: (SPIFFE id glob, kind) pairs: a proven principal's kind is the first match's
    #: (docs/server.md#proven-kinds); empty: the body names the kind
    svid_kinds: tuple[tuple[str, str], ...] = ()

    @property
    def auth_configured(self) -> bool:
        return bool(self.jwks) or self.mtls

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["entities"] = list(self.entities)
        d["jwt_algorithms"] = list(self.jwt_algorithms)
        d["svid_trust_domains"] = list(self.svid_trust_domains)
        d["svid_kinds"] = [list(pair) for pair in self.svid_kinds]
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "ServiceConfig":
        d = dict(d)
        d["entities"] = tuple(d.get("entities") or ())
        d["jwt_algorithms"] = tuple(d.get("jwt_algorithms") or ())
        d["svid_trust_domains"] = tuple(d.get("svid_trust_domains") or ())
        d["svid_kinds"] = tuple(tuple(pair) for pair in d.get("svid_kinds") or ())
        return cls(**d)


@dataclass(frozen=True)
class Snapshot:
    """One loaded, checked and compiled policy set with its data. Immutable."""

    policies: PolicySet
    engine: Any
    #: the set's entity files merged with the ``--entities`` files (those win)
    entities: Mapping[str, Mapping[str, Mapping]]
    #: sorted ids per kind/type, for subject and resource search
    candidates: Mapping[str, list[str]]
    #: sorted action names of the rule targets and the schema, for action search
    actions: list[str]
    loaded_at: float
    #: the ``--entities`` files' data alone (what the engine was given besides the set)
    extra: Mapping[str, Mapping[str, Mapping]] | None = None

    @property
    def version(self) -> str:
        return self.policies.version

    def lookup(self, kind: str, eid: str) -> Mapping | None:
        ids = self.entities.get(kind)
        return ids.get(eid) if ids is not None else None


@dataclass
class ReloadResult:
    ok: bool
    trigger: str
    at: float
    diagnostics: list[Diagnostic] = field(default_factory=list)
    policy_version: str | None = None
    changed: bool = False

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "trigger": self.trigger,
            "at": _iso(self.at),
            "policy_version": self.policy_version,
            "changed": self.changed,
            "diagnostics": [d.to_dict() for d in self.diagnostics],
        }


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}Z"


class PolicyService:
    """Loads the configured set and keeps the current :class:`Snapshot`.

    ``on_reload(result)`` is called after every reload attempt (metrics hook).
    ``approvals``: the engine's approval checker, kept across reloads.
    ``audit``: the engine's audit log, kept across reloads.
    ``limits``: the store keeping the counters of the set's ``limit`` clauses
    (docs/language.md#limits), kept across reloads (counters are per rule id).
    """

    def __init__(self, config: ServiceConfig, *, approvals: Callable | None = None, audit: Any = None,
                 on_reload: Callable[[ReloadResult], None] | None = None, limits: Any = None):
        self.config = config
        self.approvals = approvals
        self.audit = audit
        self.limits = limits
        self.on_reload = on_reload
        self._lock = threading.Lock()
        self.current: Snapshot | None = None
        self.last_reload: ReloadResult | None = None
        #: the file signature the current snapshot (or the last failed attempt) was read at
        self.signature: tuple = ()
        #: set by adopt(frozen=True) in a forked worker: unfreeze at the first swap
        self._unfreeze = False

    # -- loading ------------------------------------------------------------------------

    def load(self, trigger: str = "startup") -> ReloadResult:
        """Build a new snapshot from the files and swap it in; on any error keep the old
        one. Never raises for a bad policy set: the result carries the diagnostics."""
        with self._lock:
            signature = self.files_signature()
            started = time.time()
            try:
                snapshot, diags = self._build()
            except Exception as e:  # a bug, or an unreadable file the loader did not expect
                log.exception("reload failed")
                from ..language.loader import _span
                snapshot, diags = None, [Diagnostic.make("E001", f"cannot load the policy set: {e}",
                                                         _span(self.config.path))]
            self.signature = signature
            if snapshot is None:
                result = ReloadResult(False, trigger, started, diags,
                                      self.current.version if self.current else None, False)
                if trigger != "startup":  # at start-up the caller reports (serve prints and exits 1)
                        log.warning("policy reload (%s) failed; still serving %s:\n%s", trigger,
                                self.current.version if self.current else "nothing",
                                "\n".join(d.render() for d in diags if d.severity == "error"))
            else:
                changed = self.current is None or self.current.version != snapshot.version or \
                    self.current.entities != snapshot.entities
                self.current = snapshot  # the swap: one reference assignment
                if self._unfreeze and changed:
                    import gc
                    self._unfreeze = False
                    gc.unfreeze()  # the parent's set (frozen before the fork) is garbage now
                result = ReloadResult(True, trigger, started, diags, snapshot.version, changed)
                if trigger != "startup":
                    log.info("policy reload (%s): serving %s%s", trigger, snapshot.version,
                             "" if changed else " (unchanged)")
            self.last_reload = result
        return self._notify(result)

    def _notify(self, result: ReloadResult) -> ReloadResult:
        """Tell the reload hook (metrics) about ``result``; a failing hook never breaks reloading."""
        if self.on_reload is not None:
            try:
                self.on_reload(result)
            except Exception:  # metrics must never break reloading
                log.exception("reload hook failed")
        return result

    def adopt(self, snapshot: Snapshot, signature: tuple, *, frozen: bool = False) -> ReloadResult:
        """Serve ``snapshot``, loaded by another :class:`PolicyService` of the same config
        (the ``serve --workers N`` parent, before it forked this worker), read at file
        ``signature``: this service's engine shares the snapshot's compiled tree (copy-on-write
        pages after a fork) and uses this service's own approvals, audit log and limit store.
        A file changed since ``signature`` is picked up by the next poll, as usual.
        ``frozen``: the parent froze its heap before the fork (``gc.freeze()``); the first
        reload that swaps in another set unfreezes it, so the adopted set's garbage is
        collected once nothing serves it."""
        from ..evaluation.engine import Engine

        with self._lock:
            old = snapshot.engine
            engine = Engine(snapshot.policies, entities=snapshot.extra, approvals=self.approvals,
                            audit=self.audit, cache_size=self.config.cache_size,
                            cache_ttl=self.config.cache_ttl, limits=self.limits, previous=old)
            self.current = Snapshot(snapshot.policies, engine, snapshot.entities, snapshot.candidates,
                                    snapshot.actions, snapshot.loaded_at, snapshot.extra)
            self.signature = signature
            self._unfreeze = frozen
            result = ReloadResult(True, "startup", time.time(), list(snapshot.policies.diagnostics),
                                  snapshot.version, True)
            self.last_reload = result
        return self._notify(result)

    def _build(self) -> tuple[Snapshot | None, list[Diagnostic]]:
        from ..evaluation.engine import Engine

        # incremental (docs/server.md#hot-reload): files whose bytes did not change are
        # not parsed again and their rules' compiled code is reused; the checks run over
        # the whole set, so the result is a fresh load's (same diagnostics, same version)
        current = self.current
        policies, diags = check_path(self.config.path, previous=current.policies if current else None)
        extra: dict = {}
        for path in self.config.entities:
            text, problem = _read(path)
            data = None
            if problem is None:
                data, problem = parse_entities(text, path)
            if problem is not None:
                diags = list(diags) + [problem]
                continue
            merge_entities(extra, data)
        if policies is None or any(d.severity == "error" for d in diags):
            return None, list(diags)
        engine = Engine(policies, entities=extra or None, approvals=self.approvals, audit=self.audit,
                        cache_size=self.config.cache_size, cache_ttl=self.config.cache_ttl, limits=self.limits,
                        previous=current.engine if current else None)
        merged: dict = {}
        for source in (policies.entities, extra):
            merge_entities(merged, source)
        candidates = {kind: sorted(ids) for kind, ids in merged.items()}
        actions = set()
        for info in policies.rules:
            names = info.rule.target.actions
            if names:
                actions.update(names)
        actions.update(policies.schema.actions)
        snapshot = Snapshot(policies, engine, merged, candidates, sorted(actions), time.time(), extra or None)
        return snapshot, list(diags)

    # -- watching -----------------------------------------------------------------------

    def watched_files(self) -> list[str]:
        """Every file whose change means a reload: the set's ``*.policy`` and
        ``*.entities.json`` files (also new and removed ones) and the ``--entities`` files."""
        out: list[str] = []
        root = Path(self.config.path)
        if root.is_dir():
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for name in sorted(filenames):
                    if name.endswith(".policy") or name.endswith(".entities.json"):
                        out.append(os.path.join(dirpath, name))
        else:
            out.append(str(root))
        out.extend(self.config.entities)
        return out

    def files_signature(self) -> tuple:
        sig = []
        for path in self.watched_files():
            try:
                st = os.stat(path)
                sig.append((path, st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns))
            except OSError:
                sig.append((path, None))
        return tuple(sig)

    # -- reporting ----------------------------------------------------------------------

    def health(self) -> dict:
        """The serving state for ``/healthz``. File names in the reload diagnostics are
        given relative to the served path (never as absolute paths of this machine)."""
        snap = self.current
        last = self.last_reload
        return {
            "status": "ok" if snap is not None else "unavailable",
            "policy_version": snap.version if snap else None,
            "loaded_at": _iso(snap.loaded_at) if snap else None,
            "rules": len(snap.policies.rules) if snap else 0,
            "last_reload": self._redact(last.to_dict()) if last else None,
        }

    def _redact(self, data: Any) -> Any:
        """``data`` with every absolute path of the served files replaced by one relative
        to the served path (its base name when the path is a file)."""
        root = os.path.abspath(self.config.path)
        base = root if os.path.isdir(root) else os.path.dirname(root)
        prefixes = sorted({root, base, os.path.realpath(root), os.path.realpath(base)}, key=len, reverse=True)

        def clean(text: str) -> str:
            for prefix in prefixes:
                if prefix and prefix != os.sep and prefix in text:
                    label = os.path.basename(root) if prefix in (root, os.path.realpath(root)) \
                        and not os.path.isdir(root) else "."
                    text = text.replace(prefix + os.sep, "" if label == "." else label + os.sep)
                    text = text.replace(prefix, label)
            if os.sep in text:  # any other absolute path (an --entities file elsewhere)
                text = re.sub(r"(?<![\w.])/(?:[^\s'\":/]+/)+([^\s'\":/]+)", r"\1", text)
            return text

        def walk(value: Any) -> Any:
            if isinstance(value, str):
                return clean(value)
            if isinstance(value, dict):
                return {k: walk(v) for k, v in value.items()}
            if isinstance(value, list):
                return [walk(v) for v in value]
            return value

        return walk(data)


def _read(path: str) -> tuple[str | None, Diagnostic | None]:
    from ..language.loader import _read_text
    return _read_text(Path(path), path)


class Reloader(threading.Thread):
    """Polls the files and handles reload requests (SIGHUP) in one background thread, so
    that reloads never run concurrently and never on the event loop."""

    def __init__(self, service: PolicyService, *, poll_interval: float | None = None,
                 tick: Callable[[], None] | None = None):
        super().__init__(name="policylang-reloader", daemon=True)
        self.service = service
        interval = service.config.poll_interval if poll_interval is None else poll_interval
        self.watch = interval > 0
        self.interval = interval if interval > 0 else 0.5
        self.tick = tick
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._forced = False
        self._pending: tuple | None = None

    def request_reload(self) -> None:
        """Reload at once (SIGHUP). Safe to call from a signal handler or any thread."""
        self._forced = True
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self._step()
            except Exception:  # keep watching whatever happens
                log.exception("reloader step failed")
            if self.tick is not None:
                try:
                    self.tick()
                except Exception:
                    log.exception("reloader tick failed")

    def _step(self) -> None:
        service = self.service
        if self._forced:
            self._forced = False
            self._pending = None
            service.load("signal")
            for fn in getattr(service, "on_signal", ()):  # e.g. the issuer's key file
                try:
                    fn()
                except Exception:
                    log.exception("reload on signal failed")
            return
        if not self.watch:
            return
        sig = service.files_signature()
        if sig == service.signature:
            self._pending = None
            return
        if sig != self._pending:
            self._pending = sig  # changed: wait until it holds still for one interval
            return
        self._pending = None
        service.load("watch")


def build_service(config: ServiceConfig, *, on_reload: Callable | None = None) -> tuple[PolicyService, dict]:
    """The service for ``config`` with its zero-standing-privilege pieces: returns the
    service (loaded once) and ``{"approvals": …, "issuer": …, "limits": …}`` (None when
    unconfigured; ``limits`` is the store itself, which also keeps the limit counters)."""
    extras: dict = {"approvals": None, "issuer": None, "limits": None}
    audit = None
    if config.audit:
        from ..privilege.audit import AuditLog
        audit = AuditLog(config.audit)
    holder: dict = {}
    approvals_checker = None
    if config.store:
        from ..privilege.approvals import Approvals
        from ..privilege.store import StoreError, open_store
        store = open_store(config.store, create=config.create_store)
        if not config.create_store:
            if not store.exists():
                raise ValueError(f"store {config.store}: does not exist (pass --create-store to create it)")
        else:
            try:
                store.initialize(time.time())
            except StoreError as e:  # unreachable now: requests fail closed (503) until it answers
                log.warning("store %s not initialised: %s", config.store, e)

        def entity_source(kind: str, eid: str):
            svc = holder.get("service")
            snap = svc.current if svc is not None else None
            return snap.lookup(kind, eid) if snap is not None else None

        approvals = Approvals(store, entities=entity_source, audit=audit)
        extras["approvals"] = approvals
        extras["limits"] = store  # the limit counters (docs/server.md#limits)
        approvals_checker = approvals.checker
        if config.keys:
            from ..privilege.credentials import Issuer
            # given as a path: the issuer re-reads the key file when it changes (token rotate)
            extras["issuer"] = Issuer(config.keys, store, issuer=config.issuer or config.public_url or "policylang",
                                      audit=audit, require_open_tasks=config.require_open_tasks)
    service = PolicyService(config, approvals=approvals_checker, audit=audit, on_reload=on_reload,
                            limits=extras["limits"])
    if extras["issuer"] is not None:  # SIGHUP re-reads the key file too (Reloader._step)
        service.on_signal = [extras["issuer"].reload_keys]
    holder["service"] = service
    return service, extras
