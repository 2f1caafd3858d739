"""InfluxDB stopped or hung mid-run, on real servers: the collector daemon
survives, the last snapshot stays, the API still answers from it, and the
collector recovers by itself when InfluxDB is back."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from tpv_broker.api.app import create_app
from tpv_broker.collector.daemon import CycleRunner, run_daemon
from tpv_broker.collector.influx import InfluxQLClient
from tpv_broker.devtools.servers import InfluxServer
from tpv_broker.shared.config import BrokerConfig, InfluxDBSettings
from tpv_broker.shared.keys import KeySchema
from tpv_broker.shared.store import SnapshotStore

from .helpers import load_prototype_data


def wait_for(condition: Callable[[], bool], what: str, limit_s: float = 20.0) -> None:
    # A bound on waiting, not an assertion on speed.
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


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
def test_collector_survives_influxdb_outage(own_influx, redis_client: redis.Redis, caplog, fault):
    caplog.set_level(logging.INFO, logger="tpv_broker")
    config = BrokerConfig(influxdb=InfluxDBSettings(url=own_influx.url, database="galaxy", timeout_s=0.5))
    store = SnapshotStore(redis_client, KeySchema(config.redis.key_prefix))
    runner = CycleRunner(config, InfluxQLClient(config.influxdb), store)
    stop = threading.Event()
    daemon = threading.Thread(target=run_daemon, args=(runner, 0.2, stop))
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

        if fault == "stopped":
            own_influx.stop()
        else:
            own_influx.pause()
        wait_for(lambda: runner.failures_in_a_row >= 3, "three failed cycles")
        assert daemon.is_alive()
        # The last good snapshot is untouched, and the API still ranks from it.
        assert store.read_all() == first
        answer = app.test_client().post("/api/rank", json=request).get_json()
        assert answer["degraded"] is False
        assert answer["destinations"] == healthy_answer["destinations"]
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors, "a failed cycle must say so"
        expected = "is unreachable" if fault == "stopped" else "did not answer within 0.5 s"
        assert all(expected in r.getMessage() and r.exc_info is None for r in errors), [r.getMessage() for r in errors]

        if fault == "stopped":
            own_influx.start()  # same port as before
        else:
            own_influx.resume()
        wait_for(lambda: runner.failures_in_a_row == 0, "recovery")
        wait_for(lambda: store.read_meta().created_at > first.meta.created_at, "a new snapshot")
        assert any("recovered" in r.getMessage() for r in caplog.records)
    finally:
        stop.set()
        daemon.join(timeout=30)
    assert not daemon.is_alive()
