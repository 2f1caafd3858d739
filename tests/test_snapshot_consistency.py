"""A reader never sees a half-written snapshot, on a real redis-server: a
client ranks in a loop while a collector republishes as fast as it can, and
its reads and answers come from both of the generations that alternate."""

from __future__ import annotations

import random
import threading

import redis

from tpv_broker.api.app import create_app
from tpv_broker.config.api_settings import ApiSettings
from tpv_broker.config.ranking_settings import InflightSettings
from tpv_broker.config.settings import BrokerConfig
from tpv_broker.core.models import DestinationFigures, Snapshot, SnapshotMeta, ToolFigures
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

N = 50
IDS = [f"dest_{i:02d}" for i in range(N)]
PUBLISHES = 200


def _snapshot(generation: int) -> Snapshot:
    """Even generations queue i jobs on dest_i, odd ones N-1-i: the two give
    exactly opposite orders, and any mix of them gives neither. Live figures
    (sources, live_at), or the rank core would leave every destination
    unscored, in the order it was sent; no free cores, or the queues shorter
    than the free cores would tie."""
    forward = generation % 2 == 0
    at = 1_000_000.0 + generation
    return Snapshot(
        meta=SnapshotMeta(created_at=at, destinations=N, tools=1),
        destinations={
            d: DestinationFigures(
                id=d,
                status="online",
                queued=float(i if forward else N - 1 - i),
                cpus_free=0,
                metrics_at=at,
                live_at=at,
                sources={"queue_by_destination": at},
            )
            for i, d in enumerate(IDS)
        },
        tool_stats={"bwa": {d: ToolFigures(count=generation) for d in IDS}},
    )


def _publisher(store: SnapshotStore, done: threading.Event, stop: threading.Event) -> None:
    try:
        for generation in range(1, PUBLISHES + 1):
            if stop.is_set():
                return
            store.publish(_snapshot(generation))
    finally:
        done.set()


def _start_publisher(redis_client: redis.Redis) -> tuple[threading.Thread, threading.Event, threading.Event]:
    """The collector, on a client of its own: (thread, done, stop). Whoever
    starts it sets ``stop`` and joins it in a ``finally``, so a failing test
    does not leave it publishing into the next one."""
    done, stop = threading.Event(), threading.Event()
    writer = SnapshotStore(redis.Redis(connection_pool=redis_client.connection_pool), KeySchema("cons"))
    thread = threading.Thread(target=_publisher, args=(writer, done, stop))
    thread.start()
    return thread, done, stop


def test_store_reads_are_never_a_mix(redis_client: redis.Redis) -> None:
    store = SnapshotStore(redis_client, KeySchema("cons"))
    store.publish(_snapshot(0))
    thread, done, stop = _start_publisher(redis_client)
    reads, generations = 0, set()
    try:
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
    finally:
        stop.set()
        thread.join()
    assert reads > 0
    # The reads really did straddle publishes.
    assert len(generations) > 1


def test_rank_answers_are_never_a_mix(redis_client: redis.Redis) -> None:
    store = SnapshotStore(redis_client, KeySchema("cons"))
    store.publish(_snapshot(0))
    # No in-flight charges: each answer would move the next one's first choice.
    config = BrokerConfig(api=ApiSettings(max_snapshot_age_s=10**9), inflight=InflightSettings(enabled=False))
    app = create_app(config, store=store, clock=lambda: 1_000_000.0 + PUBLISHES)
    client = app.test_client()
    # Sent in neither generation's order: an answer that ignored the figures
    # (unscored, in the order sent) is neither of them either.
    sent = random.Random(0).sample(IDS, N)
    body = {"job": {"tool_id": "bwa", "cores": 1, "mem": 1}, "destinations": [{"id": d} for d in sent]}
    forward, backward = IDS, IDS[::-1]
    thread, done, stop = _start_publisher(redis_client)
    seen = {"forward": 0, "backward": 0}
    try:
        while not done.is_set():
            answer = client.post("/api/rank", json=body).get_json()
            assert answer["degraded"] is False
            order = answer["destinations"]
            assert order in (forward, backward), "an answer is neither generation's order (a mix of two snapshots?)"
            seen["forward" if order == forward else "backward"] += 1
    finally:
        stop.set()
        thread.join()
    # The answers really did straddle publishes: both generations ranked some.
    assert seen["forward"] > 0 and seen["backward"] > 0, f"answers from one generation only: {seen}"
