"""Charges sent without waiting for the reply (``charge_pipe``, what the API
uses), on real redis-servers: seen by another client as soon as sent, one
charge per job id, many threads on one pipe, Redis stopped and restarted
empty (script cache gone) or its script cache flushed mid-stream, an error
reply read later and logged once, a password, an ACL user, a Sentinel
failover."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tpv_broker.devtools.servers import free_port
from tpv_broker.store.charge_pipe import ChargePipe
from tpv_broker.store.inflight import InflightStore
from tpv_broker.store.keys import KeySchema
from tpv_broker.core.models import Charge
from tpv_broker.store.snapshots import store_from_config

from .processes import wait_for
from .sentinel_servers import MASTER_NAME, DataNode, sentinel_group

T = 1_700_000_000.0
PASSWORD = "pipe-s3cret"


def _pipe(url: str, prefix: str = "cp", timeout_s: float = 1.0) -> tuple[ChargePipe, InflightStore]:
    store = store_from_config(url, prefix, timeout_s)
    inflight = InflightStore(store.client, store.keys, max_age_s=600, failure=store.failure)
    return ChargePipe(inflight), inflight


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tpv_broker.rank" and r.levelno >= logging.WARNING]


def _recoveries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("in-flight charges reach Redis again")]


@pytest.fixture
def pipe(redis_url: str, redis_client: redis.Redis) -> Iterator[tuple[ChargePipe, InflightStore]]:
    p, inflight = _pipe(redis_url)
    yield p, inflight
    p.close()


def test_another_client_sees_a_charge_as_soon_as_it_is_sent(pipe, redis_client, caplog):
    p, inflight = pipe
    for i in range(20):
        p.charge(Charge(f"d{i}", 1, 1, T, f"job{i}"))
        # No flush, no further charge: the next request may land on another
        # worker. (Polled: Redis need not run one connection's command
        # before another's that arrived a microsecond later.)
        wait_for(lambda: len(inflight.read(T)) == i + 1, f"charge {i} to be visible", limit_s=2.0)
        assert redis_client.exists(f"cp:inflight:job:job{i}") == 1
    assert _warnings(caplog) == []


def test_a_job_charged_twice_keeps_one_charge(pipe):
    p, inflight = pipe
    p.charge(Charge("d1", 4, 8, T, "7"))
    p.charge(Charge("d2", 4, 8, T + 1, "7"))
    p.charge(Charge("d3", 1, 1, T + 1))
    p.flush()
    assert sorted(c.destination for c in inflight.read(T + 2)) == ["d2", "d3"]


def test_threads_sharing_one_pipe(pipe, caplog):
    p, inflight = pipe
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
    p.flush()
    charges = inflight.read(T)
    # every anonymous charge (8 x 25), and one for the job all threads charged
    assert len([c for c in charges if c.job_id is None]) == 200
    assert [c.job_id for c in charges if c.job_id is not None] == ["same"]
    assert _warnings(caplog) == []


def test_an_error_reply_read_later_is_logged_once(pipe, redis_client, caplog):
    caplog.set_level(logging.INFO, "tpv_broker.rank")
    p, inflight = pipe
    redis_client.set("cp:inflight", "not a sorted set")
    for _ in range(3):
        p.charge(Charge("d1", 1, 1, T))  # refused; read at the next send
    p.flush()
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "WRONGTYPE" in warnings[0] and "charging a placement" in warnings[0], warnings
    redis_client.delete("cp:inflight")
    p.charge(Charge("d2", 1, 1, T))
    p.flush()
    assert [c.destination for c in inflight.read(T)] == ["d2"]
    assert len(_warnings(caplog)) == 1
    assert _recoveries(caplog) == ["in-flight charges reach Redis again; 3 charge(s) unconfirmed or lost meanwhile"]


def test_a_flushed_script_cache_is_reloaded_and_the_charge_resent(pipe, redis_client, caplog):
    p, inflight = pipe
    p.charge(Charge("d1", 1, 1, T, "1"))
    p.flush()
    redis_client.script_flush()
    p.charge(Charge("d2", 1, 1, T, "2"))  # NOSCRIPT: seen at the next read
    p.charge(Charge("d3", 1, 1, T, "3"))
    p.flush()
    assert sorted(c.destination for c in inflight.read(T)) == ["d1", "d2", "d3"]
    assert _warnings(caplog) == []


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[DataNode]:
    server = DataNode(tmp_path / "redis", password=PASSWORD).start()
    try:
        yield server
    finally:
        server.stop()


def test_redis_stopped_and_restarted_empty(own_redis, caplog):
    caplog.set_level(logging.INFO, "tpv_broker.rank")
    url = f"redis://:{PASSWORD}@127.0.0.1:{own_redis.port}/0"
    p, inflight = _pipe(url)
    p.charge(Charge("d1", 1, 1, T, "1"))
    wait_for(lambda: [c.destination for c in inflight.read(T)] == ["d1"], "the first charge", 2.0)
    own_redis.stop()
    for i in range(3):
        p.charge(Charge("d2", 1, 1, T, f"down{i}"))  # no exception
    p.flush()
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "failed while charging a placement" in warnings[0], warnings
    assert PASSWORD not in warnings[0]
    own_redis.start()  # empty: no data, no script cache
    p.charge(Charge("d3", 1, 1, T, "3"))
    wait_for(lambda: [c.destination for c in inflight.read(T)] == ["d3"], "the charge after the restart", 2.0)
    p.charge(Charge("d4", 1, 1, T, "3"))
    wait_for(lambda: [c.destination for c in inflight.read(T)] == ["d4"], "the job's charge to move", 2.0)
    p.flush()
    assert len(_warnings(caplog)) == 1
    assert len(_recoveries(caplog)) == 1
    p.close()


def test_a_redis_that_is_down_from_the_start_is_logged_not_raised(caplog):
    p, _ = _pipe(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.3)
    for _ in range(3):
        p.charge(Charge("d1", 1, 1, T))
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "Connection refused" in warnings[0], warnings


def test_a_replica_refuses_charges_logged_once_never_resent_forever(own_redis, tmp_path, caplog):
    replica = DataNode(tmp_path / "replica", password=PASSWORD, master_port=own_redis.port).start()
    try:
        p, _ = _pipe(f"redis://:{PASSWORD}@127.0.0.1:{replica.port}/0")
        for i in range(3):
            p.charge(Charge("d1", 1, 1, T, str(i)))  # READONLY: resent once on a new connection
        p.flush()
        warnings = _warnings(caplog)
        assert len(warnings) == 1 and "read only replica" in warnings[0], warnings
        assert own_redis.client().zcard("cp:inflight") == 0
        # each charge tried twice (the second time on a new connection), no more
        assert replica.client().info("commandstats")["cmdstat_evalsha"]["calls"] == 6
        p.close()
    finally:
        replica.stop()


def test_an_acl_user(redis_url, redis_client, caplog):
    redis_client.acl_setuser("charger", enabled=True, passwords=["+" + PASSWORD], keys=["cpacl:*"],
                             commands=["+@all"])
    try:
        url = redis_url.replace("redis://", f"redis://charger:{PASSWORD}@")
        p, inflight = _pipe(url, prefix="cpacl")
        p.charge(Charge("d1", 1, 1, T, "1"))
        p.flush()
        assert [c.destination for c in inflight.read(T)] == ["d1"]
        p.close()
        assert _warnings(caplog) == []
    finally:
        redis_client.acl_deluser("charger")


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
        url = f"redis+sentinel://:{PASSWORD}@127.0.0.1:{sentinel.port}/{MASTER_NAME}/0"
        p, _ = _pipe(url)
        p.charge(Charge("d1", 1, 1, T, "1"))
        p.flush()
        # (replication is asynchronous: a failover can lose what the replica has not got yet)
        wait_for(lambda: replica.client().zcard("cp:inflight") == 1, "the replica to have the first charge")
        with sentinel.client() as s:
            assert s.execute_command("SENTINEL FAILOVER", MASTER_NAME)
        wait_for(lambda: sentinel.master_port_now() == replica.port, "the sentinel to promote the replica")
        wait_for(lambda: _role(replica) == "master", "the replica to be master")
        wait_for(lambda: _role(master) == "slave", "the old master to be demoted")
        # Sent to the demoted master (READONLY) or on a connection it
        # closed: either way it must end up on the new master.
        p.charge(Charge("d2", 1, 1, T, "2"))
        p.charge(Charge("d3", 1, 1, T, "3"))
        p.flush()
        new = InflightStore(replica.client(), KeySchema("cp"), max_age_s=600)
        assert sorted(c.destination for c in new.read(T)) == ["d1", "d2", "d3"]
        assert PASSWORD not in caplog.text
        p.close()


def test_a_hung_redis_is_logged_once_and_charges_resume(own_redis, caplog):
    caplog.set_level(logging.INFO, "tpv_broker.rank")
    p, inflight = _pipe(f"redis://:{PASSWORD}@127.0.0.1:{own_redis.port}/0", timeout_s=0.3)
    p.charge(Charge("d1", 1, 1, T, "1"))
    own_redis.pause()
    try:
        p.charge(Charge("d2", 1, 1, T, "2"))  # sent; no reply comes
        time.sleep(0.5)  # past the socket timeout
        p.charge(Charge("d3", 1, 1, T, "3"))  # sees the silence; reconnecting times out
    finally:
        own_redis.resume()
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "no reply from Redis to a charge for over 0.3 s" in warnings[0], warnings
    p.charge(Charge("d4", 1, 1, T, "4"))
    p.flush()
    assert "d4" in {c.destination for c in inflight.read(T)}
    assert len(_recoveries(caplog)) == 1 and len(_warnings(caplog)) == 1
    p.close()
