"""A reader never sees a half-written snapshot, on a real redis-server: a
client ranks in a loop while a collector republishes as fast as it can."""

from __future__ import annotations

import threading

import redis

from tpv_broker.api.app import create_app
from tpv_broker.config.settings import ApiSettings, BrokerConfig
from tpv_broker.core.models import DestinationFigures, Snapshot, SnapshotMeta, ToolFigures
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

N = 50
IDS = [f"dest_{i:02d}" for i in range(N)]
PUBLISHES = 200


def _snapshot(generation: int) -> Snapshot:
    """Even generations queue i jobs on dest_i, odd ones N-1-i: the two give
    exactly opposite orders, and any mix of them gives neither."""
    forward = generation % 2 == 0
    return Snapshot(
        meta=SnapshotMeta(created_at=1_000_000.0 + generation, destinations=N, tools=1),
        destinations={
            d: DestinationFigures(
                id=d,
                status="online",
                queued=float(i if forward else N - 1 - i),
                cpus_free=8,
                metrics_at=1_000_000.0 + generation,
            )
            for i, d in enumerate(IDS)
        },
        tool_stats={"bwa": {d: ToolFigures(count=generation) for d in IDS}},
    )


def _publisher(store: SnapshotStore, done: threading.Event) -> None:
    try:
        for generation in range(1, PUBLISHES + 1):
            store.publish(_snapshot(generation))
    finally:
        done.set()


def test_store_reads_are_never_a_mix(redis_client: redis.Redis) -> None:
    store = SnapshotStore(redis_client, KeySchema("cons"))
    store.publish(_snapshot(0))
    done = threading.Event()
    writer = SnapshotStore(redis.Redis(connection_pool=redis_client.connection_pool), KeySchema("cons"))
    thread = threading.Thread(target=_publisher, args=(writer, done))
    thread.start()
    reads, generations = 0, set()
    while not done.is_set():
        view = store.read_for_rank(["bwa"])
        assert view.meta is not None
        gen = view.meta.created_at - 1_000_000.0
        # Every figure must come from the generation the metadata names.
        assert {d.metrics_at for d in view.destinations.values()} == {view.meta.created_at}
        assert {f.count for f in view.tool_stats["bwa"].values()} == {gen}
        assert len(view.destinations) == N
        generations.add(gen)
        reads += 1
    thread.join()
    assert reads > 0
    # The reads really did straddle publishes.
    assert len(generations) > 1


def test_rank_answers_are_never_a_mix(redis_client: redis.Redis) -> None:
    store = SnapshotStore(redis_client, KeySchema("cons"))
    store.publish(_snapshot(0))
    config = BrokerConfig(api=ApiSettings(max_snapshot_age_s=10**9))
    app = create_app(config, store=store, clock=lambda: 1_000_000.0 + PUBLISHES)
    client = app.test_client()
    body = {"job": {"tool_id": "bwa", "cores": 1, "mem": 1}, "destinations": [{"id": d} for d in IDS]}
    forward, backward = IDS, IDS[::-1]
    done = threading.Event()
    writer = SnapshotStore(redis.Redis(connection_pool=redis_client.connection_pool), KeySchema("cons"))
    thread = threading.Thread(target=_publisher, args=(writer, done))
    thread.start()
    seen = {"forward": 0, "backward": 0}
    while not done.is_set():
        answer = client.post("/api/rank", json=body).get_json()
        assert answer["degraded"] is False
        order = answer["destinations"]
        assert order in (forward, backward), "an answer mixed two snapshots"
        seen["forward" if order == forward else "backward"] += 1
    thread.join()
    assert sum(seen.values()) > 0
