"""The collector against a real influxd and a real redis-server, on the
prototype's data (tests/data/prototype/test_data.influxql)."""

from __future__ import annotations

import time

import pytest
import redis
import requests

from tpv_broker.collector.cycle import collect_once
from tpv_broker.collector.influx import InfluxQLClient
from tpv_broker.config.server_settings import InfluxDBSettings, RedisSettings
from tpv_broker.config.settings import BrokerConfig
from tpv_broker.devtools.servers import InfluxServer
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .helpers import load_prototype_data

# (queued, running) per destination, as in test_data.influxql. The prototype
# swapped the two; these must not be.
QUEUE = {
    "condor_tpv": (8, 4),
    "condor_us": (12, 8),
    "pulsar_be01": (5, 5),
    "pulsar_us01": (6, 6),
    "pulsar_eu01": (10, 3),
    "pulsar_asia01": (2, 8),
    "pulsar_fr": (4, 10),
    "pulsar_fr01_tpv": (8, 6),
    "pulsar_de": (5, 5),
    "pulsar_in": (6, 4),
    "pulsar_cz01_tpv": (3, 2),
    "pulsar_sk01_tpv": (10, 5),
    "pulsar_uk": (7, 8),
}


def _config(influx: InfluxServer, db: str, **destinations: dict) -> BrokerConfig:
    return BrokerConfig(
        influxdb=InfluxDBSettings(url=influx.url, database=db, timeout_s=2),
        redis=RedisSettings(key_prefix="it"),
        destinations=destinations,
    )


@pytest.fixture
def store(redis_client: redis.Redis) -> SnapshotStore:
    return SnapshotStore(redis_client, KeySchema("it"))


def test_prototype_data_becomes_the_snapshot(influx_server, influx_db, store):
    load_prototype_data(influx_server, influx_db)
    config = _config(influx_server, influx_db)
    report = collect_once(config, InfluxQLClient(config.influxdb), store, time.time)
    assert report.published, report.errors
    assert report.errors == []
    # One HTTP request holding one statement per preset, whatever the data.
    assert report.queries == 3
    snap = store.read_all()
    assert snap is not None
    assert set(snap.destinations) == set(QUEUE)
    for dest_id, (queued, running) in QUEUE.items():
        d = snap.destinations[dest_id]
        assert (d.queued, d.running) == (queued, running), dest_id
        assert d.status == "online"
    # condor_us: unclaimed_memory=32000 MiB, total 64000 MiB; 1 GB = 1024 MiB
    # -> 31.25 GB free of 62.5 GB. unclaimed_cpus=16 of 32.
    us = snap.destinations["condor_us"]
    assert (us.cpus_free, us.cpus_total) == (16, 32)
    assert (us.mem_free_gb, us.mem_total_gb) == (31.25, 62.5)
    # pulsar_fr: 28000 MiB free / 1024 = 27.34375 GB
    assert snap.destinations["pulsar_fr"].mem_free_gb == pytest.approx(27.34375)
    # destination-queue-run-time: 13 (tool, destination) pairs over 6 tools.
    # Built-in style ids: only the exact level ("tool:<id>") exists.
    assert set(snap.tool_stats) == {f"tool:{t}" for t in ("trinity", "spades", "bwa", "hisat2", "bowtie2", "blast")}
    hisat2 = snap.tool_stats["tool:hisat2"]
    assert set(hisat2) == {"pulsar_us01", "pulsar_fr01_tpv", "pulsar_uk"}
    assert (hisat2["pulsar_uk"].median_queue_s, hisat2["pulsar_uk"].median_run_s) == (14.0, 5000.0)
    assert hisat2["pulsar_uk"].count == 15
    # One tool per destination here, so the destination's all-tools medians
    # are that tool's: pulsar_de ran bowtie2 with median_queue=4, median_run=2000.
    assert (snap.destinations["pulsar_de"].median_queue_s, snap.destinations["pulsar_de"].median_run_s) == (4, 2000)
    assert snap.meta.destinations == 13 and snap.meta.tools == 6
    assert snap.meta.newest_point_at is not None
    assert report.newest_point_age_s is not None and report.newest_point_age_s < 120


def test_aliases_merge_metric_ids_into_one_destination(influx_server, influx_db, store):
    now = int(time.time())
    influx_server.write_lines(
        influx_db,
        [
            # pulsar-util names the site by its AMQP vhost, quotes included.
            'htcondor_cluster_usage,classad=machine total_detected_cpus=64,unclaimed_cpus=40,'
            'total_memory=262144,unclaimed_memory=131072,destination_id="\\"galaxy_sk01\\"",'
            f'destination_status="online" {now - 2}',
            f"queue_by_destination,destination_id=pulsar_sk01_tpv,state=queued count=3 {now - 1}",
        ],
    )
    config = _config(influx_server, influx_db, pulsar_sk01_tpv={"aliases": ["galaxy_sk01"], "cores": 999})
    report = collect_once(config, InfluxQLClient(config.influxdb), store, time.time)
    assert report.published, report.errors
    snap = store.read_all()
    assert set(snap.destinations) == {"pulsar_sk01_tpv"}
    d = snap.destinations["pulsar_sk01_tpv"]
    # measured capacity wins over config's; 131072 MiB / 1024 = 128 GB
    assert (d.cpus_total, d.cpus_free, d.mem_free_gb, d.queued, d.running) == (64, 40, 128, 3, 0)
    assert d.in_config


