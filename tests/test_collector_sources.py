"""One collector reading several InfluxDBs (config ``sources``), on real
servers: the session's influxd (usegalaxy.eu's gxadmin), two more started
here (usegalaxy.fr's gxadmin; the Pulsar network's exporters, whose server
also holds a third Galaxy's database) and the session's redis-server.

Covered: the published snapshot sums each endpoint's queue over the
Galaxies, takes capacity from the network's source and maps a Galaxy's own
ids through its tenant's aliases; a config without ``sources`` publishes
what it did before; one request per source per cycle; a stopped and a hung
source mid-run (last good figures kept, states, errors, a cycle bounded by
one time-out, backoff on an injected clock, recovery, figures past
``lookback_s`` dropped); no source answering (nothing published); and
run-time statistics combined count-weighted, with the combination (and its
Redis hash) reused while no Galaxy's statistics changed."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import requests

from tpv_broker.collector.cycle import CycleReport, collect_once
from tpv_broker.collector.influx import InfluxQLClient
from tpv_broker.collector.source import Source, sources_for
from tpv_broker.collector.state import CollectorState
from tpv_broker.config.preset_spec import DEFAULT_PRESETS
from tpv_broker.config.server_settings import InfluxDBSettings, RedisSettings
from tpv_broker.config.settings import BrokerConfig
from tpv_broker.core.models import Snapshot, SourceStatus
from tpv_broker.devtools.servers import InfluxServer
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .helpers import load_prototype_data
from .test_collector_influx import QUEUE

PREFIX = "srcs"
KEYS = KeySchema(PREFIX)
QUEUE_P, RUNTIME_P, CONDOR_P = "queue_by_destination", "destination_queue_run_time", "htcondor_cluster_usage"
ERRORS_P = "errored_jobs_by_destination"
# usegalaxy.fr calls the network's pulsar_it01 "pulsar-it" in its TPV config and its gxadmin figures.
TENANTS = {
    "usegalaxy-eu": {"auth_tokens": ["eu-token-0123456789abcdef"]},
    "usegalaxy-fr": {"auth_tokens": ["fr-token-0123456789abcdef"], "aliases": {"pulsar-it": "pulsar_it01"}},
}


class Clock:
    """The collector's clock, moved by hand: backoff and the age of kept
    figures follow it, while InfluxDB's own windows follow real time."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


class CountingSession(requests.Session):
    """The real HTTP session, noting how many statements each request held."""

    def __init__(self) -> None:
        super().__init__()
        self.statements: list[int] = []

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        self.statements.append(len(kwargs.get("data", {}).get("q", "").split(";\n")))
        return super().post(*args, **kwargs)


@dataclass
class World:
    """The three influxds and this test's databases on them."""

    eu: InfluxServer
    fr: InfluxServer
    net: InfluxServer
    db: str

    @property
    def us_db(self) -> str:
        return f"{self.db}_us"


def _start(tmp_path_factory: pytest.TempPathFactory, name: str) -> InfluxServer:
    return InfluxServer(tmp_path_factory.mktemp(name)).start()


@pytest.fixture(scope="module")
def fr_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    # Ours, not the session's: tests here stop it.
    server = _start(tmp_path_factory, "influxd-fr")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def net_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    # Ours, not the session's: tests here pause it.
    server = _start(tmp_path_factory, "influxd-net")
    try:
        yield server
    finally:
        server.stop()


def _running(server: InfluxServer) -> None:
    """Back to serving, whatever a test (maybe a failed one) left it in."""
    if server.proc is None or server.proc.poll() is not None:
        server.start()  # on the same HTTP port
    else:
        server.resume()


