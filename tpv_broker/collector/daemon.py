"""The thin scheduler around ``collect_once``: one cycle at a time, late
cycles coalesced, clean shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import datetime, timezone
from typing import Callable

from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.blocking import BlockingScheduler

from ..shared.config import BrokerConfig
from ..shared.logging_setup import event
from ..shared.store import SnapshotStore
from .cycle import CycleReport, StatsCache, collect_once
from .influx import InfluxQLClient
from .metrics import CollectorMetrics, cycle_outcome

log = logging.getLogger("tpv_broker.collector")


class CycleRunner:
    """Runs cycles and logs one line each; a failure logs one clear line,
    not a traceback per cycle, and the previous snapshot stays."""

    def __init__(
        self,
        config: BrokerConfig,
        source: InfluxQLClient,
        store: SnapshotStore,
        clock: Callable[[], float] = time.time,
        metrics: CollectorMetrics | None = None,
    ) -> None:
        self.config, self.source, self.store, self.clock = config, source, store, clock
        self.metrics = metrics
        self.stats = StatsCache(config.collector.stats_refresh_s)
        self.last_report: CycleReport | None = None
        self.failures_in_a_row = 0

    def __call__(self) -> CycleReport:
        report = collect_once(self.config, self.source, self.store, self.clock, self.stats)
        self.last_report = report
        fields = _cycle_fields(report)
        if report.published and not report.errors:
            if self.failures_in_a_row:
                log.info("collector recovered after %d failed cycle(s)", self.failures_in_a_row,
                         extra=event("collector_recovered", failed_cycles=self.failures_in_a_row))
            self.failures_in_a_row = 0
            log.info("cycle %s", report.summary(), extra=event("cycle_done", **fields))
        elif report.published:
            self.failures_in_a_row = 0
            log.warning("cycle %s", report.summary(), extra=event("cycle_done", **fields))
        else:
            self.failures_in_a_row += 1
            log.error("cycle %s", report.summary(),
                      extra=event("cycle_failed", failures_in_a_row=self.failures_in_a_row, **fields))
        if self.metrics is not None:
            self.metrics.observe_cycle(report, self.failures_in_a_row)
        return report

    def refresh_stats(self) -> None:
        """Re-read the daily run-time statistics (a job of its own in the
        daemon, so a long read never delays the live figures)."""
        started = self.clock()
        problem = self.stats.refresh(self.config, self.source, self.clock)
        if problem is None:
            current = self.stats.current
            series = sum(len(v) for v in current.tool_stats.values()) if current is not None else 0
            took = self.clock() - started
            log.info("run-time statistics refreshed: %d (tool, destination) series in %.1f s", series, took,
                     extra=event("stats_refreshed", series=series, duration_ms=round(took * 1000, 1)))
        else:
            log.warning("run-time statistics NOT refreshed (the last ones stay): %s", problem,
                        extra=event("stats_refresh_failed", problem=problem))
        if self.metrics is not None:
            self.metrics.observe_stats_refresh(problem is None)


def _cycle_fields(report: CycleReport) -> dict[str, object]:
    return {
        "outcome": cycle_outcome(report),
        "destinations": report.destinations,
        "tools": report.tools,
        "rows": report.rows_read,
        "queries": report.queries,
        "newest_point_age_s": None if report.newest_point_age_s is None else round(report.newest_point_age_s, 1),
        "duration_ms": round(report.duration_s * 1000, 1),
        "problems": len(report.errors),
    }


def run_daemon(runner: CycleRunner, interval_s: float, stop: threading.Event | None = None) -> None:
    """Blocks until SIGTERM/SIGINT (or ``stop`` is set, for tests)."""
    scheduler = BlockingScheduler(timezone=timezone.utc)
    scheduler.add_job(
        runner,
        "interval",
        seconds=interval_s,
        id="collect",
        max_instances=1,
        coalesce=True,
        # A cycle that starts late still runs (once), it is not skipped.
        misfire_grace_time=None,
        next_run_time=datetime.now(timezone.utc),
    )

    def _shutdown(signum: int, _frame: object) -> None:
        log.info("collector stopping (%s)", signal.Signals(signum).name,
                 extra=event("collector_stopping", signal=signal.Signals(signum).name))
        # Not wait=True: that would block the signal handler on a running
        # cycle. The interpreter joins the worker thread before exiting, so a
        # cycle in progress still finishes its (atomic) publish.
        scheduler.shutdown(wait=False)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _shutdown)
        signal.signal(signal.SIGINT, _shutdown)
    if stop is not None:

        def _watch_stop() -> None:
            stop.wait()
            # The event may be set before start() has run.
            for _ in range(200):
                try:
                    scheduler.shutdown(wait=False)
                    return
                except SchedulerNotRunningError:
                    time.sleep(0.05)

        threading.Thread(target=_watch_stop, name="collector-stop", daemon=True).start()
    stats: StatsCache | None = getattr(runner, "stats", None)
    if stats is not None:
        # The first cycle reads the statistics itself; this job re-reads
        # them every stats_refresh_s, beside the cycles.
        stats.background = True
        scheduler.add_job(
            runner.refresh_stats,  # type: ignore[attr-defined]
            "interval",
            seconds=stats.refresh_s,
            id="refresh-stats",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
    log.info("collector started: every %g s", interval_s, extra=event("collector_started", interval_s=interval_s))
    scheduler.start()
    log.info("collector stopped", extra=event("collector_stopped"))
