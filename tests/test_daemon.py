"""The scheduler around collect_once: one cycle at a time, even when a cycle
takes longer than the interval, and a clean stop."""

from __future__ import annotations

import threading
import time

from tpv_broker.collector.daemon import run_daemon


class SlowCycle:
    """Stands in for CycleRunner: what is under test is the scheduling."""

    stats_refresh_s = None
    leader = None

    def __init__(self, duration_s: float, stop_after: int, stop: threading.Event, interval_s: float) -> None:
        self.duration_s, self.stop_after, self.stop, self.interval_s = duration_s, stop_after, stop, interval_s
        self.running = 0
        self.most_at_once = 0
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.running += 1
            self.calls += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(self.duration_s)
        with self.lock:
            self.running -= 1
            if self.calls >= self.stop_after:
                self.stop.set()

    def refresh_stats(self) -> None:
        raise AssertionError("no refresh job was asked for")


def test_cycles_never_overlap_when_slower_than_the_interval() -> None:
    stop = threading.Event()
    cycle = SlowCycle(duration_s=0.3, stop_after=4, stop=stop, interval_s=0.05)
    daemon = threading.Thread(target=run_daemon, args=(cycle, stop))
    daemon.start()
    daemon.join(timeout=60)
    assert not daemon.is_alive(), "the daemon did not stop when asked"
    assert cycle.calls >= 4
    assert cycle.most_at_once == 1


def test_a_collector_that_cannot_reach_redis_counts_failures_not_standing_by() -> None:
    # With Redis down its lease lapses, and its cycles took the standby path: the failure gauge read 0
    # for the whole outage, so the "collector failing" alert (whose runbook names Redis down) never fired.
    import redis

    from tpv_broker.collector.daemon import CycleRunner
    from tpv_broker.collector.metrics import CollectorMetrics
    from tpv_broker.config.settings import BrokerConfig
    from tpv_broker.devtools.servers import free_port
    from tpv_broker.store.keys import KeySchema
    from tpv_broker.store.leader_lock import LeaderLease
    from tpv_broker.store.snapshots import SnapshotStore

    client = redis.Redis(port=free_port(), socket_timeout=0.2, socket_connect_timeout=0.2)
    store = SnapshotStore(client, KeySchema("down"))
    lease = LeaderLease(client, store.keys.collector_lease, "c1", 15)
    assert not lease.hold() and lease.last_error is not None
    metrics = CollectorMetrics(clock=time.time)
    runner = CycleRunner(BrokerConfig(), [], store, clock=time.time, metrics=metrics, leader=lease)
    for n in (1, 2, 3):
        report = runner()
        assert report is not None and not report.published
        assert "the collector lease cannot be checked" in report.errors[0]
        assert metrics.registry.get_sample_value("tpv_broker_collector_consecutive_failures") == n
    # Redis back, another collector holds the lease: standing by, the outage's count ends there.
    lease.last_error, lease.last_holder = None, "c2/0123"
    runner()
    assert (runner.failures_in_a_row, runner.failing_since, runner.retry_at) == (0, None, None)
    assert metrics.registry.get_sample_value("tpv_broker_collector_consecutive_failures") == 0


def test_a_failing_statistics_refresh_is_logged_when_it_starts_and_when_it_ends(influx_server, influx_db, caplog):
    # Every refresh of an outage said it again: a warning every 5 minutes for as long as InfluxDB was down.
    import logging

    from tpv_broker.collector.daemon import CycleRunner
    from tpv_broker.collector.influx import InfluxQLClient
    from tpv_broker.collector.source import sources_for
    from tpv_broker.config.server_settings import InfluxDBSettings
    from tpv_broker.config.settings import BrokerConfig
    from tpv_broker.devtools.servers import free_port

    from .helpers import load_prototype_data

    load_prototype_data(influx_server, influx_db)
    config = BrokerConfig.model_validate({"influxdb": {"url": influx_server.url, "database": influx_db}})
    up, down = InfluxQLClient(config.influxdb), InfluxQLClient(InfluxDBSettings(
        url=f"http://127.0.0.1:{free_port()}", database=influx_db, timeout_s=1))

    class Switch:
        """The collector's reader, pointed at a stopped or a running influxd."""

        reader = down

        @property
        def where(self) -> str:
            return self.reader.where

        def read(self, presets, s):  # type: ignore[no-untyped-def]
            return self.reader.read(presets, s)

        def database_problem(self) -> str | None:
            return self.reader.database_problem()

    switch = Switch()
    runner = CycleRunner(config, sources_for(config, {"influxdb": switch}), None, clock=time.time,  # type: ignore[arg-type]
                         daemon=True)
    caplog.set_level(logging.DEBUG, logger="tpv_broker.collector")
    for _ in range(3):
        runner.refresh_stats()
    said = [r for r in caplog.records if "NOT refreshed" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    switch.reader = up
    runner.refresh_stats()
    runner.refresh_stats()
    back = [r.getMessage() for r in caplog.records if "refreshed" in r.getMessage() and "NOT" not in r.getMessage()]
    assert len(back) == 2 and " refreshed again (" in back[0] and " refreshed (" in back[1], back


def test_a_sigterm_just_before_the_scheduler_starts_still_stops_the_collector(monkeypatch) -> None:
    # The handlers are installed a moment before the scheduler runs; a SIGTERM in between (systemd stopping a
    # collector that has just started) found no running scheduler to stop and was lost: the daemon ran on.
    import os
    import signal

    from apscheduler.schedulers.blocking import BlockingScheduler

    assert threading.current_thread() is threading.main_thread()  # signal handlers are set from here only
    real_start = BlockingScheduler.start

    def start_after_a_sigterm(self: BlockingScheduler, *args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.3)  # whatever the handler does with it, done before the scheduler runs
        real_start(self, *args, **kwargs)

    monkeypatch.setattr(BlockingScheduler, "start", start_after_a_sigterm)
    stop, safety_fired = threading.Event(), threading.Event()
    cycle = SlowCycle(duration_s=0, stop_after=10**9, stop=stop, interval_s=0.05)

    def safety_net() -> None:  # without the fix the daemon would run for ever
        safety_fired.set()
        stop.set()

    safety = threading.Timer(20, safety_net)
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    safety.start()
    try:
        run_daemon(cycle, stop)
    finally:
        safety.cancel()
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
    assert not safety_fired.is_set(), "the SIGTERM was lost: only the test's safety net stopped the daemon"