@pytest.fixture
def world(influx_server: InfluxServer, fr_server: InfluxServer, net_server: InfluxServer) -> Iterator[World]:
    w = World(influx_server, fr_server, net_server, f"t_{uuid.uuid4().hex[:12]}")
    for server, db in ((w.eu, w.db), (w.fr, w.db), (w.net, w.db), (w.net, w.us_db)):
        server.create_database(db)
    try:
        yield w
    finally:
        for server, db in ((w.eu, w.db), (w.fr, w.db), (w.net, w.db), (w.net, w.us_db)):
            _running(server)
            server.query(f'DROP DATABASE "{db}"')


@pytest.fixture
def store(redis_client: redis.Redis) -> SnapshotStore:
    return SnapshotStore(redis_client, KEYS)


def _source(server: InfluxServer, db: str, presets: list[str], tenant: str | None = None,
            timeout_s: float = 2.0) -> dict[str, Any]:
    out: dict[str, Any] = {"url": server.url, "database": db, "timeout_s": timeout_s, "presets": presets}
    if tenant is not None:
        out["tenant"] = tenant
    return out


def _config(sources: dict[str, dict[str, Any]], **collector: Any) -> BrokerConfig:
    return BrokerConfig.model_validate({"sources": sources, "redis": {"key_prefix": PREFIX},
                                        "collector": collector, "api": {"tenants": TENANTS}})


def _queue(dest: str, queued: int, running: int, at: int) -> list[str]:
    # gxadmin prints a line per non-empty (destination, state) only.
    return [f"queue_by_destination,destination_id={dest},state={state} count={n} {at}"
            for state, n in (("queued", queued), ("running", running)) if n]


def _capacity(dest: str, cpus_total: int, cpus_free: int, at: int) -> str:
    # One series for every site (the id is a field): each line needs its own time.
    return (f"htcondor_cluster_usage,classad=machine total_detected_cpus={cpus_total},unclaimed_cpus={cpus_free},"
            f'total_memory=65536,unclaimed_memory=32768,destination_id="{dest}",destination_status="online" {at}')


def _run_time(tool: str, dest: str, count: int, queue_s: float, run_s: float, at: int) -> str:
    return (f"destination-queue-run-time,destination_id={dest},tool_id={tool} "
            f"count={count},median_queue={queue_s},median_run={run_s} {at}")


def _snapshot(store: SnapshotStore) -> Snapshot:
    snap = store.read_all()
    assert snap is not None
    return snap


def _queues(snap: Snapshot) -> dict[str, tuple[float | None, float | None]]:
    return {dest_id: (d.queued, d.running) for dest_id, d in snap.destinations.items()}


def _errors_of(report: CycleReport) -> list[str]:
    """Which sources the report's errors name."""
    return sorted(e.split(": ", 1)[0] for e in report.errors)


def _timed(config: BrokerConfig, sources: list[Source], store: SnapshotStore, clock: Clock,
           state: CollectorState) -> tuple[CycleReport, float]:
    """One cycle and how long it took in real time (the report's duration
    follows the injected clock, which stands still during a cycle)."""
    started = time.monotonic()
    report = collect_once(config, sources, store, clock, state)
    return report, time.monotonic() - started


