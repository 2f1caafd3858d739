"""A refresh of the run-time statistics reads only what was written since
the last good one and merges it: the result must be what a read of the
whole window gives. On a real influxd and redis-server."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
import redis
import requests

from tpv_broker.collector.cycle import collect_once
from tpv_broker.collector.influx import InfluxQLClient
from tpv_broker.collector.state import CollectorState, RunTimeStats, StatsCache
from tpv_broker.config.collector_settings import CollectorSettings
from tpv_broker.config.server_settings import InfluxDBSettings, RedisSettings
from tpv_broker.config.settings import BrokerConfig
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .helpers import load_prototype_data

RUNTIME = "destination-queue-run-time"
HOUR = 3600


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class RecordingSession(requests.Session):
    """Keeps the form of every query sent."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def post(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.forms.append(dict(kwargs.get("data") or {}))
        return super().post(*args, **kwargs)


def _config(influx_url: str, db: str, **collector: Any) -> BrokerConfig:
    return BrokerConfig(
        influxdb=InfluxDBSettings(url=influx_url, database=db, timeout_s=5),
        redis=RedisSettings(key_prefix="sr"),
        collector=CollectorSettings(stats_refresh_s=300, **collector),
    )


def _point(dest: str, tool: str, count: int, queue: float, run: float, at: int) -> str:
    return (f"{RUNTIME},destination_id={dest},tool_id={tool} count={count},median_queue={queue},"
            f"median_run={run},perc_95_run={run * 3} {at}")


def _full_read(config: BrokerConfig, clock: Clock) -> RunTimeStats:
    """What a new process reads: everything in the window."""
    cache = StatsCache(config.collector.stats_refresh_s, background=True)
    done = cache.refresh(config, InfluxQLClient(config.influxdb), clock)
    assert done.problem is None and done.full and cache.current is not None
    return cache.current


def _assert_same(merged: RunTimeStats | None, full: RunTimeStats) -> None:
    assert merged is not None and merged.payload is not None and full.payload is not None
    assert merged.tool_stats == full.tool_stats
    assert merged.per_destination == full.per_destination
    assert merged.levels == full.levels
    # As published: the same hash, field by field (key order aside).
    assert {k: json.loads(v) for k, v in merged.payload.items()} == {k: json.loads(v) for k, v in full.payload.items()}


@pytest.fixture
def old_data(influx_server, influx_db) -> int:  # type: ignore[no-untyped-def]
    """The prototype's data, an hour old: out of reach of a read of what is new."""
    now = int(time.time())
    load_prototype_data(influx_server, influx_db, end_ts=now - HOUR)
    return now


def test_a_merged_refresh_gives_what_a_full_read_gives_after_a_days_new_points(
        influx_server, influx_db, old_data, redis_client: redis.Redis) -> None:
    config = _config(influx_server.url, influx_db)
    clock, state = Clock(), CollectorState.new(config, background_stats=True)
    source = InfluxQLClient(config.influxdb)
    store, full_store = SnapshotStore(redis_client, KeySchema("sr")), SnapshotStore(redis_client, KeySchema("full"))
    assert collect_once(config, source, store, clock, state).published  # the first one reads everything
    first = state.of("influxdb").stats.current

    clock.now += 300
    done = state.of("influxdb").stats.refresh(config, source, clock)
    assert (done.problem, done.full, done.rows, done.changed) == (None, False, 0, False)
    assert state.of("influxdb").stats.current is first

    # gxadmin's next day: new figures for a known pair, a new tool on a
    # known destination, a new destination.
    influx_server.write_lines(influx_db, [
        _point("condor_us", "spades", 12, 20.0, 6000.0, old_data),
        _point("condor_us", "megahit", 3, 5.0, 900.0, old_data),
        _point("slurm_new", "trinity", 7, 1.5, 300.0, old_data),
    ])
    clock.now += 300
    done = state.of("influxdb").stats.refresh(config, source, clock)
    assert (done.problem, done.full, done.rows, done.changed) == (None, False, 3, True)
    _assert_same(state.of("influxdb").stats.current, _full_read(config, clock))

    # ... and the snapshots published from each are the same.
    assert collect_once(config, source, store, clock, state).published
    assert collect_once(config, source, full_store, clock).published
    merged, full = store.read_all(), full_store.read_all()
    assert merged is not None and full is not None
    assert merged.tool_stats == full.tool_stats
    assert ({d: (f.median_queue_s, f.median_run_s, f.sources.get(RUNTIME)) for d, f in merged.destinations.items()}
            == {d: (f.median_queue_s, f.median_run_s, f.sources.get(RUNTIME)) for d, f in full.destinations.items()})


