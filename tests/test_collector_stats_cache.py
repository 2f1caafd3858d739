"""The daemon re-reads the daily run-time statistics every
``collector.stats_refresh_s``, not every cycle, and cycles in between leave
the tool statistics in Redis untouched; on real influxd and redis-server."""

from __future__ import annotations

import time

import pytest
import redis
import requests

from tpv_broker.collector.cycle import collect_once
from tpv_broker.collector.influx import InfluxQLClient
from tpv_broker.collector.state import CollectorState
from tpv_broker.config.collector_settings import CollectorSettings
from tpv_broker.config.server_settings import InfluxDBSettings, RedisSettings
from tpv_broker.config.settings import BrokerConfig
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .helpers import load_prototype_data

KEYS = KeySchema("sc")


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class CountingSession(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self.statements: list[int] = []

    def post(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        q = kwargs.get("data", {}).get("q", "")
        if "SHOW DATABASES" not in q:
            self.statements.append(len(q.split(";\n")))
        return super().post(*args, **kwargs)


@pytest.fixture
def store(redis_client: redis.Redis) -> SnapshotStore:
    return SnapshotStore(redis_client, KEYS)


def _config(influx_url: str, db: str) -> BrokerConfig:
    return BrokerConfig(
        influxdb=InfluxDBSettings(url=influx_url, database=db, timeout_s=5),
        redis=RedisSettings(key_prefix="sc"),
        collector=CollectorSettings(stats_refresh_s=300),
    )


def test_cycles_between_refreshes_reuse_the_statistics(influx_server, influx_db, store, redis_client):
    load_prototype_data(influx_server, influx_db)
    config = _config(influx_server.url, influx_db)
    session, clock, state = CountingSession(), Clock(), CollectorState.new(config)
    source = InfluxQLClient(config.influxdb, session=session)

    first = collect_once(config, source, store, clock, state)
    assert first.published and not first.errors
    tool_stats = redis_client.hgetall(KEYS.tool_stats)
    full = store.read_all()
    assert tool_stats and full is not None

    # 15 s later: live figures only; the statistics hash is not rewritten.
    clock.now += 15
    redis_client.hset(KEYS.tool_stats, "marker", "untouched")
    second = collect_once(config, source, store, clock, state)
    assert second.published and not second.errors
    assert session.statements == [3, 2]
    assert redis_client.hget(KEYS.tool_stats, "marker") == b"untouched"
    redis_client.hdel(KEYS.tool_stats, "marker")
    again = store.read_all()
    assert again is not None
    assert again.tool_stats == full.tool_stats
    # Per-destination run-time figures come from the kept statistics.
    assert {d: (f.median_queue_s, f.median_run_s, f.sources) for d, f in again.destinations.items()} == \
        {d: (f.median_queue_s, f.median_run_s, f.sources) for d, f in full.destinations.items()}
    assert again.meta.created_at > full.meta.created_at

    # Once due, everything is read and written again.
    clock.now += 300
    redis_client.hset(KEYS.tool_stats, "marker", "stale")
    third = collect_once(config, source, store, clock, state)
    assert third.published and not third.errors
    assert session.statements == [3, 2, 3]
    assert redis_client.hget(KEYS.tool_stats, "marker") is None
    assert redis_client.hgetall(KEYS.tool_stats) == tool_stats


def test_statistics_are_written_again_when_redis_lost_them(influx_server, influx_db, store, redis_client):
    load_prototype_data(influx_server, influx_db)
    config = _config(influx_server.url, influx_db)
    clock, state = Clock(), CollectorState.new(config)
    source = InfluxQLClient(config.influxdb)
    assert collect_once(config, source, store, clock, state).published
    tool_stats = redis_client.hgetall(KEYS.tool_stats)
    redis_client.flushall()  # a Redis restart without persistence
    clock.now += 15
    assert collect_once(config, source, store, clock, state).published
    assert redis_client.hgetall(KEYS.tool_stats) == tool_stats


def test_another_writer_in_between_makes_it_write_everything(influx_server, influx_db, store, redis_client):
    load_prototype_data(influx_server, influx_db)
    config = _config(influx_server.url, influx_db)
    clock, state = Clock(), CollectorState.new(config)
    source = InfluxQLClient(config.influxdb)
    assert collect_once(config, source, store, clock, state).published
    tool_stats = redis_client.hgetall(KEYS.tool_stats)
    # Someone else (a second collector, a test) publishes a snapshot of its own.
    other = store.read_all()
    assert other is not None
    store.publish(other.model_copy(update={"tool_stats": {}, "meta": other.meta.model_copy(
        update={"created_at": clock.now + 1})}))
    assert redis_client.exists(KEYS.tool_stats) == 0
    clock.now += 15
    assert collect_once(config, source, store, clock, state).published
    assert redis_client.hgetall(KEYS.tool_stats) == tool_stats


def test_a_failed_refresh_keeps_the_last_statistics(influx_server, influx_db, store, redis_client):
    load_prototype_data(influx_server, influx_db)
    config = _config(influx_server.url, influx_db)
    clock, state = Clock(), CollectorState.new(config)
    source = InfluxQLClient(config.influxdb)
    assert collect_once(config, source, store, clock, state).published
    before = store.read_all()
    assert before is not None and before.tool_stats

    real_query = source.query

    def runtime_fails(statements, **kwargs):  # type: ignore[no-untyped-def]
        results = real_query(statements, **kwargs)
        return [r if "destination-queue-run-time" not in s else type(r)(error="boom")
                for s, r in zip(statements, results, strict=True)]

    source.query = runtime_fails  # type: ignore[method-assign]
    clock.now += 600
    report = collect_once(config, source, store, clock, state)
    assert report.published
    assert report.errors == ["destination_queue_run_time: boom"]
    after = store.read_all()
    assert after is not None
    assert after.tool_stats == before.tool_stats
    # ... and it tries again next cycle.
    assert state.of("influxdb").stats.due(clock.now + 15)


def test_without_a_cache_every_cycle_reads_everything(influx_server, influx_db, store):
    load_prototype_data(influx_server, influx_db)
    config = _config(influx_server.url, influx_db)
    session = CountingSession()
    source = InfluxQLClient(config.influxdb, session=session)
    for _ in range(2):
        assert collect_once(config, source, store, time.time).published
    assert session.statements == [3, 3]


def test_in_the_daemon_a_job_of_its_own_refreshes_them(influx_server, influx_db, store, redis_client):
    load_prototype_data(influx_server, influx_db)
    config = _config(influx_server.url, influx_db)
    session, clock, state = CountingSession(), Clock(), CollectorState.new(config, background_stats=True)
    source = InfluxQLClient(config.influxdb, session=session)
    assert collect_once(config, source, store, clock, state).published  # none yet: read inline
    first = state.of("influxdb").stats.current
    # Long past due: cycles still reuse them, the refresh job re-reads them.
    clock.now += 3600
    assert collect_once(config, source, store, clock, state).published
    assert session.statements == [3, 2]
    done = state.of("influxdb").stats.refresh(config, source, clock)
    assert (done.problem, done.full, done.changed) == (None, True, False)
    assert session.statements == [3, 2, 1]
    # Nothing changed: the same statistics, and their hash in Redis, stay.
    assert state.of("influxdb").stats.current is first
    redis_client.hset(KEYS.tool_stats, "marker", "kept")
    assert collect_once(config, source, store, clock, state).published
    assert redis_client.hget(KEYS.tool_stats, "marker") == b"kept"
    # A new day's figures: built by the job, written by the next cycle.
    influx_server.write_lines(influx_db, [
        f"destination-queue-run-time,destination_id=condor_us,tool_id=spades count=3,median_queue=1,"
        f"median_run=10 {int(time.time())}"])
    clock.now += 300
    done = state.of("influxdb").stats.refresh(config, source, clock)
    assert (done.problem, done.full, done.changed) == (None, False, True)
    assert state.of("influxdb").stats.current is not first and state.of("influxdb").stats.current is not None
    assert state.of("influxdb").stats.current.payload is not None  # built by the job, not by a cycle
    assert collect_once(config, source, store, clock, state).published
    assert redis_client.hget(KEYS.tool_stats, "marker") is None  # the new ones were written
    assert session.statements == [3, 2, 1, 2, 1, 2]


def test_a_failed_refresh_job_keeps_the_last_ones(influx_server, influx_db, store):
    load_prototype_data(influx_server, influx_db)
    config = _config(influx_server.url, influx_db)
    state = CollectorState.new(config, background_stats=True)
    assert collect_once(config, InfluxQLClient(config.influxdb), store, time.time, state).published
    kept = state.of("influxdb").stats.current
    broken = config.model_copy(update={"influxdb": InfluxDBSettings(url="http://127.0.0.1:9", database="x",
                                                                     timeout_s=1)})
    problem = state.of("influxdb").stats.refresh(broken, InfluxQLClient(broken.influxdb), time.time).problem
    assert problem is not None and "unreachable" in problem
    assert state.of("influxdb").stats.current is kept


def test_only_a_daemon_runner_refreshes_them_in_a_job_of_its_own(store):
    from tpv_broker.collector.daemon import CycleRunner

    config = _config("http://127.0.0.1:9", "x")
    source = InfluxQLClient(config.influxdb)
    one_off, daemon = CycleRunner(config, source, store), CycleRunner(config, source, store, daemon=True)
    assert (one_off.stats_refresh_s, one_off.state.of("influxdb").stats.background,
            one_off.marks_stale) == (None, False, False)
    assert (daemon.stats_refresh_s, daemon.state.of("influxdb").stats.background,
            daemon.marks_stale) == (300, True, True)
    # Statistics the config does not read are not refreshed either.
    live_only = config.model_copy(update={"collector": CollectorSettings(presets=["queue_by_destination"])})
    assert CycleRunner(live_only, source, store, daemon=True).stats_refresh_s is None
