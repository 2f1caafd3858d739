"""InfluxDB stopped or hung mid-run, on real servers: the collector daemon
survives, the last snapshot stays (marked stale, with why and since when),
the API still answers from it, the failure is logged once, attempts back
off, and the collector recovers by itself when InfluxDB is back."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from click.testing import CliRunner

from tpv_broker.api.app import create_app
from tpv_broker.cli import main
from tpv_broker.collector.backoff import retry_delay
from tpv_broker.collector.daemon import CycleRunner, run_daemon
from tpv_broker.collector.influx import InfluxQLClient, StatementResult
from tpv_broker.config.api_settings import ApiSettings
from tpv_broker.config.collector_settings import CollectorSettings
from tpv_broker.config.server_settings import InfluxDBSettings
from tpv_broker.config.settings import BrokerConfig
from tpv_broker.devtools.servers import InfluxServer
from tpv_broker.errors import MetricSourceError
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .helpers import load_prototype_data
from .processes import wait_for


@pytest.fixture
def own_influx(tmp_path) -> Iterator[InfluxServer]:
    # Not the session server: this test stops and restarts it.
    server = InfluxServer(tmp_path / "influxd").start()
    server.create_database("galaxy")
    load_prototype_data(server, "galaxy")
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("fault", ["stopped", "hung"])
def test_collector_survives_influxdb_outage(own_influx, redis_client: redis.Redis, redis_url: str, caplog, fault):
    caplog.set_level(logging.INFO, logger="tpv_broker")
    config = BrokerConfig(influxdb=InfluxDBSettings(url=own_influx.url, database="galaxy", timeout_s=0.5),
                          collector=CollectorSettings(interval_s=0.2))
    store = SnapshotStore(redis_client, KeySchema(config.redis.key_prefix))
    runner = CycleRunner(config, InfluxQLClient(config.influxdb), store, daemon=True)
    stop = threading.Event()
    daemon = threading.Thread(target=run_daemon, args=(runner, stop))
    daemon.start()
    try:
        wait_for(lambda: store.read_meta() is not None, "a first snapshot")
        first = store.read_all()
        app = create_app(config, store=store)
        request = {
            "job": {"tool_id": "bwa", "cores": 4, "mem": 8},
            "destinations": [{"id": "pulsar_be01"}, {"id": "pulsar_de"}, {"id": "pulsar_asia01"}],
        }
        healthy_answer = app.test_client().post("/api/rank", json=request).get_json()

        fault_at = time.time()
        if fault == "stopped":
            own_influx.stop()
        else:
            own_influx.pause()
        wait_for(lambda: runner.failures_in_a_row >= 4, "four failed cycles")
        assert daemon.is_alive()
        # The last good snapshot (published before the fault: cycles run
        # every 0.2 s, so maybe not the first one) is untouched, and the API
        # still ranks from it.
        now_snapshot = store.read_all()
        assert (now_snapshot.destinations, now_snapshot.tool_stats) == (first.destinations, first.tool_stats)
        assert now_snapshot.meta.created_at <= fault_at
        answer = app.test_client().post("/api/rank", json=request).get_json()
        assert answer["degraded"] is False
        assert answer["destinations"] == healthy_answer["destinations"]
        expected = "is unreachable" if fault == "stopped" else "did not answer within 0.5 s"
        # ... marked stale, with the reason, where inspect and /ready show it.
        meta = store.read_meta()
        assert meta.stale_since is not None and meta.stale_since >= first.meta.created_at
        assert meta.failed_cycles >= 3 and expected in meta.stale_reason
        ready = app.test_client().get("/ready").get_json()
        assert ready["ready"] is True and ready["stale"]["failed_cycles"] >= 3
        assert expected in ready["stale"]["reason"]
        env = {"TPV_BROKER_REDIS_URL": redis_url, "TPV_BROKER_CONFIG": None}
        shown = CliRunner().invoke(main, ["inspect"], env=env)
        assert shown.exit_code == 0, shown.output
        assert "STALE: the collector has failed" in shown.output and expected in shown.output, shown.output
        # Once the snapshot is past its age limit, the degraded answer says why.
        strict = config.model_copy(update={"api": ApiSettings(max_snapshot_age_s=0.001)})
        strict_app = create_app(strict, store=store)
        answer = strict_app.test_client().post("/api/rank", json=request).get_json()
        assert answer["degraded"] is True and expected in answer["degraded_reason"], answer
        assert strict_app.test_client().get("/ready").status_code == 503
        # One clear line for the outage, however many cycles failed: no
        # line (let alone a traceback) per cycle. (Two when a cycle caught
        # influxd on its way down: "connection aborted", then the outage.)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        messages = [r.getMessage() for r in errors]
        assert 1 <= len(errors) <= 2 < runner.failures_in_a_row, messages
        assert expected in messages[-1] and all(r.exc_info is None for r in errors), messages

        if fault == "stopped":
            own_influx.start()  # same port as before
        else:
            own_influx.resume()
        wait_for(lambda: runner.failures_in_a_row == 0, "recovery")
        wait_for(lambda: store.read_meta().created_at > first.meta.created_at, "a new snapshot")
        assert sum("recovered" in r.getMessage() for r in caplog.records) == 1
        # The new snapshot carries no stale mark.
        assert store.read_meta().stale_since is None
        assert "stale" not in app.test_client().get("/ready").get_json()
    finally:
        stop.set()
        daemon.join(timeout=30)
    assert not daemon.is_alive()


class RecordingClient(InfluxQLClient):
    """The real client, noting when each failed query started."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.failed_at: list[float] = []

    def query(self, statements, **kwargs) -> list[StatementResult]:
        started = time.monotonic()
        try:
            return super().query(statements, **kwargs)
        except MetricSourceError:
            self.failed_at.append(started)
            raise


