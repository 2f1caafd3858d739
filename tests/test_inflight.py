"""In-flight charges: the pure arithmetic, and the Redis side on a real
redis-server (charge, expiry, one charge per job, the per-destination sums,
ending charges at publish, concurrent workers)."""

from __future__ import annotations

import multiprocessing
import random
import threading

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tpv_broker.api.rank_service import RankService
from tpv_broker.config.api_settings import ApiSettings
from tpv_broker.config.ranking_settings import InflightSettings
from tpv_broker.config.settings import BrokerConfig
from tpv_broker.core.charges import Charge, ChargeLoad, ChargeState
from tpv_broker.core.inflight import counted_loads
from tpv_broker.core.inputs import Candidate, JobFacts
from tpv_broker.core.models import DestinationFigures, Snapshot, SnapshotMeta
from tpv_broker.store.inflight import InflightStore
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .helpers import charged

T = 1_700_000_000.0


def fig(**kw) -> DestinationFigures:  # type: ignore[no-untyped-def]
    return DestinationFigures(id="d", **kw)


def load(*charges: tuple[float, float] | Charge) -> ChargeLoad:
    out = ChargeLoad()
    for c in charges:
        out = out.plus(c if isinstance(c, Charge) else Charge("d", c[0], c[1], T))
    return out


@pytest.mark.parametrize(
    ("figures", "charges", "expected"),
    [
        # 8 free cores, 32 GB: a 4-core 8 GB charge fits -> 4 cores, 24 GB free, queue unchanged
        (fig(cpus_free=8, mem_free_gb=32, queued=2), [(4, 8)], (4, 24, 2)),
        # three 4-core charges on 8 cores: 8/12 of them fit (32 - 16 = 16 GB left), the other
        # third of three jobs queues: 0 free, 16 GB, queued 2 + 1
        (fig(cpus_free=8, mem_free_gb=32, queued=2), [(4, 8), (4, 8), (4, 8)], (0, 16, 3)),
        # memory decides too: 16 GB free for a 20 GB charge, 16/20 of it fits, a fifth queues
        (fig(cpus_free=64, mem_free_gb=16, queued=0), [(1, 20)], (63.2, 0, 0.2)),
        # capacity unknown: every charge queues
        (fig(queued=5), [(1, 1), (1, 1)], (None, None, 7)),
        # queued unknown counts as 0
        (fig(cpus_free=0), [(1, 0)], (0, None, 1)),
    ],
)
def test_charged_figures(figures, charges, expected):
    assert charged(figures, load(*charges)) == pytest.approx(expected)


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
def test_a_queued_charge_by_work_weighs_typical_jobs(figures, cores, run_s, weight):
    # no free memory: the whole charge queues, by work
    d = fig(**figures, mem_free_gb=0)
    assert charged(d, load(Charge("d", cores, 1, T, run_s=run_s)), by_work=True)[2] == pytest.approx(weight)


def test_charged_figures_by_work():
    d = fig(**BUSY, mem_free_gb=256, queued=2)
    charges = load(Charge("d", 8, 16, T, run_s=600.0), Charge("d", 16, 64, T, run_s=7200.0),
                   Charge("d", 1, 2, T, run_s=60.0))
    # 25 cores charged on 16 free: 16/25 of each job fits (256 - 0.64 x 82 GB left), 9/25 queue:
    # by slot 9/25 of 3 jobs, by work 9/25 of (4,800 + 115,200 + 60) / 2,400 = 50.025 typical jobs.
    assert charged(d, charges) == pytest.approx((0, 256 - 0.64 * 82, 2 + 0.36 * 3))
    assert charged(d, charges, by_work=True) == pytest.approx((0, 256 - 0.64 * 82, 2 + 0.36 * 50.025))


def test_no_charges_leave_figures_alone():
    assert charged(fig(cpus_free=3, mem_free_gb=5, queued=2), ChargeLoad()) == (3, 5, 2)
    # nor an unreported queue, when nothing is charged
    assert charged(fig(cpus_free=3), ChargeLoad()) == (3, None, None)


