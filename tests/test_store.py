"""SnapshotStore against a real redis-server: atomic publish, reads in one round
trip, keys under the prefix, a clear StoreError when Redis is unreachable."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.connection import AbstractConnection

from tpv_broker.core.charges import Charge, ChargeLoad
from tpv_broker.core.models import DestinationFigures, Snapshot, SnapshotMeta, ToolFigures
from tpv_broker.devtools.servers import free_port
from tpv_broker.errors import StoreError
from tpv_broker.store.inflight import InflightStore
from tpv_broker.store.keys import SCHEMA_VERSION, KeySchema
from tpv_broker.store.leader_lock import Fence
from tpv_broker.store.snapshots import SnapshotStore, connect_redis

NOW = 1_700_000_000.0
KEYS = KeySchema("t")


def make_snapshot(dest_ids: list[str], tools: dict[str, dict[str, ToolFigures]] | None = None,
                  created_at: float = NOW) -> Snapshot:
    destinations = {
        d: DestinationFigures(
            id=d, status="online", queued=float(i), running=2.0 * i, cpus_free=8.0 + i, cpus_total=64.0,
            mem_free_gb=31.25, mem_total_gb=62.5, metrics_at=created_at - 5,
            sources={"queue_by_destination": created_at - 5}, in_config=i % 2 == 0,
        )
        for i, d in enumerate(dest_ids)
    }
    tools = tools or {}
    meta = SnapshotMeta(created_at=created_at, newest_point_at=created_at - 5, destinations=len(destinations),
                        tools=len(tools), cycle_s=0.25, collector="host-a")
    return Snapshot(meta=meta, destinations=destinations, tool_stats=tools)


TOOLS = {
    "toolshed.g2.bx.psu.edu/repos/iuc/fastp/fastp/0.23.4+galaxy0": {
        "pulsar_de": ToolFigures(count=12, median_queue_s=38.5, median_run_s=280, perc_95_run_s=700, at=NOW - 60),
        "pulsar_uk": ToolFigures(count=3, median_run_s=100),
    },
    "cat1": {"pulsar_de": ToolFigures(count=1)},
}


@pytest.fixture
def store(redis_client: redis.Redis) -> SnapshotStore:
    return SnapshotStore(redis_client, KEYS)


def test_publish_then_read_all_round_trips(store: SnapshotStore) -> None:
    snap = make_snapshot(["pulsar_de", "pulsar_uk", "condor_us"], TOOLS)
    store.publish(snap)
    got = store.read_all()
    assert got is not None
    assert got.destinations == snap.destinations
    assert got.tool_stats == snap.tool_stats
    assert got.meta == snap.meta.model_copy(update={"schema_version": SCHEMA_VERSION})
    assert store.read_meta() == got.meta


def test_read_all_and_read_meta_with_no_snapshot(store: SnapshotStore) -> None:
    assert store.read_all() is None
    assert store.read_meta() is None
    view = store.read_for_rank(["t"])
    assert view.meta is None and view.destinations == {} and view.tool_stats == {}


@pytest.mark.parametrize(
    ("tools_asked", "expected_tools"),
    [
        ([], []),
        (["cat1"], ["cat1"]),
        (["no_such_tool"], []),
        # asked in an order different from the snapshot's
        (list(TOOLS)[::-1], list(TOOLS)),
    ],
)
def test_read_for_rank_returns_every_destination_and_the_asked_tools(
        store: SnapshotStore, tools_asked: list[str], expected_tools: list[str]) -> None:
    snap = make_snapshot(["pulsar_de", "pulsar_uk", "condor_us"], TOOLS)
    store.publish(snap)
    view = store.read_for_rank(tools_asked)
    assert view.meta is not None and view.meta.created_at == NOW
    assert view.destinations == snap.destinations
    assert sorted(view.tool_stats) == sorted(expected_tools)
    for t in expected_tools:
        assert view.tool_stats[t] == snap.tool_stats[t]


def test_second_snapshot_replaces_the_first_entirely(store: SnapshotStore, redis_client: redis.Redis) -> None:
    store.publish(make_snapshot(["a", "b", "c"], TOOLS))
    second = make_snapshot(["b"], {"cat1": {"b": ToolFigures(count=2)}}, created_at=NOW + 15)
    store.publish(second)
    got = store.read_all()
    assert got is not None
    assert list(got.destinations) == ["b"]
    assert got.tool_stats == second.tool_stats
    assert got.meta.created_at == NOW + 15 and got.meta.destinations == 1
    assert store.read_for_rank().destinations.keys() == {"b"}
    assert redis_client.hkeys(KEYS.destinations) == [b"b"]


def test_empty_snapshot_publishes_and_clears_old_figures(store: SnapshotStore, redis_client: redis.Redis) -> None:
    store.publish(make_snapshot(["a", "b"], TOOLS))
    store.publish(make_snapshot([], {}, created_at=NOW + 1))
    got = store.read_all()
    assert got is not None
    assert got.destinations == {} and got.tool_stats == {}
    assert got.meta.created_at == NOW + 1 and got.meta.destinations == 0
    assert redis_client.exists(KEYS.destinations, KEYS.tool_stats) == 0
    assert store.read_for_rank().destinations == {}


def test_empty_snapshot_on_empty_redis(store: SnapshotStore) -> None:
    store.publish(make_snapshot([]))
    got = store.read_all()
    assert got is not None and got.destinations == {} and got.meta.destinations == 0


def test_no_staging_keys_and_no_ttl_after_publish(store: SnapshotStore, redis_client: redis.Redis) -> None:
    store.publish(make_snapshot(["a"], TOOLS))
    store.publish(make_snapshot(["a", "b"], TOOLS))
    keys = sorted(k.decode() for k in redis_client.keys("*"))
    assert keys == sorted(KEYS.live_keys())
    assert not [k for k in keys if ":staging:" in k]
    # live keys were staged with an expiry; it must not survive the rename
    for key in KEYS.live_keys():
        assert redis_client.ttl(key) == -1, key


def test_a_collector_that_dies_before_the_swap_leaves_staged_keys_that_expire(
        store: SnapshotStore, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    from tpv_broker.store.keys import STAGING_TTL_S

    class Died(Exception):
        pass

    pipeline = redis_client.pipeline

    def dies_at_the_swap(transaction: bool = True, **kwargs: Any) -> Any:
        if transaction:
            raise Died  # killed between staging and the swap's MULTI/EXEC
        return pipeline(transaction=transaction, **kwargs)

    monkeypatch.setattr(store.client, "pipeline", dies_at_the_swap)
    with pytest.raises(Died):
        store.publish(make_snapshot(["a"], TOOLS))
    staged = [k for k in redis_client.keys("*") if b":staging:" in k]
    assert len(staged) == 2 and all(0 < redis_client.ttl(k) <= STAGING_TTL_S for k in staged), staged


def test_a_staged_key_expires_from_its_first_write(store: SnapshotStore, redis_url: str) -> None:
    # A big snapshot is staged in chunks of 1,000 fields: a collector killed while sending them must not
    # leave a staged hash that never expires (megabytes of tool statistics at a large site). Whatever
    # prefix of the commands reaches Redis, every staged key there has its TTL: each one's EXPIRE
    # follows its first HSET, as MONITOR sees them arrive.
    seen: list[tuple[str, str]] = []
    publisher = threading.Thread(target=store.publish, args=(make_snapshot([f"d{i}" for i in range(2500)], TOOLS),))
    # A timeout: a publish that failed would send no EXEC to wait for.
    with redis.Redis.from_url(redis_url, socket_timeout=10).monitor() as monitor:
        publisher.start()
        for entry in monitor.listen():
            words = entry["command"].split()
            if words[0] in ("HSET", "EXPIRE") and ":staging:" in words[1]:
                seen.append((words[0], words[1]))
            if words[0] == "EXEC":
                break
    publisher.join()
    assert [c for c, _ in seen].count("HSET") >= 4, seen
    for key in {k for _, k in seen}:
        mine = [c for c, k in seen if k == key]
        assert mine[:2] == ["HSET", "EXPIRE"], (key, mine)


@pytest.mark.parametrize("prefix", ["t", "tpv_broker", "site.eu-1"])
def test_all_keys_live_under_the_prefix(redis_client: redis.Redis, prefix: str) -> None:
    store = SnapshotStore(redis_client, KeySchema(prefix))
    # ids that look like key names stay hash fields
    store.publish(make_snapshot(["x:snapshot", "t:destinations", "*"], {"tpv_broker:tool_stats": {"*": ToolFigures()}}))
    keys = [k.decode() for k in redis_client.keys("*")]
    assert len(keys) == 3
    assert all(k.startswith(prefix + ":") for k in keys), keys
    assert {redis_client.type(k) for k in keys} == {b"hash"}


def test_two_prefixes_do_not_see_each_other(redis_client: redis.Redis) -> None:
    a, b = SnapshotStore(redis_client, KeySchema("a")), SnapshotStore(redis_client, KeySchema("b"))
    a.publish(make_snapshot(["only_in_a"]))
    assert b.read_all() is None
    assert b.read_for_rank().destinations == {}


def test_meta_is_a_readable_hash(store: SnapshotStore, redis_client: redis.Redis) -> None:
    store.publish(make_snapshot(["a", "b"], TOOLS))
    raw = {k.decode(): v.decode() for k, v in redis_client.hgetall(KEYS.snapshot_meta).items()}
    assert raw == {
        "created_at": str(NOW),
        "newest_point_at": str(NOW - 5),
        "destinations": "2",
        "tools": "2",
        "cycle_s": "0.25",
        "collector": "host-a",
        "schema_version": str(SCHEMA_VERSION),
    }


def test_meta_without_newest_point(store: SnapshotStore) -> None:
    snap = make_snapshot([])
    snap = snap.model_copy(update={"meta": snap.meta.model_copy(update={"newest_point_at": None})})
    store.publish(snap)
    meta = store.read_meta()
    assert meta is not None and meta.newest_point_at is None


def test_destination_hash_values_are_json_figures(store: SnapshotStore, redis_client: redis.Redis) -> None:
    snap = make_snapshot(["a"])
    store.publish(snap)
    raw = redis_client.hget(KEYS.destinations, "a")
    assert raw is not None
    assert DestinationFigures.model_validate_json(raw) == snap.destinations["a"]


# -- one round trip ------------------------------------------------------------------------
@pytest.fixture
def network_writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts socket writes (one per send_packed_command call) on every connection."""
    calls: list[int] = []
    original = AbstractConnection.send_packed_command

    def counting(self: AbstractConnection, command: object, check_health: bool = True) -> None:
        calls.append(1)
        original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    yield calls


