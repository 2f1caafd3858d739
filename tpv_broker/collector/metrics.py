"""Prometheus metrics of the collector daemon, served by prometheus_client's
own HTTP server on ``collector.metrics_host:collector.metrics_port``.

The daemon is one process, so one registry holds everything. Ages are
computed when scraped, from what this collector last published, so they
keep growing while cycles fail."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tpv_broker.errors import BrokerError

from .cycle import CycleReport

# A cycle takes milliseconds to a fraction of a second; a first cycle at
# 500 destinations x 2,000 tools about 12 s (bench/README.md).
CYCLE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
OUTCOMES = ("published", "partial", "failed")


def cycle_outcome(report: CycleReport) -> str:
    """published: all presets read and published; partial: published, but
    something was missing; failed: nothing published (the last snapshot stays)."""
    if not report.published:
        return "failed"
    return "partial" if report.errors else "published"


class _Ages(Collector):
    def __init__(self, metrics: CollectorMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m, now = self.metrics, self.metrics.clock()
        if m.published_at is not None:
            yield GaugeMetricFamily("tpv_broker_collector_snapshot_age_seconds",
                                    "Seconds since this collector last published a snapshot",
                                    value=max(0.0, now - m.published_at))
        if m.newest_point_at is not None:
            yield GaugeMetricFamily("tpv_broker_collector_newest_point_age_seconds",
                                    "Seconds since the newest metric point of the last published snapshot",
                                    value=max(0.0, now - m.newest_point_at))


class CollectorMetrics:
    def __init__(self, clock: Callable[[], float], registry: CollectorRegistry | None = None) -> None:
        self.clock = clock
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.cycle_duration = Histogram("tpv_broker_collector_cycle_duration_seconds",
                                        "Duration of collection cycles, by outcome", ["outcome"],
                                        buckets=CYCLE_BUCKETS, registry=r)
        self.cycles = Counter("tpv_broker_collector_cycles", "Collection cycles, by outcome (published, partial, "
                              "failed)", ["outcome"], registry=r)
        self.rows_read = Counter("tpv_broker_collector_rows_read", "Rows (points) read from InfluxDB by cycles",
                                 registry=r)
        self.destinations = Gauge("tpv_broker_collector_destinations",
                                  "Destinations in the last published snapshot", registry=r)
        self.tools = Gauge("tpv_broker_collector_tools", "Tools in the last published snapshot", registry=r)
        self.last_success = Gauge("tpv_broker_collector_last_success_timestamp_seconds",
                                  "When the last snapshot was published (epoch seconds; 0: not yet)", registry=r)
        self.failures_in_a_row = Gauge("tpv_broker_collector_consecutive_failures",
                                       "Cycles in a row that published nothing (0 while standing by)", registry=r)
        self.health_transitions = Counter("tpv_broker_collector_health_transitions",
                                          "Destination health changes, by destination and the states before and "
                                          "after (healthy, degraded, excluded, probation, drained)",
                                          ["destination", "before", "after"], registry=r)
        self.stats_refreshes = Counter("tpv_broker_collector_stats_refreshes",
                                       "Re-reads of the daily run-time statistics, by outcome (ok, failed)",
                                       ["outcome"], registry=r)
        for outcome in OUTCOMES:
            self.cycles.labels(outcome)
            self.cycle_duration.labels(outcome)
        for outcome in ("ok", "failed"):
            self.stats_refreshes.labels(outcome)
        self.published_at: float | None = None
        self.newest_point_at: float | None = None
        r.register(_Ages(self))

    def observe_cycle(self, report: CycleReport, failures_in_a_row: int) -> None:
        outcome = cycle_outcome(report)
        now = self.clock()
        self.cycles.labels(outcome).inc()
        self.cycle_duration.labels(outcome).observe(report.duration_s)
        self.rows_read.inc(report.rows_read)
        for t in report.transitions:
            self.health_transitions.labels(t.destination, t.before, t.after.state).inc()
        self.failures_in_a_row.set(failures_in_a_row)
        if report.published:
            self.published_at = now
            self.last_success.set(now)
            self.destinations.set(report.destinations)
            self.tools.set(report.tools)
            self.newest_point_at = None if report.newest_point_age_s is None else now - report.newest_point_age_s

    def standing_by(self) -> None:
        """A cycle as a standby, while another collector holds the lease: it
        publishes nothing, and fails nothing either (its failures as leader
        would otherwise read as failing for as long as it stands by)."""
        self.failures_in_a_row.set(0)

    def observe_stats_refresh(self, ok: bool) -> None:
        self.stats_refreshes.labels("ok" if ok else "failed").inc()


class MetricsServer:
    """prometheus_client's HTTP server in a daemon thread; ``close`` stops it."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        try:
            self.server, self.thread = start_http_server(port, addr=host, registry=registry)
        except OSError as e:
            raise BrokerError(
                f"collector.metrics_port: cannot serve metrics on {host}:{port}: {e.strerror or e}"
            ) from None
        self.host, self.port = host, port

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=5)