def test_counted_loads_leave_out_what_redis_holds_but_must_not_count():
    a1, a2 = Charge("a", 4, 8, T - 100, "1"), Charge("a", 2, 2, T - 10, "2")
    b_old = Charge("b", 1, 1, T - 700)
    state = ChargeState({"a": load(a1, a2), "b": load(b_old)}, [b_old], own=a2)
    # b's only charge is past its age (600 s); job 2 is the one ranked: only job 1 counts
    assert counted_loads(state, T, 600) == {"a": load(a1)}
    # the job's charge once its figures show it (reflected at T - 5): Redis removed it already
    shown = ChargeLoad(1, 4, 8, reflected=T - 5)
    assert counted_loads(ChargeState({"a": shown}, [], own=a2), T, 600) == {"a": shown}
    # ... and once it is past its age, it is taken out as such, not twice
    a_old = Charge("a", 1, 1, T - 700, "3")
    old_own = ChargeState({"a": load(a1, a_old)}, [a_old], own=a_old)
    assert counted_loads(old_own, T, 600) == {"a": load(a1)}


@pytest.fixture
def inflight(redis_client: redis.Redis) -> InflightStore:
    return InflightStore(redis_client, KeySchema("if"), max_age_s=120, reflect_lag_s=30)


def sums_of_members(inflight: InflightStore) -> dict[str, ChargeLoad]:
    """What the load hash must hold: the sums of the zset's members."""
    out: dict[str, ChargeLoad] = {}
    for c in inflight.members():
        out[c.destination] = out.get(c.destination, ChargeLoad()).plus(c)
    return out


def loads_in_redis(inflight: InflightStore) -> dict[str, ChargeLoad]:
    return dict(inflight.read(None, T).loads)


def same_loads(got: dict[str, ChargeLoad], want: dict[str, ChargeLoad]) -> bool:
    """The same sums (what a reader's own charge needs of ``reflected`` is tested apart)."""
    return got.keys() == want.keys() and all(
        (g.count, g.timed) == (w.count, w.timed)
        and (g.cores, g.mem, g.core_s) == pytest.approx((w.cores, w.mem, w.core_s)) for g, w in
        ((got[d], want[d]) for d in got))


def test_charge_and_read(inflight, redis_client):
    assert inflight.charge(Charge("d1", 4, 8, T, "101"))
    inflight.charge(Charge("d2", 1, 2, T + 1))
    inflight.charge(Charge("d1", 2, 1, T + 1, run_s=100))
    assert sorted(inflight.members(), key=lambda c: c.charged_at)[0] == Charge("d1", 4, 8, T, "101")
    got = inflight.read(["d1", "d2", "d3"], T + 2)
    assert got.loads == {"d1": ChargeLoad(2, 6, 9, 200, 1), "d2": ChargeLoad(1, 1, 2)}
    assert (got.expired, got.own) == ([], None)
    # the ranked job's own charge comes with the read, for the rank core to leave out
    assert inflight.read(["d1"], T + 2, job_id="101").own == Charge("d1", 4, 8, T, "101")
    # Nothing outlives its charges in Redis: when no publish comes to trim them, the keys expire.
    assert [0 < redis_client.ttl(k) <= 121 for k in ("if:inflight", "if:inflight:load")] == [True, True]


def test_members_written_without_optional_fields_read_as_unknown(inflight, redis_client):
    redis_client.zadd("if:inflight", {'{"d":"d2","c":1,"m":2,"t":%r,"g":"default","n":"x"}' % (T + 1): T + 1})
    assert inflight.members() == [Charge("d2", 1, 2, T + 1, None, None)]