def test_two_galaxies_queues_add_up_and_capacity_comes_from_the_network(world: World, store: SnapshotStore):
    t0 = int(time.time())
    world.eu.write_lines(world.db, [*_queue("pulsar_it01", 3, 2, t0 - 6), *_queue("pulsar_de", 1, 0, t0 - 6)])
    # usegalaxy.fr reports pulsar_it01 by its own name, and has only running jobs at pulsar_de.
    world.fr.write_lines(world.db, [*_queue("pulsar-it", 4, 1, t0 - 5), *_queue("pulsar_de", 0, 5, t0 - 5)])
    world.net.write_lines(world.db, [_capacity("pulsar_it01", 64, 40, t0 - 4), _capacity("pulsar_de", 32, 8, t0 - 3),
                                     _capacity("pulsar_cz", 16, 16, t0 - 2)])
    config = _config({
        "eu": _source(world.eu, world.db, [QUEUE_P], "usegalaxy-eu"),
        "fr": _source(world.fr, world.db, [QUEUE_P], "usegalaxy-fr"),
        "network": _source(world.net, world.db, [CONDOR_P]),
    })
    clock = Clock()
    report = collect_once(config, sources_for(config), store, clock)
    assert report.published, report.errors
    assert report.errors == [] and report.queries == 3
    snap = _snapshot(store)
    # No "pulsar-it": it went through usegalaxy-fr's aliases.
    assert _queues(snap) == {"pulsar_it01": (7, 3), "pulsar_de": (1, 5), "pulsar_cz": (0, 0)}
    capacity = {d_id: (d.cpus_total, d.cpus_free, d.mem_free_gb, d.status) for d_id, d in snap.destinations.items()}
    assert capacity == {"pulsar_it01": (64, 40, 32, "online"), "pulsar_de": (32, 8, 32, "online"),
                        "pulsar_cz": (16, 16, 32, "online")}
    # Each measurement's newest point over the sources (fr's queue is the newer).
    assert snap.destinations["pulsar_it01"].sources == {QUEUE_P: t0 - 5, CONDOR_P: t0 - 4}
    assert snap.meta.sources == {
        "eu": SourceStatus(state="ok", answered_at=clock.now, tenant="usegalaxy-eu"),
        "fr": SourceStatus(state="ok", answered_at=clock.now, tenant="usegalaxy-fr"),
        "network": SourceStatus(state="ok", answered_at=clock.now),
    }
    assert snap.meta.lagging_sources() == {}


def test_without_sources_the_snapshot_is_as_before(world: World, store: SnapshotStore):
    load_prototype_data(world.eu, world.db)
    clock = Clock()
    single = BrokerConfig(influxdb=InfluxDBSettings(url=world.eu.url, database=world.db, timeout_s=2),
                          redis=RedisSettings(key_prefix=PREFIX))
    report = collect_once(single, InfluxQLClient(single.influxdb), store, clock)
    assert report.published and report.errors == [] and report.queries == 3
    before = _snapshot(store)
    # The figures test_collector_influx expects of this data, from before sources existed.
    assert _queues(before) == QUEUE
    assert before.meta.sources == {"influxdb": SourceStatus(state="ok", answered_at=clock.now)}

    # The same data as the one source of a config with sources ...
    one = _config({"eu": _source(world.eu, world.db, list(DEFAULT_PRESETS))})
    clock.now += 15
    assert collect_once(one, sources_for(one), store, clock).published
    after = _snapshot(store)
    assert after.destinations == before.destinations and after.tool_stats == before.tool_stats
    # ... and next to a Galaxy's source that reports nothing: the same figures.
    two = _config({"eu": _source(world.eu, world.db, list(DEFAULT_PRESETS)),
                   "fr": _source(world.fr, world.db, [QUEUE_P], "usegalaxy-fr")})
    clock.now += 15
    report = collect_once(two, sources_for(two), store, clock)
    assert report.published and report.errors == []
    combined = _snapshot(store)
    assert combined.destinations == before.destinations and combined.tool_stats == before.tool_stats
    assert set(combined.meta.sources) == {"eu", "fr"}


