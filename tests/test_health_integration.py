"""Destination health on real servers (issue 22, docs/health.md): error
lines written to a real influxd and placements made through the real API
(the charge script on a real redis-server) turn a black hole excluded
through ``collect_once``; the API ranks it last (group ``excluded``, its
health in ``?explain=1``); after ``exclude_s`` it is on probation and lets
``probe_share`` of the jobs through (each job's decision its own, the same
when ranked again); its probes bring it back to healthy after
``report_lag_s``. A restarted collector goes on from the live snapshot's
verdicts; a network-wide bad day excludes nobody. The admin's override
through the CLI (pin drained or healthy, list, unpin, an unknown id, bad
input, no Redis); ``/metrics``' health and placements gauges, per tenant;
with no error preset and no pin, nothing of it shows; the health store's
buckets and pins.

The collector and the API get an injected clock, near real time (InfluxDB
answers relative to its own now()), moved forward past the short windows
configured here. The pure judge's table is in test_health.py."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result
from flask.testing import FlaskClient

from tpv_broker.api import create_app
from tpv_broker.api.responses import RankResponse
from tpv_broker.cli import main
from tpv_broker.collector.cycle import CycleReport, collect_once
from tpv_broker.collector.influx import InfluxQLClient
from tpv_broker.collector.metrics import CollectorMetrics
from tpv_broker.collector.state import CollectorState
from tpv_broker.config.settings import BrokerConfig, load_config
from tpv_broker.core.charges import Charge
from tpv_broker.core.health import probe_draw
from tpv_broker.core.models import DestinationFigures, DestinationHealth, Snapshot, SnapshotMeta
from tpv_broker.devtools.servers import InfluxServer, free_port
from tpv_broker.store.inflight import PLACEMENT_BUCKET_S, RETURN_AFTER_S, InflightStore, placement_field
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .test_api_metrics import scrape, value

PREFIX = "healthit"
BH, A, B = "pulsar_bh", "pulsar_a", "pulsar_b"
LIVE_PRESETS = ["queue_by_destination", "htcondor_cluster_usage"]
ERRORS = "errored_jobs_by_destination"
# Short enough to go through in a test with a clock moved by hand; the
# defaults (docs/health.md) are hours.
HEALTH = {"window_s": 600, "min_jobs": 10, "exclude_s": 900, "probe_share": 0.3, "probe_jobs": 5,
          "report_lag_s": 300, "recent_s": 300}


class Clock:
    """The collector's and the API's clock, moved by the test."""

    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


def config_of(influx: InfluxServer, db: str, presets: list[str], **health: float) -> BrokerConfig:
    return BrokerConfig.model_validate({
        "influxdb": {"url": influx.url, "database": db, "timeout_s": 5},
        "redis": {"key_prefix": PREFIX},
        "collector": {"presets": presets, "health": {**HEALTH, **health}},
        # The clock moves ~20 min past the figures written at the start: they must still count as live.
        "api": {"max_snapshot_age_s": 86400},
        "scoring": {"max_metrics_age_s": 86400},
        "inflight": {"max_age_s": 86400, "reflect_lag_s": 0},
    })


def start_time() -> float:
    """A bucket start at least a minute in the past: the points written
    "now" on the test's clock are in InfluxDB's past too, and the probation
    below begins in the middle of a placement bucket."""
    return float(int((time.time() - 60) // PLACEMENT_BUCKET_S) * PLACEMENT_BUCKET_S)


def write_capacity(influx: InfluxServer, db: str, at: float) -> None:
    """The black hole looks best: an empty queue and every core free (its
    jobs fail in seconds); a and b are busy."""
    lines = []
    for i, (dest, queued, free) in enumerate(((BH, 0, 4000), (A, 60, 8), (B, 80, 4))):
        lines += [f"queue_by_destination,destination_id={dest},state=queued count={queued} {int(at)}",
                  f"queue_by_destination,destination_id={dest},state=running count=10 {int(at)}",
                  # a second apart: the destination is a field, and InfluxDB keeps one point per series and time
                  f'htcondor_cluster_usage,classad=machine total_detected_cpus={free + 64},unclaimed_cpus={free},'
                  f'total_memory=1048576,unclaimed_memory=524288,destination_id="{dest}",'
                  f'destination_status="online" {int(at) - i}']
    influx.write_lines(db, lines)


def write_errors(influx: InfluxServer, db: str, at: float, **counts: int) -> None:
    # As gxadmin's hourly `tsvquery errored-jobs 1` writes them.
    influx.write_lines(db, [f"{ERRORS},destination_id={d},state=errored count={n} {int(at)}"
                            for d, n in counts.items()])


@pytest.fixture
def store(redis_client: redis.Redis) -> SnapshotStore:
    return SnapshotStore(redis_client, KeySchema(PREFIX))


def collect(config: BrokerConfig, store: SnapshotStore, clock: Clock, state: CollectorState) -> CycleReport:
    report = collect_once(config, InfluxQLClient(config.influxdb), store, clock, state)
    assert report.published and report.errors == [], report.summary()
    return report


def health_of(store: SnapshotStore) -> dict[str, DestinationHealth | None]:
    snapshot = store.read_all()
    assert snapshot is not None
    return {d: f.health for d, f in snapshot.destinations.items()}


def rank(api: FlaskClient, job_id: int, headers: Mapping[str, str] | None = None,
         ids: tuple[str, ...] = (A, B, BH), mem: float = 1) -> dict[str, Any]:
    resp = api.post("/api/rank?explain=1", headers=dict(headers or {}),
                    json={"job": {"id": job_id, "tool_id": "bwa", "cores": 1, "mem": mem},
                          "destinations": [{"id": d} for d in ids]})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()  # reading the whole answer runs the charge (api.routes._then)
    assert body["degraded"] is False
    # Every answer, health entries included, as /openapi.json says it is.
    RankResponse.model_validate(body)
    return body


def explained(body: dict[str, Any], dest: str) -> dict[str, Any]:
    return next(e for e in body["explain"] if e["id"] == dest)


def placed(store: SnapshotStore, dest: str, since: float = 0.0) -> float:
    """The jobs the charge script counted on ``dest`` in the buckets from
    ``since`` on (those the collector has not dropped yet)."""
    buckets = store.health().read(since, drop_old=False).placements.get(dest, [])
    return sum(n for at, n in buckets if at >= since)


# -- a black hole: excluded, probed, back -------------------------------------------------------------
def test_a_black_hole_is_excluded_probed_and_let_back_in(influx_server: InfluxServer, influx_db: str,
                                                         store: SnapshotStore) -> None:
    t0 = start_time()
    clock = Clock(t0)
    config = config_of(influx_server, influx_db, [*LIVE_PRESETS, ERRORS])
    write_capacity(influx_server, influx_db, t0)
    state = CollectorState.new(config)
    # the collector daemon's /metrics, fed each cycle's report as the daemon does
    metrics = CollectorMetrics(clock)
    collect = counted(metrics)
    # No error report yet, no placement: nobody is judged, the answers are those without health.
    assert collect(config, store, clock, state).transitions == []
    assert set(health_of(store).values()) == {None}
    api = create_app(config, store=store, clock=clock).test_client()

    # It attracts every job: 20 placed there through the API's charge.
    clock.at = t0 + 10
    for job in range(1, 21):
        assert rank(api, job)["destinations"][0] == BH
    assert placed(store, BH) == 20
    # ... and gxadmin reports all 20 failed.
    write_errors(influx_server, influx_db, t0 + 20, **{BH: 20})

    # 20 of 20 failed, the others placed nothing (share 0): Wilson 0.839 - 0 >= 0.5: excluded.
    clock.at = t0 + 60
    report = collect(config, store, clock, state)
    assert [(t.destination, t.before, t.after.state) for t in report.transitions] == [(BH, "healthy", "excluded")]
    bh = health_of(store)[BH]
    assert bh is not None and (bh.state, bh.since, bh.errors, bh.placements, bh.share) == (
        "excluded", t0 + 60, 20, 20, 1.0)
    assert health_of(store)[A] is None  # nothing placed there, no errors: not judged

    clock.at = t0 + 70
    body = rank(api, 100)
    assert body["destinations"] == [A, B, BH]
    entry = explained(body, BH)
    assert entry["group"] == "excluded" and "score" not in entry
    assert entry["reason"] == bh.reason and entry["reason"].startswith("excluded since ")
    assert entry["health"]["state"] == "excluded" and entry["health"]["errors"] == 20
    assert entry["health"]["placements"] == 20 and entry["health"]["share"] == 1.0
    # nothing is placed on it while excluded
    assert placed(store, BH) == 20

    # A collector started anew goes on from the live snapshot: still excluded, same since. (Its error report
    # is out of the 600 s window by now: judged afresh, 0 errors of the 20 placed would be healthy.)
    clock.at = t0 + 700
    restarted = CollectorState.new(config)
    # Its first cycle finds Redis down: nothing published, and the verdicts are read once it is back.
    down = SnapshotStore(redis.Redis(port=free_port(), socket_timeout=1), KeySchema(PREFIX))
    missed = collect_once(config, InfluxQLClient(config.influxdb), down, clock, restarted)
    assert not missed.published and "not publishing until the live health verdicts can be read" in \
        missed.errors[-1], missed.errors
    assert collect(config, store, clock, restarted).transitions == []
    kept = health_of(store)[BH]
    assert kept is not None and (kept.state, kept.since, kept.reason) == ("excluded", bh.since, bh.reason)
    assert kept.errors == 0
    assert rank(api, 101)["destinations"][-1] == BH

    # exclude_s (900) after it was excluded: probation, counted from now.
    clock.at = t0 + 959
    collect(config, store, clock, restarted)
    assert health_of(store)[BH].state == "excluded"
    clock.at = t0 + 960
    report = collect(config, store, clock, restarted)
    assert [(t.destination, t.before, t.after.state) for t in report.transitions] == [(BH, "excluded", "probation")]
    probation = health_of(store)[BH]
    assert probation is not None and (probation.state, probation.counted_from, probation.probe_share) == (
        "probation", t0 + 960, 0.3)

    # probe_share 0.3 of the jobs go there: exactly those whose draw is under it, about 90 of 300
    # (binomial sd sqrt(300 * 0.3 * 0.7) = 7.9: within 4 sd, 58 to 122). Each of the others would have
    # gone there too (nothing else comes near it): it is last for them, excluded.
    clock.at = t0 + 970
    first = {}
    for job in range(1000, 1300):
        body = rank(api, job)
        first[job] = body["destinations"][0] == BH
        expected = probe_draw("default", str(job)) < 0.3
        assert first[job] is expected, job
        entry = explained(body, BH)
        if expected:
            assert entry["group"] == "scored" and "this job is one of its probes" in entry["reason"]
        else:
            assert entry["group"] == "excluded" and entry["reason"].startswith("on probation, and this job is not")
            assert body["destinations"][-1] == BH
    probes = sum(first.values())
    assert 58 <= probes <= 122, probes
    # a job ranked again gets the same decision, and is not counted twice
    for job in range(1000, 1030):
        assert (rank(api, job)["destinations"][0] == BH) is first[job]
    assert placed(store, BH, since=t0 + 900) == probes

    # 40 s into probation: enough probes, none failed, but no error report could have counted them yet.
    # They are counted although their bucket [t0 + 900, t0 + 1200) began before probation did.
    clock.at = t0 + 1000
    collect(config, store, clock, restarted)
    waiting = health_of(store)[BH]
    assert waiting is not None
    assert (waiting.state, waiting.since, waiting.placements, waiting.errors) == ("probation", t0 + 960, probes, 0)
    # report_lag_s (300) into probation, but the probes' bucket ends at t0 + 1200: errors of probes placed
    # up to then may be reported only by t0 + 1500. Until then they prove nothing.
    clock.at = t0 + 1260
    assert collect(config, store, clock, restarted).transitions == []
    assert health_of(store)[BH].state == "probation"
    # Reported, still no new error: healthy again, counted from probation's start.
    clock.at = t0 + 1500
    report = collect(config, store, clock, restarted)
    assert [(t.destination, t.before, t.after.state) for t in report.transitions] == [(BH, "probation", "healthy")]
    healthy = health_of(store)[BH]
    assert healthy is not None
    assert (healthy.state, healthy.since, healthy.counted_from) == ("healthy", t0 + 1500, t0 + 960)
    clock.at = t0 + 1510
    body = rank(api, 5000)
    assert body["destinations"][0] == BH and explained(body, BH)["health"]["state"] == "healthy"
    # each transition counted once
    assert transition_counts(metrics) == {(BH, "healthy", "excluded"): 1, (BH, "excluded", "probation"): 1,
                           (BH, "probation", "healthy"): 1}


def test_jobs_that_come_back_expose_a_black_hole_before_any_error_report(
        influx_server: InfluxServer, influx_db: str, store: SnapshotStore) -> None:
    """Galaxy resubmits a job that failed, and ranks it again: the broker
    counts it as returned by where it went, and judges on it at the next
    cycle, while gxadmin's error report is an hour away (none is written
    here). The same with ``count_returns: false``: nothing is judged."""
    t0 = start_time()
    clock = Clock(t0)
    write_capacity(influx_server, influx_db, t0)
    for count_returns, expected in ((True, "excluded"), (False, None)):
        config = config_of(influx_server, influx_db, [*LIVE_PRESETS, ERRORS], count_returns=count_returns)
        store.client.flushdb()
        clock.at = t0
        state = CollectorState.new(config)
        collect(config, store, clock, state)
        api = create_app(config, store=store, clock=clock).test_client()
        clock.at = t0 + 10
        for job in range(1, 21):
            assert rank(api, job)["destinations"][0] == BH
        # Each fails within seconds; resubmitted, TPV sends it to the other endpoints (say, an environment
        # without the black hole): 20 returns on it. One more comes back asking for more memory (resized by
        # TPV after running out): not the destination's fault, not counted.
        clock.at = t0 + 40
        for job in range(1, 21):
            assert rank(api, job, ids=(A, B))["destinations"][0] in (A, B)
        assert rank(api, 21)["destinations"][0] == BH
        clock.at = t0 + 50
        assert rank(api, 21, ids=(A, B), mem=4)["destinations"][0] in (A, B)
        clock.at = t0 + 60
        report = collect(config, store, clock, state)
        bh = health_of(store)[BH]
        if expected is None:
            # placements alone, no failure: judged healthy, nothing changes
            assert report.transitions == [] and bh is not None and (bh.state, bh.errors) == ("healthy", 0)
            assert rank(api, 100)["destinations"][0] == BH
            continue
        # 20 of 21 failed (they came back), the others' share 0: Wilson 0.77 - 0 >= 0.5: excluded.
        assert [(t.destination, t.after.state) for t in report.transitions] == [(BH, "excluded")]
        assert bh is not None and (bh.state, bh.errors, bh.returned, bh.placements) == ("excluded", 20, 20, 21)
        assert "20 of 21 jobs failed" in bh.reason and "20 came back to be placed again" in bh.reason
        clock.at = t0 + 70
        body = rank(api, 100)
        assert body["destinations"][-1] == BH
        assert explained(body, BH)["health"]["returned"] == 20


def test_the_charge_script_counts_a_job_that_comes_back_where_it_had_gone(store: SnapshotStore) -> None:
    """A return is counted once per job coming back, against the
    destination of its previous charge, in its own tenant, and only when
    it comes back RETURN_AFTER_S or more after that charge asking for no
    more cores or memory. Placements count jobs: one that comes back to
    where it was is not placed there a second time."""
    inflight = InflightStore(store.client, KeySchema(PREFIX), max_age_s=600)
    t = 1_700_000_100.0  # a bucket start
    later = t + RETURN_AFTER_S
    charges = [
        # (job, tenant, destination, charged at, cores, mem)
        ("moved", "eu", A, t, 1, 1), ("moved", "eu", B, later, 1, 1),  # back from A: returned by A
        ("again", "eu", A, t, 1, 1), ("again", "eu", A, later, 1, 1),  # back to where it failed: returned by A
        ("soon", "eu", A, t, 1, 1), ("soon", "eu", B, later - 0.5, 1, 1),  # ranked twice at once: no return
        ("bigger", "eu", A, t, 1, 1), ("bigger", "eu", B, later, 1, 8),  # resized by TPV: no return
        ("wider", "eu", A, t, 1, 1), ("wider", "eu", B, later, 2, 1),  # more cores: no return
        ("smaller", "eu", A, t, 4, 8), ("smaller", "eu", B, later, 2, 8),  # less: returned by A
        ("twin", "eu", A, t, 1, 1), ("twin", "fr", A, later, 1, 1),  # another Galaxy's job 4711
        ("moved", "eu", A, later + 1, 1, 1),  # back from B a second later: too soon
    ]
    for job, tenant, dest, at, cores, mem in charges:
        inflight.charge(Charge(dest, cores, mem, at, job, tenant=tenant))
    inflight.charge(Charge(A, 1, 1, later, None, tenant="eu"))  # no id: never a return
    inputs = store.health().read(t - 600, drop_old=False)
    assert inputs.returned_by(None) == {A: [(t, 3.0)]}  # moved, again, smaller
    assert inputs.returned_by(frozenset({"fr"})) == {}
    placed = {d: sum(n for _, n in b) for d, b in inputs.placed_by(frozenset({"eu"})).items()}
    # A: the seven jobs' first charges ("again" not twice), the job without id, "moved" back (to A from B);
    # B: moved, soon, bigger, wider, smaller.
    assert placed == {A: 9.0, B: 5.0}
    keys = KeySchema(PREFIX)
    assert store.client.hgetall(keys.health_returns) == {f"{int(t)}:eu:{A}".encode(): b"3"}
    # the counts expire a day after the last one, as the placements
    assert 86400 - 5 <= store.client.ttl(keys.health_returns) <= 86400


def test_a_job_coming_back_again_and_again_from_one_place_counts_once_there(store: SnapshotStore) -> None:
    """As placements count a job once where it went again, returns count
    it once where it came back from again (Galaxy resubmitting it three
    times); back from another place in between, it counts again."""
    inflight = InflightStore(store.client, KeySchema(PREFIX), max_age_s=600)
    t = 1_700_000_100.0
    for i, dest in enumerate((A, A, A, A)):  # placed on A, back from A three times
        inflight.charge(Charge(dest, 1, 1, t + 30 * i, "same", tenant="eu"))
    for i, dest in enumerate((A, B, A, B)):  # A, back from A, B, back from B, A, back from A, B
        inflight.charge(Charge(dest, 1, 1, t + 30 * i, "zigzag", tenant="eu"))
    inputs = store.health().read(t - 600, drop_old=False)
    returned = {d: sum(n for _, n in b) for d, b in inputs.returned_by(None).items()}
    placed = {d: sum(n for _, n in b) for d, b in inputs.placed_by(None).items()}
    assert returned == {A: 1 + 2, B: 1}
    assert placed == {A: 1 + 2, B: 2}
    # where it came back from is kept while it is placed there again, as long as its charge lives
    keys = KeySchema(PREFIX)
    assert store.client.get(keys.health_came_back("eu", "same")) == A.encode()
    assert 600 - 5 <= store.client.ttl(keys.health_came_back("eu", "same")) <= 601


@pytest.mark.parametrize(("steps", "returned", "placed"), [
    # (destination, seconds after the first charge, mem): each a charge of job 7 of eu
    # A; back from A to B; to A again as a resize (more memory: no return, but placed on A anew); back
    # from A to C: A's second return counts
    ([(A, 0, 1), (B, 30, 1), (A, 60, 4), ("c", 90, 4)], {A: 2}, {A: 2, B: 1, "c": 1}),
    # A; ranked again at once (no return); back from A half a minute later: counted
    ([(A, 0, 1), (A, 1, 1), (A, 31, 1)], {A: 1}, {A: 1}),
    # A; placed on B by hand within 5 s (no return); back from B to A: counted for B, and back from A
    # later counts for A
    ([(A, 0, 1), (B, 2, 1), (A, 40, 1), (B, 80, 1)], {B: 1, A: 1}, {A: 2, B: 2}),
])
def test_returns_count_each_stay_at_a_destination_once(store: SnapshotStore, steps: list[tuple[str, float, float]],
                                                       returned: dict[str, float], placed: dict[str, float]) -> None:
    inflight = InflightStore(store.client, KeySchema(PREFIX), max_age_s=600)
    t = 1_700_000_100.0
    for dest, after, mem in steps:
        inflight.charge(Charge(dest, 1, mem, t + after, "7", tenant="eu"))
    inputs = store.health().read(t - 600, drop_old=False)
    assert {d: sum(n for _, n in b) for d, b in inputs.returned_by(None).items()} == returned
    assert {d: sum(n for _, n in b) for d, b in inputs.placed_by(None).items()} == placed


def test_where_a_job_came_back_from_is_per_tenant(store: SnapshotStore) -> None:
    """Job 7 of eu and job 7 of fr both come back from A twice in a row:
    one return each, counted for each tenant (one shared record would
    take fr's first return for eu's second)."""
    inflight = InflightStore(store.client, KeySchema(PREFIX), max_age_s=600)
    t = 1_700_000_100.0
    for i in range(3):
        for tenant in ("eu", "fr"):
            inflight.charge(Charge(A, 1, 1, t + 30 * i, "7", tenant=tenant))
    inputs = store.health().read(t - 600, drop_old=False)
    for tenant in ("eu", "fr"):
        assert inputs.returned_by(frozenset({tenant})) == {A: [(t, 1.0)]}, tenant


@pytest.mark.parametrize("garbage", [b"not json", b"[]", b'{"d": 3}',
                                     b'{"d": "x", "g": "eu", "c": "1", "m": 1, "t": 1}', b"\xff\xfe"])
def test_garbage_under_a_jobs_key_charges_and_counts_no_return(store: SnapshotStore, garbage: bytes) -> None:
    keys = KeySchema(PREFIX)
    inflight = InflightStore(store.client, keys, max_age_s=600)
    store.client.set(keys.inflight_job("eu", "j1"), garbage)
    assert inflight.charge(Charge(A, 1, 1, 1_700_000_100.0, "j1", tenant="eu"))
    assert store.client.hlen(keys.health_returns) == 0
    assert [c.destination for c in inflight.members()] == [A]


def test_a_count_of_another_type_does_not_stop_a_charge(store: SnapshotStore) -> None:
    """Someone replaced the counts with a string, the job's keys with a
    hash: the charge still goes through (the counts are health's, the
    charge steers the ranking)."""
    keys = KeySchema(PREFIX)
    inflight = InflightStore(store.client, keys, max_age_s=600)
    store.client.set(keys.health_placements, b"mine")
    store.client.set(keys.health_returns, b"mine too")
    store.client.hset(keys.health_came_back("eu", "j1"), "x", 1)
    t = 1_700_000_100.0
    assert inflight.charge(Charge(A, 1, 1, t, "j1", tenant="eu"))
    assert inflight.charge(Charge(B, 1, 1, t + 30, "j1", tenant="eu"))
    assert [c.destination for c in inflight.members()] == [B]
    assert store.client.get(keys.health_returns) == b"mine too"
    store.client.hset(keys.inflight_job("eu", "j2"), "x", 1)
    assert inflight.charge(Charge(A, 1, 1, t + 60, "j2", tenant="eu"))
    assert sorted(c.destination for c in inflight.members()) == [A, B]


def counted(metrics: CollectorMetrics) -> Any:
    def collect_and_count(config: BrokerConfig, store: SnapshotStore, clock: Clock,
                          state: CollectorState) -> CycleReport:
        report = collect(config, store, clock, state)
        metrics.observe_cycle(report, 0)
        return report

    return collect_and_count


def transition_counts(metrics: CollectorMetrics) -> dict[tuple[str, str, str], float]:
    """(destination, before, after) -> count, as the daemon's /metrics shows them."""
    return {(s.labels["destination"], s.labels["before"], s.labels["after"]): s.value
            for family in metrics.registry.collect() for s in family.samples
            if s.name == "tpv_broker_collector_health_transitions_total"}


