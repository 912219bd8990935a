"""Prometheus metrics of the decision service (docs/server.md ``GET /metrics``).

Each app has its own registry (several apps can live in one process, as in tests). With
several worker processes (``serve --workers N``) the values are kept in
``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` aggregates every worker's, so one scrape
sees the whole server, whichever worker answers it.

Metrics:

``policylang_decisions_total{endpoint, outcome}``
    decisions made, by outcome (``allow``, ``deny``, ``require_approval``, or ``invalid``
    for a request rejected as malformed) and endpoint.
``policylang_request_duration_seconds{endpoint}``
    a histogram of the time from the body's arrival to the encoded answer.
``policylang_decision_cache_hits_total`` / ``policylang_decision_cache_misses_total``
    the engine's decision cache.
``policylang_reloads_total{trigger, result}``
    reload attempts (``startup``, ``watch``, ``signal``) by result (``ok``, ``failed``).
``policylang_policy_last_reload_ok``
    1 when the last reload attempt succeeded, else 0 (the old set is still serving).
``policylang_limit_refusals_total{rule}``
    limited permits that did not hold because a limit was reached (docs/language.md#limits),
    by rule id: one per refused limit entry of a decision.
``policylang_limit_reservations_total{rule}``
    reservations made by allowed decisions (a replayed retry is not counted), by rule id.
"""

from __future__ import annotations

import math
import os
import threading
from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import values as _values

__all__ = ["Metrics", "CONTENT_TYPE_LATEST"]

OUTCOMES = ("allow", "deny", "require_approval", "invalid")
ENDPOINTS = ("evaluation", "evaluations", "search_subject", "search_resource", "search_action", "decide")

#: latency buckets in seconds: a decision takes tens of microseconds, a big batch milliseconds
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _plain_histogram(child) -> bool:
    """Is this Histogram child the one :meth:`Metrics.flush` can carry counts into: values
    in this process (not ``PROMETHEUS_MULTIPROC_DIR`` files), a bucket per bound of
    :data:`BUCKETS` and +Inf, a settable sum?"""
    buckets, total = getattr(child, "_buckets", None), getattr(child, "_sum", None)
    mutex = getattr(_values, "MutexValue", None)
    return (mutex is not None and total.__class__ is mutex and isinstance(buckets, list)
            and len(buckets) == len(BUCKETS) + 1 and all(b.__class__ is mutex for b in buckets)
            and tuple(getattr(child, "_upper_bounds", ())) == (*BUCKETS, math.inf))


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


