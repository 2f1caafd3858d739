"""The prototype's data end to end: test_data.influxql into a real influxd,
one collector cycle into a real Redis, then the prototype's request
(example_request1.json) through the API with ``?explain=1``.

The expected order, by hand, from the data and the default model
(weights queue_wait 3, run_time 2, fit_now 3, data_locality 1, tpv_score 1;
sum 10; a cost scores 1 - ln(1 + cost/scale) / ln(1 + cap/scale), with
ln(1 + 604800/60) = 9.21841 for seconds and ln(1 + 20000/100) = 5.30330 for km):

Job: trinity, 4 cores, 16 GB, 1 gpu. The request's queued_job_count and
running_job_count are ignored: the broker uses the metrics.

queue_wait and run_time: trinity has statistics on condor_tpv and pulsar_in
only, so every candidate here falls back to its destination's all-tools
medians (level ``destination``); each has one tool in the data, so these are
that tool's medians. wait = median_queue + ahead x median_run / running, where
ahead = max(0, queued + 1 - free slots) (the + 1 is the job itself) and free
slots = how many 4-core 16 GB jobs the free capacity holds now,
min(floor(cores free / 4), floor(GB free / 16)); memory limits every one here.
Free GB = HTCondor MiB / 1024:

  dest         queued running  free cores/GB  slots            ahead  median q/run (tool)  wait
  pulsar_us01     6      6     22 / 42.97     min(5, 2) = 2      5     6 / 5000 (hisat2)    6 + 5 x 5000/6 = 4172.7
  pulsar_uk       7      8     19 / 37.11     min(4, 2) = 2      6    14 / 5000 (hisat2)   14 + 6 x 5000/8 = 3764
  pulsar_de       5      5     24 / 46.88     min(6, 2) = 2      4     4 / 2000 (bowtie2)   4 + 4 x 2000/5 = 1604
  pulsar_fr       4     10     14 / 27.34     min(3, 1) = 1      4     5 / 3000 (bwa)       5 + 4 x 3000/10 = 1205
  condor_us      12      8     16 / 31.25     min(4, 1) = 1     12    12 / 5000 (spades)   12 + 12 x 5000/8 = 7512

  dest         queue: 1 - ln(1 + wait/60) / 9.21841          run: 1 - ln(1 + run/60) / 9.21841
  pulsar_us01  1 - ln 70.5444 / .. = 1 - 4.25624/9.21841 = 0.53829   1 - ln 84.3333 / .. = 0.51892
  pulsar_uk    1 - ln 63.7333 / .. = 1 - 4.15471/9.21841 = 0.54930   0.51892
  pulsar_de    1 - ln 27.7333 / .. = 1 - 3.32264/9.21841 = 0.63957   1 - ln 34.3333 / .. = 0.61641
  pulsar_fr    1 - ln 21.0833 / .. = 1 - 3.04848/9.21841 = 0.66930   1 - ln 51 / .. = 0.57348
  condor_us    1 - ln 126.2   / .. = 1 - 4.83787/9.21841 = 0.47519   0.51892

fit_now: every candidate has the cores (>= 4) and the memory (>= 16 GB) free,
so the worst known fraction is 1; but the job asks for a gpu and no
destination reports GPUs, so none is known to fit (fits None):
min(unknown_score 0.5, 0.5 x 1) = 0.5 for all.

data_locality: 6.25 TB of inputs: 0.05 TB San Francisco, 0.2 TB Paris, 1 TB Tokyo,
5 TB central Australia (80 % of the bytes); size-weighted mean great-circle km
(the destinations' coordinates come from the request's context):
  us01 11893.2 -> 0.09737; uk 13745.1 -> 0.07029; de 13268.1 -> 0.07690;
  fr 13693.0 -> 1 - ln(137.93)/5.30330 = 1 - 4.92675/5.30330 = 0.07100; condor_us 12207.6 -> 0.09249

tpv_score: none sent -> 0.5 for all.

total x 100 = 10 x (3 queue + 2 run + 3 x 0.5 + locality + 0.5):
  pulsar_de    3 x 0.63957 + 2 x 0.61641 + 1.5 + 0.07690 + 0.5 = 1.91871 + 1.23282 + 2.07690 = 5.22843 -> 52.28
  pulsar_fr    3 x 0.66930 + 2 x 0.57348 + 1.5 + 0.07100 + 0.5 = 2.00790 + 1.14696 + 2.07100 = 5.22586 -> 52.26
  pulsar_uk    3 x 0.54930 + 2 x 0.51892 + 1.5 + 0.07029 + 0.5 = 1.64790 + 1.03784 + 2.07029 = 4.75603 -> 47.56
  pulsar_us01  3 x 0.53829 + 2 x 0.51892 + 1.5 + 0.09737 + 0.5 = 1.61487 + 1.03784 + 2.09737 = 4.75008 -> 47.50
  condor_us    3 x 0.47519 + 2 x 0.51892 + 1.5 + 0.09249 + 0.5 = 1.42557 + 1.03784 + 2.09249 = 4.55590 -> 45.56
pulsar_de edges out pulsar_fr by 0.03 points, a near tie. With the former drain
(queued x run / running) fr led by 0.68: fr's 28000 MiB hold one 16 GB job, which
only offsets the job's own + 1, so its drain stays (4 + 1 - 1) x 3000/10 = 1200 s;
de's two slots take one more, so its drain drops from 5 x 2000/5 = 2000 s to
(5 + 1 - 2) x 2000/5 = 1600 s: 3 x (0.63957 - 0.61620) = +0.70 points.
(fit_now's 0.5 costs every candidate the same 15 points.)
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis

from tpv_broker.api import create_app
from tpv_broker.collector.cycle import collect_once
from tpv_broker.collector.influx import InfluxQLClient
from tpv_broker.config.server_settings import InfluxDBSettings, RedisSettings
from tpv_broker.config.settings import BrokerConfig
from tpv_broker.devtools.servers import InfluxServer
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .helpers import DATA, load_prototype_data

EXPECTED_ORDER = ["pulsar_de", "pulsar_fr", "pulsar_uk", "pulsar_us01", "condor_us"]
EXPECTED_SCORES = {"pulsar_de": 52.28, "pulsar_fr": 52.26, "pulsar_uk": 47.56, "pulsar_us01": 47.50,
                   "condor_us": 45.56}


def prototype_request() -> dict[str, Any]:
    req: dict[str, Any] = json.loads((DATA / "example_request1.json").read_text())
    return req


def as_rank_request(req: dict[str, Any]) -> dict[str, Any]:
    """The prototype's /process_data shape -> /api/rank's."""
    return {
        "job": req["job_info"],
        "destinations": [{"id": d["id"], "context": {"latitude": d["latitude"], "longitude": d["longitude"]}}
                         for d in req["destinations"]],
        "datasets": list(req["datasets"].values()),
        "object_stores": req["objectstores"],
    }


@pytest.fixture
def config(influx_server: InfluxServer, influx_db: str) -> BrokerConfig:
    # No destinations or object stores in config: coordinates come from the request.
    return BrokerConfig(influxdb=InfluxDBSettings(url=influx_server.url, database=influx_db, timeout_s=5),
                        redis=RedisSettings(key_prefix="proto"))


@pytest.fixture
def store(config: BrokerConfig, influx_server: InfluxServer, influx_db: str,
          redis_client: redis.Redis) -> SnapshotStore:
    """The prototype's data collected once into Redis."""
    load_prototype_data(influx_server, influx_db)
    store = SnapshotStore(redis_client, KeySchema("proto"))
    report = collect_once(config, InfluxQLClient(config.influxdb), store, time.time)
    assert report.published and report.errors == [], report.summary()
    return store