@pytest.mark.parametrize(("charge_by", "queued"), [
    # Site a: 16 cores, 8 free, 4 running: a typical job holds (16 - 8) / 4 = 2 cores for the median
    # 600 s (1,200 core-s). Three 4-core jobs: 8/12 of them fit the 8 free cores, a third of three
    # queues, as one job ("slot") or as 4 cores x 600 s (its run time there: no tool figure, so a's
    # median) / 1,200 = 2 typical jobs ("work").
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
    assert [c.run_s for c in InflightStore(redis_client, KeySchema("ifw"), 600).members()] == [600] * 3
    top = ranker.rank([Candidate("a")], job, [], charge=False).placements[0]
    raw = next(t.raw for t in top.terms if t.term == "queue_wait")
    assert raw["queued"] == pytest.approx(queued)


def test_charges_past_their_age_do_not_count_and_get_cleaned(inflight, redis_client):
    inflight.charge(Charge("d1", 4, 8, T))
    assert counted_loads(inflight.read(["d1"], T + 119), T + 119, 120) == {"d1": ChargeLoad(1, 4, 8)}
    # past its age, Redis still holds it (nothing ran since) and the reader leaves it out
    late = inflight.read(["d1"], T + 121)
    assert late.expired == [Charge("d1", 4, 8, T)] and counted_loads(late, T + 121, 120) == {}
    # nor in the count /metrics shows
    assert (inflight.live_count(T + 119), inflight.live_count(T + 121)) == (1, 0)
    # the next charge removes it from Redis, sums included
    inflight.charge(Charge("d2", 1, 1, T + 200))
    assert redis_client.zcard("if:inflight") == 1
    assert loads_in_redis(inflight) == {"d2": ChargeLoad(1, 1, 1)}


def test_the_rank_request_leaves_out_charges_past_their_age(redis_client):
    """Through the rank service's own read, not the store's helpers: a
    charge made ``max_age_s`` ago no longer counts, though nothing has
    removed it from Redis."""
    store = SnapshotStore(redis_client, KeySchema("ifage"))
    a = DestinationFigures(id="a", status="online", queued=0, running=4, cpus_total=16, cpus_free=4, mem_free_gb=64,
                           live_at=T, metrics_at=T, sources={"queue_by_destination": T})
    store.publish(Snapshot(meta=SnapshotMeta(created_at=T, destinations=1), destinations={"a": a}))
    config = BrokerConfig(api=ApiSettings(max_snapshot_age_s=10**6),
                          inflight=InflightSettings(reflect_lag_s=0, max_age_s=600))
    now = [T + 1]
    ranker = RankService(config, store, clock=lambda: now[0])
    job = JobFacts("bwa", cores=4, mem=8)
    ranker.rank([Candidate("a")], job, [])
    reason = lambda: ranker.rank([Candidate("a")], job, [], charge=False).placements[0].reason  # noqa: E731
    now[0] = T + 600
    assert "1 placed here since its figures" in reason()
    now[0] = T + 601.5
    assert "placed here" not in reason()
    assert redis_client.zcard("ifage:inflight") == 1


def test_the_same_job_moves_its_charge_never_adds(inflight, redis_client):
    inflight.charge(Charge("d1", 4, 8, T, "7"))
    inflight.charge(Charge("d1", 4, 8, T + 1, "7"))
    inflight.charge(Charge("d2", 4, 8, T + 2, "7"))
    assert [c.destination for c in inflight.members()] == ["d2"]
    assert loads_in_redis(inflight) == {"d2": ChargeLoad(1, 4, 8)}
    # jobs without an id cannot be told apart: each call is a charge
    inflight.charge(Charge("d3", 1, 1, T + 3))
    inflight.charge(Charge("d3", 1, 1, T + 3))
    assert len(inflight.members()) == 3
    # job 7 of another Galaxy is another job
    inflight.charge(Charge("d2", 4, 8, T + 4, "7", tenant="usegalaxy.org"))
    assert len(inflight.members()) == 4
    assert redis_client.ttl("if:inflight:job:default:7") > 0
    assert redis_client.ttl("if:inflight:job:usegalaxy.org:7") > 0


def test_a_job_id_must_be_safe_before_it_names_a_key(inflight):
    with pytest.raises(ValueError, match="job id"):
        inflight.charge(Charge("d1", 1, 1, T, "x:* y"))
    with pytest.raises(ValueError, match="tenant id"):
        inflight.charge(Charge("d1", 1, 1, T, "7", tenant="a:b"))


def publish(redis_client: redis.Redis, inflight: InflightStore, live_at: dict[str, float], created_at: float) -> None:
    store = SnapshotStore(redis_client, inflight.keys)
    dests = {d: DestinationFigures(id=d, live_at=at, sources={"queue_by_destination": at}) for d, at in live_at.items()}
    store.publish(Snapshot(meta=SnapshotMeta(created_at=created_at), destinations=dests), charges=inflight)


def test_a_publish_ends_the_charges_its_figures_show(inflight, redis_client):
    for k, age in enumerate((100, 40, 10)):
        inflight.charge(Charge("a", 1, 1, T - age, f"a{k}"))
        inflight.charge(Charge("b", 1, 1, T - age, f"b{k}"))
    # a's newest point at T - 5 shows what was charged before T - 35 (lag 30 s); b lags more
    publish(redis_client, inflight, {"a": T - 5, "b": T - 65}, T)
    assert sorted((c.destination, T - c.charged_at) for c in inflight.members()) == [
        ("a", 10), ("b", 10), ("b", 40)]
    assert loads_in_redis(inflight) == {"a": ChargeLoad(1, 1, 1, reflected=T - 35),
                                        "b": ChargeLoad(2, 2, 2, reflected=T - 95)}
    assert {d: v.reflected for d, v in inflight.read(["a", "b"], T).loads.items()} == {"a": T - 35, "b": T - 95}
    # a charge the figures already show (a clock behind the collector's) is not made
    assert not inflight.charge(Charge("a", 1, 1, T - 50, "late"))
    assert "late" not in {c.job_id for c in inflight.members()}
    # a snapshot with older figures does not bring removed charges back, nor move the time back
    publish(redis_client, inflight, {"a": T - 50}, T + 1)
    assert inflight.read(["a"], T).loads["a"].reflected == T - 35
    assert float(redis_client.hget("if:inflight:reflected", "a")) == T - 35


@pytest.mark.parametrize("resent", ["by redis-py", "by Galaxy"])
def test_a_refused_charge_sent_again_counts_its_placement_once(inflight, redis_client, monkeypatch, resent):
    # A charge the figures already show (the API's clock behind the collector's) is refused, but Galaxy
    # sent the job there all the same: sent again (redis-py retrying after a dropped connection, or the
    # job ranked again at once), it is the same placement, as for a charge that was made.
    import uuid

    class Same:
        hex = "0123456789abcdef"

    publish(redis_client, inflight, {"a": T - 5}, T)
    if resent == "by redis-py":
        monkeypatch.setattr(uuid, "uuid4", lambda: Same())
    assert not inflight.charge(Charge("a", 1, 1, T - 50, "late"))
    assert not inflight.charge(Charge("a", 1, 1, T - 50 + (resent == "by Galaxy"), "late"))
    assert list(redis_client.hgetall("if:health:placements").values()) == [b"1"]
    # refused means not charged: neither a member nor in the sums
    assert inflight.members() == [] and loads_in_redis(inflight) == {}
    # and coming back later from there counts as a return, as for any job that went there
    inflight.charge(Charge("b", 1, 1, T - 40, "late"))
    assert list(redis_client.hgetall("if:health:returns").values()) == [b"1"]


@pytest.mark.parametrize("mem", [1.0, 4e9 / 2**30, 0.1 + 0.2])
def test_a_job_back_after_a_refused_charge_is_a_return_whatever_its_memory(inflight, redis_client, mem):
    # The job's key keeps the member as the API wrote it: Redis's cjson writes 14 digits, and a memory
    # of 3.725290298461914 GB read back as 3.7252902984619 would be "more memory" the second time.
    publish(redis_client, inflight, {"a": T - 5}, T)
    assert not inflight.charge(Charge("a", 1, mem, T - 50, "late"))
    inflight.charge(Charge("b", 1, mem, T - 40, "late"))
    assert list(redis_client.hgetall("if:health:returns").values()) == [b"1"]


def test_a_refused_charge_is_never_taken_out_of_the_sums(inflight, redis_client):
    # Its member is in no sums: a reader ranking the job again must not take it out of them, even once
    # the times that said so are gone (the in-flight keys expired while the job's key lived on, or a
    # publish dropped the destination's time) and another job's charge is all the sums hold.
    publish(redis_client, inflight, {"a": T - 5}, T)
    assert not inflight.charge(Charge("a", 1, 1, T - 50, "late"))
    redis_client.delete("if:inflight", "if:inflight:load", "if:inflight:reflected")
    assert inflight.charge(Charge("a", 4, 8, T - 10, "x"))
    assert counted_loads(inflight.read(["a"], T - 5, job_id="late"), T - 5, inflight.max_age_s) == {
        "a": ChargeLoad(1, 4, 8)}
    assert '"refused":true' in redis_client.get("if:inflight:job:default:late").decode()


@pytest.mark.parametrize("job_id", [None, "j1"])
def test_a_charge_sent_twice_is_made_once(inflight, redis_client, monkeypatch, job_id):
    # redis-py sends a command again when the connection drops before its reply: the script then runs
    # twice with the same member. A job without an id (every /process_data request) was counted twice in
    # the sums, for good: the extra count outlived every member.
    import uuid

    class Same:
        hex = "0123456789abcdef"

    monkeypatch.setattr(uuid, "uuid4", lambda: Same())
    charge = Charge("a", 4, 8, T - 10, job_id)
    assert inflight.charge(charge) and inflight.charge(charge)
    assert [c.destination for c in inflight.members()] == ["a"]
    assert loads_in_redis(inflight) == {"a": ChargeLoad(1, 4, 8)}
    assert same_loads(loads_in_redis(inflight), sums_of_members(inflight))
    placements = redis_client.hgetall("if:health:placements")
    assert list(placements.values()) == [b"1"], placements


def test_a_publish_forgets_the_times_of_destinations_long_gone(inflight, redis_client):
    # Ids that come and go (renamed endpoints, a writer's junk tags) must not pile up in the hash.
    for k in range(50):
        publish(redis_client, inflight, {f"gone{k}": T + k * 100}, T + k * 100)
    now = T + 49 * 100
    kept = {k.decode(): float(v) for k, v in redis_client.hgetall("if:inflight:reflected").items()}
    assert kept and all(at >= now - inflight.max_age_s for at in kept.values()), kept
    assert len(kept) < 50
    # and with no charge ever made, the hash still expires
    assert 0 < redis_client.ttl("if:inflight:reflected") <= 121


# The test clears its own keys before each example.
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["charge", "charge", "charge", "publish"]), st.sampled_from("abc"),
                          st.integers(0, 5), st.floats(0, 200), st.booleans()), max_size=40))
