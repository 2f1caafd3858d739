"""Prometheus metrics of the API, served at ``GET /metrics``.

Under ``tpv-broker serve`` every gunicorn worker writes its counters to
files in a directory of its own (prometheus_client's multiprocess mode:
``PROMETHEUS_MULTIPROC_DIR``, set by ``serve`` before any worker starts),
and a scrape, whichever worker answers it, adds up all workers' files. In
one process (tests, ``flask run``) the app's own registry is used.

The snapshot figures (age, destinations, in-flight charges) are read from
Redis when scraped, not remembered from the last rank request: they are
then right when no job has been ranked for a while, whichever worker
answers, and cost one small MULTI/EXEC per scrape. If Redis is down the
scrape still answers, with ``tpv_broker_api_redis_up 0`` and no snapshot
figures.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any, get_args

from flask import Flask, Response, g, has_request_context, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from tpv_broker.config.settings import BrokerConfig
from tpv_broker.core.models import HealthState
from tpv_broker.core.result import DegradedReason, RankResult
from tpv_broker.errors import StoreError
from tpv_broker.ids import DEFAULT_TENANT
from tpv_broker.store.snapshots import SnapshotStore

from .auth import viewer

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# A rank answer takes about a millisecond; a degraded one waits up to
# redis.socket_timeout_s (0.5 s by default).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
RANK_ENDPOINTS = ("/api/rank", "/process_data")
DEGRADED_REASONS = tuple(code.value for code in DegradedReason)
# Requests that match no route share one label, so random paths cannot
# grow the number of series.
UNMATCHED = "other"
# The tenant label of a request no token was accepted for (auth on).
NO_TENANT = "none"
_STATUS_OUTCOME = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                   405: "method_not_allowed", 413: "too_large", 429: "too_many_requests", 503: "unavailable"}


def outcome_of(status: int, degraded: bool) -> str:
    if status < 400:
        return "degraded" if degraded else "ok"
    return _STATUS_OUTCOME.get(status, "client_error" if status < 500 else "error")


def note_rank_result(result: RankResult) -> None:
    """Called by the rank endpoints: lets the request's metrics say whether
    the answer was degraded, and why."""
    if result.degraded_code is not None:
        # The code, never the reason's text: that carries numbers ("snapshot
        # is 412 s old"), and a label must take few values.
        g.tpv_degraded_reason = result.degraded_code.value


HEALTH_STATES = get_args(HealthState)
PLACEMENTS_WINDOW_S = 3600.0


class SnapshotFigures(Collector):
    """Gauges computed at scrape time from Redis."""

    def __init__(self, store: SnapshotStore, config: BrokerConfig, clock: Callable[[], float]) -> None:
        self.store, self.clock = store, clock
        self.config = config
        self.max_age_s = config.api.max_snapshot_age_s
        self.inflight = store.inflight(config.inflight)

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        yield GaugeMetricFamily("tpv_broker_api_max_snapshot_age_seconds",
                                "api.max_snapshot_age_s: older snapshots give degraded answers", value=self.max_age_s)
        up = GaugeMetricFamily("tpv_broker_api_redis_up", "1 if this scrape could read the snapshot from Redis")
        try:
            # The rank path's own read, with no candidates: the metadata.
            view = self.store.read_for_rank(())
            live_charges = self.inflight.live_count(now) if self.inflight is not None else None
        except StoreError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        meta = view.meta
        yield GaugeMetricFamily("tpv_broker_snapshot_present", "1 if Redis holds a snapshot",
                                value=0 if meta is None else 1)
        if meta is not None:
            yield GaugeMetricFamily("tpv_broker_snapshot_age_seconds",
                                    "Seconds since the collector published the snapshot in Redis",
                                    value=max(0.0, meta.age_s(now)))
            yield GaugeMetricFamily("tpv_broker_snapshot_destinations", "Destinations in the snapshot",
                                    value=meta.destinations)
            if meta.newest_point_at is not None:
                yield GaugeMetricFamily("tpv_broker_snapshot_newest_point_age_seconds",
                                        "Seconds since the newest metric point in the snapshot",
                                        value=max(0.0, now - meta.newest_point_at))
        if live_charges is not None:
            yield GaugeMetricFamily("tpv_broker_inflight_charges",
                                    "In-flight charges that still count: made within inflight.max_age_s and "
                                    "not yet shown by the published figures", value=live_charges)
        yield from self._per_destination(now)

    def _per_destination(self, now: float) -> Iterator[Metric]:
        """Each destination's health state and the jobs placed there in the
        last hour, but those private to another tenant than the scraper's."""
        try:
            view = self.store.read_overview()
            inputs = self.store.health().read(now - PLACEMENTS_WINDOW_S, drop_old=False)
        except StoreError:
            return
        hidden = self.config.api.hidden_from(viewer(self.config) if has_request_context() else DEFAULT_TENANT)
        health = GaugeMetricFamily("tpv_broker_destination_health",
                                   "1 for a destination's health state (healthy, degraded, excluded, probation, "
                                   "drained) where it is judged (docs/health.md)", labels=["destination", "state"])
        for dest_id, figures in sorted(view.destinations.items()):
            if figures.health is not None and dest_id not in hidden:
                for state in HEALTH_STATES:
                    health.add_metric([dest_id, state], 1.0 if figures.health.state == state else 0.0)
        yield health
        for name, what, per_dest in (
                ("tpv_broker_destination_placements_last_hour",
                 "Jobs the broker placed on a destination in the last hour (5-minute buckets)", inputs.placements),
                ("tpv_broker_destination_returns_last_hour",
                 "Jobs placed on a destination that came back to be placed again (resubmitted after they failed) "
                 "in the last hour (5-minute buckets)", inputs.returned_by(None))):
            family = GaugeMetricFamily(name, what, labels=["destination"])
            for dest_id, buckets in sorted(per_dest.items()):
                if dest_id not in hidden:
                    # Twelve 5-minute buckets, the current one included.
                    family.add_metric([dest_id], sum(n for at, n in buckets if at > now - PLACEMENTS_WINDOW_S))
            yield family