def test_one_request_per_source_per_cycle(world: World, store: SnapshotStore):
    t0 = int(time.time())
    world.eu.write_lines(world.db, [*_queue("pulsar_it01", 3, 2, t0 - 5), _run_time("bwa", "pulsar_it01", 3, 10, 100,
                                                                                    t0 - 60)])
    world.fr.write_lines(world.db, _queue("pulsar-it", 4, 1, t0 - 5))
    world.net.write_lines(world.db, _capacity("pulsar_it01", 64, 40, t0 - 4))
    config = _config({
        "eu": _source(world.eu, world.db, [QUEUE_P, RUNTIME_P], "usegalaxy-eu"),
        "fr": _source(world.fr, world.db, [QUEUE_P, RUNTIME_P], "usegalaxy-fr"),
        "network": _source(world.net, world.db, [CONDOR_P]),
    })
    sessions = {name: CountingSession() for name in config.sources}
    readers = {name: InfluxQLClient(settings, session=sessions[name])
               for name, settings in config.metric_sources().items()}
    sources, clock, state = sources_for(config, readers), Clock(), CollectorState.new(config)
    first = collect_once(config, sources, store, clock, state)
    assert first.published and first.errors == []
    # One request each, holding each of its presets' statements.
    assert {name: s.statements for name, s in sessions.items()} == {"eu": [2], "fr": [2], "network": [1]}
    assert first.queries == 5
    # 15 s later the run-time statistics are not due (stats_refresh_s): the Galaxies' requests hold the queue only.
    clock.now += 15
    second = collect_once(config, sources, store, clock, state)
    assert second.published and second.errors == []
    assert {name: s.statements for name, s in sessions.items()} == {"eu": [2, 1], "fr": [2, 1], "network": [1, 1]}
    assert second.queries == 3