def test_the_sums_are_always_those_of_the_live_charges(redis_client, steps):
    """Whatever charges, moves and publishes happen, each destination's
    sums in Redis are the sums of its members, and a rank read counts
    exactly the charges a reader of every member would count."""
    for key in redis_client.scan_iter("ifp:*"):
        redis_client.delete(key)
    inflight = InflightStore(redis_client, KeySchema("ifp"), max_age_s=120, reflect_lag_s=30)
    now = T
    for kind, dest, job, dt, timed in steps:
        now += dt
        if kind == "charge":
            inflight.charge(Charge(dest, job + 1, 2 * job, now - dt / 2, f"j{job}" if job else None,
                                   300.0 if timed else None))
        else:
            publish(redis_client, inflight, {d: now - dt / 3 for d in "abc" if d != dest}, now)
        assert same_loads(loads_in_redis(inflight), sums_of_members(inflight))
        raw = redis_client.hmget("ifp:inflight:reflected", list("abc"))
        shown = {d: float(v) for d, v in zip("abc", raw, strict=True) if v is not None}
        want = {}
        for c in inflight.members():
            if c.charged_at >= now - 120 and c.charged_at >= shown.get(c.destination, -1) and c.job_id != "j1":
                want[c.destination] = want.get(c.destination, ChargeLoad()).plus(c)
        got = counted_loads(inflight.read(list("abc"), now, job_id="j1"), now, 120)
        assert same_loads(got, want)