def twenty_placed_on_each(influx: InfluxServer, db: str, store: SnapshotStore, clock: Clock, config: BrokerConfig,
                          t0: float, headers: Mapping[str, str] | None = None) -> CollectorState:
    """A first snapshot, then 20 jobs placed through the API on each of BH,
    A and B (asked one candidate at a time); the collector's state."""
    write_capacity(influx, db, t0)
    state = CollectorState.new(config)
    collect(config, store, clock, state)
    api = create_app(config, store=store, clock=clock).test_client()
    for n, dest in enumerate((BH, A, B)):
        for job in range(20):
            assert rank(api, n * 100 + job, headers, ids=(dest,))["destinations"] == [dest]
    return state


def test_the_network_share_keeps_a_bad_day_from_excluding_anyone(influx_server: InfluxServer, influx_db: str,
                                                                  store: SnapshotStore) -> None:
    """Every endpoint fails 40 % of its jobs (broken user inputs): nobody
    is degraded or excluded. The errors add up per destination over the
    window's reports."""
    t0 = start_time()
    clock = Clock(t0 + 10)
    config = config_of(influx_server, influx_db, [*LIVE_PRESETS, ERRORS])
    # 20 jobs on each, then 8 of each 20 failed, in two reports
    state = twenty_placed_on_each(influx_server, influx_db, store, clock, config, t0)
    write_errors(influx_server, influx_db, t0 + 20, **{BH: 5, A: 3, B: 4})
    write_errors(influx_server, influx_db, t0 + 30, **{BH: 3, A: 5, B: 4})
    clock.at = t0 + 60
    collect(config, store, clock, state)
    verdicts = health_of(store)
    # each: 8 of 20 (lower bound 0.219) against the others' 16 of 40 (0.4): healthy
    assert {d: (v.state, v.errors, v.placements, v.network_share) for d, v in verdicts.items() if v} == {
        d: ("healthy", 8, 20, 0.4) for d in (BH, A, B)}