class ApiMetrics:
    def __init__(self, store: SnapshotStore, config: BrokerConfig, clock: Callable[[], float]) -> None:
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        if self.multiprocess_dir and not getattr(values.ValueClass, "_multiprocess", False):
            # The value class is fixed when prometheus_client is first
            # imported: counts would silently stay per worker.
            raise RuntimeError(f"prometheus_client was imported before {MULTIPROC_ENV} was set")
        # A registry per app (never the global one), so apps built in one
        # process (tests) do not collide.
        self.own = CollectorRegistry()
        self.requests = Counter("tpv_broker_api_requests",
                                "HTTP requests answered, by endpoint, outcome and tenant (the Galaxy its token "
                                "belongs to; 'none': no token accepted)",
                                ["endpoint", "outcome", "tenant"], registry=self.own)
        self.latency = Histogram("tpv_broker_api_request_duration_seconds",
                                 "Time from the start of handling to the answer being ready, by endpoint and outcome",
                                 ["endpoint", "outcome"], buckets=LATENCY_BUCKETS, registry=self.own)
        self.degraded = Counter("tpv_broker_api_degraded_answers",
                                "Rank answers in TPV's own order (degraded: true), by reason", ["reason"],
                                registry=self.own)
        self.workers = Gauge("tpv_broker_api_workers", "API worker processes alive", registry=self.own,
                             multiprocess_mode="livesum")
        self.workers.set(1)
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        # Auth off: every request is the broker's own tenant's.
        self.tenant_without_token = NO_TENANT if config.api.auth_configured else DEFAULT_TENANT
        tenants = [DEFAULT_TENANT, *config.api.tenants] if config.api.auth_configured else [DEFAULT_TENANT]
        for endpoint in RANK_ENDPOINTS:
            for outcome in ("ok", "degraded", "bad_request"):
                for tenant in tenants:
                    self.requests.labels(endpoint, outcome, tenant)
        for reason in DEGRADED_REASONS:
            self.degraded.labels(reason)
        if self.multiprocess_dir:
            self.scraped = CollectorRegistry()
            MultiProcessCollector(self.scraped, path=self.multiprocess_dir)
        else:
            self.scraped = self.own
        self.scraped.register(SnapshotFigures(store, config, clock))

    def observe(self, endpoint: str, status: int, degraded_reason: str | None, seconds: float | None,
                tenant: str | None = None) -> None:
        outcome = outcome_of(status, degraded_reason is not None)
        key = (endpoint, outcome, tenant or self.tenant_without_token)
        children = self._children.get(key)
        if children is None:
            # labels() takes a lock and builds a key each time: on the rank
            # path the children are looked up once.
            children = self._children[key] = (self.requests.labels(*key), self.latency.labels(*key[:2]))
        children[0].inc()
        if seconds is not None:
            children[1].observe(seconds)
        # A degraded answer is a 503 under api.degraded_status: 503, and
        # counts all the same.
        if degraded_reason is not None and (status < 400 or status == 503):
            self.degraded.labels(degraded_reason).inc()

    def exposition(self) -> Response:
        return Response(generate_latest(self.scraped), mimetype=None, content_type=CONTENT_TYPE_LATEST)


def init_metrics(app: Flask, store: SnapshotStore, config: BrokerConfig, clock: Callable[[], float]) -> ApiMetrics:
    """Count every request (but scrapes) and serve ``GET /metrics``."""
    metrics = ApiMetrics(store, config, clock)
    app.extensions["tpv_broker_metrics"] = metrics

    def _start() -> None:
        g.tpv_started = time.perf_counter()

    def _count(response: Response) -> Response:
        rule = request.url_rule
        endpoint = rule.rule if rule is not None else UNMATCHED
        if endpoint != "/metrics":
            started = g.get("tpv_started")
            seconds = time.perf_counter() - started if started is not None else None
            metrics.observe(endpoint, response.status_code, g.get("tpv_degraded_reason"), seconds,
                            g.get("tpv_tenant"))
        return response

    # First, so that the time includes whatever other hooks (auth) do.
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_count)
    app.add_url_rule("/metrics", "metrics", metrics.exposition, methods=["GET"])
    return metrics
