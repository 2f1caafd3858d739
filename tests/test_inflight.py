"""In-flight charges: the pure arithmetic, and the Redis side on a real
redis-server (charge, expiry, one charge per job id, concurrent workers)."""

from __future__ import annotations

import multiprocessing
import threading

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from tpv_broker.api.rank_service import RankService
from tpv_broker.config.settings import ApiSettings, BrokerConfig, InflightSettings
from tpv_broker.core.inflight import (
    Charge,
    charged_figures,
    live_charges,
    oldest_countable,
    queued_weight,
)
from tpv_broker.core.inputs import Candidate, JobFacts
from tpv_broker.core.models import DestinationFigures, Snapshot, SnapshotMeta
from tpv_broker.store.inflight import InflightStore
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

T = 1_700_000_000.0


def fig(**kw) -> DestinationFigures:  # type: ignore[no-untyped-def]
    return DestinationFigures(id="d", **kw)


@pytest.mark.parametrize(
    ("figures", "charges", "expected"),
    [
        # 8 free cores, 32 GB: a 4-core 8 GB charge fits -> 4 cores, 24 GB free, queue unchanged
        (fig(cpus_free=8, mem_free_gb=32, queued=2), [(4, 8)], (4, 24, 2)),
        # two 4-core charges fit 8 cores exactly (32 - 8 - 8 = 16 GB left); the third joins the
        # queue and takes nothing: 0 free, 16 GB, queued 2 + 1
        (fig(cpus_free=8, mem_free_gb=32, queued=2), [(4, 8), (4, 8), (4, 8)], (0, 16, 3)),
        # memory decides too: 16 GB free, a 20 GB charge queues
        (fig(cpus_free=64, mem_free_gb=16, queued=0), [(1, 20)], (64, 16, 1)),
        # capacity unknown: every charge queues
        (fig(queued=5), [(1, 1), (1, 1)], (None, None, 7)),
        # queued unknown counts as 0
        (fig(cpus_free=0), [(1, 0)], (0, None, 1)),
    ],
)
def test_charged_figures(figures, charges, expected):
    assert charged_figures(figures, [Charge("d", c, m, T) for c, m in charges]) == expected


# 64 cores, 16 free, 12 running: a typical running job holds (64 - 16) / 12 = 4 cores
# for the median 600 s = 2,400 core-seconds.
BUSY = {"cpus_total": 64, "cpus_free": 16, "running": 12, "median_run_s": 600}


@pytest.mark.parametrize(
    ("figures", "cores", "run_s", "weight"),
    [
        # a 16-core 2 h assembly: 16 x 7,200 / 2,400 = 48 typical jobs
        (BUSY, 16, 7200.0, 48.0),
        # a 1-core 60 s QC job: 60 / 2,400 = 0.025 of one
        (BUSY, 1, 60.0, 0.025),
        # a typical job weighs one: 4 x 600 / 2,400
        (BUSY, 4, 600.0, 1.0),
        # run time unknown (an old charge, or none known): one slot
        (BUSY, 16, None, 1.0),
        # nothing running, so no typical job: one slot
        ({**BUSY, "running": 0}, 16, 7200.0, 1.0),
        # total cores or the median run time unreported: one slot
        ({**BUSY, "cpus_total": None}, 16, 7200.0, 1.0),
        ({**BUSY, "median_run_s": None}, 16, 7200.0, 1.0),
        # figures that contradict themselves (all cores free, 12 running): one slot, not a division by 0
        ({**BUSY, "cpus_free": 64}, 16, 7200.0, 1.0),
    ],
)
def test_queued_weight(figures, cores, run_s, weight):
    assert queued_weight(fig(**figures), Charge("d", cores, 1, T, run_s=run_s)) == pytest.approx(weight)


def test_charged_figures_by_work():
    d = fig(**BUSY, mem_free_gb=256, queued=2)
    charges = [
        Charge("d", 8, 16, T, run_s=600.0),
        Charge("d", 16, 64, T, run_s=7200.0),
        Charge("d", 1, 2, T, run_s=60.0),
    ]
    # the 8-core job fits the 16 free cores (8 left, 256 - 16 = 240 GB); the 16-core one does not
    # and queues as 48 jobs, taking nothing; the 1-core one fits (7 left, 238 GB).
    # Queue: 2 + 48 = 50; by slot: 2 + 1 = 3
    assert charged_figures(d, charges, by_work=True) == (7, 238, 50)
    assert charged_figures(d, charges)[2] == 3


def test_no_charges_leave_figures_alone():
    assert charged_figures(fig(cpus_free=3, mem_free_gb=5, queued=2), []) == (3, 5, 2)


