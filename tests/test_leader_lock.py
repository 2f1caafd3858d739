"""The collector lease on a real redis-server: one holder at a time, renewal
and release only by the holder's token, takeover once it expires, and the
fence: a holder that still believes it leads (paused, its clock frozen here)
cannot publish over the new holder's snapshot."""

from __future__ import annotations

import logging
import subprocess

import pytest
import redis

from tpv_broker.collector.daemon import CycleRunner
from tpv_broker.config.settings import BrokerConfig
from tpv_broker.store.leader_lock import LeaderLease, LeaseLost
from tpv_broker.store.snapshots import SnapshotStore

from .processes import wait_for
from .test_store import KEYS, TOOLS, make_snapshot


class FrozenClock:
    """A paused process's view of time: nothing has passed."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lease(client: redis.Redis, name: str, lease_s: float = 30.0, clock=None) -> LeaderLease:
    kw = {"clock": clock} if clock is not None else {}
    return LeaderLease(client, KEYS.collector_lease, name, lease_s, **kw)


def test_one_holder_at_a_time_and_its_identity_is_readable(redis_client: redis.Redis, redis_server) -> None:
    a, b = lease(redis_client, "host-a:11"), lease(redis_client, "host-b:22")
    assert a.hold() and a.is_leader()
    assert not b.hold() and not b.is_leader()
    assert a.hold(), "renewal by the holder"
    assert not b.hold()
    # What an admin sees with redis-cli.
    shown = subprocess.run(["redis-cli", "-p", str(redis_server.port), "GET", KEYS.collector_lease],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert shown == a.token and shown.startswith("host-a:11/")
    ttl_ms = redis_client.pttl(KEYS.collector_lease)
    assert 0 < ttl_ms <= 30_000
    a.release()
    assert redis_client.get(KEYS.collector_lease) is None
    assert b.hold(), "free once released"


def test_the_lease_counts_from_before_its_round_trip(redis_client: redis.Redis, monkeypatch) -> None:
    # Redis starts the key's expiry when the SET arrives: the holder must not count its lease from the reply,
    # or a slow round trip (3 s here) leaves it believing it leads after Redis has let the key go.
    clock = FrozenClock()
    a = lease(redis_client, "a", lease_s=10, clock=clock)
    set_key = redis_client.set

    def slow_set(*args, **kwargs):  # type: ignore[no-untyped-def]
        clock.now += 3
        return set_key(*args, **kwargs)

    monkeypatch.setattr(redis_client, "set", slow_set)
    started = clock.now
    assert a.hold()
    clock.now = started + 9.9
    assert a.is_leader()
    clock.now = started + 10.1
    assert not a.is_leader()


def test_expired_lease_is_taken_and_the_old_holder_cannot_renew_or_release_it(redis_client: redis.Redis) -> None:
    # a paused: it still believes it holds the lease, so it tries to renew it.
    a, b = lease(redis_client, "a", lease_s=0.2, clock=FrozenClock()), lease(redis_client, "b", lease_s=30)
    assert a.hold()
    wait_for(lambda: redis_client.get(KEYS.collector_lease) is None, "the lease to expire")
    assert b.hold()
    assert not a.hold(), "a's renewal must not take b's lease"
    a.release()
    assert redis_client.get(KEYS.collector_lease).decode() == b.token, "a's release must not free b's lease"


def test_a_collector_never_stands_by_behind_its_own_lease(redis_client: redis.Redis) -> None:
    # Redis stalled while a free lease was being taken: the SET NX reached it after the client had given
    # up, so the key holds our token while we believe we hold nothing. SET NX then fails on our own token:
    # we stood by behind ourselves for a whole lease, and nobody published.
    a = lease(redis_client, "a", lease_s=30)
    redis_client.set(KEYS.collector_lease, a.token, px=30_000)
    assert not a.is_leader()
    assert a.hold() and a.is_leader()
    assert 29_000 < redis_client.pttl(KEYS.collector_lease) <= 30_000


def test_a_released_lease_is_not_taken_back_by_a_late_renewal(redis_client: redis.Redis) -> None:
    # A lease job still running when the daemon stops must not take the lease again after the release.
    a = lease(redis_client, "a")
    assert a.hold()
    a.release()
    assert not a.hold() and redis_client.get(KEYS.collector_lease) is None
    # ... also when release() runs while that job's renewal is on the wire (its SET NX then takes it).
    b = lease(redis_client, "b")
    assert b.hold()
    renew = b._renew

    def renew_during_release(**kw):  # type: ignore[no-untyped-def]
        b.release()
        return renew(**kw)

    b._renew = renew_during_release  # type: ignore[assignment]
    assert not b.hold()
    assert redis_client.get(KEYS.collector_lease) is None


@pytest.mark.parametrize("reuse", [False, True], ids=["full-publish", "publish-reusing-tool-stats"])
def test_a_paused_holder_cannot_publish_over_the_new_one(redis_client: redis.Redis, reuse: bool) -> None:
    store = SnapshotStore(redis_client, KEYS)
    clock = FrozenClock()
    a = lease(redis_client, "a", lease_s=0.2, clock=clock)
    assert a.hold()
    first = store.publish(make_snapshot(["d1"], TOOLS, created_at=1.0), fence=a.fence)
    # a "pauses": its clock stands still, its lease expires in Redis, b takes over.
    wait_for(lambda: redis_client.get(KEYS.collector_lease) is None, "a's lease to expire")
    b = lease(redis_client, "b")
    assert b.hold()
    store.publish(make_snapshot(["d2"], TOOLS, created_at=2.0), fence=b.fence)
    assert a.is_leader(), "a still believes it leads (nothing told it otherwise)"
    with pytest.raises(LeaseLost, match="holder now: b/"):
        store.publish(make_snapshot(["d3"], {}, created_at=3.0), fence=a.fence,
                      reuse_tool_stats=first if reuse else None)
    live = store.read_all()
    assert live is not None and live.meta.created_at == 2.0 and list(live.destinations) == ["d2"]
    assert live.tool_stats == TOOLS
    assert not [k for k in redis_client.keys("*") if b":staging:" in k], "a's staging keys are cleaned up"


def test_a_paused_holder_cannot_mark_the_new_holders_snapshot_stale(redis_client: redis.Redis) -> None:
    store = SnapshotStore(redis_client, KEYS)
    a = lease(redis_client, "a", lease_s=0.2, clock=FrozenClock())
    assert a.hold()
    wait_for(lambda: redis_client.get(KEYS.collector_lease) is None, "a's lease to expire")
    b = lease(redis_client, "b")
    assert b.hold()
    store.publish(make_snapshot(["d2"], TOOLS, created_at=2.0), fence=b.fence)
    # a wakes, its cycle fails: its stale mark must not land on b's fresh snapshot
    assert store.mark_stale(1.0, 3, "InfluxDB down", None, fence=a.fence) is False
    assert redis_client.hget(KEYS.snapshot_meta, "stale_since") is None
    # the holder's own mark does land
    assert store.mark_stale(5.0, 1, "InfluxDB down", 9.0, fence=b.fence) is True
    meta = store.read_meta()
    assert meta is not None and meta.stale_since == 5.0 and meta.failed_cycles == 1 and meta.retry_at == 9.0
    assert meta.stale_reason == "InfluxDB down" and meta.created_at == 2.0


def test_a_cycle_of_a_paused_holder_is_refused_with_a_clear_line(redis_client: redis.Redis, influx_server,
                                                                 influx_db, caplog) -> None:
    from tpv_broker.collector.influx import InfluxQLClient
    from tpv_broker.config.server_settings import InfluxDBSettings

    from .helpers import load_prototype_data

    load_prototype_data(influx_server, influx_db)
    caplog.set_level(logging.INFO, logger="tpv_broker")
    config = BrokerConfig(influxdb=InfluxDBSettings(url=influx_server.url, database=influx_db))
    store = SnapshotStore(redis_client, KEYS)
    a = lease(redis_client, "a", lease_s=0.2, clock=FrozenClock())
    # As the daemon runs it: a failed cycle marks the live snapshot stale, fenced like a publish.
    runner = CycleRunner(config, InfluxQLClient(config.influxdb), store, leader=a, daemon=True)
    assert a.hold()
    assert runner().published
    assert store.read_meta().collector == "a"
    wait_for(lambda: redis_client.get(KEYS.collector_lease) is None, "a's lease to expire")
    b = lease(redis_client, "b")
    assert b.hold()
    store.publish(make_snapshot(["d2"], created_at=2.0), fence=b.fence)
    report = runner()
    assert not report.published
    assert any("no longer holds the lease (holder now: b/" in e for e in report.errors), report.errors
    meta = store.read_meta()
    # b's snapshot, not marked stale by a's failed cycle.
    assert meta.created_at == 2.0 and meta.stale_since is None and meta.failed_cycles == 0, meta
    assert all(r.exc_info is None for r in caplog.records)


def test_collect_once_while_a_daemon_holds_the_lease_publishes_nothing(redis_client: redis.Redis,
                                                                       redis_url: str) -> None:
    from click.testing import CliRunner

    from tpv_broker.cli import main
    from tpv_broker.store.keys import KeySchema

    key = KeySchema("tpv_broker").collector_lease
    other = LeaderLease(redis_client, key, "collector-1", 30)
    assert other.hold()
    result = CliRunner().invoke(main, ["collect", "--once"], env={"TPV_BROKER_REDIS_URL": redis_url})
    assert result.exit_code == 1
    assert result.output.startswith("NOT published")
    assert f"standing by: the collector lease is held by {other.token}" in result.output
    assert redis_client.keys("*") == [key.encode()], "nothing published, the daemon's lease untouched"
    assert redis_client.get(key).decode() == other.token