def rank_explained(store: SnapshotStore, config: BrokerConfig, body: dict[str, Any]) -> dict[str, Any]:
    client = create_app(config, store=store).test_client()
    resp = client.post("/api/rank?explain=1", json=body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    answer: dict[str, Any] = resp.get_json()
    assert answer["degraded"] is False
    return answer


def term(entry: dict[str, Any], name: str) -> dict[str, Any]:
    found = [t for t in entry["terms"] if t["term"] == name]
    assert len(found) == 1, (name, entry["terms"])
    return found[0]


def test_the_data_as_the_ranking_sees_it(store: SnapshotStore) -> None:
    snap = store.read_all()
    assert snap is not None
    # trinity has statistics on condor_tpv and pulsar_in only; a built-in-style id: level tool only
    assert set(snap.tool_stats["tool:trinity"]) == {"condor_tpv", "pulsar_in"}
    assert not any(f.startswith(("tool_unversioned:", "tool_short:")) for f in snap.tool_stats)
    fr = snap.destinations["pulsar_fr"]
    assert (fr.queued, fr.running, fr.median_queue_s, fr.median_run_s) == (4, 10, 5, 3000)
    assert (fr.cpus_free, fr.mem_free_gb, fr.gpus_free) == (14, pytest.approx(28000 / 1024), None)


def test_example_request_order_and_explanation(store: SnapshotStore, config: BrokerConfig) -> None:
    answer = rank_explained(store, config, as_rank_request(prototype_request()))
    assert answer["destinations"] == EXPECTED_ORDER
    explained = answer["explain"]
    assert [(e["position"], e["id"], e["group"]) for e in explained] == [
        (i, d, "scored") for i, d in enumerate(EXPECTED_ORDER, start=1)
    ]
    assert {e["id"]: e["score"] for e in explained} == pytest.approx(EXPECTED_SCORES, abs=0.01)
    # every candidate: wait and run time from the destination's all-tools figures (no trinity history)
    for e in explained:
        assert (term(e, "queue_wait")["level"], term(e, "run_time")["level"]) == ("destination", "destination"), e["id"]

    top = explained[0]
    assert top["id"] == "pulsar_de"
    assert [t["term"] for t in top["terms"]] == ["queue_wait", "run_time", "fit_now", "data_locality", "tpv_score"]
    # contributions (weight x score / 10, as points of 100) add up to the score
    assert sum(t["contribution"] for t in top["terms"]) == pytest.approx(top["score"], abs=0.03)

    qw = term(top, "queue_wait")
    # 2 slots (min(24/4 = 6, floor(46.875/16) = 2)); ahead = 5 + 1 - 2 = 4; drain = 4 x 2000 / 5 = 1600
    # wait = 4 + 1600 = 1604 s; score 0.63957; contribution 3 x 0.63957 / 10 = 19.19
    assert qw["raw"] == {"expected_wait_s": 1604.0, "median_queue_s": 4.0, "queued": 5.0, "running": 5.0,
                         "free_slots": 2.0, "typical_run_s": 2000.0, "drain_s": 1600.0}
    assert (qw["score"], qw["weight"], qw["contribution"], qw["level"]) == (
        pytest.approx(0.6396, abs=1e-4), 3.0, pytest.approx(19.19, abs=0.01), "destination")

    rt = term(top, "run_time")
    # bowtie2's 2000 s stands in for trinity: 0.61641; 2 x 0.61641 / 10 = 12.33
    assert rt["raw"] == {"median_run_s": 2000.0}
    assert (rt["score"], rt["weight"], rt["contribution"], rt["level"]) == (
        pytest.approx(0.6164, abs=1e-4), 2.0, pytest.approx(12.33, abs=0.01), "destination")

    fit = term(top, "fit_now")
    # 24 free cores >= 4; 48000 MiB / 1024 = 46.875 GB >= 16; a gpu asked, none reported: not known
    # to fit -> min(0.5, 0.5 x 1) = 0.5; 3 x 0.5 / 10 = 15
    assert fit["raw"] == {"cores_needed": 4.0, "cores_free": 24.0, "mem_gb_needed": 16.0, "mem_gb_free": 46.875,
                          "gpus_needed": 1.0, "gpus_free": None, "fits": None}
    assert (fit["score"], fit["weight"], fit["contribution"], fit["level"]) == (0.5, 3.0, 15.0, None)

    loc = term(top, "data_locality")
    # (50e9 x 9133.4 + 200e9 x 477.9 + 1e12 x 9331.9 + 5e12 x 14608.3) / 6.25e12 = 13268.1 km -> 0.07690
    assert loc["raw"] == {"mean_km": pytest.approx(13268.1, abs=0.2), "bytes": 6.25e12}
    assert (loc["score"], loc["weight"], loc["contribution"], loc["level"]) == (
        pytest.approx(0.0769, abs=1e-4), 1.0, pytest.approx(0.77, abs=0.01), None)

    tpv = term(top, "tpv_score")
    assert (tpv["raw"], tpv["score"], tpv["weight"], tpv["contribution"], tpv["level"]) == (
        {"tpv_score": None}, 0.5, 1.0, 5.0, None)

    assert top["reason"].startswith("score 52.3: ")
    for part in ("waits ~27 min (destination)", "runs ~33 min (destination)", "free capacity unknown",
                 "data ~13268 km away"):
        assert part in top["reason"]

    # the runner-up: fr's one slot (min(14/4 = 3, floor(27.34/16) = 1)) takes only the job itself:
    # ahead = 4 + 1 - 1 = 4; wait = 5 + 4 x 3000 / 10 = 1205 s -> 0.66930
    second = explained[1]
    assert term(second, "queue_wait")["raw"] == {
        "expected_wait_s": 1205.0, "median_queue_s": 5.0, "queued": 4.0, "running": 10.0, "free_slots": 1.0,
        "typical_run_s": 3000.0, "drain_s": 1200.0}
    assert term(second, "queue_wait")["score"] == pytest.approx(0.6693, abs=1e-4)
    assert (term(second, "fit_now")["raw"]["fits"], term(second, "fit_now")["score"]) == (None, 0.5)


def test_the_prototype_endpoint_gives_the_same_order(store: SnapshotStore, config: BrokerConfig) -> None:
    client = create_app(config, store=store).test_client()
    resp = client.post("/process_data", json=prototype_request())
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json() == {"sorted_destinations": EXPECTED_ORDER}


def test_destinations_with_trinity_history_use_the_tool_level(store: SnapshotStore, config: BrokerConfig) -> None:
    """The same request with the two destinations that ran trinity added
    (coordinates in their context: Freiburg and Mumbai).

      condor_tpv  trinity: median queue 3.5 s, run 1800 s (level tool); 8 queued, 4 running;
                  32 free cores / 4 = 8, 64000 MiB = 62.5 GB / 16 = 3.9 -> 3 slots; ahead = 8 + 1 - 3 = 6
                  wait = 3.5 + 6 x 1800/4 = 2703.5 -> 1 - ln(46.0583)/9.21841 = 1 - 3.82991/9.21841 = 0.58454
                  run 1 - ln(31)/9.21841 = 0.62749; cores and memory enough, no GPU figures: fit 0.5;
                  13380.9 km -> 0.07532
                  10 x (3 x 0.58454 + 2 x 0.62749 + 3 x 0.5 + 0.07532 + 0.5) = 50.84 -> third, after
                  de (52.28) and fr (52.26), before uk (47.56)
      pulsar_in   trinity: median queue 6 s, run 3000 s (level tool); 6 queued, 4 running;
                  4 free cores / 4 = 1 but 8000 MiB = 7.8125 GB / 16 -> 0 slots; ahead = 6 + 1 - 0 = 7
                  wait = 6 + 7 x 3000/4 = 5256 -> 1 - ln(88.6)/9.21841 = 1 - 4.48413/9.21841 = 0.51357
                  run 0.57348
                  7.8125 GB free < 16, a known shortfall: fits False, 0.5 x 7.8125/16 = 0.24414
                  7988.2 km -> 0.17165 (the nearest to the Australian data)
                  10 x (3 x 0.51357 + 2 x 0.57348 + 3 x 0.24414 + 0.17165 + 0.5) = 40.92 -> last:
                  it cannot fit the 16 GB job now, ranked lower, not dropped
    """
    body = as_rank_request(prototype_request())
    body["destinations"] += [
        {"id": "condor_tpv", "context": {"latitude": 47.9990, "longitude": 7.8421}},
        {"id": "pulsar_in", "context": {"latitude": 19.0760, "longitude": 72.8777}},
    ]
    answer = rank_explained(store, config, body)
    assert answer["destinations"] == ["pulsar_de", "pulsar_fr", "condor_tpv", "pulsar_uk", "pulsar_us01",
                                      "condor_us", "pulsar_in"]
    by_id = {e["id"]: e for e in answer["explain"]}
    assert by_id["condor_tpv"]["score"] == pytest.approx(50.84, abs=0.01)
    assert by_id["pulsar_in"]["score"] == pytest.approx(40.92, abs=0.01)
    for dest_id in ("condor_tpv", "pulsar_in"):
        assert (term(by_id[dest_id], "queue_wait")["level"], term(by_id[dest_id], "run_time")["level"]) == (
            "tool", "tool")
    qw_tpv = term(by_id["condor_tpv"], "queue_wait")["raw"]
    assert (qw_tpv["median_queue_s"], qw_tpv["free_slots"], qw_tpv["drain_s"], qw_tpv["expected_wait_s"]) == (
        3.5, 3.0, 2700.0, 2703.5)
    qw_in = term(by_id["pulsar_in"], "queue_wait")["raw"]
    assert (qw_in["free_slots"], qw_in["drain_s"], qw_in["expected_wait_s"]) == (0.0, 5250.0, 5256.0)
    assert term(by_id["condor_tpv"], "run_time")["raw"] == {"median_run_s": 1800.0}
    fit_in = term(by_id["pulsar_in"], "fit_now")
    assert (fit_in["raw"]["fits"], fit_in["score"]) == (False, pytest.approx(0.2441, abs=1e-4))