EU_TOKEN = "eu-token-0123456789abcdef"


def test_a_private_endpoints_failures_stay_out_of_what_every_tenant_sees(influx_server: InfluxServer,
                                                                        influx_db: str, store: SnapshotStore) -> None:
    """A tenant's private endpoint fails 15 of its 20 jobs: the shared
    endpoints' "other endpoints" share, shown to every tenant, is theirs
    alone."""
    t0 = start_time()
    clock = Clock(t0 + 10)
    base = config_of(influx_server, influx_db, [*LIVE_PRESETS, ERRORS])
    config = BrokerConfig.model_validate({**base.model_dump(mode="json"), "api": {
        **base.api.model_dump(mode="json"),
        "tenants": {"usegalaxy-eu": {"auth_tokens": [EU_TOKEN], "private": [BH]}}}})
    state = twenty_placed_on_each(influx_server, influx_db, store, clock, config, t0,
                                  {"Authorization": f"Bearer {EU_TOKEN}"})
    write_errors(influx_server, influx_db, t0 + 20, **{BH: 15, A: 8, B: 8})
    clock.at = t0 + 60
    collect(config, store, clock, state)
    verdicts = health_of(store)
    # a and b: each other's 8 of 20, not (15 + 8) of 40
    assert verdicts[A] is not None and verdicts[B] is not None and verdicts[BH] is not None
    assert (verdicts[A].network_share, verdicts[B].network_share, verdicts[BH].network_share) == (0.4, 0.4, 0.4)


