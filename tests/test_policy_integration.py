"""Site policy (issue 23, docs/policy.md) through the real API on a real
redis-server, under gunicorn, and from a real influxd: explain shows the
cap, the seconds of staging and the grams, and validates against the
response schema; a tenant's own caps replace the destination's for its
jobs; the status page names the cap; a burst from several threads never
puts more than the cap plus the in-flight window on a capped destination;
the pulsar_carbon_intensity preset lands on the aliased destination
without making it live."""

from __future__ import annotations

import concurrent.futures
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from flask.testing import FlaskClient

from tpv_broker.api import create_app
from tpv_broker.api.responses import CapExplanation, RankResponse
from tpv_broker.collector.cycle import collect_once
from tpv_broker.collector.influx import InfluxQLClient
from tpv_broker.config.settings import BrokerConfig, load_config
from tpv_broker.core.charges import Charge
from tpv_broker.core.geo import EARTH_RADIUS_KM, great_circle_km
from tpv_broker.core.models import DestinationFigures, Snapshot, SnapshotMeta
from tpv_broker.devtools.servers import InfluxServer
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .processes import serving
from .web_helpers import PageReader

NOW = 1_700_000_000.0
PREFIX = "policy"
EU, FR, OWN = "eu-token-0123456789abcdef", "fr-token-0123456789abcdef", "own-token-0123456789abcdef"
# 3000 km east of (0, 0) along the equator: 3000 / (2 pi x 6371.0088 / 360) degrees
FAR_LONGITUDE = 3000 / (2 * 3.141592653589793 * EARTH_RADIUS_KM / 360)


def _figures(dest_id: str, now: float = NOW, **kw: Any) -> DestinationFigures:
    base: dict[str, Any] = {"status": "online", "queued": 0, "running": 1, "cpus_total": 128, "cpus_free": 64,
                            "mem_total_gb": 512, "mem_free_gb": 256, "median_queue_s": 5, "median_run_s": 600,
                            "live_at": now, "sources": {"queue_by_destination": now}}
    return DestinationFigures(id=dest_id, **{**base, **kw})


def _publish(store: SnapshotStore, *figures: DestinationFigures, now: float = NOW) -> None:
    store.publish(Snapshot(meta=SnapshotMeta(created_at=now, destinations=len(figures)),
                           destinations={f.id: f for f in figures}))


def _config(tmp_path: Path, body: str) -> BrokerConfig:
    path = tmp_path / "config.yaml"
    path.write_text(f"redis:\n  key_prefix: {PREFIX}\n{body}")
    return load_config(path, environ={})