def test_missing_database_is_reported_and_keeps_last_snapshot(influx_server, influx_db, store):
    load_prototype_data(influx_server, influx_db)
    good = _config(influx_server, influx_db)
    assert collect_once(good, InfluxQLClient(good.influxdb), store, time.time).published
    before = store.read_all()
    bad = _config(influx_server, "no_such_db")
    report = collect_once(bad, InfluxQLClient(bad.influxdb), store, time.time)
    assert not report.published
    assert any("database 'no_such_db' does not exist" in e for e in report.errors), report.errors
    assert store.read_all() == before


def test_a_measurement_with_garbage_does_not_discard_the_others(influx_server, influx_db, store):
    now = int(time.time())
    influx_server.write_lines(
        influx_db,
        [
            f"queue_by_destination,destination_id=pulsar_de,state=queued count=4 {now - 3}",
            # htcondor rows without the fields we need (a site's own variant):
            f'htcondor_cluster_usage,classad=machine foo=1,destination_id="pulsar_de" {now - 2}',
            f"htcondor_cluster_usage,classad=machine foo=2 {now - 1}",
        ],
    )
    config = _config(influx_server, influx_db)
    report = collect_once(config, InfluxQLClient(config.influxdb), store, time.time)
    assert report.published, report.errors
    d = store.read_all().destinations["pulsar_de"]
    assert (d.queued, d.cpus_free, d.status) == (4, None, "unknown")


def test_a_point_from_the_future_does_not_win(influx_server, influx_db, store):
    now = int(time.time())
    influx_server.write_lines(
        influx_db,
        [
            # A Galaxy host whose clock runs an hour fast wrote this one.
            f"queue_by_destination,destination_id=pulsar_de,state=queued count=99 {now + 3600}",
            f"queue_by_destination,destination_id=pulsar_de,state=queued count=4 {now - 1}",
        ],
    )
    config = _config(influx_server, influx_db)
    assert collect_once(config, InfluxQLClient(config.influxdb), store, time.time).published
    assert store.read_all().destinations["pulsar_de"].queued == 4


def test_a_destination_without_jobs_has_zero_queued(influx_server, influx_db, store):
    now = int(time.time())
    influx_server.write_lines(
        influx_db,
        [
            f"queue_by_destination,destination_id=pulsar_de,state=queued count=4 {now - 2}",
            # pulsar_it is idle: gxadmin prints no queue line for it at all.
            'htcondor_cluster_usage,classad=machine total_detected_cpus=16,unclaimed_cpus=16,'
            'total_memory=32768,unclaimed_memory=32768,'
            f'destination_id="pulsar_it",destination_status="online" {now - 1}',
        ],
    )
    config = _config(influx_server, influx_db)
    assert collect_once(config, InfluxQLClient(config.influxdb), store, time.time).published
    it = store.read_all().destinations["pulsar_it"]
    assert (it.queued, it.running) == (0, 0)


class CountingSession(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self.posts = 0

    def post(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.posts += 1
        return super().post(*args, **kwargs)


@pytest.mark.parametrize("n_destinations", [3, 300])
def test_one_request_per_cycle_whatever_the_size(influx_server, influx_db, store, n_destinations):
    now = int(time.time())
    lines = []
    for i in range(n_destinations):
        lines.append(f"queue_by_destination,destination_id=d{i},state=queued count={i % 7} {now - 5}")
        lines.append(
            f'htcondor_cluster_usage,classad=machine total_detected_cpus=32,unclaimed_cpus={i % 32},'
            f'total_memory=65536,unclaimed_memory=1024,'
            f'destination_id="d{i}",destination_status="online" {now - 5 - i % 60}'
        )
        for t in range(5):
            lines.append(
                f"destination-queue-run-time,destination_id=d{i},tool_id=tool{t} "
                f"count=3,median_queue=10,median_run=100 {now - 60}"
            )
    influx_server.write_lines(influx_db, lines)
    config = _config(influx_server, influx_db)
    session = CountingSession()
    report = collect_once(config, InfluxQLClient(config.influxdb, session=session), store, time.time)
    assert report.published, report.errors
    assert report.destinations == n_destinations
    assert session.posts == 1
