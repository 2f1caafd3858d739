"""In-flight charges as the API makes them (``charge_writer``), on real
redis-servers: written after the answer has gone out and before the request
ends; a read-only Redis (answers still come, one warning, charges dropped)
that becomes writable again (charges flow, one recovery line); Redis
stopped and restarted empty, hung, its script cache flushed; threads
sharing one writer; a Sentinel failover. The password never shows in a log."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from tpv_broker.api import create_app
from tpv_broker.config.api_settings import ApiSettings
from tpv_broker.config.ranking_settings import InflightSettings
from tpv_broker.config.server_settings import RedisSettings
from tpv_broker.config.settings import BrokerConfig
from tpv_broker.core.charges import Charge
from tpv_broker.core.models import DestinationFigures, Snapshot, SnapshotMeta
from tpv_broker.store.charge_writer import ChargeWriter
from tpv_broker.store.inflight import InflightStore
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore, store_from_config

from .processes import wait_for
from .sentinel_servers import MASTER_NAME, DataNode, sentinel_group

T = 1_700_000_000.0
PASSWORD = "pipe-s3cret"
PREFIX = "cp"
RANK = {"job": {"tool_id": "bwa", "cores": 1, "mem": 1}, "destinations": [{"id": "a"}, {"id": "b"}]}


def _snapshot() -> Snapshot:
    figures = dict(status="online", queued=0, running=0, cpus_total=64, cpus_free=64, mem_total_gb=256,
                   mem_free_gb=256, median_queue_s=30, median_run_s=600, live_at=T, metrics_at=T,
                   sources={"queue_by_destination": T})
    return Snapshot(meta=SnapshotMeta(created_at=T, destinations=2),
                    destinations={d: DestinationFigures(id=d, **figures) for d in ("a", "b")})


def _api(url: str) -> FlaskClient:
    config = BrokerConfig(redis=RedisSettings(url=url, key_prefix=PREFIX, socket_timeout_s=1),
                          api=ApiSettings(max_snapshot_age_s=3600), inflight=InflightSettings(max_age_s=600))
    return create_app(config, clock=lambda: T).test_client()


def _rank(api: FlaskClient, job_id: str) -> dict[str, Any]:
    resp = api.post("/api/rank", json={**RANK, "job": {**RANK["job"], "id": job_id}})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body: dict[str, Any] = resp.get_json()
    return body


def _charged_jobs(client: redis.Redis) -> set[str]:
    return {c.job_id for c in InflightStore(client, KeySchema(PREFIX), max_age_s=600).members() if c.job_id}


def _writer(url: str, timeout_s: float = 1.0) -> tuple[ChargeWriter, InflightStore]:
    store = store_from_config(url, PREFIX, timeout_s)
    inflight = InflightStore(store.client, store.keys, max_age_s=600, failure=store.failure)
    return ChargeWriter(inflight), inflight


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tpv_broker.rank" and r.levelno >= logging.WARNING]


def _recoveries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("in-flight charges reach Redis again")]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[DataNode]:
    server = DataNode(tmp_path / "redis", password=PASSWORD).start()
    try:
        yield server
    finally:
        server.stop()


def test_the_charge_is_written_after_the_answer_and_before_the_request_ends(redis_url, redis_client, caplog):
    SnapshotStore(redis_client, KeySchema(PREFIX)).publish(_snapshot())
    api = _api(redis_url)
    for i in range(5):
        resp = api.post("/api/rank", json={**RANK, "job": {**RANK["job"], "id": f"j{i}"}}, buffered=False)
        chunks = iter(resp.response)
        assert b'"destinations"' in next(chunks)  # the whole answer, with nothing charged yet
        assert _charged_jobs(redis_client) == {f"j{k}" for k in range(i)}
        list(chunks)
        resp.close()
        assert _charged_jobs(redis_client) == {f"j{k}" for k in range(i + 1)}
    assert _warnings(caplog) == []


def test_a_read_only_redis_answers_warns_once_then_charges_flow_when_writable(own_redis, tmp_path, caplog):
    caplog.set_level(logging.INFO, "tpv_broker.rank")
    SnapshotStore(own_redis.client(), KeySchema(PREFIX)).publish(_snapshot())
    replica = DataNode(tmp_path / "replica", password=PASSWORD, master_port=own_redis.port).start()
    try:
        wait_for(lambda: replica.client().exists(KeySchema(PREFIX).snapshot_meta) == 1, "the snapshot replicated")
        api = _api(f"redis://:{PASSWORD}@127.0.0.1:{replica.port}/0")
        for i in range(3):
            assert _rank(api, f"ro{i}")["degraded"] is False
        warnings = _warnings(caplog)
        assert len(warnings) == 1 and "failed while charging a placement" in warnings[0], warnings
        assert "read only replica" in warnings[0] and PASSWORD not in caplog.text
        assert _charged_jobs(replica.client()) == set() == _charged_jobs(own_redis.client())
        # Promoted (as by hand after losing the master): charges flow again.
        replica.client().replicaof("NO", "ONE")
        _rank(api, "rw")
        assert _charged_jobs(replica.client()) == {"rw"}
        assert len(_warnings(caplog)) == 1
        assert _recoveries(caplog) == ["in-flight charges reach Redis again; 3 charge(s) unconfirmed or lost meanwhile"]
    finally:
        replica.stop()


def test_redis_stopped_then_restarted_empty(own_redis, caplog):
    caplog.set_level(logging.INFO, "tpv_broker.rank")
    p, inflight = _writer(f"redis://:{PASSWORD}@127.0.0.1:{own_redis.port}/0")
    p.charge(Charge("d1", 1, 1, T, "1"))
    own_redis.stop()
    started = time.monotonic()
    for i in range(20):
        p.charge(Charge("d2", 1, 1, T, f"down{i}"))  # no exception
    # Refused at once: each charge costs a connect and its retry, no wait.
    assert time.monotonic() - started < 2.0
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "failed while charging a placement" in warnings[0], warnings
    assert PASSWORD not in caplog.text
    own_redis.start()  # empty: no data, no script cache
    p.charge(Charge("d3", 1, 1, T, "3"))
    # The charges made while it was down were dropped, not kept for later.
    assert [c.destination for c in inflight.members()] == ["d3"]
    assert _recoveries(caplog) == ["in-flight charges reach Redis again; 20 charge(s) unconfirmed or lost meanwhile"]
    assert len(_warnings(caplog)) == 1


def test_a_hung_redis_costs_a_charge_one_timeout_and_is_logged_once(own_redis, caplog):
    caplog.set_level(logging.INFO, "tpv_broker.rank")
    p, inflight = _writer(f"redis://:{PASSWORD}@127.0.0.1:{own_redis.port}/0", timeout_s=0.3)
    p.charge(Charge("d1", 1, 1, T, "1"))
    own_redis.pause()
    try:
        for i in range(2):
            started = time.monotonic()
            p.charge(Charge("d2", 1, 1, T, f"hung{i}"))
            # a timeout is never retried (the client's retry policy)
            assert time.monotonic() - started < 0.3 * 2
    finally:
        own_redis.resume()
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "Timeout" in warnings[0], warnings
    p.charge(Charge("d4", 1, 1, T, "4"))
    assert "d4" in {c.destination for c in inflight.members()}
    assert len(_recoveries(caplog)) == 1 and len(_warnings(caplog)) == 1


def test_a_flushed_script_cache_is_loaded_again(redis_url, redis_client, caplog):
    SnapshotStore(redis_client, KeySchema(PREFIX)).publish(_snapshot())
    api = _api(redis_url)
    _rank(api, "1")
    redis_client.script_flush()
    _rank(api, "2")
    _rank(api, "3")
    assert _charged_jobs(redis_client) == {"1", "2", "3"}
    assert _warnings(caplog) == []


def test_threads_sharing_one_writer(redis_url, redis_client, caplog):
    p, inflight = _writer(redis_url)
    barrier = threading.Barrier(8)

    def go(i: int) -> None:
        barrier.wait()
        for j in range(50):
            p.charge(Charge(f"d{i}", 1, 1, T, "same" if j % 2 else None))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    charges = inflight.members()
    # every anonymous charge (8 x 25), and one for the job all threads charged
    assert len([c for c in charges if c.job_id is None]) == 200
    assert [c.job_id for c in charges if c.job_id is not None] == ["same"]
    assert _warnings(caplog) == []


def _role(node: DataNode) -> str | None:
    """The node's replication role; None while it drops its clients to
    change role (a connection reset then is part of the failover)."""
    try:
        with node.client() as c:
            return str(c.info("replication")["role"])
    except redis.ConnectionError:
        return None


def test_a_sentinel_failover(tmp_path: Path, caplog):
    with sentinel_group(tmp_path, PASSWORD) as (master, replica, sentinel):
        SnapshotStore(master.client(), KeySchema(PREFIX)).publish(_snapshot())
        api = _api(f"redis+sentinel://:{PASSWORD}@127.0.0.1:{sentinel.port}/{MASTER_NAME}/0")
        _rank(api, "1")
        # (replication is asynchronous: a failover can lose what the replica has not got yet)
        wait_for(lambda: _charged_jobs(replica.client()) == {"1"}, "the replica to have the first charge")
        with sentinel.client() as s:
            assert s.execute_command("SENTINEL FAILOVER", MASTER_NAME)
        wait_for(lambda: sentinel.master_port_now() == replica.port, "the sentinel to promote the replica")
        wait_for(lambda: _role(replica) == "master", "the replica to be master")
        wait_for(lambda: _role(master) == "slave", "the old master to be demoted")
        # The pooled connections still reach the demoted master (READONLY) or
        # were closed by it: either way the charges must land on the new one.
        _rank(api, "2")
        _rank(api, "3")
        assert _charged_jobs(replica.client()) == {"1", "2", "3"}
        assert _warnings(caplog) == []
        assert PASSWORD not in caplog.text