def _post(api: FlaskClient, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = api.post("/api/rank?explain=1", json=body, headers=headers)
    answer: dict[str, Any] = resp.get_json()  # the charge is written once the answer is read
    assert resp.status_code == 200, answer
    RankResponse.model_validate(answer)  # the whole answer, against the published schema
    assert not answer["degraded"], answer
    return answer


def _terms(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["term"]: t["raw"] for t in entry.get("terms", [])}


# -- explain: cap, staging seconds, grams -----------------------------------------------------------
EXPLAIN_YAML = f"""
api:
  max_snapshot_age_s: 1000000
destinations:
  capped: {{latitude: 0, longitude: 0, caps: {{max_jobs: 10, at_cap_factor: 1}}}}
  near: {{latitude: 0, longitude: 0, caps: {{max_jobs: 20}}}}
  far: {{latitude: 0, longitude: {FAR_LONGITUDE}}}
  nom: {{}}
object_stores:
  os_eu: {{latitude: 0, longitude: 0}}
scoring:
  terms:
    finish_time: {{weight: 3, scale_s: 60, cap_s: 86400}}
    fit_now: {{weight: 1, unknown_score: 0.5}}
    staging_time: {{weight: 1, scale_s: 60, cap_s: 61380}}
    carbon: {{weight: 1, watts_per_core: 12}}
  staging:
    throughput_mb_s:
      os_eu: {{near: 400}}
"""


def test_explain_shows_the_cap_the_staging_seconds_and_the_grams(redis_client: redis.Redis,
                                                                  tmp_path: Path) -> None:
    assert great_circle_km(0.0, 0.0, 0.0, FAR_LONGITUDE) == pytest.approx(3000.0)
    config = _config(tmp_path, EXPLAIN_YAML)
    store = SnapshotStore(redis_client, KeySchema(PREFIX))
    _publish(store,
             _figures("capped", running=10, carbon_intensity=300),  # 0 + 10 + 0 = 10 jobs of 10: at its cap
             _figures("near", running=18, carbon_intensity=100),  # 18 of 20: 0.9, x 0.75
             _figures("far", running=1),  # no cap, no carbon figure
             DestinationFigures(id="nom", in_config=True))
    api = create_app(config, store=store, clock=lambda: NOW + 1).test_client()
    answer = _post(api, {"job": {"tool_id": "bwa", "cores": 4, "mem": 8, "id": 1},
                         "destinations": [{"id": d} for d in ("nom", "capped", "far", "near")],
                         "datasets": [{"object_store_id": "os_eu", "size": 4e9}],
                         # config's coordinates win: the request's only fill gaps
                         "object_stores": {"os_eu": {"latitude": 0, "longitude": FAR_LONGITUDE}}})
    # far (70.5), and near (x 0.75: its 81.9 points count 61.4), under their caps, by score; capped
    # after them, though its score is the best (79.6, at_cap_factor 1); nom (no metrics) last
    assert answer["destinations"] == ["far", "near", "capped", "nom"]
    entries = {e["id"]: e for e in answer["explain"]}
    assert [entries[d]["group"] for d in answer["destinations"]] == ["scored", "scored", "at_cap", "no_metrics"]
    # the cap entry, as CapExplanation describes it
    assert CapExplanation.model_validate(entries["capped"]["cap"]).model_dump() == {
        "cap": "max_jobs", "limit": 10.0, "usage": 1.0, "jobs": 10.0, "queued": 0.0, "running": 10.0,
        "score_factor": 1.0}
    assert entries["capped"]["score"] > entries["far"]["score"] > entries["near"]["score"]
    assert entries["near"]["cap"] == {"cap": "max_jobs", "limit": 20.0, "usage": 0.9, "jobs": 18.0, "queued": 0.0,
                                      "running": 18.0, "score_factor": 0.75}
    assert "cap" not in entries["far"] and "cap" not in entries["nom"] and "terms" not in entries["nom"]
    assert entries["capped"]["reason"].startswith("at its cap, after those under theirs: max_jobs 10: at 100% ")
    assert "(near its cap, x 0.75: max_jobs 20: at 90% " in entries["near"]["reason"]
    # near's score is its terms' total x 0.75: the contributions add up to the unbent total
    near_total = sum(t["contribution"] for t in entries["near"]["terms"])
    assert entries["near"]["score"] == pytest.approx(0.75 * near_total, abs=0.01)
    # staging: 4e9 B = 4000 MB; near by the table 400 MB/s: 10 s; capped 0 km from os_eu, 100 MB/s: 40 s;
    # far 3000 km: 100 / (1 + 3) = 25 MB/s: 160 s. finish_time shows the same part.
    for dest, seconds in (("near", 10.0), ("capped", 40.0), ("far", 160.0)):
        terms = _terms(entries[dest])
        assert terms["staging_time"] == {"bytes": 4e9, "staging_s": seconds}, dest
        assert terms["finish_time"]["staging_s"] == seconds, dest
    # carbon: 4 cores x 600 s x 12 W / 3.6e6 = 0.008 kWh; x 100 = 0.8 g, x 300 = 2.4 g, far: unknown
    grams = {d: _terms(entries[d])["carbon"]["grams_co2e"] for d in ("near", "capped", "far")}
    assert grams == {"near": 0.8, "capped": 2.4, "far": None}
    assert _terms(entries["near"])["carbon"]["energy_kwh"] == 0.008


# -- a tenant's own caps --------------------------------------------------------------------------------
TENANT_YAML = f"""
api:
  max_snapshot_age_s: 1000000
  auth_tokens: [{OWN}]
  tenants:
    usegalaxy-eu: {{auth_tokens: [{EU}]}}
    usegalaxy-fr:
      auth_tokens: [{FR}]
      caps: {{d1: {{max_jobs: 1000}}}}
destinations:
  d1: {{caps: {{max_jobs: 10}}}}
  d2: {{}}
"""


def test_a_tenants_own_caps_replace_the_destinations_for_its_jobs_only(redis_client: redis.Redis,
                                                                       tmp_path: Path) -> None:
    config = _config(tmp_path, TENANT_YAML)
    store = SnapshotStore(redis_client, KeySchema(PREFIX))
    # d1 the better (shorter queue), with 10 jobs running: at the destination's cap of 10
    _publish(store, _figures("d1", running=10), _figures("d2", running=10, median_queue_s=600))
    api = create_app(config, store=store, clock=lambda: NOW + 1).test_client()

    def rank(token: str, job_id: int) -> dict[str, Any]:
        return _post(api, {"job": {"tool_id": "bwa", "cores": 4, "mem": 8, "id": job_id},
                           "destinations": [{"id": "d1"}, {"id": "d2"}]}, token)

    eu = rank(EU, 1)
    assert eu["destinations"] == ["d2", "d1"]
    assert eu["explain"][1]["group"] == "at_cap" and eu["explain"][1]["cap"]["limit"] == 10
    # fr's allocation on d1 is its own 1000 jobs: 10 of 1000, d1 first for fr's jobs
    fr = rank(FR, 1)
    assert fr["destinations"] == ["d1", "d2"]
    assert fr["explain"][0]["group"] == "scored"
    assert fr["explain"][0]["cap"] == {"cap": "max_jobs", "limit": 1000.0, "usage": 0.01, "jobs": 10.0,
                                       "queued": 0.0, "running": 10.0, "score_factor": 1.0}
    # the counts are everyone's: fr's job, charged to d1, counts for the others' caps (11 of 10)
    own = rank(OWN, 1)
    assert own["destinations"] == ["d2", "d1"]
    assert own["explain"][1]["cap"]["jobs"] == 11.0 and own["explain"][1]["cap"]["usage"] == 1.1
    assert rank(EU, 2)["destinations"] == ["d2", "d1"]


# -- the status page ------------------------------------------------------------------------------------
STATUS_YAML = """
api:
  max_snapshot_age_s: 1000000
destinations:
  capped: {caps: {max_jobs: 10}}
  near: {caps: {max_running: 10}}
  plain: {}
"""


def _rows(api: FlaskClient) -> dict[str, dict[str, Any]]:
    resp = api.get("/")
    assert resp.status_code == 200
    return {str(r["id"]): r for r in PageReader(resp.get_data(as_text=True)).rows}


def test_the_status_page_names_the_cap(redis_client: redis.Redis, tmp_path: Path) -> None:
    config = _config(tmp_path, STATUS_YAML)
    store = SnapshotStore(redis_client, KeySchema(PREFIX))
    _publish(store, _figures("capped", running=10), _figures("near", running=8),
             _figures("plain", running=1, median_queue_s=3600))
    api = create_app(config, store=store, clock=lambda: NOW + 1).test_client()
    rows = _rows(api)
    assert [rows[d]["state"] for d in ("near", "plain", "capped")] == ["scored", "scored", "at_cap"]
    capped = rows["capped"]["cells"]
    assert capped[2] == "at cap"
    assert capped[-1].startswith("at its cap, after those under theirs: max_jobs 10: at 100% (0 queued, 10 running, "
                                 "in-flight charges counted); score ")
    # near: 8 running of 10, at soft_from: no word of its cap yet
    assert "cap" not in rows["near"]["cells"][-1]
    # a job placed on near (the best under its cap) shows as running there (64 free cores): 9 of 10
    answer = _post(api, {"job": {"tool_id": "bwa", "cores": 4, "mem": 8, "id": 7},
                         "destinations": [{"id": d} for d in ("plain", "near", "capped")]})
    assert answer["destinations"][0] == "near"
    near = _rows(api)["near"]["cells"]
    assert near[-1].endswith(" (near its cap, x 0.75: max_running 10: at 90% (0 queued, 9 running, in-flight "
                             "charges counted))"), near[-1]


# -- a burst under gunicorn -----------------------------------------------------------------------------
CAP = 6
SNAPSHOT_JOBS = 2  # capped: 0 queued, 2 running
THREADS = 6
JOBS_PER_THREAD = 8  # 48 jobs, each thread its own ids


def _burst(base: str, token: str) -> Counter[str]:
    """THREADS senders at once, each JOBS_PER_THREAD jobs one after another;
    where each job was placed first."""

    def send(first_id: int) -> list[str]:
        placed = []
        with requests.Session() as http:
            for k in range(JOBS_PER_THREAD):
                body = {"job": {"tool_id": "bwa", "cores": 4, "mem": 4, "id": first_id + k},
                        "destinations": [{"id": d} for d in ("b", "c", "capped")]}
                resp = http.post(f"{base}/api/rank", json=body, headers={"Authorization": f"Bearer {token}"},
                                 timeout=10)
                assert resp.status_code == 200, resp.text
                answer = resp.json()
                assert not answer["degraded"], answer
                placed.append(answer["destinations"][0])
        return placed

    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        runs = [pool.submit(send, 1000 * (t + 1)) for t in range(THREADS)]
        return Counter(d for run in runs for d in run.result())


def _publish_burst(store: SnapshotStore) -> None:
    now = time.time()
    # capped: the shortest queue and 1000 free cores (48 4-core jobs take 192): best for every job
    _publish(store, _figures("capped", now, running=SNAPSHOT_JOBS, cpus_total=1024, cpus_free=1000,
                             mem_total_gb=4096, mem_free_gb=4000, median_queue_s=5),
             _figures("b", now, median_queue_s=600), _figures("c", now, median_queue_s=600), now=now)


def test_a_burst_never_overshoots_a_cap_by_more_than_the_requests_in_flight(redis_url: str,
                                                                           redis_client: redis.Redis,
                                                                           tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    # eu: the destination's cap; fr: its own cap far above the burst (as good as none)
    path.write_text(f"redis:\n  url: {redis_url}\n  key_prefix: {PREFIX}\napi:\n  tenants:\n"
                    f"    usegalaxy-eu: {{auth_tokens: [{EU}]}}\n"
                    f"    usegalaxy-fr: {{auth_tokens: [{FR}], caps: {{capped: {{max_jobs: 100000}}}}}}\n"
                    f"destinations:\n  capped: {{caps: {{max_jobs: {CAP}}}}}\n")
    store = SnapshotStore(redis_client, KeySchema(PREFIX))
    with serving(path, tmp_path) as base:
        _publish_burst(store)
        capped = _burst(base, EU)
        charges = [Charge.from_member(m) for m in redis_client.zrange(f"{PREFIX}:inflight", 0, -1)]
        redis_client.flushall()
        _publish_burst(store)
        uncapped = _burst(base, FR)
    total = THREADS * JOBS_PER_THREAD
    assert sum(capped.values()) == sum(uncapped.values()) == total
    # Room under the cap: 6 - 2 = 4 jobs; below 0.8 of the cap (4.8 jobs) nothing bends the score, so
    # the first 4 go there whatever the races. Each request sees the charges written before it: at most
    # the requests in flight at once (one per sender thread) can slip past the line.
    room = CAP - SNAPSHOT_JOBS
    assert room <= capped["capped"] <= room + THREADS, capped
    # every job placed there first is charged there
    assert sum(c is not None and c.destination == "capped" for c in charges) == capped["capped"]
    # without the cap, the best destination takes (nearly) the whole burst: 48 jobs x 4 cores fit its 1000
    assert uncapped["capped"] >= total - THREADS, uncapped
    assert uncapped["capped"] > 3 * (room + THREADS), (capped, uncapped)


# -- the carbon preset on influxd -----------------------------------------------------------------------
def _influx_config(tmp_path: Path, influx: InfluxServer, db: str) -> BrokerConfig:
    return _config(tmp_path, f"""
influxdb: {{url: "{influx.url}", database: {db}, timeout_s: 2}}
collector:
  presets: [queue_by_destination, pulsar_carbon_intensity]
destinations:
  pulsar_it01: {{aliases: [vhost_it]}}
  pulsar_de: {{}}
api:
  max_snapshot_age_s: 1000000
scoring:
  terms:
    queue_wait: {{weight: 3, scale_s: 60, cap_s: 604800}}
    carbon: {{weight: 1, watts_per_core: 12}}
""")


def test_the_carbon_preset_lands_on_the_aliased_destination_and_shows_in_grams(
        influx_server: InfluxServer, influx_db: str, redis_client: redis.Redis, tmp_path: Path) -> None:
    now = int(time.time())
    influx_server.write_lines(influx_db, [
        # pulsar-util's lines: no tags, the endpoint's vhost a string field; the newest counts
        f'pulsar_carbon_intensity carbon_intensity=500,price_day_ahead=90,destination_id="vhost_it" {now - 600}',
        f'pulsar_carbon_intensity carbon_intensity=250,price_day_ahead=80,destination_id="vhost_it" {now - 60}',
        # (one second apart: without tags, lines of one time are one point to InfluxDB, the last line wins)
        f'pulsar_carbon_intensity carbon_intensity=400,price_day_ahead=95,destination_id="pulsar_de" {now - 59}',
        f"queue_by_destination,destination_id=pulsar_de,state=queued count=2 {now - 30}",
        f"queue_by_destination,destination_id=pulsar_de,state=running count=4 {now - 30}",
    ])
    config = _influx_config(tmp_path, influx_server, influx_db)
    store = SnapshotStore(redis_client, KeySchema(PREFIX))
    report = collect_once(config, InfluxQLClient(config.influxdb), store, time.time)
    assert report.published and report.errors == [], report.errors
    snap = store.read_all()
    assert snap is not None
    assert set(snap.destinations) == {"pulsar_it01", "pulsar_de"}  # vhost_it is pulsar_it01
    it, de = snap.destinations["pulsar_it01"], snap.destinations["pulsar_de"]
    assert (it.carbon_intensity, de.carbon_intensity) == (250.0, 400.0)
    # a carbon figure alone does not make a destination live
    assert it.live_at is None and "pulsar_carbon_intensity" in it.sources
    assert de.live_at == pytest.approx(now - 30)

    api = create_app(config, store=store).test_client()
    body = {"job": {"tool_id": "bwa", "cores": 4, "mem": 8, "id": 1},
            "destinations": [{"id": "pulsar_it01"}, {"id": "pulsar_de"}]}
    entries = {e["id"]: e for e in _post(api, body)["explain"]}
    assert entries["pulsar_it01"]["group"] == "no_metrics" and "terms" not in entries["pulsar_it01"]
    # 4 cores x 3600 s (the default run time) x 12 W / 3.6e6 = 0.048 kWh x 400 g/kWh = 19.2 g
    assert _terms(entries["pulsar_de"])["carbon"]["grams_co2e"] == 19.2

    # once pulsar_it01 reports its queue it is scored, and its grams come from the aliased intensity
    influx_server.write_lines(influx_db, [f"queue_by_destination,destination_id=pulsar_it01,state=queued count=1 "
                                          f"{int(time.time()) - 1}"])
    report = collect_once(config, InfluxQLClient(config.influxdb), store, time.time)
    assert report.published and report.errors == [], report.errors
    entries = {e["id"]: e for e in _post(api, {**body, "job": {**body["job"], "id": 2}})["explain"]}
    # 0.048 kWh x 250 = 12 g; 0.048 x 400 = 19.2 g
    grams = {d: _terms(e)["carbon"] for d, e in entries.items()}
    assert {d: g["grams_co2e"] for d, g in grams.items()} == {"pulsar_it01": 12.0, "pulsar_de": 19.2}
    assert {d: g["carbon_intensity_g_per_kwh"] for d, g in grams.items()} == {"pulsar_it01": 250.0,
                                                                              "pulsar_de": 400.0}