def _worker(url: str, worker: int, jobs: int) -> None:
    client = redis.Redis.from_url(url)
    store = InflightStore(client, KeySchema("if"), max_age_s=120)
    rng = random.Random(worker)
    for j in range(jobs):
        # every worker charges every job id: as if Galaxy ranked each job on all workers
        store.charge(Charge(f"d{rng.randrange(3)}", 1 + worker, 1, T + j, f"job{j}"))
        store.charge(Charge(f"u{worker}", 1, 1, T + j))


def test_concurrent_workers_stay_correct(inflight, redis_url):
    procs = [multiprocessing.get_context("spawn").Process(target=_worker, args=(redis_url, w, 50)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    charges = inflight.members()
    with_id = [c for c in charges if c.job_id is not None]
    # one charge per job id whoever wrote it last, and every anonymous charge kept
    assert sorted(c.job_id for c in with_id) == sorted(f"job{j}" for j in range(50))
    assert len(charges) - len(with_id) == 4 * 50
    assert same_loads(loads_in_redis(inflight), sums_of_members(inflight))


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
    assert len(inflight.members()) == 1
    assert sum(v.count for v in loads_in_redis(inflight).values()) == 1


def test_a_rank_read_does_not_grow_with_the_charges(redis_client):
    """3,000 live charges on 200 destinations: a rank request for 5 of them
    reads 5 sums, its own charge and nothing else of the charges."""
    inflight = InflightStore(redis_client, KeySchema("ifn"), max_age_s=600)
    pipe = redis_client.pipeline(transaction=False)
    script = redis_client.register_script(_charge_script())
    for k in range(3000):
        c = Charge(f"d{k % 200}", 1, 1, T - k / 10, f"j{k}")
        script(keys=["ifn:inflight", "ifn:inflight:load", "ifn:inflight:reflected", "ifn:health:placements",
                     "ifn:health:returns", f"ifn:inflight:job:default:j{k}", f"ifn:health:back:default:j{k}"],
               args=[c.to_member(str(k)), c.charged_at, T - 600, 601,
                     placement_field(c.charged_at, c.tenant, c.destination), 86400,
                     placement_field(c.charged_at, c.tenant, ""), 5], client=pipe)
    pipe.execute()
    assert redis_client.zcard("ifn:inflight") == 3000
    spec = inflight.rank_read([f"d{i}" for i in range(5)], "default", "j7", T)
    p = redis_client.pipeline(transaction=True)
    spec.queue(p)
    replies = p.execute()
    assert replies[0] == []  # none past its age
    assert len(replies) == 3 and len(replies[1]) == 5  # + the job's own charge
    state = spec.parse(replies)
    assert {d: v.count for d, v in state.loads.items()} == {f"d{i}": 15 for i in range(5)}
    assert state.own is not None and state.own.job_id == "j7"


def placement_field(at: float, tenant: str, destination: str) -> str:
    from tpv_broker.store.inflight import placement_field as field

    return field(at, tenant, destination)


def _charge_script() -> str:
    from tpv_broker.store import inflight as module

    return module._CHARGE


def test_garbage_under_our_keys_stops_neither_a_charge_nor_a_publish(inflight, redis_client):
    """Someone wrote by hand under the prefix: the scripts drop what they
    cannot read instead of failing (a failing script inside the publish's
    MULTI/EXEC would report a snapshot as not published that was)."""
    redis_client.zadd("if:inflight", {"not json": T - 500, '{"d": 5}': T - 10, "[1, 2]": T - 10,
                                      '{"d":"a","c":1,"m":1,"t":"%r","g":"default","n":"s"}' % (T - 10): T - 10})
    redis_client.hset("if:inflight:load", mapping={"a": "garbage", "b": '{"n": 1}'})
    assert inflight.charge(Charge("a", 2, 2, T, "1"))
    assert inflight.charge(Charge("b", 1, 1, T))
    # A member an API before the sums wrote (no tenant): never in the sums,
    # so removing it must not take from them.
    redis_client.zadd("if:inflight", {'{"d":"b","c":1,"m":1,"t":%r,"j":null,"n":"old"}' % (T - 200): T - 200})
    publish(redis_client, inflight, {"a": T + 100}, T + 1)
    assert inflight.members() == [Charge("b", 1, 1, T)]
    assert loads_in_redis(inflight) == {"b": ChargeLoad(1, 1, 1)}


def test_degenerate_figures_charge_by_slot_without_warnings():
    """A running count of 5e-324 (found by hypothesis) overflows the
    typical job's size: that charge counts one slot, and numpy does not
    warn (warnings are errors here)."""
    d = fig(cpus_total=0, cpus_free=1, running=5e-324, median_run_s=600, mem_free_gb=0)
    assert charged(d, load(Charge("d", 1, 1, T, run_s=60.0)), by_work=True)[2] == 1.0


def test_a_reader_leaves_out_members_an_older_api_wrote(inflight, redis_client):
    """Past their age, members without a tenant (written before the sums)
    are not taken from the sums they never entered."""
    inflight.charge(Charge("a", 4, 8, T, "1"))
    redis_client.zadd("if:inflight", {'{"d":"a","c":4,"m":8,"t":%r,"j":null,"n":"old"}' % (T - 500): T - 500})
    state = inflight.read(["a"], T + 1)
    assert state.expired == []
    assert counted_loads(state, T + 1, 120) == {"a": ChargeLoad(1, 4, 8)}