# -- the override through the CLI --------------------------------------------------------------------
def cli(redis_url: str, *args: str, user: str = "alice") -> Result:
    # SUDO_USER: who pins, as `sudo tpv-broker health pin` would say; nothing from the developer's shell.
    env = {"TPV_BROKER_CONFIG": None, "TPV_BROKER_REDIS_URL": redis_url, "TPV_BROKER_REDIS_KEY_PREFIX": PREFIX,
           "SUDO_USER": user}
    result = CliRunner().invoke(main, ["health", *args], env=env)
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize("presets", [LIVE_PRESETS, [*LIVE_PRESETS, ERRORS]], ids=["without-error-presets",
                                                                                  "with-error-presets"])
def test_an_admin_drains_a_destination_and_returns_it(influx_server: InfluxServer, influx_db: str,
                                                      store: SnapshotStore, redis_url: str,
                                                      presets: list[str]) -> None:
    """A drained pin takes effect at the collector's next cycle, with or
    without error counts, names who and why, and goes with unpin."""
    t0 = start_time()
    clock = Clock(t0 + 10)
    config = config_of(influx_server, influx_db, presets)
    write_capacity(influx_server, influx_db, t0)
    state = CollectorState.new(config)
    collect(config, store, clock, state)
    api = create_app(config, store=store, clock=clock).test_client()
    assert rank(api, 1)["destinations"][0] == BH

    before = time.time()
    result = cli(redis_url, "pin", BH, "--drained", "--reason", "storage migration, back Monday")
    assert result.exit_code == 0, result.output
    assert result.output == (f"{BH} pinned drained by alice: storage migration, back Monday (the collector applies "
                             f"it at its next cycle)\n")
    listed = cli(redis_url, "list")
    assert listed.exit_code == 0 and listed.output.splitlines()[-1] == (
        f"pinned, not in the snapshot yet (the collector applies pins at its next cycle): {BH}")

    clock.at = t0 + 20
    report = collect(config, store, clock, state)
    assert [(t.destination, t.before, t.after.state) for t in report.transitions] == [(BH, "healthy", "drained")]
    drained = health_of(store)[BH]
    assert drained is not None and drained.pin is not None
    assert drained.state == "drained" and drained.pin.by == "alice" and before <= drained.pin.at <= time.time()
    at = time.strftime("%H:%M UTC", time.gmtime(drained.pin.at))
    assert drained.reason == f"drained by alice at {at}: storage migration, back Monday"
    body = rank(api, 2)
    assert body["destinations"] == [A, B, BH]
    entry = explained(body, BH)
    assert (entry["group"], entry["reason"]) == ("excluded", drained.reason)
    assert entry["health"]["pin"]["by"] == "alice"

    listed = cli(redis_url, "list")
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.output.splitlines() if line.startswith(BH))
    assert row.split()[1] == "drained" and row.endswith(drained.reason)
    as_json = json.loads(cli(redis_url, "list", "--json").output)
    assert as_json["destinations"][BH]["state"] == "drained"
    assert as_json["pins"][BH]["by"] == "alice" and as_json["pins"][BH]["reason"] == "storage migration, back Monday"

    # unpinned: back at the next cycle; without error counts not judged at all, with them judged from now
    result = cli(redis_url, "unpin", BH)
    assert result.exit_code == 0 and result.output.startswith(f"{BH} unpinned")
    again = cli(redis_url, "unpin", BH)
    assert again.exit_code == 1 and f"{BH} is not pinned" in again.output
    clock.at = t0 + 30
    report = collect(config, store, clock, state)
    assert [(t.destination, t.before, t.after.state) for t in report.transitions] == [(BH, "drained", "healthy")]
    back = health_of(store)[BH]
    if ERRORS in presets:
        assert back is not None and (back.state, back.counted_from, back.pin) == ("healthy", t0 + 30, None)
    else:
        assert back is None
    assert rank(api, 3)["destinations"][0] == BH
    assert cli(redis_url, "list", "--json").output.count('"pins": {}') == 1


