"""The client against the real API (the app factory served on loopback, a
real redis-server): its requests are understood and the answer is applied."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import redis

from tpv_broker.api import create_app
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore
from tpv_broker_client import BrokerClient

from .test_api import CANDIDATES, EXPECTED, NOW, config, snapshot
from .test_client_rank import Dest, Tool, names, warnings_of
from .web_helpers import serving


@pytest.fixture
def api(redis_client: redis.Redis) -> Iterator[tuple[str, SnapshotStore]]:
    store = SnapshotStore(redis_client, KeySchema("t"))
    with serving(create_app(config(), store=store, clock=lambda: NOW)) as url:
        yield url, store


def test_the_apis_order_is_applied(api, caplog):
    url, store = api
    store.publish(snapshot())
    cands = [Dest(i) for i in CANDIDATES]  # equal tag scores: TPV's order is the input order
    out = BrokerClient(url).rank(cands, names(cores=4, mem=8, tool=Tool()))
    assert [d.id for d in out] == EXPECTED
    assert all(a is b for a, b in zip(out, sorted(cands, key=lambda d: EXPECTED.index(d.id)), strict=True))
    assert warnings_of(caplog) == []


def test_no_snapshot_means_a_degraded_answer_and_tpvs_order(api, caplog):
    url, _ = api
    cands = [Dest(i) for i in CANDIDATES]
    assert BrokerClient(url).rank(cands, names(cores=4, mem=8)) == cands
    (warning,) = warnings_of(caplog)
    assert "answered degraded: no snapshot in Redis yet" in warning


def test_every_fact_the_client_sends_is_accepted(api, caplog):
    url, store = api
    store.publish(snapshot())
    caplog.set_level(logging.INFO)

    class Attrs:
        def get_dataset_attributes(self, datasets: object) -> dict:
            return {1: {"object_store_id": "object_store_germany", "size": 5e9},
                    2: {"object_store_id": None, "size": 1}}

    cands = [Dest("pulsar_de", 2, {"latitude": 50.1, "longitude": 8.7, "handle": object()}), Dest("pulsar_fr", 1)]
    out = BrokerClient(url, object_stores={"object_store_germany": {"latitude": 50.1, "longitude": 8.7}}).rank(
        cands, names(cores=4, mem=8, gpus=0, helpers=Attrs()))
    # Alone, pulsar_fr would come first (test_api); 5 GB of input next to
    # pulsar_de and its better tag score move it ahead: the facts arrived.
    assert [d.id for d in out] == ["pulsar_de", "pulsar_fr"]
    assert warnings_of(caplog) == []
    plain = BrokerClient(url).rank([Dest("pulsar_de"), Dest("pulsar_fr")], names(cores=4, mem=8))
    assert [d.id for d in plain] == ["pulsar_fr", "pulsar_de"]
