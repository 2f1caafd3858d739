"""The pure rank core: rank(), fits_now(), tpv_order() on hand-built views.

Figures are already in TPV's units (cores, GB, gpus): no MiB conversion here.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpv_broker.shared.models import DestinationFigures, RankView, SnapshotMeta
from tpv_broker.shared.ranking import Candidate, JobFacts, fits_now, rank, tpv_order

NOW = 1_700_000_000.0
MAX_AGE = 300.0
JOB = JobFacts(tool_id="tool", cores=4, mem=8, gpus=0)


def fig(dest_id: str, **kw: Any) -> DestinationFigures:
    kw.setdefault("status", "online")
    # Measured figures always name the preset they came from.
    kw.setdefault("sources", {"htcondor_cluster_usage": NOW - 10})
    return DestinationFigures(id=dest_id, **kw)


def view(*figures: DestinationFigures, age: float = 10.0) -> RankView:
    return RankView(
        meta=SnapshotMeta(created_at=NOW - age, destinations=len(figures)),
        destinations={f.id: f for f in figures},
    )


def cands(*ids: str) -> list[Candidate]:
    return [Candidate(i) for i in ids]


def ranked(ids: list[str], v: RankView, job: JobFacts = JOB) -> list[str]:
    result = rank(cands(*ids), job, v, NOW, MAX_AGE)
    assert not result.degraded
    return result.ids


# -- fits_now --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("job", "figures", "expected"),
    [
        # nothing known about free capacity -> None (not a refusal)
        (JobFacts("t", cores=4, mem=8), {}, None),
        # 4 cores <= 4 free; 8 GB <= 8 GB free: boundaries fit
        (JobFacts("t", cores=4, mem=8), {"cpus_free": 4, "mem_free_gb": 8}, True),
        # 4 cores > 3 free
        (JobFacts("t", cores=4, mem=8), {"cpus_free": 3, "mem_free_gb": 100}, False),
        # 8 GB > 7.9 GB free
        (JobFacts("t", cores=4, mem=8), {"cpus_free": 100, "mem_free_gb": 7.9}, False),
        # only cores known: 4 <= 16
        (JobFacts("t", cores=4, mem=8), {"cpus_free": 16}, True),
        # only mem known: 8 > 2
        (JobFacts("t", cores=4, mem=8), {"mem_free_gb": 2}, False),
        # the job asks no gpus: 0 free gpus do not matter
        (JobFacts("t", cores=1, mem=1, gpus=0), {"cpus_free": 8, "mem_free_gb": 8, "gpus_free": 0}, True),
        # the job asks 1 gpu, 0 free -> does not fit
        (JobFacts("t", cores=1, mem=1, gpus=1), {"cpus_free": 8, "mem_free_gb": 8, "gpus_free": 0}, False),
        # 2 gpus <= 2 free
        (JobFacts("t", cores=1, mem=1, gpus=2), {"cpus_free": 8, "mem_free_gb": 8, "gpus_free": 2}, True),
        # gpus asked but free gpus unknown: only cores/mem decide
        (JobFacts("t", cores=1, mem=1, gpus=2), {"cpus_free": 8, "mem_free_gb": 8}, True),
        # gpus asked, only gpus known, enough
        (JobFacts("t", cores=1, mem=1, gpus=1), {"gpus_free": 1}, True),
        # no gpus asked, only gpus known -> nothing checked -> unknown
        (JobFacts("t", cores=1, mem=1, gpus=0), {"gpus_free": 0}, None),
    ],
)
def test_fits_now(job: JobFacts, figures: dict[str, float], expected: bool | None) -> None:
    assert fits_now(job, fig("d", **figures)) is expected


# -- tpv_order --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ([None, None, None], ["a", "b", "c"]),
        ([1, 3, 2], ["b", "c", "a"]),
        # ties keep input order: a and c both 5
        ([5, 1, 5], ["a", "c", "b"]),
        # None counts as 0: -1 < None(0) < 2
        ([-1, None, 2], ["c", "b", "a"]),
        ([0, None, 0.0], ["a", "b", "c"]),
    ],
)
def test_tpv_order(scores: list[float | None], expected: list[str]) -> None:
    candidates = [Candidate(i, s) for i, s in zip("abc", scores)]
    placements = tpv_order(candidates, "why")
    assert [p.id for p in placements] == expected
    assert all(p.reason == "why" and p.fits_now is None for p in placements)


# -- rank: the documented order --------------------------------------------------------
ORDER_CASES = [
    # (id, figures, candidate order, expected)
    ("fewest-queued-first",
     [fig("a", queued=5), fig("b", queued=1), fig("c", queued=3)],
     ["a", "b", "c"], ["b", "c", "a"]),
    ("most-free-cores-breaks-queue-tie",
     # all queued 2; free 8 > 16? no: 16 > 8 > 4 cores free
     [fig("a", queued=2, cpus_free=8), fig("b", queued=2, cpus_free=4), fig("c", queued=2, cpus_free=16)],
     ["a", "b", "c"], ["c", "a", "b"]),
    ("fit-beats-fewer-queued",
     # a: 0 queued but 2 free cores < 4 asked -> does not fit; b: 9 queued, fits
     [fig("a", queued=0, cpus_free=2, mem_free_gb=64), fig("b", queued=9, cpus_free=8, mem_free_gb=64)],
     ["a", "b"], ["b", "a"]),
    ("unknown-capacity-counts-as-fitting",
     # a: capacity unknown (fit None) 3 queued; b: does not fit (mem 4 < 8) 0 queued
     [fig("a", queued=3), fig("b", queued=0, cpus_free=64, mem_free_gb=4)],
     ["b", "a"], ["a", "b"]),
    ("unknown-capacity-ranks-with-fitting-by-queue",
     # a fits with 5 queued; b unknown with 1 queued -> b first (same fit class, fewer queued)
     [fig("a", queued=5, cpus_free=64, mem_free_gb=64), fig("b", queued=1)],
     ["a", "b"], ["b", "a"]),
    ("unknown-queue-after-known-queue",
     # queued None counts as infinitely many, even with more free cores (100 > 8)
     [fig("a", cpus_free=100), fig("b", queued=50, cpus_free=8)],
     ["a", "b"], ["b", "a"]),
    ("offline-after-online",
     # a is offline with 0 queued; b online with 99 queued and does not fit
     [fig("a", status="offline", queued=0, cpus_free=64, mem_free_gb=64),
      fig("b", queued=99, cpus_free=1, mem_free_gb=1)],
     ["a", "b"], ["b", "a"]),
    ("status-unknown-is-not-offline",
     [fig("a", status="offline", queued=0), fig("b", status="unknown", queued=7)],
     ["a", "b"], ["b", "a"]),
    ("no-metrics-last-in-input-order",
     # z and x have no figures at all; they keep their input order behind the offline one
     [fig("a", queued=1), fig("o", status="offline")],
     ["z", "o", "x", "a"], ["a", "o", "z", "x"]),
    ("ties-keep-input-order",
     [fig("a", queued=2, cpus_free=8), fig("b", queued=2, cpus_free=8), fig("c", queued=2, cpus_free=8)],
     ["c", "a", "b"], ["c", "a", "b"]),
    ("offline-ties-keep-input-order",
     [fig("a", status="offline", queued=9), fig("b", status="offline", queued=0)],
     ["a", "b"], ["a", "b"]),
    ("gpu-job-skips-gpu-less-destination",
     # the job asks 1 gpu: a has 0 free -> does not fit, even with fewer queued
     [fig("a", queued=0, cpus_free=64, mem_free_gb=64, gpus_free=0),
      fig("b", queued=5, cpus_free=64, mem_free_gb=64, gpus_free=2)],
     ["a", "b"], ["b", "a"]),
]


@pytest.mark.parametrize(("figures", "order", "expected"), [pytest.param(f, o, e, id=i) for i, f, o, e in ORDER_CASES])
def test_rank_documented_order(figures: list[DestinationFigures], order: list[str], expected: list[str]) -> None:
    job = JobFacts("tool", cores=4, mem=8, gpus=1) if any(f.gpus_free is not None for f in figures) else JOB
    assert ranked(order, view(*figures), job) == expected


def test_gpus_ignored_when_job_asks_none() -> None:
    # same figures as the gpu case, but the job asks 0 gpus: fewest queued wins
    v = view(fig("a", queued=0, cpus_free=64, mem_free_gb=64, gpus_free=0),
             fig("b", queued=5, cpus_free=64, mem_free_gb=64, gpus_free=2))
    assert ranked(["b", "a"], v, JobFacts("t", cores=4, mem=8, gpus=0)) == ["a", "b"]


def test_figures_are_gb_no_mib_conversion() -> None:
    # 31.25 GB free: a 31 GB job fits, a 32 GB job does not (no /1024 or *1024 anywhere)
    v = view(fig("a", queued=0, mem_free_gb=31.25), fig("b", queued=1, mem_free_gb=64))
    assert ranked(["a", "b"], v, JobFacts("t", cores=1, mem=31)) == ["a", "b"]
    assert ranked(["a", "b"], v, JobFacts("t", cores=1, mem=32)) == ["b", "a"]


def test_reasons_and_fit_flags() -> None:
    v = view(fig("fit", queued=2, cpus_free=8, mem_free_gb=64),
             fig("nofit", queued=0, cpus_free=1, mem_free_gb=64),
             fig("unk", queued=1),
             fig("off", status="offline"))
    result = rank(cands("none", "off", "nofit", "unk", "fit"), JOB, v, NOW, MAX_AGE)
    by_id = {p.id: p for p in result.placements}
    assert result.ids == ["unk", "fit", "nofit", "off", "none"]
    assert by_id["fit"].fits_now is True and by_id["fit"].reason.startswith("fits now")
    assert "2 queued" in by_id["fit"].reason and "8 cores free" in by_id["fit"].reason
    assert by_id["nofit"].fits_now is False and by_id["nofit"].reason.startswith("does not fit now")
    assert by_id["unk"].fits_now is None and "free capacity unknown" in by_id["unk"].reason
    assert by_id["off"].reason == "reported offline"
    assert by_id["none"].reason == "no metrics for this destination"
    assert result.snapshot_age_s == pytest.approx(10.0)


def test_destination_with_empty_figures_counts_as_without_metrics() -> None:
    # 'cfg' is only in config: no status, no numbers, no sources
    v = view(fig("busy", queued=3, cpus_free=1, mem_free_gb=1),
             DestinationFigures(id="cfg", in_config=True),
             fig("off", status="offline", queued=0))
    assert ranked(["cfg", "off", "busy"], v) == ["busy", "off", "cfg"]


# -- degraded: TPV order ------------------------------------------------------------
SCORED = [Candidate("a", 1), Candidate("b", 5), Candidate("c", None), Candidate("d", 5)]
# tag score desc, input order on ties: b(5), d(5), a(1), c(None=0)
TPV_ORDER = ["b", "d", "a", "c"]
# what the metrics say: a has the fewest queued
METRICS = [fig("a", queued=0), fig("b", queued=9), fig("c", queued=5), fig("d", queued=7)]


def test_fresh_snapshot_uses_metrics_not_tag_score() -> None:
    result = rank(SCORED, JOB, view(*METRICS, age=0), NOW, MAX_AGE)
    assert not result.degraded and result.degraded_reason is None
    assert result.ids == ["a", "c", "d", "b"]


@pytest.mark.parametrize(
    ("meta_age", "degraded", "expected_age"),
    [
        (None, True, None),  # no snapshot at all
        (MAX_AGE + 0.5, True, MAX_AGE + 0.5),  # 300.5 s > 300 s limit
        (10 * MAX_AGE, True, 10 * MAX_AGE),
        (MAX_AGE, False, MAX_AGE),  # exactly at the limit is still usable
        (-50.0, False, 0.0),  # a snapshot from the future (clock skew) is age 0
    ],
)
def test_degraded_when_no_or_stale_snapshot(meta_age: float | None, degraded: bool, expected_age: float | None) -> None:
    if meta_age is None:
        v = RankView(meta=None, destinations={f.id: f for f in METRICS})
    else:
        v = view(*METRICS, age=meta_age)
    result = rank(SCORED, JOB, v, NOW, MAX_AGE)
    assert result.degraded is degraded
    assert result.snapshot_age_s == (None if expected_age is None else pytest.approx(expected_age))
    if degraded:
        assert result.ids == TPV_ORDER
        assert result.degraded_reason
        assert all(p.reason.startswith("TPV order") for p in result.placements)
    else:
        assert result.ids == ["a", "c", "d", "b"]


def test_stale_reason_names_age_and_limit() -> None:
    result = rank(SCORED, JOB, view(*METRICS, age=1000), NOW, MAX_AGE)
    assert result.degraded_reason == "snapshot is 1000 s old (limit 300 s)"


def test_empty_candidates() -> None:
    assert rank([], JOB, view(*METRICS), NOW, MAX_AGE).ids == []
    assert rank([], JOB, RankView(), NOW, MAX_AGE).ids == []


def test_snapshot_destinations_that_are_not_candidates_are_never_added() -> None:
    assert ranked(["c"], view(*METRICS)) == ["c"]


# -- properties --------------------------------------------------------------------------
_ids = st.lists(st.text(alphabet="abcdefgh", min_size=1, max_size=3), min_size=0, max_size=12, unique=True)
_maybe = lambda s: st.none() | s  # noqa: E731
_figures = st.builds(
    dict,
    status=st.sampled_from(["online", "offline", "unknown"]),
    queued=_maybe(st.integers(0, 50).map(float)),
    cpus_free=_maybe(st.integers(0, 64).map(float)),
    mem_free_gb=_maybe(st.integers(0, 256).map(float)),
    gpus_free=_maybe(st.integers(0, 4).map(float)),
)
_jobs = st.builds(
    JobFacts,
    tool_id=st.just("t"),
    cores=st.integers(1, 64).map(float),
    mem=st.integers(0, 256).map(float),
    gpus=st.integers(0, 4).map(float),
)


@st.composite
def _scenario(draw: st.DrawFn) -> tuple[list[Candidate], RankView, JobFacts]:
    ids = draw(_ids)
    candidates = [Candidate(i, draw(_maybe(st.integers(-5, 5).map(float)))) for i in ids]
    figures = {}
    for i in ids:
        if draw(st.booleans()):
            figures[i] = DestinationFigures(id=i, **draw(_figures))
    # some destinations in the snapshot that are not candidates
    for extra in draw(st.lists(st.sampled_from(["X1", "X2", "X3"]), unique=True)):
        figures[extra] = DestinationFigures(id=extra, **draw(_figures))
    age = draw(st.sampled_from([None, 0.0, 100.0, MAX_AGE + 1]))
    meta = None if age is None else SnapshotMeta(created_at=NOW - age)
    return candidates, RankView(meta=meta, destinations=figures), draw(_jobs)


@settings(max_examples=300, deadline=None)
@given(_scenario())
def test_property_output_is_a_permutation_of_the_candidates(s: tuple[list[Candidate], RankView, JobFacts]) -> None:
    candidates, v, job = s
    result = rank(candidates, job, v, NOW, MAX_AGE)
    # every candidate exactly once, nothing added
    assert sorted(result.ids) == sorted(c.id for c in candidates)
    assert len(result.placements) == len(candidates)


@settings(max_examples=300, deadline=None)
@given(_scenario(), st.data())
def test_property_fewer_queued_never_moves_down(s: tuple[list[Candidate], RankView, JobFacts], data: st.DataObject) -> None:
    candidates, v, job = s
    with_queue = [c.id for c in candidates if c.id in v.destinations and v.destinations[c.id].queued]
    if not with_queue:
        return
    target = data.draw(st.sampled_from(with_queue))
    before = rank(candidates, job, v, NOW, MAX_AGE).ids.index(target)
    old = v.destinations[target]
    lower = data.draw(st.integers(0, int(old.queued) - 1).map(float))
    lowered = v.model_copy(
        update={"destinations": {**v.destinations, target: old.model_copy(update={"queued": lower})}}
    )
    after = rank(candidates, job, lowered, NOW, MAX_AGE).ids.index(target)
    assert after <= before