def test_a_stopped_and_a_hung_source_keep_their_last_figures_and_back_off(world: World, store: SnapshotStore):
    t0 = int(time.time())
    world.eu.write_lines(world.db, _queue("pulsar_it01", 3, 1, t0 - 10))
    world.fr.write_lines(world.db, _queue("pulsar-it", 4, 0, t0 - 10))
    world.net.write_lines(world.us_db, _queue("pulsar_it01", 2, 0, t0 - 10))
    world.net.write_lines(world.db, _capacity("pulsar_it01", 64, 40, t0 - 10))
    # us and network share the server that hangs: two time-outs in one cycle.
    config = _config({
        "eu": _source(world.eu, world.db, [QUEUE_P], "usegalaxy-eu", timeout_s=1),
        "fr": _source(world.fr, world.db, [QUEUE_P], "usegalaxy-fr", timeout_s=1),
        "network": _source(world.net, world.db, [CONDOR_P], timeout_s=1),
        "us": _source(world.net, world.us_db, [QUEUE_P], timeout_s=1),
    }, interval_s=10, backoff_max_s=40, lookback_s=60)
    sources, clock, state = sources_for(config), Clock(), CollectorState.new(config)
    start = clock.now
    report, _ = _timed(config, sources, store, clock, state)
    assert report.published and report.errors == []
    assert _queues(_snapshot(store)) == {"pulsar_it01": (9, 1)}

    world.eu.write_lines(world.db, _queue("pulsar_it01", 5, 2, t0 - 5))
    world.fr.stop()
    world.net.pause()
    fr_where = f"InfluxDB at {world.fr.url} (database '{world.db}')"
    net_where = f"InfluxDB at {world.net.url} (database '{world.db}')"

    clock.now = start + 10
    report, took = _timed(config, sources, store, clock, state)
    assert report.published, report.errors
    # The two hung ones waited their time-outs side by side, not one after the other.
    assert 0.9 <= took < 1.8, took
    assert report.queries == 4
    snap = _snapshot(store)
    # eu's new queue, fr's and us's kept; the network's capacity kept.
    assert _queues(snap) == {"pulsar_it01": (5 + 4 + 2, 2)}
    assert snap.destinations["pulsar_it01"].cpus_free == 40
    assert report.kept == {"fr/queue_by_destination": 10, "network/htcondor_cluster_usage": 10,
                           "us/queue_by_destination": 10}
    assert _errors_of(report) == ["source fr", "source network", "source us"]
    errors = {e.split(": ", 1)[0]: e for e in report.errors}
    assert errors["source fr"].startswith(f"source fr: {fr_where} is unreachable")
    assert errors["source network"] == (f"source network: {net_where} did not answer within 1 s "
                                        "(its last good figures kept, read 10 s ago)")
    states = snap.meta.sources
    assert {name: (s.state, s.answered_at) for name, s in states.items()} == {
        "eu": ("ok", start + 10), "fr": ("stale", start), "network": ("stale", start), "us": ("stale", start)}
    assert states["fr"].problem.startswith(f"{fr_where} is unreachable")
    assert states["fr"].problem.endswith("(its last good figures kept, read 10 s ago)")
    assert set(snap.meta.lagging_sources()) == {"fr", "network", "us"}

    # The next cycle, on schedule, tries them again: a second failure in a row.
    clock.now = start + 20
    report, took = _timed(config, sources, store, clock, state)
    assert report.published and report.queries == 4 and took >= 0.9
    assert _snapshot(store).meta.sources["fr"].problem.endswith("read 20 s ago)")

    # Then they back off (20 s after two failures): this cycle reads eu alone, and waits for nobody.
    clock.now = start + 30
    report, took = _timed(config, sources, store, clock, state)
    assert report.published and report.queries == 1 and took < 0.8, took
    snap = _snapshot(store)
    assert _queues(snap) == {"pulsar_it01": (11, 2)}
    fr = snap.meta.sources["fr"]
    assert (fr.state, fr.answered_at) == ("stale", start)
    assert fr.problem == ("not read this cycle: failed 2 time(s) in a row, next try in 10 s "
                          "(its last good figures kept, read 30 s ago)")
    assert _errors_of(report) == ["source fr", "source network", "source us"]

    # Back, with news, but not asked before its retry time.
    world.fr.start()
    world.net.resume()
    world.fr.write_lines(world.db, _queue("pulsar-it", 6, 0, t0 - 3))
    clock.now = start + 35
    report, _ = _timed(config, sources, store, clock, state)
    assert report.queries == 1 and _queues(_snapshot(store)) == {"pulsar_it01": (11, 2)}

    clock.now = start + 40
    report, _ = _timed(config, sources, store, clock, state)
    assert report.published and report.errors == [] and report.queries == 4
    snap = _snapshot(store)
    assert _queues(snap) == {"pulsar_it01": (5 + 6 + 2, 2)}
    assert {name: (s.state, s.answered_at, s.problem) for name, s in snap.meta.sources.items()} == {
        name: ("ok", start + 40, "") for name in ("eu", "fr", "network", "us")}

    # fr fails again once its last good answer is older than lookback_s (60 s): nothing of it is kept.
    world.fr.stop()
    clock.now = start + 40 + 61
    report, _ = _timed(config, sources, store, clock, state)
    assert report.published and report.kept == {}
    snap = _snapshot(store)
    assert _queues(snap) == {"pulsar_it01": (5 + 2, 2)}
    fr = snap.meta.sources["fr"]
    assert (fr.state, fr.answered_at) == ("missing", start + 40)
    assert fr.problem.startswith(f"{fr_where} is unreachable")
    assert fr.problem.endswith("(its figures are missing from this snapshot)")
    assert _errors_of(report) == ["source fr"]


def _fr_and_network(world: World, **collector: Any) -> BrokerConfig:
    """fr's queue and the network's capacity written, a source each (1 s time-outs)."""
    t0 = int(time.time())
    world.fr.write_lines(world.db, _queue("pulsar-it", 4, 0, t0 - 5))
    world.net.write_lines(world.db, _capacity("pulsar_it01", 64, 40, t0 - 5))
    return _config({
        "fr": _source(world.fr, world.db, [QUEUE_P], "usegalaxy-fr", timeout_s=1),
        "network": _source(world.net, world.db, [CONDOR_P], timeout_s=1),
    }, **collector)