def _commands_processed(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


@pytest.mark.parametrize("n_destinations", [1, 300])
def test_read_for_rank_is_one_round_trip(store: SnapshotStore, redis_client: redis.Redis,
                                         network_writes: list[int], n_destinations: int) -> None:
    store.publish(make_snapshot([f"d{i}" for i in range(n_destinations)], TOOLS))
    redis_client.ping()  # the connection is open before counting
    before = _commands_processed(redis_client)
    network_writes.clear()
    view = store.read_for_rank(["cat1"])
    writes = len(network_writes)
    after = _commands_processed(redis_client)
    assert len(view.destinations) == n_destinations
    # one socket write for the whole MULTI/EXEC, whatever the number of destinations
    assert writes == 1
    # A reader's first read: MULTI + HGETALL(meta) + HGETALL(dests) + HMGET(tools) + EXEC = 5
    # commands, plus the first INFO itself (the server counts a command once it has run, so
    # `before` excludes it)
    assert after - before == 5 + 1


def test_a_kept_snapshot_is_not_read_again(store: SnapshotStore, redis_client: redis.Redis,
                                          network_writes: list[int]) -> None:
    """Once a reader holds the live snapshot's destinations, a rank read is
    the metadata and the tool's fields only (one round trip, no candidate
    in it); a new snapshot is read whole once, and its figures are the ones
    served from then on."""
    store.publish(make_snapshot([f"d{i}" for i in range(300)], TOOLS))
    store.read_for_rank(["cat1"])
    redis_client.ping()
    before = _commands_processed(redis_client)
    network_writes.clear()
    view = store.read_for_rank(["cat1"])
    assert len(network_writes) == 1
    # MULTI + HGETALL(meta) + HMGET(tools) + EXEC, plus the first INFO
    assert _commands_processed(redis_client) - before == 4 + 1
    assert len(view.destinations) == 300 and "cat1" in view.tool_stats

    newer = make_snapshot(["d1", "d2"], TOOLS, created_at=NOW + 10)
    newer.destinations["d1"].queued = 123.0
    store.publish(newer)
    network_writes.clear()
    view = store.read_for_rank(["cat1"])
    # the metadata names a new snapshot: it is read again, whole, with the tool's fields
    assert len(network_writes) == 2
    assert view.meta is not None and view.meta.created_at == NOW + 10
    assert sorted(view.destinations) == ["d1", "d2"] and view.destinations["d1"].queued == 123.0
    network_writes.clear()
    store.read_for_rank(["cat1"])
    assert len(network_writes) == 1


def test_read_all_is_one_round_trip(store: SnapshotStore, redis_client: redis.Redis, network_writes: list[int]) -> None:
    store.publish(make_snapshot([f"d{i}" for i in range(50)], TOOLS))
    redis_client.ping()
    network_writes.clear()
    assert store.read_all() is not None
    assert len(network_writes) == 1


def _calls(client: redis.Redis, *commands: str) -> dict[str, int]:
    """How often Redis ran each command since the last CONFIG RESETSTAT
    (INFO commandstats, which counts the commands inside a MULTI/EXEC too)."""
    stats = client.info("commandstats")
    return {c: int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in commands}


def test_publish_is_two_round_trips_whatever_the_size(store: SnapshotStore, redis_client: redis.Redis,
                                                      network_writes: list[int]) -> None:
    redis_client.config_resetstat()
    network_writes.clear()
    # 2500 destinations -> 3 HSET chunks of at most 1000 fields, still one staging pipeline
    store.publish(make_snapshot([f"d{i}" for i in range(2500)], TOOLS))
    writes = len(network_writes)
    assert writes == 2  # staging pipeline + swap
    # ... and the swap is one MULTI/EXEC: a plain pipeline would also be one write
    assert _calls(redis_client, "multi", "exec", "rename") == {"multi": 1, "exec": 1, "rename": 2}
    assert redis_client.hlen(KEYS.destinations) == 2500


@pytest.mark.parametrize("how", ["plain", "fenced", "over-our-own"])
def test_publish_swaps_the_snapshot_in_one_transaction(store: SnapshotStore, redis_client: redis.Redis,
                                                       how: str) -> None:
    """Readers see the old snapshot or the new one because the renames and
    the new metadata run in one MULTI/EXEC, on every path a publish takes
    (a collector with a lease, one reusing its tool statistics hash)."""
    first = store.publish(make_snapshot(["a"], TOOLS))
    redis_client.set(KEYS.collector_lease, "me/1")
    fence = Fence(KEYS.collector_lease, "me/1") if how == "fenced" else None
    reuse = first if how == "over-our-own" else None
    redis_client.config_resetstat()
    store.publish(make_snapshot(["a", "b"], TOOLS, created_at=NOW + 15), reuse_tool_stats=reuse, fence=fence)
    renames = 1 if how == "over-our-own" else 2  # the tool statistics hash is left alone when reused
    calls = _calls(redis_client, "multi", "exec", "rename")
    assert calls["multi"] == 1 and calls["exec"] == 1, f"the swap must be one MULTI/EXEC, Redis ran {calls}"
    assert calls["rename"] == renames
    got = store.read_all()
    assert got is not None and got.meta.created_at == NOW + 15 and sorted(got.destinations) == ["a", "b"]


def _staging_keys(redis_client: redis.Redis) -> list[bytes]:
    return [k for k in redis_client.keys("*") if b":staging:" in k]


@pytest.mark.parametrize("dest_ids", [["a", "b"], []], ids=["destinations", "no-destinations"])
def test_publishing_over_our_own_snapshot_leaves_its_tool_stats_hash_alone(
        store: SnapshotStore, redis_client: redis.Redis, dest_ids: list[str]) -> None:
    first = store.publish(make_snapshot(["a"], TOOLS))
    redis_client.hset(KEYS.tool_stats, "marker", "untouched")
    second = store.publish(make_snapshot(dest_ids, TOOLS, created_at=NOW + 15), reuse_tool_stats=first)
    assert second != first
    assert redis_client.hget(KEYS.tool_stats, "marker") == b"untouched"
    redis_client.hdel(KEYS.tool_stats, "marker")
    got = store.read_all()
    assert got is not None and got.meta.created_at == NOW + 15 and sorted(got.destinations) == dest_ids
    assert got.tool_stats == TOOLS
    assert _staging_keys(redis_client) == []


def test_publishing_over_someone_elses_snapshot_writes_everything(store: SnapshotStore,
                                                                  redis_client: redis.Redis) -> None:
    first = store.publish(make_snapshot(["a"], TOOLS))
    store.publish(make_snapshot(["x"], {}, created_at=NOW + 1))  # another writer, without tool statistics
    store.publish(make_snapshot(["a", "b"], TOOLS, created_at=NOW + 15), reuse_tool_stats=first)
    got = store.read_all()
    assert got is not None and got.tool_stats == TOOLS and sorted(got.destinations) == ["a", "b"]
    assert _staging_keys(redis_client) == []


# -- Redis unreachable -------------------------------------------------------------------
@pytest.fixture
def dead_store() -> SnapshotStore:
    port = free_port()  # nothing listens there
    return SnapshotStore(connect_redis(f"redis://:hunter2@127.0.0.1:{port}/0", 0.2), KeySchema("t"))


@pytest.mark.parametrize(
    ("call", "action"),
    [
        (lambda s: s.read_for_rank(), "reading the snapshot"),
        (lambda s: s.read_all(), "reading the snapshot"),
        (lambda s: s.read_meta(), "reading the snapshot metadata"),
        (lambda s: s.publish(make_snapshot(["a"])), "publishing a snapshot"),
    ],
)
def test_unreachable_redis_raises_clear_store_error(dead_store: SnapshotStore, call, action: str) -> None:
    with pytest.raises(StoreError) as info:
        call(dead_store)
    message = str(info.value)
    port = dead_store.client.connection_pool.connection_kwargs["port"]
    assert message.startswith(f"Redis at redis://127.0.0.1:{port}/0 failed while {action}: ")
    assert "hunter2" not in message
    assert "\n" not in message and "Traceback" not in message
    # raised "from None": no chained redis-py traceback
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_ping_is_false_not_an_exception_when_unreachable(dead_store: SnapshotStore) -> None:
    assert dead_store.ping() is False


def test_ping_true_when_reachable(store: SnapshotStore) -> None:
    assert store.ping() is True


def test_invalid_redis_url_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="invalid Redis URL"):
        connect_redis("nosuchscheme://:pw@host/0", 0.5)


