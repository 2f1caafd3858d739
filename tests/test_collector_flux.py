"""The Flux source (InfluxDB 2.x natively). No InfluxDB 2 server can run
here, so: the query text is checked as built, and answers go through
influxdb-client's own HTTP client and annotated-CSV parser, served by a
local stub (tests/flux_stub.py) that replays answers recorded in InfluxDB
2's annotated-CSV format. The same data, written to the real influxd 1.x
and read by InfluxQL, must give the same snapshot."""

from __future__ import annotations

import logging
import pathlib
import time
from collections.abc import Iterator

import pytest
import redis

from tpv_broker.collector.cycle import collect_once
from tpv_broker.collector.flux import FluxSource, flux_query, flux_string
from tpv_broker.collector.influx import InfluxQLClient
from tpv_broker.collector.presets import PRESETS, presets_for
from tpv_broker.collector.source import metric_source
from tpv_broker.collector.state import StatsCache
from tpv_broker.config.collector_settings import CollectorSettings
from tpv_broker.config.preset_spec import BUILTIN_PRESETS
from tpv_broker.config.server_settings import InfluxDBSettings, RedisSettings
from tpv_broker.config.settings import BrokerConfig
from tpv_broker.errors import MetricSourceError
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .flux_stub import FluxStub

DATA = pathlib.Path(__file__).parent / "data" / "sources"
ANCHOR = 1767225600  # 2026-01-01T00:00:00Z: "now" in sample.lp and flux_all_presets.csv
TOKEN = "s3cret-token-value"
# InfluxDB 2's answer to a refused token.
UNAUTHORIZED = '{"code":"unauthorized","message":"unauthorized access"}'
# queue_by_destination ... queue_overview, in the order the CSV was recorded (before error counts and carbon were)
ALL = [name for name in BUILTIN_PRESETS if name not in ("errored_jobs_by_destination", "pulsar_carbon_intensity")]
FASTP = "toolshed.g2.bx.psu.edu/repos/iuc/fastp/fastp/0.23.4+galaxy0"
DESTINATIONS = {
    "pulsar_sk01_tpv": {"aliases": ["galaxy_sk01"]},
    "slurm_cluster": {"aliases": ["slurm.example.org"]},
}


def flux_settings(url: str, **kw: object) -> InfluxDBSettings:
    return InfluxDBSettings(url=url, api="flux", org="galaxy-org", bucket="galaxy", token=TOKEN, timeout_s=2, **kw)


@pytest.fixture
def stub() -> Iterator[FluxStub]:
    s = FluxStub()
    s.url = s.start()  # type: ignore[attr-defined]
    try:
        yield s
    finally:
        s.stop()


def sample_lines(shift_s: int) -> list[str]:
    out = []
    for line in (DATA / "sample.lp").read_text().splitlines():
        if line and not line.startswith("#"):
            head, ts = line.rsplit(" ", 1)
            out.append(f"{head} {int(ts) + shift_s}")
    return out


# -- query building ---------------------------------------------------------------
def test_query_for_the_default_presets() -> None:
    presets = presets_for(CollectorSettings())
    assert flux_query(presets, CollectorSettings(), "galaxy") == (
        # one window per lookback: 900 s live, 3 days for the daily statistics
        'live_window = from(bucket: "galaxy") |> range(start: -900000ms, stop: 300000ms)\n'
        'stats_window = from(bucket: "galaxy") |> range(start: -259200000ms, stop: 300000ms)\n'
        "\n"
        "live_window\n"
        '  |> filter(fn: (r) => r._measurement == "queue_by_destination" and (r._field == "count"))\n'
        "  |> last()\n"
        '  |> yield(name: "p0")\n'
        "\n"
        "stats_window\n"
        '  |> filter(fn: (r) => r._measurement == "destination-queue-run-time" and (r._field == "count" or '
        'r._field == "median_queue" or r._field == "median_run" or r._field == "perc_95_run"))\n'
        "  |> last()\n"
        '  |> yield(name: "p1")\n'
        "\n"
        # destination_id is a field here: every point, and the id field too
        "live_window\n"
        '  |> filter(fn: (r) => r._measurement == "htcondor_cluster_usage" and (r._field == "total_detected_cpus" or '
        'r._field == "unclaimed_cpus" or r._field == "total_memory" or r._field == "unclaimed_memory" or '
        'r._field == "total_gpu_slots" or r._field == "unclaimed_gpus" or r._field == "destination_status" or '
        'r._field == "destination_id"))\n'
        '  |> yield(name: "p2")\n'
    )