def test_when_no_source_answers_nothing_is_published(world: World, store: SnapshotStore, redis_client: redis.Redis):
    config = _fr_and_network(world)
    sources, clock, state = sources_for(config), Clock(), CollectorState.new(config)
    assert collect_once(config, sources, store, clock, state).published
    before = _snapshot(store)
    meta_before = redis_client.hgetall(KEYS.snapshot_meta)
    assert _queues(before) == {"pulsar_it01": (4, 0)}

    world.fr.stop()
    world.net.pause()
    clock.now += 10
    report = collect_once(config, sources, store, clock, state)
    assert not report.published and report.source_failed
    # Kept figures alone never make a snapshot that would look fresh.
    assert report.kept == {}
    assert report.errors[-1] == "no source could be read; keeping the last snapshot"
    assert [e.split(": ", 1)[0] for e in report.errors[:-1]] == ["source fr", "source network"]
    assert _snapshot(store) == before
    assert redis_client.hgetall(KEYS.snapshot_meta) == meta_before


def test_a_daemon_that_cannot_read_any_source_marks_the_snapshot_stale_per_source(world: World,
                                                                                  store: SnapshotStore, caplog):
    import logging

    from tpv_broker.collector.daemon import CycleRunner

    config = _fr_and_network(world, interval_s=10, backoff_max_s=40)
    clock = Clock()
    runner = CycleRunner(config, sources_for(config), store, clock=clock, daemon=True)
    assert runner().published
    world.fr.stop()
    world.net.pause()
    clock.now += 10
    first_failure = clock.now
    assert not runner().published
    assert runner.retry_at is not None
    # Backing off: a tick more than half an interval early is skipped, one within that slack runs.
    clock.now = runner.retry_at - 10 / 2 - 1
    assert runner() is None
    clock.now = runner.retry_at - 10 / 2 + 0.01
    report = runner()
    assert report is not None and not report.published
    meta = store.read_meta()
    assert meta is not None and meta.failed_cycles == 2
    assert meta.stale_since == first_failure  # since the first failed cycle, not the last
    # Each source's state now, not the one of the snapshot's own cycle.
    assert {name: s.state for name, s in meta.sources.items()} == {"fr": "stale", "network": "stale"}
    failed = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert failed and all(m.count("keeping the last snapshot") == 1 for m in failed), failed


def test_run_time_statistics_of_two_galaxies_combine_and_are_reused(world: World, store: SnapshotStore,
                                                                    redis_client: redis.Redis):
    t0 = int(time.time())
    world.eu.write_lines(world.db, [*_queue("pulsar_it01", 1, 0, t0 - 5),
                                    _run_time("bwa", "pulsar_it01", 3, 10, 100, t0 - 100),
                                    _run_time("hisat2", "pulsar_de", 2, 7, 70, t0 - 100)])
    world.fr.write_lines(world.db, [*_queue("pulsar-it", 1, 1, t0 - 5),
                                    _run_time("bwa", "pulsar-it", 1, 50, 500, t0 - 90)])
    config = _config({
        "eu": _source(world.eu, world.db, [QUEUE_P, RUNTIME_P], "usegalaxy-eu"),
        "fr": _source(world.fr, world.db, [QUEUE_P, RUNTIME_P], "usegalaxy-fr"),
    }, stats_refresh_s=300)
    sources, clock, state = sources_for(config), Clock(), CollectorState.new(config)
    report = collect_once(config, sources, store, clock, state)
    assert report.published and report.errors == [] and report.queries == 4
    snap = _snapshot(store)
    # bwa at pulsar_it01: 3 jobs at eu, 1 at fr -> 4; queue (3 x 10 + 1 x 50) / 4 = 20 s, run (300 + 500) / 4 = 200 s.
    bwa = snap.tool_stats["tool:bwa"]["pulsar_it01"]
    assert (bwa.count, bwa.median_queue_s, bwa.median_run_s, bwa.at) == (4, 20, 200, t0 - 90)
    hisat2 = snap.tool_stats["tool:hisat2"]["pulsar_de"]
    assert (hisat2.count, hisat2.median_queue_s, hisat2.median_run_s) == (2, 7, 70)
    assert set(snap.tool_stats) == {"tool:bwa", "tool:hisat2"}
    it = snap.destinations["pulsar_it01"]
    assert (it.median_queue_s, it.median_run_s, it.queued, it.running) == (20, 200, 2, 1)
    published = state.published
    assert published is not None and published.stats is not None
    combined = published.stats

    # Neither Galaxy's statistics are due again: the same combination, and its hash in Redis stays as it is.
    redis_client.hset(KEYS.tool_stats, "marker", "{}")
    clock.now += 15
    report = collect_once(config, sources, store, clock, state)
    assert report.published and report.errors == [] and report.queries == 2
    assert state.published is not None and state.published.stats is combined
    parts = [state.of("eu").stats.current, state.of("fr").stats.current]
    assert all(p is not None for p in parts)
    assert state.combined_stats(parts) is combined  # type: ignore[arg-type]
    assert redis_client.hget(KEYS.tool_stats, "marker") == b"{}"
    assert _snapshot(store).tool_stats["tool:bwa"]["pulsar_it01"].count == 4

    # fr's statistics change and are due: a new combination, written out.
    world.fr.write_lines(world.db, _run_time("bwa", "pulsar-it", 3, 50, 500, t0 - 80))
    clock.now += 300
    report = collect_once(config, sources, store, clock, state)
    assert report.published and report.queries == 4
    assert state.published is not None and state.published.stats is not combined
    assert redis_client.hget(KEYS.tool_stats, "marker") is None
    # (3 x 10 + 3 x 50) / 6 = 30 s; (300 + 1500) / 6 = 300 s.
    bwa = _snapshot(store).tool_stats["tool:bwa"]["pulsar_it01"]
    assert (bwa.count, bwa.median_queue_s, bwa.median_run_s) == (6, 30, 300)