def test_read_for_rank_reads_its_candidates_charges_with_the_snapshot(store: SnapshotStore,
                                                                      redis_client: redis.Redis,
                                                                      network_writes: list[int]) -> None:
    """The charges come in the snapshot's own MULTI/EXEC, the candidates'
    sums only, and a new snapshot read again with them."""
    inflight = InflightStore(redis_client, KEYS, max_age_s=600)
    store.publish(make_snapshot(["d1", "d2"]))
    for k, dest in enumerate(("d1", "d1", "d2", "d3")):
        inflight.charge(Charge(dest, 2, 1, NOW - k, f"j{k}"))
    read = inflight.rank_read(["d1", "d2", "d1"], "default", "j0", NOW)
    store.read_for_rank([], read)  # keeps the snapshot
    redis_client.ping()
    network_writes.clear()
    view = store.read_for_rank(["tool:x"], read)
    assert len(network_writes) == 1
    assert view.charges.loads == {"d1": ChargeLoad(2, 4, 2), "d2": ChargeLoad(1, 2, 1)}
    assert view.charges.own == Charge("d1", 2, 1, NOW, "j0")
    store.publish(make_snapshot(["d1"], created_at=NOW + 5))
    view = store.read_for_rank([], read)
    assert view.meta is not None and view.meta.created_at == NOW + 5
    assert view.charges.loads["d1"].count == 2