def test_query_windows_follow_the_settings() -> None:
    s = CollectorSettings(lookback_s=0.5, stats_lookback_s=3600, presets=["queue_by_destination"])
    q = flux_query(presets_for(s), s, "b")
    # only the windows in use; sub-second lookbacks do not become zero
    assert 'range(start: -500ms, stop: 300000ms)' in q and "stats_window" not in q


@pytest.mark.parametrize(
    ("raw", "literal"),
    [
        ("galaxy", '"galaxy"'),
        ('my"bucket', r'"my\"bucket"'),
        ("back\\slash", r'"back\\slash"'),
        ("${injection}", r'"\${injection}"'),  # no string interpolation
    ],
)
def test_flux_string(raw: str, literal: str) -> None:
    assert flux_string(raw) == literal


def test_one_yield_per_preset_in_one_request(stub: FluxStub) -> None:
    stub.body = (DATA / "flux_all_presets.csv").read_text()
    s = CollectorSettings(presets=ALL)
    source = FluxSource(flux_settings(stub.url))  # type: ignore[attr-defined]
    results = source.read(presets_for(s), s)
    source.close()
    assert len(stub.requests) == 1
    req = stub.requests[0]
    assert req.path.startswith("/api/v2/query") and "org=galaxy-org" in req.path
    assert req.headers["Authorization"] == f"Token {TOKEN}"
    assert req.body["query"] == flux_query(presets_for(s), s, "galaxy")
    assert req.body["query"].count("yield(") == len(ALL)
    assert [r.error for r in results] == [None] * len(ALL)
    # rows per preset, one per (series, time): queue 4 series; run time 2 (newest of each);
    # old condor preset 2 old-format points + 3 shape points (every point: all_rows);
    # shapes 3 + the old-format series (its unclaimed_* fields; no destination tag, skipped later);
    # slurm 3 nodes; queue-overview 5 series
    assert [len(r.rows) for r in results] == [4, 2, 5, 4, 3, 5]


def test_records_become_rows_with_quotes_kept(stub: FluxStub) -> None:
    stub.body = (DATA / "flux_all_presets.csv").read_text()
    s = CollectorSettings(presets=ALL)
    source = FluxSource(flux_settings(stub.url))  # type: ignore[attr-defined]
    rows = source.read(presets_for(s), s)[ALL.index("htcondor_slot_shapes")].rows
    source.close()
    shapes = {r.tags["unclaimed_tag"]: r for r in rows if "unclaimed_tag" in r.tags}
    assert set(shapes) == {"8c_16000m", "2c_4000m", "32c_128000m"}
    eight = shapes["8c_16000m"]
    # the quotes are part of the tag value; the CSV escapes them as ""
    assert eight.tags["destination_id"] == '"galaxy_sk01"'
    # every field of the point in one row, numbers as the CSV's double type says
    assert eight.values == {"count": 3.0, "unclaimed_cpus": 8.0, "unclaimed_memory": 16000.0,
                            "destination_status": "online"}
    assert eight.at == ANCHOR - 15


# -- the same data, both paths -----------------------------------------------------
def _config(influxdb: InfluxDBSettings, prefix: str) -> BrokerConfig:
    return BrokerConfig(influxdb=influxdb, redis=RedisSettings(key_prefix=prefix),
                        collector=CollectorSettings(presets=ALL), destinations=DESTINATIONS)