def test_a_refresh_while_influxdb_is_down_keeps_the_last_ones_and_the_next_reads_from_the_last_good_one(
        influx_server, influx_db, old_data) -> None:
    config = _config(influx_server.url, influx_db)
    clock, state = Clock(), CollectorState.new(config, background_stats=True)
    session = RecordingSession()
    source = InfluxQLClient(config.influxdb, session=session)
    assert state.of("influxdb").stats.refresh(config, source, clock).full
    kept = state.of("influxdb").stats.current

    influx_server.write_lines(influx_db, [_point("condor_us", "spades", 12, 20.0, 6000.0, old_data)])
    down = InfluxQLClient(InfluxDBSettings(url="http://127.0.0.1:9", database=influx_db, timeout_s=1))
    clock.now += 300
    done = state.of("influxdb").stats.refresh(config, down, clock)
    assert done.problem is not None and "unreachable" in done.problem
    assert state.of("influxdb").stats.current is kept

    clock.now += 300
    done = state.of("influxdb").stats.refresh(config, source, clock)
    assert (done.problem, done.full, done.changed) == (None, False, True)
    # From the last good read (600 s ago) and 300 s before it: whatever
    # was written while InfluxDB could not be read is in it.
    since = session.forms[-1]
    assert re.search(r"time > now\(\) - (\d+)ms", since["q"]).group(1) == "900000"  # type: ignore[union-attr]
    # One series of every point: asked in chunks, which max-row-limit does not cut.
    assert since.get("chunked") == "true" and "GROUP BY" not in since["q"]
    assert "chunked" not in session.forms[0] and "GROUP BY" in session.forms[0]["q"]
    _assert_same(state.of("influxdb").stats.current, _full_read(config, clock))


def test_the_whole_window_is_read_by_a_new_process_and_every_full_read_s(influx_server, influx_db, old_data) -> None:
    config = _config(influx_server.url, influx_db, stats_full_read_s=HOUR)
    clock, source = Clock(), InfluxQLClient(config.influxdb)
    for _restart in range(2):
        state = CollectorState.new(config, background_stats=True)
        done = state.of("influxdb").stats.refresh(config, source, clock)
        assert (done.problem, done.full, done.rows, done.changed) == (None, True, 13, True)
        clock.now += 300
        assert not state.of("influxdb").stats.refresh(config, source, clock).full
    kept = state.of("influxdb").stats.current
    clock.now += HOUR
    done = state.of("influxdb").stats.refresh(config, source, clock)
    assert (done.problem, done.full, done.rows, done.changed) == (None, True, 13, False)
    # Nothing changed: the kept ones stay (their hash in Redis is not written again).
    assert state.of("influxdb").stats.current is kept


def test_pairs_whose_newest_point_leaves_the_window_leave_the_statistics(influx_server, influx_db, old_data) -> None:
    config = _config(influx_server.url, influx_db, stats_full_read_s=30 * 86400)
    clock, state = Clock(), CollectorState.new(config, background_stats=True)
    source = InfluxQLClient(config.influxdb)
    assert state.of("influxdb").stats.refresh(config, source, clock).full
    influx_server.write_lines(influx_db, [_point("condor_us", "spades", 12, 20.0, 6000.0, old_data)])
    # Three days on, less the hour the prototype's points are old, and a
    # minute: those points are out of the window, the new one is not.
    clock.now += config.collector.stats_lookback_s - HOUR + 60
    done = state.of("influxdb").stats.refresh(config, source, clock)
    assert (done.problem, done.full, done.changed) == (None, False, True)
    current = state.of("influxdb").stats.current
    assert current is not None
    assert {t: set(per_dest) for t, per_dest in current.tool_stats.items()} == {"spades": {"condor_us"}}
    assert set(current.per_destination) == {"condor_us"}