def test_a_healthy_pin_ignores_errors_and_unpinning_counts_from_then(influx_server: InfluxServer, influx_db: str,
                                                                     store: SnapshotStore, redis_url: str) -> None:
    t0 = start_time()
    clock = Clock(t0 + 10)
    config = config_of(influx_server, influx_db, [*LIVE_PRESETS, ERRORS])
    write_capacity(influx_server, influx_db, t0)
    state = CollectorState.new(config)
    collect(config, store, clock, state)
    api = create_app(config, store=store, clock=clock).test_client()
    assert cli(redis_url, "pin", BH, "--healthy", "--reason", "a user's broken workflow", "--by", "bob",
               user="root").exit_code == 0
    for job in range(20):
        assert rank(api, job)["destinations"][0] == BH
    write_errors(influx_server, influx_db, t0 + 20, **{BH: 20})
    clock.at = t0 + 60
    collect(config, store, clock, state)
    pinned = health_of(store)[BH]
    # 20 of 20 failed would exclude it: the pin says healthy
    assert pinned is not None and pinned.state == "healthy" and pinned.reason.startswith(
        "pinned healthy (its errors ignored) by bob at ")
    assert rank(api, 100)["destinations"][0] == BH
    assert cli(redis_url, "unpin", BH).exit_code == 0
    clock.at = t0 + 120
    collect(config, store, clock, state)
    # the 20 of 20 of while it was pinned are not held against it: counted from the unpinning on
    unpinned = health_of(store)[BH]
    assert unpinned is not None and (unpinned.state, unpinned.counted_from, unpinned.errors) == (
        "healthy", t0 + 120, 0)
    assert rank(api, 101)["destinations"][0] == BH