def test_cycles_back_off_while_influxdb_is_down(own_influx, redis_client: redis.Redis, caplog):
    caplog.set_level(logging.INFO, logger="tpv_broker")
    interval, cap = 0.1, 0.8
    config = BrokerConfig(influxdb=InfluxDBSettings(url=own_influx.url, database="galaxy", timeout_s=0.5),
                          collector=CollectorSettings(interval_s=interval, backoff_max_s=cap))
    store = SnapshotStore(redis_client, KeySchema(config.redis.key_prefix))
    client = RecordingClient(config.influxdb)
    runner = CycleRunner(config, client, store, daemon=True)
    stop = threading.Event()
    daemon = threading.Thread(target=run_daemon, args=(runner, stop))
    daemon.start()
    try:
        wait_for(lambda: store.read_meta() is not None, "a first snapshot")
        own_influx.stop()
        wait_for(lambda: len(client.failed_at) >= 7, "seven failed attempts")
        # Attempt k+1 comes no sooner than interval x 2^(k-1) (at most the
        # cap) after attempt k; the scheduler may start a cycle up to half
        # an interval early, and the query starts a moment into the cycle,
        # hence the slack. Asking every 0.1 s, as without backoff, fails
        # this from the third gap on (0.1 s against at least 0.3 s).
        gaps = [b - a for a, b in itertools.pairwise(client.failed_at)]
        for k, gap in enumerate(gaps[:6], start=1):
            assert gap >= retry_delay(k, interval, cap) - interval / 2 - 0.05, (k, gaps)
        assert runner.skipped > 0
        meta = store.read_meta()
        assert meta.retry_at is not None and meta.retry_at > meta.stale_since
        own_influx.start()
        wait_for(lambda: runner.failures_in_a_row == 0, "recovery")
    finally:
        stop.set()
        daemon.join(timeout=30)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("NOT published" in m for m in messages) == 1, messages
    assert sum("recovered after" in m for m in messages) == 1, messages


@pytest.mark.parametrize(
    ("failures", "delay"),
    [
        (0, 0.0),     # nothing failed: no wait
        (1, 15.0),    # one failure: the normal schedule
        (2, 30.0),    # 15 x 2
        (3, 60.0),    # 15 x 4, the cap
        (4, 60.0),    # 15 x 8 = 120, capped
        (1000, 60.0), # no overflow however long it lasts
    ],
)
def test_retry_delay_doubles_up_to_the_cap(failures, delay):
    assert retry_delay(failures, 15.0, 60.0) == delay


def test_retry_delay_with_a_cap_below_the_interval_keeps_the_schedule():
    assert retry_delay(5, 15.0, 5.0) == 15.0


def test_influxdb_slower_than_the_cycle(own_influx, redis_client: redis.Redis, caplog):
    # influxd paused for a second: cycles take longer than the 0.2 s
    # interval but answer within influxdb.timeout_s, so nothing fails; the
    # slowness is said once (not once per skipped tick), and so is its end.
    caplog.set_level(logging.INFO)
    config = BrokerConfig(influxdb=InfluxDBSettings(url=own_influx.url, database="galaxy", timeout_s=5),
                          collector=CollectorSettings(interval_s=0.2))
    store = SnapshotStore(redis_client, KeySchema(config.redis.key_prefix))
    runner = CycleRunner(config, InfluxQLClient(config.influxdb), store, daemon=True)
    stop = threading.Event()
    daemon = threading.Thread(target=run_daemon, args=(runner, stop))
    daemon.start()
    try:
        wait_for(lambda: store.read_meta() is not None, "a first snapshot")
        own_influx.pause()
        time.sleep(1.0)
        paused_at = store.read_meta().created_at
        own_influx.resume()
        wait_for(lambda: store.read_meta().created_at > paused_at, "a snapshot after the pause")
        wait_for(lambda: any("fit the 0.2 s interval again" in r.getMessage() for r in caplog.records),
                 "the end of the slowness")
    finally:
        own_influx.resume()
        stop.set()
        daemon.join(timeout=30)
    messages = [r.getMessage() for r in caplog.records]
    assert runner.failures_in_a_row == 0 and not any("NOT published" in m for m in messages), messages
    assert sum("longer than the 0.2 s interval" in m for m in messages) == 1, messages
    assert not any("maximum number of running instances" in m for m in messages), messages


def test_the_stale_mark_never_creates_a_snapshot(redis_client: redis.Redis):
    store = SnapshotStore(redis_client, KeySchema("tpv_broker"))
    assert store.mark_stale(1.0, 3, "InfluxDB down", 2.0) is False
    assert redis_client.keys("*") == []
