"""The thin scheduler around ``collect_once``: one cycle at a time, late
cycles coalesced, clean shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.blocking import BlockingScheduler

from tpv_broker.config.settings import BrokerConfig
from tpv_broker.errors import StoreError
from tpv_broker.logging_setup import event
from tpv_broker.store.leader_lock import LeaderLease
from tpv_broker.store.snapshots import SnapshotStore

from .backoff import retry_delay
from .cycle import KEEPING_THE_LAST, CycleReport, collect_once
from .health import log_transitions
from .heap import HeapSettler
from .metrics import CollectorMetrics, cycle_outcome
from .source import MetricSource, Source, as_sources
from .state import RUNTIME_PRESET, CollectorState

log = logging.getLogger("tpv_broker.collector")


class CycleRunner:
    """Runs cycles and logs one line each while all is well. Trouble is
    logged once when it starts or changes (not a line, let alone a
    traceback, per cycle), its end once; while InfluxDB fails, cycles back
    off (``backoff.retry_delay``) and the live snapshot is marked stale."""

    def __init__(
        self,
        config: BrokerConfig,
        sources: MetricSource | Sequence[Source],
        store: SnapshotStore,
        clock: Callable[[], float] = time.time,
        metrics: CollectorMetrics | None = None,
        leader: LeaderLease | None = None,
        daemon: bool = False,
    ) -> None:
        """``daemon``: built for ``run_daemon``: the run-time statistics are
        refreshed by a job of their own (``refresh_stats``, every
        ``stats_refresh_s``), failed cycles mark the live snapshot stale, and
        the heap is settled whenever the kept statistics change
        (``heap.HeapSettler``). Not for a one-off ``collect --once``: its
        failure says nothing about the running daemon's snapshot."""
        self.config, self.store, self.clock = config, store, clock
        self.sources = as_sources(config, sources)
        self.metrics = metrics
        # With several collectors, only the lease holder publishes.
        self.leader = leader
        self.state = CollectorState.new(config, background_stats=daemon)
        # What backoff doubles.
        self.interval_s = config.collector.interval_s
        # None: no refresh job (nor when the statistics preset is not read at all).
        reads_stats = any(p.name == RUNTIME_PRESET for s in self.sources for p in s.presets)
        self.stats_refresh_s = config.collector.stats_refresh_s if daemon and reads_stats else None
        self.marks_stale = daemon
        self.heap = HeapSettler() if daemon else None
        self.failures_in_a_row = 0
        self.failing_since: float | None = None
        # When the next attempt is due while backing off, else None.
        self.retry_at: float | None = None
        self.skipped = 0
        # The problems last logged: the same ones again are not.
        self._logged: tuple[str, ...] = ()
        # Whether the last cycle took longer than the interval (said once).
        self._slow = False
        # Per source, the last statistics refresh's problem (None: it went well).
        self._refresh_problems: dict[str, str | None] = {}

    def __call__(self) -> CycleReport | None:
        started = self.clock()
        interval = self.interval_s
        if self.leader is not None and not self.leader.is_leader():
            # Another collector may publish meanwhile: on taking over, go on
            # from its health verdicts (the live snapshot's), not ours.
            self.state.health = None
            if self.leader.last_error is not None:
                # Redis down is no standing by: nobody publishes, and the
                # failure count and its alert must say so.
                why = f"the collector lease cannot be checked, Redis at {self.store.where}: {self.leader.last_error}"
                report = CycleReport(published=False, errors=[why])
                self._failed(report, started)
                if self.metrics is not None:
                    self.metrics.observe_cycle(report, self.failures_in_a_row)
                return report
            # A standby: the lease job logs who holds it, once. A failure
            # count of its own (a Redis outage) ends here, or a later
            # takeover would go on from it (backoff, stale mark, recovery line).
            self.failures_in_a_row, self.failing_since, self.retry_at, self._logged = 0, None, None, ()
            why = f"standing by: the collector lease is held by {self.leader.last_holder or 'another collector'}"
            if self.metrics is not None:
                self.metrics.standing_by()
            return CycleReport(published=False, errors=[why])
        # Half an interval of slack: scheduled cycles start a little late or early.
        if self.retry_at is not None and started < self.retry_at - interval / 2:
            self.skipped += 1
            return None
        try:
            report = collect_once(self.config, self.sources, self.store, self.clock, self.state, self.leader)
        except Exception as e:  # the loop's edge: a bug must not stop collection
            report = CycleReport(published=False, errors=[f"cycle failed: {type(e).__name__}: {e}"])
            report.source_failed = True
            if (report.errors[0],) != self._logged:
                log.exception("cycle failed unexpectedly (logged once; the last snapshot stays)",
                              extra=event("cycle_crashed"))
                self._logged = (report.errors[0],)
        self._note_duration(report.duration_s)
        if report.published:
            self._published(report, started)
        else:
            self._failed(report, started)
        if self.metrics is not None:
            self.metrics.observe_cycle(report, self.failures_in_a_row)
        if self.heap is not None:
            # The first cycle reads the statistics itself.
            self.heap.after(self.state)
        return report

    def _published(self, report: CycleReport, started: float) -> None:
        if self.failures_in_a_row:
            down = started - self.failing_since if self.failing_since is not None else 0.0
            log.info("collector recovered after %d failed cycle(s) over %.0f s", self.failures_in_a_row, down,
                     extra=event("collector_recovered", failed_cycles=self.failures_in_a_row, down_s=round(down)))
            self._logged = ()
        self.failures_in_a_row, self.failing_since, self.retry_at, self.skipped = 0, None, None, 0
        log_transitions(report.transitions)
        problems = tuple(report.errors)
        done = event("cycle_done", **_cycle_fields(report))
        if problems and problems != self._logged:
            log.warning("cycle %s", report.summary(), extra=done)
        elif not problems and self._logged:
            log.info("cycle %s (every preset read again)", report.summary(), extra=done)
        else:
            log.info("cycle %s", report.summary(), extra=done)
        self._logged = problems

    def _note_duration(self, took: float) -> None:
        if took > self.interval_s and not self._slow:
            log.warning("a cycle took %.1f s, longer than the %g s interval: cycles run back to back, the "
                        "ticks in between are skipped (InfluxDB slow?); logged again when they fit", took,
                        self.interval_s)
        elif took <= self.interval_s and self._slow:
            log.info("cycles fit the %g s interval again (the last took %.1f s)", self.interval_s, took)
        self._slow = took > self.interval_s

    def _failed(self, report: CycleReport, started: float) -> None:
        self.failures_in_a_row += 1
        if self.failing_since is None:
            self.failing_since = started
        collector = self.config.collector
        delay = 0.0
        # A one-off run has no next attempt to announce.
        if report.source_failed and self.marks_stale:
            delay = retry_delay(self.failures_in_a_row, self.interval_s, collector.backoff_max_s)
            self.retry_at = started + delay
        problems = tuple(report.errors)
        if problems != self._logged:
            said = bool(report.errors) and report.errors[-1].endswith(KEEPING_THE_LAST)
            then = ("" if said else f"; {KEEPING_THE_LAST}") + (f"; next attempt in {delay:g} s" if delay else "")
            log.error("cycle %s%s (this is logged again only when it changes or ends)", report.summary(), then,
                      extra=event("cycle_failed", failures_in_a_row=self.failures_in_a_row, **_cycle_fields(report)))
            self._logged = problems
        else:
            log.debug("cycle %s (failure %d in a row)", report.summary(), self.failures_in_a_row)
        if not self.marks_stale:
            return
        try:
            self.store.mark_stale(self.failing_since, self.failures_in_a_row, report.stale_reason(),
                                  self.retry_at if report.source_failed else None,
                                  fence=self.leader.fence if self.leader is not None else None,
                                  sources=report.sources if report.per_source else None)
        except StoreError as e:
            log.debug("could not mark the snapshot stale: %s", e)

    def refresh_stats(self) -> None:
        """Re-read the daily run-time statistics, or what changed in them (a
        job of its own in the daemon, so a long read never delays the live
        figures): each source's that has them."""
        try:
            for source in self.sources:
                if any(p.name == RUNTIME_PRESET for p in source.presets):
                    self._refresh_stats(source)
        finally:
            if self.heap is not None:
                # Several sources' statistics are combined, as the next cycle
                # would (the same parts in the same order, so it reuses it):
                # one settling per change, not a second in that cycle.
                self.state.combined_stats([m for s in self.sources
                                           if (m := self.state.of(s.name).stats.current) is not None])
                self.heap.after(self.state)

    def _refresh_stats(self, source: Source) -> None:
        started = self.clock()
        stats = self.state.of(source.name).stats
        done = stats.refresh(self.config, source.reader, self.clock, source.aliases, source.hidden)
        where = f" of source {source.name}" if len(self.sources) > 1 else ""
        # A problem is logged when it starts or changes, and its end once.
        before = self._refresh_problems.get(source.name)
        self._refresh_problems[source.name] = done.problem
        if done.problem is None:
            current = stats.current
            series = sum(len(v) for v in current.tool_stats.values()) if current is not None else 0
            took = self.clock() - started
            news = "changed" if done.changed else "unchanged"
            again = " again" if before is not None else ""
            log.info("run-time statistics%s refreshed%s (%s, %d points, %s): %d (tool, destination) series in "
                     "%.1f s", where, again, done.kind, done.rows, news, series, took,
                     extra=event("stats_refreshed", source=source.name, series=series, full=done.full,
                                 rows=done.rows, changed=done.changed, duration_ms=round(took * 1000, 1)))
        else:
            level = logging.WARNING if done.problem != before else logging.DEBUG
            log.log(level, "run-time statistics%s NOT refreshed (%s; the last ones stay; logged again when this "
                    "changes or ends): %s", where, done.kind, done.problem,
                    extra=event("stats_refresh_failed", source=source.name, full=done.full, problem=done.problem))
        if self.metrics is not None:
            self.metrics.observe_stats_refresh(done.problem is None)


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