def test_a_pin_of_an_unknown_destination_says_so(influx_server: InfluxServer, influx_db: str,
                                                store: SnapshotStore, redis_url: str) -> None:
    """A typo (or an alias) drains nothing: the admin is told, the pin is
    kept for when the metrics name it."""
    t0 = start_time()
    config = config_of(influx_server, influx_db, LIVE_PRESETS)
    write_capacity(influx_server, influx_db, t0)
    collect(config, store, Clock(t0 + 10), CollectorState.new(config))
    result = cli(redis_url, "pin", "pulsar_bhh", "--drained", "--reason", "maintenance")
    assert result.exit_code == 0
    assert "warning: pulsar_bhh is not a destination of the live snapshot (a typo, or an alias?)" in result.output
    assert set(store.health().pins()) == {"pulsar_bhh"}
    known = cli(redis_url, "pin", BH, "--drained", "--reason", "maintenance")
    assert known.exit_code == 0 and "warning" not in known.output


def test_the_cli_says_when_no_collector_publishes_where_it_pins(store: SnapshotStore, redis_url: str) -> None:
    """Another prefix or database than the collector's (a typo in the
    environment): the pin is written where nobody reads it, and the list
    is not "nothing judged"."""
    no_snapshot = f"no snapshot in Redis at {redis_url} (prefix {PREFIX!r}): is the collector running"
    result = cli(redis_url, "pin", BH, "--drained", "--reason", "maintenance")
    assert result.exit_code == 0 and f"warning: {no_snapshot}" in result.output
    assert "The pin waits for a collector to read it." in result.output
    listed = cli(redis_url, "list")
    assert listed.exit_code == 1 and listed.output.splitlines()[0] == f"pinned: {BH}"
    assert f"error: {no_snapshot}" in listed.output
    as_json = cli(redis_url, "list", "--json")
    assert as_json.exit_code == 1 and json.loads(as_json.output)["snapshot"] is None
    assert list(json.loads(as_json.output)["pins"]) == [BH]