def test_a_daemon_settles_its_heap_once_per_change_of_several_galaxies_statistics(
        world: World, store: SnapshotStore, monkeypatch: pytest.MonkeyPatch):
    from tpv_broker.collector import heap
    from tpv_broker.collector.daemon import CycleRunner

    settles = []
    settle = heap.settle
    monkeypatch.setattr(heap, "settle", lambda: (settles.append(1), settle()))
    t0 = int(time.time())
    world.eu.write_lines(world.db, [_run_time("bwa", "pulsar_it01", 3, 10, 100, t0 - 100)])
    world.fr.write_lines(world.db, [_run_time("bwa", "pulsar-it", 1, 50, 500, t0 - 90)])
    config = _config({
        "eu": _source(world.eu, world.db, [QUEUE_P, RUNTIME_P], "usegalaxy-eu"),
        "fr": _source(world.fr, world.db, [QUEUE_P, RUNTIME_P], "usegalaxy-fr"),
    }, stats_refresh_s=300)
    clock = Clock()
    runner = CycleRunner(config, sources_for(config), store, clock=clock, daemon=True)
    assert runner().published and runner().published
    assert len(settles) == 1
    # fr's statistics change: the refresh job combines them, and settles once.
    world.fr.write_lines(world.db, [_run_time("bwa", "pulsar-it", 3, 50, 500, t0 - 80)])
    clock.now += 300
    runner.refresh_stats()
    assert len(settles) == 2
    combined = runner.state.published.stats if runner.state.published is not None else None
    report = runner()
    assert report is not None and report.published and len(settles) == 2
    assert runner.state.published is not None and runner.state.published.stats is not combined
    assert _snapshot(store).tool_stats["tool:bwa"]["pulsar_it01"].count == 6