def test_a_charge_ends_when_the_figures_can_show_it():
    figures = {
        "a": fig(live_at=T + 40).model_copy(update={"id": "a"}),
        "b": fig(live_at=T + 10).model_copy(update={"id": "b"}),
    }
    charges = [Charge("a", 1, 1, T), Charge("b", 1, 1, T), Charge("c", 1, 1, T)]
    # reflect lag 30 s: a's newest point (T+40) is >= T+30 -> reflected, dropped;
    # b's (T+10) is not yet; c has no figures at all -> kept.
    live = live_charges(charges, figures, reflect_lag_s=30)
    assert set(live) == {"b", "c"}


@pytest.fixture
def inflight(redis_client: redis.Redis) -> InflightStore:
    return InflightStore(redis_client, KeySchema("if"), max_age_s=120)


def test_charge_and_read(inflight):
    inflight.charge(Charge("d1", 4, 8, T, "101"))
    inflight.charge(Charge("d2", 1, 2, T + 1))
    got = sorted(inflight.read(T + 2), key=lambda c: c.destination)
    assert got == [Charge("d1", 4, 8, T, "101"), Charge("d2", 1, 2, T + 1)]


def test_a_charge_keeps_its_run_time(inflight, redis_client):
    inflight.charge(Charge("d1", 4, 8, T, "5", run_s=1234.5))
    assert inflight.read(T + 1) == [Charge("d1", 4, 8, T, "5", 1234.5)]
    # members written before run times were charged read as "unknown"
    redis_client.zadd("if:inflight", {'{"d":"d2","c":1,"m":2,"t":%r,"j":null,"n":"x"}' % (T + 1): T + 1})
    assert inflight.read(T + 2)[1] == Charge("d2", 1, 2, T + 1, None, None)


@pytest.mark.parametrize(("charge_by", "queued"), [
    # Site a: 16 cores, 8 free, 4 running: a typical job holds (16 - 8) / 4 = 2 cores for the median
    # 600 s (1,200 core-s). Three 4-core jobs: two take the 8 free cores, the third queues, as one
    # job ("slot") or as 4 cores x 600 s (its run time there: no tool figure, so a's median) / 1,200
    # = 2 typical jobs ("work").
    ("slot", 1.0),
    ("work", 2.0),
])
def test_the_rank_service_charges_by_work(redis_client, charge_by, queued):
    store = SnapshotStore(redis_client, KeySchema("ifw"))
    a = DestinationFigures(id="a", status="online", queued=0, running=4, cpus_total=16, cpus_free=8, mem_total_gb=64,
                           mem_free_gb=32, median_queue_s=30, median_run_s=600, live_at=T, metrics_at=T,
                           sources={"queue_by_destination": T})
    store.publish(Snapshot(meta=SnapshotMeta(created_at=T, destinations=1), destinations={"a": a}))
    config = BrokerConfig(api=ApiSettings(max_snapshot_age_s=3600),
                          inflight=InflightSettings(reflect_lag_s=0, max_age_s=600, charge_by=charge_by))
    ranker = RankService(config, store, clock=lambda: T + 10)
    job = JobFacts("bwa", cores=4, mem=8)
    for _ in range(3):
        assert ranker.rank([Candidate("a")], job, []).first_run_s == 600
    assert [c.run_s for c in InflightStore(redis_client, KeySchema("ifw"), 600).read(T + 10)] == [600] * 3
    top = ranker.rank([Candidate("a")], job, [], charge=False).placements[0]
    raw = next(t.raw for t in top.terms if t.term == "queue_wait")
    assert raw["queued"] == queued


def test_charges_older_than_max_age_are_not_read_and_get_cleaned(inflight, redis_client):
    inflight.charge(Charge("d1", 4, 8, T))
    assert inflight.read(T + 119) != []
    assert inflight.read(T + 121) == []
    # the next charge removes expired ones from Redis too
    inflight.charge(Charge("d2", 1, 1, T + 200))
    assert redis_client.zcard("if:inflight") == 1


def test_the_same_job_moves_its_charge_never_adds(inflight, redis_client):
    inflight.charge(Charge("d1", 4, 8, T, "7"))
    inflight.charge(Charge("d1", 4, 8, T + 1, "7"))
    inflight.charge(Charge("d2", 4, 8, T + 2, "7"))
    assert [c.destination for c in inflight.read(T + 3)] == ["d2"]
    # jobs without an id cannot be told apart: each call is a charge
    inflight.charge(Charge("d3", 1, 1, T + 3))
    inflight.charge(Charge("d3", 1, 1, T + 3))
    assert len(inflight.read(T + 4)) == 3
    assert redis_client.ttl("if:inflight:job:7") > 0


def test_a_job_id_must_be_safe_before_it_names_a_key(inflight):
    with pytest.raises(ValueError, match="job id"):
        inflight.charge(Charge("d1", 1, 1, T, "x:* y"))


def _worker(url: str, worker: int, jobs: int) -> None:
    client = redis.Redis.from_url(url)
    store = InflightStore(client, KeySchema("if"), max_age_s=120)
    for j in range(jobs):
        # every worker charges every job id: as if Galaxy ranked each job on all workers
        store.charge(Charge(f"d{worker}", 1, 1, T + j, f"job{j}"))
        store.charge(Charge(f"u{worker}", 1, 1, T + j))