class _Flush:
    """A collector that yields nothing and carries the decision counts and latencies
    counted since the last collection into their Prometheus metrics: registered first,
    it runs before them on every collection of the registry (``/metrics``,
    ``get_sample_value``)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> list:
        return []

    def collect(self) -> list:
        self._metrics.flush()
        return []


class Metrics:
    """The service's metrics. ``defer`` (default on): the per-request counts and latencies
    are plain numbers here, carried into the Prometheus metrics when the registry is
    collected (the same values a scrape shows, at a fraction of the cost per request).
    They are counted directly when the values live in ``PROMETHEUS_MULTIPROC_DIR`` files
    (another worker's scrape reads those) or when this prometheus_client's histogram is
    not the one this module knows."""

    def __init__(self, defer: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._lock = threading.Lock()
        self._counts = {(e, o): 0 for e in ENDPOINTS for o in OUTCOMES}
        self._counted = dict(self._counts)  # what has been carried into the metrics
        self._buckets = {e: [0] * (len(BUCKETS) + 1) for e in ENDPOINTS}  # the last: +Inf
        self._bucketed = {e: [0] * (len(BUCKETS) + 1) for e in ENDPOINTS}
        self._sums = dict.fromkeys(ENDPOINTS, 0.0)
        self._summed = dict(self._sums)
        r.register(_Flush(self))
        self.decisions = Counter("policylang_decisions", "Decisions made, by endpoint and outcome",
                                 ["endpoint", "outcome"], registry=r)
        self.latency = Histogram("policylang_request_duration_seconds",
                                 "Time to answer a decision request, by endpoint", ["endpoint"],
                                 buckets=BUCKETS, registry=r)
        self.cache_hits = Counter("policylang_decision_cache_hits", "Decision cache hits", registry=r)
        self.cache_misses = Counter("policylang_decision_cache_misses", "Decision cache misses", registry=r)
        self.reloads = Counter("policylang_reloads", "Policy reload attempts, by trigger and result",
                               ["trigger", "result"], registry=r)
        self.reload_ok = Gauge("policylang_policy_last_reload_ok",
                               "1 when the last reload attempt succeeded (0: the previous set is serving)",
                               registry=r, multiprocess_mode="livemin")
        self.limit_refusals = Counter("policylang_limit_refusals",
                                      "Limited permits refused because a limit was reached, by rule",
                                      ["rule"], registry=r)
        self.limit_reservations = Counter("policylang_limit_reservations",
                                          "Limit reservations made by allowed decisions, by rule",
                                          ["rule"], registry=r)
        # bound children: labels() costs more than the increment itself on the hot path
        self._decided = {(e, o): self.decisions.labels(e, o) for e in ENDPOINTS for o in OUTCOMES}
        self._latency = {e: self.latency.labels(e) for e in ENDPOINTS}
        self.deferred = defer and all(_plain_histogram(c) for c in self._latency.values())
        self._sync_lock = threading.Lock()
        self._engine = None          # the engine whose counters were carried last
        self._seen = (0, 0)          # its hits and misses carried so far

    # -- hot path -----------------------------------------------------------------------

    def decided(self, endpoint: str, outcome: str, n: int = 1) -> None:
        if self.deferred:
            key = endpoint, outcome
            with self._lock:
                self._counts[key] += n
        else:
            self._decided[endpoint, outcome].inc(n)

    def observe(self, endpoint: str, seconds: float) -> None:
        if self.deferred:
            buckets = self._buckets[endpoint]
            with self._lock:
                # in the first bucket whose bound is >= seconds, as Histogram.observe
                # counts it (a NaN, not <= inf, in none; it still goes into the sum)
                if seconds <= math.inf:
                    buckets[bisect_left(BUCKETS, seconds)] += 1
                self._sums[endpoint] += seconds
        else:
            self._latency[endpoint].observe(seconds)

    def flush(self) -> None:
        """Carry what was counted since the last flush into the Prometheus metrics (done
        on every collection of the registry; nothing to do unless :attr:`deferred`)."""
        if not self.deferred:
            return
        with self._lock:
            counted = self._counted
            for key, n in self._counts.items():
                if n != counted[key]:
                    self._decided[key].inc(n - counted[key])
                    counted[key] = n
            summed = self._summed
            for endpoint, buckets in self._buckets.items():
                done = self._bucketed[endpoint]
                total = self._sums[endpoint]
                if buckets == done and total is summed[endpoint]:  # (each observation makes a new float)
                    continue
                child = self._latency[endpoint]
                for i, n in enumerate(buckets):
                    if n != done[i]:
                        child._buckets[i].inc(n - done[i])
                        done[i] = n
                # the sum kept here, added up in the order of the observations
                child._sum.set(total)
                summed[endpoint] = total

    def limited(self, entries) -> None:
        """Count a decision's ``limits`` entries (docs/language.md#limits): each refused
        entry, and each reservation made (once per reservation, not per limit)."""
        seen: set = set()
        for e in entries:
            outcome = e.get("outcome")
            if outcome == "refused":
                self.limit_refusals.labels(e.get("rule") or "").inc()
            elif outcome == "reserved":
                rid = e.get("reservation")
                if rid not in seen:
                    seen.add(rid)
                    self.limit_reservations.labels(e.get("rule") or "").inc()

    # -- reloads and the cache ------------------------------------------------------------

    def reloaded(self, result) -> None:
        self.reloads.labels(result.trigger, "ok" if result.ok else "failed").inc()
        self.reload_ok.set(1 if result.ok else 0)

    def sync_cache(self, engine) -> None:
        """Carry the engine's cache counters into the Prometheus counters (called on each
        scrape and by the reloader thread). After a reload the previous engine's last
        counts are carried over first; the new engine starts at zero."""
        if engine is None:
            return
        with self._sync_lock:
            old = self._engine
            if old is not None and old is not engine:
                self._flush(old)
                self._seen = (0, 0)
            self._engine = engine
            self._flush(engine)

    def _flush(self, engine) -> None:
        info = engine.cache_info()
        hits, misses = int(info.get("hits", 0)), int(info.get("misses", 0))
        seen_h, seen_m = self._seen
        if hits > seen_h:
            self.cache_hits.inc(hits - seen_h)
        if misses > seen_m:
            self.cache_misses.inc(misses - seen_m)
        self._seen = (max(hits, seen_h), max(misses, seen_m))

    def render(self) -> bytes:
        path = multiprocess_dir()
        if path:
            from prometheus_client import multiprocess
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=path)
            return generate_latest(registry)
        return generate_latest(self.registry)