def test_a_galaxys_source_does_not_report_on_another_tenants_private_endpoint(world: World, store: SnapshotStore):
    # usegalaxy.eu's private cluster is called "slurm", as usegalaxy.fr's own cluster is in its gxadmin figures.
    t0 = int(time.time())
    world.eu.write_lines(world.db, [*_queue("slurm", 3, 10, t0 - 6), _run_time("bwa", "slurm", 3, 10, 100, t0 - 100)])
    world.fr.write_lines(world.db, [*_queue("slurm", 500, 40, t0 - 5), *_queue("pulsar_de", 1, 0, t0 - 5),
                                    _run_time("bwa", "slurm", 9, 900, 900, t0 - 90),
                                    f"{ERRORS_P},destination_id=slurm,state=errored count=60 {t0 - 60}"])
    tenants = {**TENANTS, "usegalaxy-eu": {**TENANTS["usegalaxy-eu"], "private": ["slurm"]}}
    config = BrokerConfig.model_validate({
        "sources": {"eu": _source(world.eu, world.db, [QUEUE_P, RUNTIME_P, ERRORS_P],
                                  "usegalaxy-eu"),
                    "fr": _source(world.fr, world.db, [QUEUE_P, RUNTIME_P, ERRORS_P],
                                  "usegalaxy-fr")},
        "redis": {"key_prefix": PREFIX}, "api": {"tenants": tenants}})
    sources = sources_for(config)
    assert {s.name: s.hidden for s in sources} == {"eu": frozenset(), "fr": frozenset({"slurm"})}
    report = collect_once(config, sources, store, Clock(), CollectorState.new(config))
    assert report.published and report.errors == [], report.errors
    snap = _snapshot(store)
    # Only eu's own figures: fr's queue, run times and errors there are of another cluster.
    assert _queues(snap) == {"slurm": (3, 10), "pulsar_de": (1, 0)}
    bwa = snap.tool_stats["tool:bwa"]["slurm"]
    assert (bwa.count, bwa.median_queue_s, bwa.median_run_s) == (3, 10, 100)
    health = snap.destinations["slurm"].health
    assert health is None or health.errors == 0, health


@pytest.mark.parametrize("tenant", [None, "usegalaxy-eu"])
def test_a_galaxys_only_source_keeps_its_problem_to_its_entry(world: World, store: SnapshotStore,
                                                              tenant: str | None):
    # The stale mark and meta.problems are read by every tenant (/ready is open): a Galaxy's own
    # source's problem (its InfluxDB's address, its database) goes only into its entry of ``sources``.
    config = _config({"eu": _source(world.eu, f"{world.db}_missing", [QUEUE_P], tenant)})
    report = collect_once(config, sources_for(config), store, Clock(), CollectorState.new(config))
    assert not report.published
    problem = next(e for e in report.errors if f"{world.db}_missing" in e)
    assert problem in report.sources["eu"].problem
    if tenant is None:
        # The broker's own single source: its problem is the whole story, said as before.
        assert problem in report.stale_reason() and not report.per_source
    else:
        assert f"{world.db}_missing" not in report.stale_reason() and report.per_source
        assert report.stale_reason() == "no preset could be read; keeping the last snapshot"


def test_rows_naming_a_hidden_endpoint_do_not_hide_that_the_others_are_garbage() -> None:
    # One hidden row made an answer whose other rows were all unusable read as "no rows" (no jobs).
    from tpv_broker.collector.cycle_data import CycleData
    from tpv_broker.collector.presets import PRESETS
    from tpv_broker.collector.rows import Row
    from tpv_broker.config.collector_settings import CollectorSettings

    now = float(int(time.time()))
    garbage = [Row(now, {"destination_id": d, "state": "queued"}, {"count": "lots"}) for d in ("a", "b")]
    hidden = [Row(now, {"destination_id": "slurm", "state": "queued"}, {"count": 3})]
    preset = PRESETS[QUEUE_P]
    problem = preset.apply_checked([*garbage, *hidden], CycleData(aliases={}, hidden=frozenset({"slurm"})),
                                   CollectorSettings())
    assert problem is not None and "3 row(s), none usable" in problem
    # Hidden rows alone are no garbage: nothing of this source's is there.
    assert preset.apply_checked(hidden, CycleData(aliases={}, hidden=frozenset({"slurm"})), CollectorSettings()) \
        is None
