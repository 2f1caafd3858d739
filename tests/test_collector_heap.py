"""The daemon keeps CPython's cyclic garbage collector off the statistics it
holds between refreshes (``collector.heap``): frozen after they change,
and only then; what is garbage is collected first, and statistics a
refresh replaces are still freed."""

from __future__ import annotations

import gc
import time
import weakref

import pytest
import redis

from tpv_broker.collector import heap
from tpv_broker.collector.daemon import CycleRunner
from tpv_broker.collector.heap import HeapSettler
from tpv_broker.collector.influx import InfluxQLClient
from tpv_broker.collector.state import CollectorState, RunTimeStats
from tpv_broker.config.collector_settings import CollectorSettings
from tpv_broker.config.server_settings import InfluxDBSettings, RedisSettings
from tpv_broker.config.settings import BrokerConfig
from tpv_broker.core.models import ToolFigures
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .helpers import load_prototype_data


def _tracked(objects: list[object]) -> list[bool]:
    """Whether each is still walked by the collections (not frozen)."""
    ids = {id(o) for o in gc.get_objects()}
    return [id(o) in ids for o in objects]


def _stats(run_s: float) -> RunTimeStats:
    figures = {f"tool{i}": {"d1": ToolFigures(count=3, median_run_s=run_s + i)} for i in range(50)}
    return RunTimeStats.from_tool_stats(figures, time.time(), 50)


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _garbage_cycle() -> weakref.ref[_Node]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_new_statistics_are_frozen_once_after_the_garbage_is_collected() -> None:
    state = CollectorState.new(BrokerConfig(), background_stats=True)
    stats = state.of("influxdb").stats
    settler = HeapSettler()
    assert not settler.after(state)  # nothing kept yet: nothing to settle
    assert gc.get_freeze_count() == 0

    stats.keep_full_read(_stats(10.0))
    first = [f for per in stats.current.tool_stats.values() for f in per.values()]  # type: ignore[union-attr]
    assert all(_tracked(first))
    cycle = _garbage_cycle()
    assert settler.after(state)
    assert cycle() is None  # collected, not frozen
    assert gc.get_freeze_count() > 0
    assert not any(_tracked(first))
    # The same statistics again: nothing to do.
    gc.unfreeze()
    assert not settler.after(state)
    assert gc.get_freeze_count() == 0

    # A refresh replaces them: the new ones are frozen, the old ones freed.
    old = weakref.ref(first[0])
    del first
    stats.current = _stats(20.0)
    second = [f for per in stats.current.tool_stats.values() for f in per.values()]
    assert settler.after(state)
    assert old() is None
    assert not any(_tracked(second))


def test_a_reference_cycle_frozen_alive_is_collected_once_it_is_garbage() -> None:
    state = CollectorState.new(BrokerConfig(), background_stats=True)
    stats = state.of("influxdb").stats
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    cycle = weakref.ref(a)
    stats.keep_full_read(_stats(10.0))
    settler = HeapSettler()
    assert settler.after(state)
    del a, b  # garbage now, but frozen: no collection looks at it
    gc.collect()
    assert cycle() is not None
    stats.current = _stats(20.0)
    assert settler.after(state)
    assert cycle() is None


def test_the_settler_keeps_no_statistics_alive() -> None:
    state = CollectorState.new(BrokerConfig(), background_stats=True)
    stats = state.of("influxdb").stats
    stats.keep_full_read(_stats(10.0))
    settler = HeapSettler()
    assert settler.after(state)
    gone = weakref.ref(stats.current)  # type: ignore[arg-type]
    stats.current = None
    assert gone() is None


def test_a_combination_of_several_sources_statistics_counts_as_kept() -> None:
    state = CollectorState.new(BrokerConfig(), background_stats=True)
    for name, run_s in (("a", 10.0), ("b", 20.0)):
        state.of(name).stats.keep_full_read(_stats(run_s))
    settler = HeapSettler()
    assert settler.after(state)
    combined = state.combined_stats([state.of("a").stats.current, state.of("b").stats.current])  # type: ignore[list-item]
    assert combined is not None
    assert settler.after(state)  # built by a cycle since
    assert not any(_tracked([f for per in combined.tool_stats.values() for f in per.values()]))


def _config(influx_url: str, db: str) -> BrokerConfig:
    return BrokerConfig(
        influxdb=InfluxDBSettings(url=influx_url, database=db, timeout_s=5),
        redis=RedisSettings(key_prefix="heap"),
        collector=CollectorSettings(stats_refresh_s=300),
    )


class SettleCount:
    """``heap.settle`` as it is, counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self._settle = heap.settle
        monkeypatch.setattr(heap, "settle", self)

    def __call__(self) -> None:
        self.calls += 1
        self._settle()


def _kept_figures(runner: CycleRunner) -> list[ToolFigures]:
    current = runner.state.of("influxdb").stats.current
    assert current is not None
    return [f for per in current.tool_stats.values() for f in per.values()]


def test_the_daemon_freezes_the_statistics_its_first_cycle_and_its_refreshes_read(
        influx_server, influx_db, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    settles = SettleCount(monkeypatch)
    load_prototype_data(influx_server, influx_db)
    config = _config(influx_server.url, influx_db)
    store = SnapshotStore(redis_client, KeySchema("heap"))
    source = InfluxQLClient(config.influxdb)

    one_off = CycleRunner(config, source, store)
    report = one_off()
    assert report is not None and report.published
    # `collect --once` exits after its cycle: nothing to keep.
    assert gc.get_freeze_count() == 0 and all(_tracked(_kept_figures(one_off)))

    daemon = CycleRunner(config, source, store, daemon=True)
    report = daemon()
    assert report is not None and report.published
    first = _kept_figures(daemon)
    assert first and not any(_tracked(first))
    # Once: not again for cycles that keep the same statistics.
    assert settles.calls == 1
    report = daemon()
    assert report is not None and report.published and settles.calls == 1
    daemon.refresh_stats()  # nothing new
    assert settles.calls == 1

    # A new day's figures, read by the refresh job.
    influx_server.write_lines(influx_db, [
        f"destination-queue-run-time,destination_id=condor_us,tool_id=spades count=3,median_queue=1,"
        f"median_run=10 {int(time.time())}"])
    before = daemon.state.of("influxdb").stats.current
    gc.unfreeze()
    daemon.refresh_stats()
    assert daemon.state.of("influxdb").stats.current is not before
    assert not any(_tracked(_kept_figures(daemon)))
    assert settles.calls == 2
    report = daemon()
    assert report is not None and report.published and settles.calls == 2