def test_the_cli_without_redis_says_so_in_one_line() -> None:
    result = cli("redis://127.0.0.1:1/0", "pin", BH, "--drained", "--reason", "maintenance")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "pinning a destination" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "problem"), [
    (["pin", "bad id", "--drained", "--reason", "x"], "not a valid destination id"),
    (["pin", "-x", "--drained", "--reason", "x"], "No such option"),
    (["unpin", "pulsar de"], "not a valid destination id"),
    (["pin", BH, "--drained"], "Missing option '--reason'"),
    (["pin", BH, "--drained", "--reason", "  "], "give a reason"),
    (["pin", BH, "--reason", "maintenance"], "say --drained or --healthy"),
    (["pin", BH, "--drained", "--healthy", "--reason", "maintenance"], "say --drained or --healthy, not both"),
])
def test_the_cli_refuses_bad_input(store: SnapshotStore, redis_url: str, args: list[str], problem: str) -> None:
    result = cli(redis_url, *args)
    assert result.exit_code == 2, result.output
    assert problem in result.output
    assert store.health().pins() == {}


# -- /metrics ----------------------------------------------------------------------------------------
EU, FR, OWN = "eu-token-0123456789abcdef", "fr-token-0123456789abcdef", "own-token-0123456789abcdef"


def test_metrics_show_health_and_placements_per_tenant(store: SnapshotStore, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"redis:\n  key_prefix: {PREFIX}\napi:\n  max_snapshot_age_s: 1000000\n"
                    f"  auth_tokens: [{OWN}]\n  tenants:\n"
                    f"    usegalaxy-eu: {{auth_tokens: [{EU}], private: [eu_cluster]}}\n"
                    f"    usegalaxy-fr: {{auth_tokens: [{FR}]}}\n"
                    f"inflight:\n  reflect_lag_s: 0\n")
    config = load_config(path, environ={})
    now = time.time()
    verdicts = {BH: DestinationHealth(state="excluded", since=now - 60, reason="failing"),
                "eu_cluster": DestinationHealth(state="degraded", since=now - 60, reason="slow", score_factor=0.5),
                A: DestinationHealth(state="healthy", since=now - 60)}
    figures = {d: DestinationFigures(id=d, status="online", queued=0, running=1, cpus_total=64, cpus_free=free,
                                     mem_free_gb=128, live_at=now - 5, sources={"queue_by_destination": now - 5},
                                     health=verdicts.get(d))
               for d, free in ((BH, 64), ("eu_cluster", 63), (A, 32), (B, 8))}
    store.publish(Snapshot(meta=SnapshotMeta(created_at=now - 1, destinations=len(figures)), destinations=figures),
                  charges=store.inflight(config.inflight))
    api = create_app(config, store=store).test_client()
    eu, fr = {"Authorization": f"Bearer {EU}"}, {"Authorization": f"Bearer {FR}"}
    # each job charged to whichever is first (never the excluded one), counted by the charge script
    firsts: dict[str, int] = {}
    for job in range(6):
        first = rank(api, job, eu, ids=("eu_cluster", A, B, BH))["destinations"][0]
        firsts[first] = firsts.get(first, 0) + 1
    for job in range(4):
        first = rank(api, job, fr, ids=(A, B, BH))["destinations"][0]
        firsts[first] = firsts.get(first, 0) + 1
    assert BH not in firsts  # excluded: never placed there
    # jobs that came back, as the charge script counts them
    keys = KeySchema(PREFIX)
    store.client.hincrby(keys.health_returns, placement_field(now, "usegalaxy-eu", "eu_cluster"), 2)
    store.client.hincrby(keys.health_returns, placement_field(now, "usegalaxy-fr", A), 1)
    store.client.hincrby(keys.health_returns, placement_field(now - 7200, "usegalaxy-fr", A), 5)  # not last hour

    # eu sees its own private endpoint, fr and a scrape without a token the shared ones only, the
    # operators' token every one
    for headers, sees_eu in ((eu, True), (fr, False), ({"Authorization": f"Bearer {OWN}"}, True), ({}, False)):
        samples = scrape_as(api, headers)
        states = {(dict(labels)["destination"], dict(labels)["state"]): v for (name, labels), v in samples.items()
                  if name == "tpv_broker_destination_health"}
        judged = {BH, A} | ({"eu_cluster"} if sees_eu else set())
        assert {d for d, _ in states} == judged, headers
        for dest in judged:
            ones = [s for (d, s), v in states.items() if d == dest and v == 1.0]
            assert ones == [verdicts[dest].state], (dest, states)
            assert sum(v for (d, _), v in states.items() if d == dest) == 1.0
        placements = {dict(labels)["destination"]: v for (name, labels), v in samples.items()
                      if name == "tpv_broker_destination_placements_last_hour"}
        assert placements == {d: float(n) for d, n in firsts.items() if sees_eu or d != "eu_cluster"}, headers
        assert value(samples, "tpv_broker_destination_placements_last_hour", destination=BH) is None
        returns = {dict(labels)["destination"]: v for (name, labels), v in samples.items()
                   if name == "tpv_broker_destination_returns_last_hour"}
        assert returns == ({"eu_cluster": 2.0, A: 1.0} if sees_eu else {A: 1.0}), headers
        if not sees_eu:
            text = api.get("/metrics", headers=headers).get_data(as_text=True)
            assert "eu_cluster" not in text