def test_concurrent_workers_stay_correct(inflight, redis_url):
    procs = [multiprocessing.get_context("spawn").Process(target=_worker, args=(redis_url, w, 50)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    charges = inflight.read(T + 60)
    with_id = [c for c in charges if c.job_id is not None]
    # one charge per job id whoever wrote it last, and every anonymous charge kept
    assert sorted(c.job_id for c in with_id) == sorted(f"job{j}" for j in range(50))
    assert len(charges) - len(with_id) == 4 * 50


def test_threads_charging_one_job_leave_one_charge(inflight):
    barrier = threading.Barrier(8)

    def go(i: int) -> None:
        barrier.wait()
        for _ in range(20):
            inflight.charge(Charge(f"d{i}", 1, 1, T, "same"))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(inflight.read(T)) == 1


def test_oldest_countable():
    points = [T - 800, T - 100, T - 30]
    # the oldest point still scored (at most max_metrics_age_s old), less the lag
    assert oldest_countable(points, T, 900, 60) == T - 800 - 60
    assert oldest_countable(points, T, 500, 60) == T - 100 - 60
    # a point exactly max_metrics_age_s old is still scored
    assert oldest_countable(points, T, 100, 0) == T - 100
    # none scored: nothing to bound by
    assert oldest_countable(points, T, 10, 60) is None
    assert oldest_countable([], T, 900, 60) is None


@settings(max_examples=300, deadline=None)
@given(
    live_ages=st.lists(st.one_of(st.none(), st.floats(0, 2000)), min_size=1, max_size=6),
    charges=st.lists(st.tuples(st.integers(0, 5), st.floats(0, 700)), max_size=30),
    max_metrics_age_s=st.floats(1, 1500),
    reflect_lag_s=st.floats(0, 200),
)
def test_charges_older_than_oldest_countable_never_count(live_ages, charges, max_metrics_age_s, reflect_lag_s):
    """Reading only the charges from ``oldest_countable`` on leaves every
    scored destination's live charges as they are with all of them."""
    figures = {f"d{i}": fig(live_at=None if age is None else T - age) for i, age in enumerate(live_ages)}
    everything = [Charge(f"d{i % len(live_ages)}", 1, 1, T - age, f"j{k}")
                  for k, (i, age) in enumerate(charges)]
    points = sorted(f.live_at for f in figures.values() if f.live_at is not None)
    floor = oldest_countable(points, T, max_metrics_age_s, reflect_lag_s)
    read = everything if floor is None else [c for c in everything if c.charged_at >= floor]
    scored = {d for d, f in figures.items() if f.live_at is not None and not T - f.live_at > max_metrics_age_s}
    want = {d: cs for d, cs in live_charges(everything, figures, reflect_lag_s).items() if d in scored}
    got = {d: cs for d, cs in live_charges(read, figures, reflect_lag_s).items() if d in scored}
    assert got == want


def test_the_rank_service_reads_only_the_charges_that_can_count(redis_client):
    """Charges the figures already show are not even read back (a busy
    Galaxy has thousands within ``inflight.max_age_s``), and the answer is
    the one all charges give."""
    store = SnapshotStore(redis_client, KeySchema("ifr"))
    a = DestinationFigures(id="a", status="online", queued=0, running=4, cpus_total=16, cpus_free=8, mem_total_gb=64,
                           mem_free_gb=32, live_at=T - 100, metrics_at=T - 100, sources={"queue_by_destination": T})
    store.publish(Snapshot(meta=SnapshotMeta(created_at=T, destinations=1), destinations={"a": a}))
    inflight = InflightStore(redis_client, KeySchema("ifr"), 600)
    for k, age in enumerate((500, 300, 170, 150, 20)):
        inflight.charge(Charge("a", 4, 8, T - age, f"j{k}"))
    config = BrokerConfig(api=ApiSettings(max_snapshot_age_s=3600),
                          inflight=InflightSettings(reflect_lag_s=60, max_age_s=600))
    ranker = RankService(config, store, clock=lambda: T)
    views = []
    read = store.read_for_rank
    store.read_for_rank = lambda *a, **kw: views.append(read(*a, **kw)) or views[-1]  # type: ignore[method-assign]
    first = ranker.rank([Candidate("a")], JobFacts("bwa", cores=1), [], charge=False).placements[0]
    second = ranker.rank([Candidate("a")], JobFacts("bwa", cores=1), [], charge=False).placements[0]
    # the worker's first read keeps the snapshot; from then on, from a's live point less the lag
    assert sorted(T - c.charged_at for c in views[0].charges) == [20, 150, 170, 300, 500]
    assert sorted(T - c.charged_at for c in views[1].charges) == [20, 150]
    assert first.total == second.total and first.reason == second.reason
    assert "2 placed here since its figures" in second.reason