def test_flux_and_influxql_give_the_same_snapshot(
    influx_server, influx_db, redis_client: redis.Redis, stub: FluxStub
) -> None:
    shift = int(time.time()) - ANCHOR
    influx_server.write_lines(influx_db, sample_lines(shift))
    stub.body, stub.shift_s = (DATA / "flux_all_presets.csv").read_text(), shift

    ql_config = _config(InfluxDBSettings(url=influx_server.url, database=influx_db, timeout_s=5), "ql")
    ql_store = SnapshotStore(redis_client, KeySchema("ql"))
    ql = collect_once(ql_config, InfluxQLClient(ql_config.influxdb), ql_store, time.time)
    flux_config = _config(flux_settings(stub.url), "fx")  # type: ignore[attr-defined]
    flux_store = SnapshotStore(redis_client, KeySchema("fx"))
    source = metric_source(flux_config.influxdb)
    assert isinstance(source, FluxSource)
    fx = collect_once(flux_config, source, flux_store, time.time)
    assert ql.published and not ql.errors, ql.errors
    assert fx.published and not fx.errors, fx.errors
    assert len(stub.requests) == 1

    a, b = ql_store.read_all(), flux_store.read_all()
    assert a is not None and b is not None
    assert a.destinations == b.destinations
    assert a.tool_stats == b.tool_stats
    assert (a.meta.destinations, a.meta.tools, a.meta.newest_point_at) == (
        b.meta.destinations, b.meta.tools, b.meta.newest_point_at)
    assert ql.rows_read == fx.rows_read

    # ... and that snapshot is the right one (sample.lp's comments).
    d = a.destinations
    assert set(d) == {"pulsar_de", "pulsar_uk", "pulsar_it", "condor_us", "pulsar_sk01_tpv", "slurm_cluster",
                      "pulsar_fr", "pulsar_es"}
    # queue_by_destination; pulsar_it's line is 290 s older than the newest batch: no jobs now
    assert [(d[x].queued, d[x].running) for x in ("pulsar_de", "pulsar_uk", "pulsar_it")] == [(5, 3), (2, 0), (0, 0)]
    # old htcondor format: the newer row; 32768 MiB / 1024 = 32 GB
    assert (d["condor_us"].cpus_free, d["condor_us"].mem_free_gb, d["condor_us"].status) == (16, 32, "online")
    # slot shapes of galaxy_sk01 (alias): 8 cores/16000 MiB x3 and 2 cores/4000 MiB x10; the
    # 32-core shape is 385 s older than the newest batch: gone.
    sk = d["pulsar_sk01_tpv"]
    assert [(s.count, s.cpus, s.mem_gb) for s in sk.slot_shapes] == [(3, 8, 16000 / 1024), (10, 2, 4000 / 1024)]
    # free: 3*8 + 10*2 = 44 cores; 3*15.625 + 10*3.90625 = 85.9375 GB
    assert (sk.cpus_free, sk.mem_free_gb, sk.status) == (44, 85.9375, "online")
    # slurm: 3 nodes x 36 cpus = 108; free (36-0) + (36-18) + 0 (node3 drained) = 54;
    # memory free (94793-0 + 94793-45000) MiB = 144586 / 1024 = 141.197265625 GB
    sl = d["slurm_cluster"]
    assert (sl.cpus_total, sl.cpus_free, sl.status) == (108, 54, "online")
    assert sl.mem_total_gb == pytest.approx(3 * 94793 / 1024) and sl.mem_free_gb == pytest.approx(144586 / 1024)
    # queue-overview: pulsar_fr queued 2 + 1 (two handlers), running 3; pulsar_es's queued line is
    # from an older batch
    assert [(d[x].queued, d[x].running) for x in ("pulsar_fr", "pulsar_es")] == [(3, 3), (0, 6)]
    # run-time statistics: the newest of fastp's two rows
    assert a.tool_stats[f"tool:{FASTP}"]["pulsar_de"].count == 12