def scrape_as(api: FlaskClient, headers: Mapping[str, str]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    # test_api_metrics' scrape, with a tenant's token (/metrics is open: a valid token says whose view)
    class _WithToken:
        def get(self, path: str) -> Any:
            return api.get(path, headers=dict(headers))

    return scrape(_WithToken())


# -- off: no error preset, no pin ----------------------------------------------------------------------
def off_run(influx: InfluxServer, db: str, store: SnapshotStore, t0: float) -> tuple[list[dict[str, Any]], Snapshot]:
    """Error counts read (a black hole excluded), then the error preset
    taken out of the config and a collector started on it; the answers
    then, and the snapshot."""
    clock = Clock(t0 + 10)
    with_errors = config_of(influx, db, [*LIVE_PRESETS, ERRORS])
    collect(with_errors, store, clock, CollectorState.new(with_errors))
    api = create_app(with_errors, store=store, clock=clock).test_client()
    for job in range(20):
        rank(api, job)
    write_errors(influx, db, t0 + 20, **{BH: 20})
    clock.at = t0 + 60
    collect(with_errors, store, clock, CollectorState.new(with_errors))
    without = config_of(influx, db, LIVE_PRESETS)
    clock.at = t0 + 70
    collect(without, store, clock, CollectorState.new(without))
    api = create_app(without, store=store, clock=clock).test_client()
    answers = [rank(api, job) for job in range(200, 210)]
    snapshot = store.read_all()
    assert snapshot is not None
    return answers, snapshot


def test_without_error_presets_and_pins_nothing_shows(influx_server: InfluxServer, influx_db: str,
                                                      store: SnapshotStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A collector without an error preset judges nobody, not even from the
    live snapshot's verdicts (a black hole excluded while error counts were
    read comes back); its answers are those of a collector without the
    health step at all, though the placements are still counted."""
    t0 = start_time()
    write_capacity(influx_server, influx_db, t0)
    answers, snapshot = off_run(influx_server, influx_db, store, t0)
    assert {d: f.health for d, f in snapshot.destinations.items()} == dict.fromkeys((BH, A, B))
    assert placed(store, BH) == 30
    for body in answers:
        assert body["destinations"][0] == BH
        assert all("health" not in e and e["group"] == "scored" for e in body["explain"])
        assert not any("probe" in e["reason"] or "health" in e["reason"] for e in body["explain"])

    # the same, from the same start, on another prefix, with the health step skipped (as before
    # destination health): the same answers and snapshot figures
    from tpv_broker.collector import cycle

    monkeypatch.setattr(cycle, "_health", lambda *args: {})
    plain, plain_snapshot = off_run(influx_server, influx_db, SnapshotStore(store.client, KeySchema(PREFIX + "b")),
                                    t0)
    assert plain == answers
    assert ({d: f.model_dump() for d, f in plain_snapshot.destinations.items()}
            == {d: f.model_dump() for d, f in snapshot.destinations.items()})


# -- the store ---------------------------------------------------------------------------------------
def test_the_health_store_reads_buckets_and_pins(store: SnapshotStore, redis_client: redis.Redis) -> None:
    """Buckets past the window are dropped (unless the reader's window is
    shorter); what is not ours is never counted, a garbled pin is no pin."""
    keys = KeySchema(PREFIX)
    now = 1_700_000_100.0
    # "<bucket>:<tenant>:<destination>"; a destination id may hold colons, a tenant id never does.
    redis_client.hset(keys.health_placements, mapping={
        "1700000100:eu:a": 3, "1700000400:fr:a": 2, "1699990000:eu:a": 7, "1700000100:eu:b:with:colons": 1,
        "garbage": 5, "17000:": 9, "1700000100:a": 4})
    redis_client.hset(keys.health_pins, mapping={"x": "{not json", "y": json.dumps({"state": "gone"})})
    inputs = store.health().read(now - 600, drop_old=False)
    assert {d: sorted(b) for d, b in inputs.placements.items()} == {
        "a": [(1700000100.0, 3.0), (1700000400.0, 2.0)], "b:with:colons": [(1700000100.0, 1.0)]}
    # Per tenant, for health when only some Galaxies' errors are read.
    assert inputs.placed_by(frozenset({"fr"})) == {"a": [(1700000400.0, 2.0)]}
    assert inputs.placed_by(None) == inputs.placements
    assert inputs.pins == {}
    assert redis_client.hlen(keys.health_placements) == 7  # drop_old=False: nothing removed
    store.health().read(now - 600)
    assert sorted(redis_client.hkeys(keys.health_placements)) == [
        b"1700000100:a", b"1700000100:eu:a", b"1700000100:eu:b:with:colons", b"1700000400:fr:a"]
    assert math.isclose(sum(n for _, n in store.health().read(now - 600).placements["a"]), 5.0)
    # the returns alike: per tenant, old buckets dropped
    redis_client.hset(keys.health_returns, mapping={"1700000100:eu:a": 2, "1699990000:eu:a": 4, "1700000400:fr:b": 1})
    inputs = store.health().read(now - 600)
    assert inputs.returned_by(None) == {"a": [(1700000100.0, 2.0)], "b": [(1700000400.0, 1.0)]}
    assert inputs.returned_by(frozenset({"eu"})) == {"a": [(1700000100.0, 2.0)]}
    assert sorted(redis_client.hkeys(keys.health_returns)) == [b"1700000100:eu:a", b"1700000400:fr:b"]
    # A bucket that began before the window but ends inside it counts whole, and is kept.
    since = now - 600
    straddling = f"{since - PLACEMENT_BUCKET_S / 2:.0f}:eu:c"
    redis_client.hset(keys.health_placements, straddling, 6)
    assert store.health().read(since).placements["c"] == [(since - PLACEMENT_BUCKET_S / 2, 6.0)]
    assert redis_client.hexists(keys.health_placements, straddling)