def test_a_destination_whose_figures_cannot_be_read_is_left_out(store: SnapshotStore,
                                                               redis_client: redis.Redis) -> None:
    """Figures written by hand, or with a NaN a collector let through, must
    not fail every rank read (a 500 for every job): that destination is
    left out, as if the snapshot did not hold it; the others are read."""
    store.publish(Snapshot(meta=SnapshotMeta(created_at=1000.0), destinations={
        "good": DestinationFigures(id="good", queued=1.0)}))
    redis_client.hset(store.keys.destinations, mapping={"bad": b'{"id": "bad", "queued": "lots"}',
                                                        "worse": b"not json"})
    assert set(store.read_all().destinations) == {"good"}  # type: ignore[union-attr]
    assert set(store.read_overview().destinations) == {"good"}
    assert set(store.read_for_rank().destinations) == {"good"}


@pytest.mark.parametrize(("field", "garbage"), [
    ("created_at", b"soon"), ("created_at", b"nan"), ("destinations", b"\xff\xfe"), ("sources", b"[1, 2"),
])
def test_snapshot_metadata_that_cannot_be_read_is_no_snapshot_not_an_error(
        store: SnapshotStore, redis_client: redis.Redis, field: str, garbage: bytes) -> None:
    # Written by hand while debugging, say: every endpoint answered 500.
    from tpv_broker.api import create_app
    from tpv_broker.config.settings import load_config

    store.publish(make_snapshot(["pulsar_de", "pulsar_uk"], TOOLS))
    redis_client.hset(KEYS.snapshot_meta, field, garbage)
    assert store.read_meta() is None and store.read_all() is None
    app = create_app(load_config(environ={}), store=store, clock=lambda: NOW).test_client()
    resp = app.post("/api/rank", json={"job": {"tool_id": "bwa"}, "destinations": [{"id": "pulsar_uk"},
                                                                                    {"id": "pulsar_de"}]})
    assert resp.status_code == 200 and resp.get_json()["degraded"] is True, resp.get_data(as_text=True)
    assert resp.get_json()["destinations"] == ["pulsar_uk", "pulsar_de"]
    assert app.get("/ready").status_code == 503
    assert app.get("/").status_code == 200 and app.get("/metrics").status_code == 200


def test_a_tools_statistics_that_cannot_be_read_are_left_out(store: SnapshotStore, redis_client: redis.Redis) -> None:
    from tpv_broker.api import create_app
    from tpv_broker.config.settings import load_config

    fastp = "toolshed.g2.bx.psu.edu/repos/iuc/fastp/fastp/0.23.4+galaxy0"
    store.publish(make_snapshot(["pulsar_de", "pulsar_uk"], {f"tool:{fastp}": TOOLS[fastp]}))
    redis_client.hset(KEYS.tool_stats, f"tool:{fastp}", b'[["pulsar_de", 12]]')
    view = store.read_for_rank([f"tool:{fastp}"])
    assert view.tool_stats == {f"tool:{fastp}": {}}
    app = create_app(load_config(environ={}), store=store, clock=lambda: NOW).test_client()
    resp = app.post("/api/rank", json={"job": {"tool_id": fastp}, "destinations": [{"id": "pulsar_uk"},
                                                                                  {"id": "pulsar_de"}]})
    assert resp.status_code == 200 and resp.get_json()["degraded"] is False, resp.get_data(as_text=True)