class _SkippedTickFilter(logging.Filter):
    """APScheduler warns at every tick that finds the last cycle still
    running: with a slow InfluxDB, a line per tick. The runner says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


_SKIPPED_TICKS = _SkippedTickFilter()


class Scheduled(Protocol):
    """What ``run_daemon`` runs: a ``CycleRunner`` built with ``daemon=True``
    (a stand-in in the scheduling tests)."""

    interval_s: float
    # None: no refresh job.
    stats_refresh_s: float | None
    leader: LeaderLease | None

    def __call__(self) -> object: ...

    def refresh_stats(self) -> None: ...


def run_daemon(runner: Scheduled, stop: threading.Event | None = None) -> None:
    """Runs ``runner`` as it was built: a cycle every ``interval_s``, the
    first at once; beside the cycles, the run-time statistics refresh and
    the lease renewal, when it has them. Blocks until SIGTERM/SIGINT (or
    ``stop`` is set, for tests)."""
    logging.getLogger("apscheduler.scheduler").addFilter(_SKIPPED_TICKS)  # the same filter twice: once
    scheduler = BlockingScheduler(timezone=UTC)
    _schedule(scheduler, "collect", runner, runner.interval_s, start_now=True)
    if runner.stats_refresh_s is not None:
        # The first cycle reads the statistics itself; this job re-reads
        # them every stats_refresh_s, beside the cycles.
        _schedule(scheduler, "refresh-stats", runner.refresh_stats, runner.stats_refresh_s)
    leader = runner.leader
    if leader is not None:
        leader.hold()
        _schedule(scheduler, "lease", _lease_keeper(leader, scheduler), leader.lease_s / 3)
    stop = stop if stop is not None else threading.Event()
    _stop_on_signals(stop)
    _stop_when_set(scheduler, stop)
    log.info("collector started: every %g s", runner.interval_s,
             extra=event("collector_started", interval_s=runner.interval_s))
    try:
        scheduler.start()
    finally:
        if leader is not None:
            leader.release()
    log.info("collector stopped", extra=event("collector_stopped"))


def _schedule(scheduler: BlockingScheduler, job_id: str, job: Callable[[], object], every_s: float,
              start_now: bool = False) -> None:
    """One run of a job at a time; late runs coalesced into one, which
    still runs (it is not skipped)."""
    first: dict[str, datetime] = {"next_run_time": datetime.now(UTC)} if start_now else {}
    scheduler.add_job(job, "interval", seconds=every_s, id=job_id, max_instances=1, coalesce=True,
                      misfire_grace_time=None, **first)


def _lease_keeper(leader: LeaderLease, scheduler: BlockingScheduler) -> Callable[[], None]:
    """The lease job: renew the lease, or take it when free."""

    def keep_lease() -> None:
        was_leader = leader.is_leader()
        if leader.hold() and not was_leader:
            # Just took over: publish now rather than at the next tick.
            scheduler.modify_job("collect", next_run_time=datetime.now(UTC))

    return keep_lease


def _stop_on_signals(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set signal handlers (tests run the daemon in a thread)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("collector stopping (%s)", signal.Signals(signum).name,
                 extra=event("collector_stopping", signal=signal.Signals(signum).name))
        # Only the event: a signal may come before the scheduler runs (its
        # stop would then be lost), or inside its loop, which holds the
        # (re-entrant) job store lock; the watcher stops it from its thread.
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _stop_when_set(scheduler: BlockingScheduler, stop: threading.Event) -> None:
    def watch() -> None:
        stop.wait()
        # The event may be set before start() has run. Not wait=True: the
        # interpreter joins the worker thread before exiting, so a cycle in
        # progress still finishes its (atomic) publish.
        for _ in range(200):
            try:
                scheduler.shutdown(wait=False)
                return
            except SchedulerNotRunningError:
                time.sleep(0.05)

    threading.Thread(target=watch, name="collector-stop", daemon=True).start()