# -- failures ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "body", "content_type", "expected"),
    [
        (401, UNAUTHORIZED, "application/json", "refused the token (HTTP 401)"),
        (404, '{"code":"not found","message":"failed to initialize execute state: could not find bucket \\"galaxy\\""}',
         "application/json", 'could not find bucket "galaxy" (HTTP 404)'),
        # an error raised while the query runs comes in the CSV itself
        (200, '#datatype,string,string\r\n#group,true,true\r\n#default,,\r\n,error,reference\r\n'
              ',"runtime error: schema collision: cannot group float and string types together",\r\n',
         "text/csv", "schema collision"),
    ],
    ids=["unauthorized", "no-bucket", "in-band-error"],
)
def test_errors_are_clear_and_never_show_the_token(stub: FluxStub, caplog: pytest.LogCaptureFixture,
                                                   status: int, body: str, content_type: str, expected: str) -> None:
    stub.status, stub.body, stub.content_type = status, body, content_type
    source = FluxSource(flux_settings(stub.url))  # type: ignore[attr-defined]
    s = CollectorSettings()
    with caplog.at_level(logging.DEBUG), pytest.raises(MetricSourceError) as err:
        source.read(presets_for(s), s)
    source.close()
    assert expected in str(err.value)
    assert "org 'galaxy-org', bucket 'galaxy'" in str(err.value)
    assert TOKEN not in str(err.value) and TOKEN not in caplog.text


def test_unreachable_server() -> None:
    source = FluxSource(flux_settings("http://127.0.0.1:9"))
    s = CollectorSettings()
    with pytest.raises(MetricSourceError, match="is unreachable"):
        source.read(presets_for(s), s)
    source.close()


def test_a_failed_cycle_reports_and_keeps_the_last_snapshot(stub: FluxStub, redis_client: redis.Redis) -> None:
    stub.status, stub.body, stub.content_type = 401, UNAUTHORIZED, "application/json"
    config = BrokerConfig(influxdb=flux_settings(stub.url), redis=RedisSettings(key_prefix="fx"))  # type: ignore[attr-defined]
    store = SnapshotStore(redis_client, KeySchema("fx"))
    report = collect_once(config, FluxSource(config.influxdb), store, time.time)
    assert not report.published
    assert any("refused the token" in e for e in report.errors)
    assert store.read_all() is None


def test_the_token_is_a_secret() -> None:
    settings = flux_settings("http://127.0.0.1:8086")
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.model_dump())
    assert PRESETS  # the registry the query builder draws on


# -- the run-time statistics refresh ------------------------------------------------
class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _run_time_answer(count: str = "12") -> str:
    """The run-time statistics' table of the recorded answer, as the answer
    to a query of that preset alone (its yield is then p0)."""
    blocks = (DATA / "flux_all_presets.csv").read_text().split("\n\n")
    (block,) = [b for b in blocks if "#default,p1," in b]
    block = block.replace("#default,p1,", "#default,p0,")
    return block.replace("12,count,destination-queue-run-time", f"{count},count,destination-queue-run-time") + "\n"


def test_a_refresh_reads_what_changed_since_the_last_one_and_merges_it(stub: FluxStub) -> None:
    config = BrokerConfig(influxdb=flux_settings(stub.url),  # type: ignore[attr-defined]
                          collector=CollectorSettings(stats_refresh_s=300))
    clock = Clock(ANCHOR + 600)
    stub.body = _run_time_answer()
    source = FluxSource(config.influxdb)
    cache = StatsCache(300, background=True)
    assert cache.refresh(config, source, clock).full
    first = cache.current
    # Read again 300 s later: the window since the last read, and 300 s before it.
    clock.now += 300
    stub.body = _run_time_answer(count="20")
    done = cache.refresh(config, source, clock)
    assert (done.problem, done.full, done.changed) == (None, False, True)
    query = stub.requests[-1].body["query"]
    assert 'stats_since_window = from(bucket: "galaxy") |> range(start: -600000ms, stop: 300000ms)' in query
    assert "|> last()" in query
    assert cache.current is not None and first is not None
    assert cache.current.tool_stats[FASTP]["pulsar_de"].count == 20
    assert cache.current.tool_stats["bwa"] == first.tool_stats["bwa"]
    # ... which is what a full read of that answer gives.
    full = StatsCache(300, background=True)
    assert full.refresh(config, source, clock).full
    assert full.current is not None and full.current.tool_stats == cache.current.tool_stats
    assert full.current.per_destination == cache.current.per_destination
    source.close()
