"""Destination health without servers (issue 22, docs/health.md): the pure
judge (core/health.py) as a table, one row per transition with the
arithmetic that decides it; the Wilson bound and the probe draw; how the
rank core applies a verdict (core/ranking.py: excluded last, degraded's
score multiplied, probes scored); the collector's transitions and their log
lines (collector/health.py); and the property that health only ever moves a
destination down in the order, never drops or adds one. Real Redis and
influxd, the API and the CLI: test_health_integration.py."""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpv_broker.api.rank_service import scoring_model
from tpv_broker.collector.health import log_transitions, transitions
from tpv_broker.config.ranking_settings import ScoringSettings
from tpv_broker.core.charges import Charge, ChargeLoad, ChargeState
from tpv_broker.core.explain import explain
from tpv_broker.core.health import HealthRules, Signals, judge, judge_all, probe_draw, wilson_lower
from tpv_broker.core.inputs import Candidate, JobFacts
from tpv_broker.core.models import DestinationFigures, DestinationHealth, HealthPin, RankView, SnapshotMeta
from tpv_broker.core.ranking import rank
from tpv_broker.core.result import Group, RankResult

NOW = 1_700_000_000.0
RULES = HealthRules()  # the defaults docs/health.md argues for
H = 3600.0


def clock(at: float) -> str:
    return time.strftime("%H:%M UTC", time.gmtime(at))


def was(state: str, since: float, counted_from: float | None = None, reason: str = "earlier",
        pin: HealthPin | None = None) -> DestinationHealth:
    return DestinationHealth(state=state, since=since, counted_from=counted_from, reason=reason, pin=pin)


ALICE = HealthPin(state="drained", reason="storage migration", by="alice", at=NOW - 60)
BOB = HealthPin(state="healthy", reason="a user's broken workflow", by="bob", at=NOW - 120)


# -- the state machine, one transition a row ------------------------------------------------------
@dataclass(frozen=True)
class Row:
    previous: DestinationHealth | None
    # (time, jobs): placement buckets and error reports, as the collector reads them
    placed: list[tuple[float, float]]
    failed: list[tuple[float, float]]
    network: float
    state: str
    since: float
    pin: HealthPin | None = None
    # the figures the verdict shows (counted from counted_from, in the window)
    counted: tuple[float, float] | None = None
    counted_from: float | None = None
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # placements in buckets of this many seconds (the collector's: 300), 0: points
    bucket_s: float = 0.0
    # (bucket start, jobs that came back to be placed again), counted as the placements
    returned: list[tuple[float, float]] = field(default_factory=list)


ROWS = {
    # 6 of 20 failed: Wilson lower bound 0.146 - others 0.02 = 0.126 >= 0.1 (degraded_excess), < 0.5
    "healthy -> degraded": Row(None, [(NOW - H, 20)], [(NOW - 600, 6)], 0.02, "degraded", NOW, counted=(20, 6),
                               reason=f"degraded since {clock(NOW)}: 6 of 20 jobs failed (30%; the other endpoints "
                                      f"2%) in the last 3 h", extra={"score_factor": 0.5, "share": 0.3}),
    # 6 of 20 again, but the others fail 5 %: 0.146 - 0.05 = 0.096 < 0.1: the network's share raises the bar
    "others failing too keep it healthy": Row(None, [(NOW - H, 20)], [(NOW - 600, 6)], 0.05, "healthy", NOW,
                                              extra={"score_factor": 1.0}),
    # 20 of 20 failed: Wilson lower bound 0.839 - others 0.05 = 0.789 >= 0.5 (excluded_excess)
    "healthy -> excluded": Row(was("healthy", NOW - 2 * H), [(NOW - H, 20)], [(NOW - 600, 20)], 0.05, "excluded", NOW,
                               counted=(20, 20), extra={"score_factor": 1.0, "share": 1.0}),
    # 4 of 20: 0.081 - 0 = 0.081 < 0.1: healthy, and since when it has been is kept
    "healthy stays healthy": Row(was("healthy", NOW - 2 * H), [(NOW - H, 20)], [(NOW - 600, 4)], 0.0, "healthy",
                                 NOW - 2 * H,
                                 reason="4 of 20 jobs failed (20%; the other endpoints 0%) in the last 3 h"),
    # 8 of 10: 0.490 - 0 = 0.490: degraded, just short of excluded's 0.5
    "8 of 10 is degraded, not excluded": Row(None, [(NOW - H, 10)], [(NOW - 600, 8)], 0.0, "degraded", NOW),
    # exactly min_jobs (10), 10 of 10 failed: 0.723 - 0 = 0.723 >= 0.5
    "min_jobs placements are judged": Row(None, [(NOW - H, 10)], [(NOW - 600, 10)], 0.0, "excluded", NOW),
    # 9 of 9 failed (Wilson 0.701 would exclude it) but 9 < min_jobs 10: too few to judge
    "too few jobs: healthy": Row(None, [(NOW - H, 9)], [(NOW - 600, 9)], 0.0, "healthy", NOW, counted=(9, 9),
                                 reason="9 job(s) placed in the last 3 h: too few to judge (at least 10)"),
    # 6 of 20 still: 0.146 - 0.02 = 0.126 >= 0.1: degraded, since when it became so is kept
    "degraded stays degraded": Row(was("degraded", NOW - 900), [(NOW - H, 20)], [(NOW - 600, 6)], 0.02, "degraded",
                                   NOW - 900),
    # 2 of 20: 0.028 - 0 = 0.028 < 0.1
    "degraded -> healthy": Row(was("degraded", NOW - 900), [(NOW - H, 20)], [(NOW - 600, 2)], 0.0, "healthy", NOW,
                               extra={"score_factor": 1.0}),
    # 5 of 9: 9 placements < min_jobs 10: too few to judge any more
    "degraded -> healthy: too few jobs": Row(was("degraded", NOW - 900), [(NOW - H, 9)], [(NOW - 600, 5)], 0.0,
                                             "healthy", NOW),
    # 16 of 20: 0.584 - 0.05 = 0.534 >= 0.5
    "degraded -> excluded": Row(was("degraded", NOW - 900), [(NOW - H, 20)], [(NOW - 600, 16)], 0.05, "excluded",
                                NOW),
    # excluded 1799 s ago < exclude_s 1800: stays, whatever its figures (it got no job meanwhile), reason kept
    "excluded stays until exclude_s": Row(was("excluded", NOW - 1799, reason="excluded since then"), [], [], 0.0,
                                          "excluded", NOW - 1799, reason="excluded since then"),
    # 1800 s >= exclude_s 1800: probation, its figures counted from now on (the old 20 of 20 not held against it)
    "excluded -> probation": Row(was("excluded", NOW - 1800), [(NOW - H, 20)], [(NOW - 2400, 20)], 0.05,
                                 "probation", NOW, counted=(0, 0), counted_from=NOW,
                                 reason=f"on probation since {clock(NOW)}: 5% of jobs go there as probes",
                                 extra={"probe_share": 0.05, "score_factor": 1.0}),
    # 5 probes, 5 failed: 0.566 - 0.05 = 0.516 >= 0.5, after 600 s: no need to wait for report_lag_s to exclude
    "probation -> excluded when probes fail": Row(
        was("probation", NOW - 600, NOW - 600), [(NOW - 300, 5)], [(NOW - 60, 5)], 0.05, "excluded", NOW,
        counted=(5, 5), counted_from=NOW - 600,
        reason=f"excluded again at {clock(NOW)}, on its probes: 5 of 5 jobs failed (100%; the other endpoints 5%)"),
    # 5 probes (probe_jobs) placed at NOW - 7000, report_lag_s 3900 ago or more: reported; none failed:
    # 0 - 0.05 < 0.1
    "probation -> healthy": Row(was("probation", NOW - 8000, NOW - 8000), [(NOW - 7000, 5)], [], 0.05, "healthy",
                                NOW, counted=(5, 0), counted_from=NOW - 8000, extra={"probe_share": None},
                                reason=f"healthy since {clock(NOW)}, on its probes: 0 of 5 jobs failed (0%; "
                                       f"the other endpoints 5%)"),
    # the same 5 good probes, 3899 s < report_lag_s 3900: no error report has counted them yet, it waits
    "probation waits for report_lag_s": Row(was("probation", NOW - 3899, NOW - 3899), [(NOW - 3600, 5)], [], 0.05,
                                            "probation", NOW - 3899, extra={"probe_share": 0.05}),
    # 4 probes, 4 failed (0.510 - 0 >= 0.5) but 4 < probe_jobs 5: too few probes to exclude it again, it waits
    "probation waits for probe_jobs": Row(was("probation", NOW - 4000, NOW - 4000), [(NOW - 3600, 4)],
                                          [(NOW - 60, 4)], 0.0, "probation", NOW - 4000,
                                          reason=f"on probation since {clock(NOW - 4000)}: 4 probe(s) so far, "
                                                 f"4 failed"),
    # 5 probes, 3 failed: 0.231 - 0.05 = 0.181: not < 0.1 (healthy) nor >= 0.5 (excluded), and reported
    # (3900 s >= report_lag_s): degraded, as a healthy endpoint with these figures would be (waiting for
    # more probes could last for ever: the window slides)
    "probation -> degraded in between": Row(was("probation", NOW - 8000, NOW - 8000), [(NOW - 7000, 5)],
                                            [(NOW - 60, 3)], 0.05, "degraded", NOW, counted=(5, 3)),
    # 5 good-looking probes, but placed 600 s ago (< report_lag_s 3900): their errors may not be reported
    # yet, so they prove nothing: it waits
    "probes not yet reported do not heal it": Row(was("probation", NOW - 4000, NOW - 4000), [(NOW - 600, 5)], [],
                                                  0.05, "probation", NOW - 4000, counted=(5, 0)),
    # back from probation as degraded (counted from NOW - 8000): 6 placed since, fewer than min_jobs 10 but
    # as many as probation needed (probe_jobs 5): still judged, 3 of 6: 0.188 - 0.05 = 0.138 >= 0.1: degraded
    "back from probation it is judged on probe_jobs": Row(was("degraded", NOW - 600, NOW - 8000), [(NOW - 7000, 6)],
                                                          [(NOW - 60, 3)], 0.05, "degraded", NOW - 600,
                                                          counted=(6, 3)),
    # probation began at NOW - 8000, inside the 5-minute bucket [NOW - 8100, NOW - 7800): its 5 probes there
    # count (they can only have been placed after it began: it got no job while excluded); the bucket ended
    # report_lag_s ago or more: reported; 0 of 5 failed: healthy
    "probes in the bucket probation began in count": Row(was("probation", NOW - 8000, NOW - 8000),
                                                         [(NOW - 8100, 5)], [], 0.0, "healthy", NOW,
                                                         counted=(5, 0), bucket_s=300),
    # a bucket [NOW - 4200, NOW - 3900) that ends as probation begins holds none of its probes: 0 counted
    "a bucket that ended before probation does not count": Row(was("probation", NOW - 3900, NOW - 3900),
                                                               [(NOW - 4200, 5)], [], 0.0, "probation", NOW - 3900,
                                                               counted=(0, 0), bucket_s=300),
    # 20 errors reported at NOW - 8100, before probation began at NOW - 8000: not held; 5 good probes after
    "errors before probation are not held": Row(was("probation", NOW - 8000, NOW - 8000), [(NOW - 7000, 5)],
                                                [(NOW - 8100, 20)], 0.0, "healthy", NOW, counted=(5, 0)),
    # back to healthy after probation: its errors are still counted from probation's start (NOW - 5000), so
    # the 20 of 20 of before (at NOW - 2 h) do not send it out again; 0 of 10 since
    "healthy again: old errors not held": Row(was("healthy", NOW - 1000, NOW - 5000),
                                              [(NOW - 2 * H, 20), (NOW - 4000, 10)], [(NOW - 2 * H + 600, 20)], 0.0,
                                              "healthy", NOW - 1000, counted=(10, 0), counted_from=NOW - 5000),
    # a drained pin: no job, whatever the figures (0 of 50 failed), named who and when
    "pinned drained": Row(was("healthy", NOW - H), [(NOW - H, 50)], [], 0.0, "drained", NOW - 60, pin=ALICE,
                          reason=f"drained by alice at {clock(NOW - 60)}: storage migration",
                          extra={"pin": ALICE, "score_factor": 1.0}),
    # a healthy pin: 20 of 20 failed (0.839 would exclude it) ignored, even when it was excluded
    "pinned healthy": Row(was("excluded", NOW - 600), [(NOW - H, 20)], [(NOW - 600, 20)], 0.0, "healthy", NOW - 120,
                          pin=BOB, reason=f"pinned healthy (its errors ignored) by bob at {clock(NOW - 120)}: "
                                          f"a user's broken workflow", extra={"pin": BOB}),
    # unpinned now: the 20 of 20 of while it was pinned are not held against it, counted from now: 0 jobs
    "unpinned counts from then": Row(was("healthy", NOW - 120, pin=BOB), [(NOW - H, 20)], [(NOW - 600, 20)], 0.0,
                                     "healthy", NOW, counted=(0, 0), counted_from=NOW, extra={"pin": None}),
    # unpinned at NOW - 900: 20 of 20 before it not held; since then 10 of 10: 0.723 - 0 >= 0.5
    "after unpinning new errors count": Row(was("healthy", NOW - 900, NOW - 900),
                                            [(NOW - 2 * H, 20), (NOW - 600, 10)],
                                            [(NOW - 1800, 20), (NOW - 60, 10)], 0.0, "excluded", NOW, counted=(10, 10)),
    # 30 errors on 10 placements (jobs placed by other means failed too): the share is 30 of 30 at most 1,
    # Wilson(30, 30) 0.887 - 0 >= 0.5
    "errors > placements capped": Row(None, [(NOW - H, 10)], [(NOW - 600, 30)], 0.0, "excluded", NOW,
                                      counted=(10, 30), extra={"share": 1.0},
                                      reason=f"excluded since {clock(NOW)}: 30 of 30 jobs failed (100%; the other "
                                             f"endpoints 0%) in the last 3 h"),
    # 30 errors but 5 placements: min_jobs counts placements (5 < 10), too few to judge
    "errors > placements, too few placed": Row(None, [(NOW - H, 5)], [(NOW - 600, 30)], 0.0, "healthy", NOW),
    # no error report yet, but 20 of 20 came back (Galaxy resubmitted them): 0.839 - 0.05 >= 0.5
    "jobs that came back exclude it before any report": Row(
        was("healthy", NOW - 2 * H), [(NOW - 600, 20)], [], 0.05, "excluded", NOW, counted=(20, 20),
        returned=[(NOW - 600, 20)], extra={"returned": 20},
        reason=f"excluded since {clock(NOW)}: 20 of 20 jobs failed (100%; the other endpoints 5%), 20 came back "
               f"to be placed again in the last 3 h"),
    # 6 came back, and the report (an hour later) counts 8 errors, most of them the same jobs: the larger of
    # the two, 8 of 20, not 14: 0.219 - 0 >= 0.1 (degraded), < 0.5
    "returns and reports are not added up": Row(None, [(NOW - H, 20)], [(NOW - 60, 8)], 0.0, "degraded", NOW,
                                                counted=(20, 8), returned=[(NOW - H, 6)], extra={"returned": 6}),
    # 12 came back, the report counts 2: 12 of 20, 0.387 >= 0.1: degraded on the returns
    "more returns than reported errors": Row(None, [(NOW - H, 20)], [(NOW - 60, 2)], 0.0, "degraded", NOW,
                                             counted=(20, 12), returned=[(NOW - H, 12)]),
    # returned just before the 3 h window: not counted
    "returns outside the window: forgotten": Row(None, [(NOW - H, 20)], [], 0.0, "healthy", NOW, counted=(20, 0),
                                                 returned=[(NOW - 3 * H - 1, 20)], extra={"returned": 0}),
    # 200 jobs ran well in the last 3 h, then 12 placed in the last 10 min all came back: over the window
    # 12 of 212 (Wilson 0.033, healthy); over recent_s (600 s), returns alone: 12 of 12, 0.757 - 0 >= 0.5
    "recent returns exclude it though the window dilutes them": Row(
        was("healthy", NOW - 2 * H), [(NOW - 2 * H, 200), (NOW - 600, 12)], [], 0.0, "excluded", NOW,
        counted=(12, 12), returned=[(NOW - 600, 12)], bucket_s=300,
        reason=f"excluded since {clock(NOW)}: 12 of 12 jobs failed (100%; the other endpoints 0%), 12 came back to "
               f"be placed again in the last 10 min"),
    # 4 of 10 came back recently (Wilson 0.168 - 0.04 would be degraded over the window): the recent span
    # only excludes, and 4 of 210 over the window is healthy; a few minutes of user errors look like that
    "the recent span does not degrade": Row(was("healthy", NOW - 2 * H), [(NOW - 2 * H, 200), (NOW - 600, 10)], [],
                                            0.04, "healthy", NOW - 2 * H, counted=(210, 4),
                                            returned=[(NOW - 600, 4)], bucket_s=300),
    # the same, 9 of 9 recently: fewer than min_jobs (10) over recent_s, and 9 of 209 over the window: healthy
    "too few recent returns: healthy": Row(was("healthy", NOW - 2 * H), [(NOW - 2 * H, 200), (NOW - 600, 9)], [],
                                           0.0, "healthy", NOW - 2 * H, counted=(209, 9),
                                           returned=[(NOW - 600, 9)], bucket_s=300),
    # 12 placed recently and an error report of 12 a minute ago, but nothing came back: the recent span
    # judges returns only (a report covers the hour before it, not 10 min): 12 of 212 over the window
    "the recent span ignores error reports": Row(was("healthy", NOW - 2 * H), [(NOW - 2 * H, 200), (NOW - 600, 12)],
                                                 [(NOW - 60, 12)], 0.0, "healthy", NOW - 2 * H, counted=(212, 12),
                                                 bucket_s=300),
    # unpinned 5 min ago (counted from then): the 12 of 12 that came back while it was pinned are not held
    # against it over the recent span either: 0 placed since
    "the recent span counts from counted_from": Row(was("healthy", NOW - 300, NOW - 300), [(NOW - 600, 12)], [],
                                                    0.0, "healthy", NOW - 300, counted=(0, 0),
                                                    returned=[(NOW - 600, 12)]),
    # 20 of 20 placed and failed just before the 3 h window: nothing counted
    "outside the window: forgotten": Row(was("degraded", NOW - 2 * H), [(NOW - 3 * H - 1, 20)],
                                         [(NOW - 3 * H, 20)], 0.0, "healthy", NOW, counted=(0, 0)),
}


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_each_transition(row: Row) -> None:
    verdict = judge(row.previous, Signals(row.placed, row.failed, row.bucket_s, row.returned), row.network, row.pin,
                    NOW, RULES)
    assert (verdict.state, verdict.since) == (row.state, row.since), verdict
    if row.counted is not None:
        assert (verdict.placements, verdict.errors) == row.counted
    if row.counted_from is not None:
        assert verdict.counted_from == row.counted_from
    if row.reason is not None:
        assert verdict.reason == row.reason
    for name, expected in row.extra.items():
        assert getattr(verdict, name) == expected, name
    # whatever the row, the share shown is a share
    assert verdict.share is None or 0.0 <= verdict.share <= 1.0


def test_the_table_covers_every_state_pair_the_docs_list() -> None:
    """Each transition of docs/health.md's table has a row (a row added for
    a new state must say where it goes)."""
    pairs = {((r.previous.state if r.previous and not r.previous.pin else "healthy"), r.state) for r in ROWS.values()}
    assert {("healthy", "degraded"), ("healthy", "excluded"), ("degraded", "healthy"), ("degraded", "excluded"),
            ("excluded", "excluded"), ("excluded", "probation"), ("probation", "excluded"),
            ("probation", "healthy"), ("probation", "probation"), ("healthy", "drained")} <= pairs


def test_the_whole_cycle_a_black_hole_goes_through() -> None:
    """healthy -> excluded -> probation -> healthy, verdict feeding verdict
    as the collector does, with the figures of a black hole that heals."""
    rules = HealthRules(exclude_s=1800, report_lag_s=3900, probe_jobs=5)
    placed = [(NOW - 900, 30.0)]
    failed = [(NOW - 60, 30.0)]
    v = judge(None, Signals(placed, failed), 0.02, None, NOW, rules)
    assert v.state == "excluded"  # 30 of 30: 0.887 - 0.02 >= 0.5
    v = judge(v, Signals(placed, failed), 0.02, None, NOW + 1799, rules)
    assert v.state == "excluded"
    t = NOW + 1800
    v = judge(v, Signals(placed, failed), 0.02, None, t, rules)
    assert (v.state, v.counted_from) == ("probation", t)
    # it heals: 6 probes within the hour, none fails
    placed.append((t + 600, 6.0))
    v = judge(v, Signals(placed, failed), 0.02, None, t + 3000, rules)
    assert (v.state, v.placements, v.errors) == ("probation", 6, 0)  # 3000 s < report_lag_s
    # report_lag_s after probation began, but its probes went at t + 600: their errors may be unreported
    v = judge(v, Signals(placed, failed), 0.02, None, t + 3900, rules)
    assert v.state == "probation"
    v = judge(v, Signals(placed, failed), 0.02, None, t + 4500, rules)
    assert (v.state, v.since, v.counted_from) == ("healthy", t + 4500, t)
    # later its old 30 of 30 are still inside the window, yet not held against it
    v = judge(v, Signals(placed, failed), 0.02, None, t + 4600, rules)
    assert (v.state, v.since, v.placements, v.errors) == ("healthy", t + 4500, 6, 0)


# -- the network share: judge_all ----------------------------------------------------------------
def _signals(*per: tuple[str, float, float]) -> dict[str, Signals]:
    return {d: Signals([(NOW - H, placed)], [(NOW - 600, failed)] if failed else []) for d, placed, failed in per}


def test_a_network_wide_bad_day_takes_nobody_out() -> None:
    # Every endpoint fails about 40 % (broken user inputs): a's 12 of 20 has a lower bound of 0.387, its
    # others' share is 24 of 60 = 0.4: 0.387 - 0.4 < 0.1: healthy; so are the rest (8 of 20: 0.219 -
    # 28/60 < 0).
    verdicts = judge_all({}, _signals(("a", 20, 12), ("b", 20, 8), ("c", 20, 8), ("d", 20, 8)), {}, NOW, RULES)
    assert {d: v.state for d, v in verdicts.items()} == dict.fromkeys("abcd", "healthy")
    assert verdicts["a"].network_share == 0.4
    # The same 12 of 20 among endpoints that fail nothing: 0.387 - 0 >= 0.1: degraded.
    alone = judge_all({}, _signals(("a", 20, 12), ("b", 20, 0), ("c", 20, 0), ("d", 20, 0)), {}, NOW, RULES)
    assert alone["a"].state == "degraded" and alone["a"].network_share == 0.0


def test_a_private_endpoints_failures_are_left_out_of_the_others_share() -> None:
    # Every tenant sees the shared endpoints' verdicts: with eu's private endpoint the only other one, their
    # "other endpoints 90 %" was its share. Left out, the shared ones compare with each other only, and the
    # private one is still judged against them.
    signals = _signals(("a", 30, 3), ("b", 30, 3), ("eu_cluster", 30, 27))
    verdicts = judge_all({}, signals, {}, NOW, RULES, private=frozenset({"eu_cluster"}))
    assert verdicts["a"].network_share == verdicts["b"].network_share == 0.1
    assert "the other endpoints 10%" in verdicts["a"].reason
    assert verdicts["eu_cluster"].network_share == 0.1 and verdicts["eu_cluster"].state == "excluded"
    mixed = judge_all({}, signals, {}, NOW, RULES)
    assert mixed["a"].network_share == 0.5  # (3 + 27) / 60: eu's figure shows through


def test_a_black_hole_among_healthy_endpoints() -> None:
    # a: 20 of 20, its others 2 of 40 = 0.05: 0.839 - 0.05 = 0.789 >= 0.5: excluded. b: 1 of 20 (lower bound
    # 0.009) against the others' 21 of 40 = 0.525: healthy; a black hole does not lift its neighbours.
    verdicts = judge_all({}, _signals(("a", 20, 20), ("b", 20, 1), ("c", 20, 1)), {}, NOW, RULES)
    assert [verdicts[d].state for d in "abc"] == ["excluded", "healthy", "healthy"]
    assert (verdicts["a"].network_share, verdicts["b"].network_share) == (0.05, 0.525)


def test_a_network_wide_bad_ten_minutes_take_nobody_out() -> None:
    # A shared object store fails for 10 min: every endpoint's recent jobs come back. a: 12 of 12 (0.757)
    # against its others' 20 of 24 (0.833) recently: below; b and c likewise: nobody is out. Alone among
    # endpoints whose jobs stay, a is excluded (0.757 - 0 >= 0.5).
    def recent(*per: tuple[str, float]) -> dict[str, Signals]:
        return {d: Signals([(NOW - 600, 12)], [], 300, [(NOW - 600, back)]) for d, back in per}

    verdicts = judge_all({}, recent(("a", 12), ("b", 10), ("c", 10)), {}, NOW, RULES)
    assert {d: v.state for d, v in verdicts.items()} == dict.fromkeys("abc", "healthy")
    alone = judge_all({}, recent(("a", 12), ("b", 0), ("c", 0)), {}, NOW, RULES)
    assert [alone[d].state for d in "abc"] == ["excluded", "healthy", "healthy"]


def test_the_network_share_is_at_most_one() -> None:
    # b's 50 errors on 10 placements would make a's others' share 5: capped at 1.
    verdicts = judge_all({}, _signals(("a", 20, 0), ("b", 10, 50)), {}, NOW, RULES)
    assert verdicts["a"].network_share == 1.0 and verdicts["a"].state == "healthy"


def test_judge_all_keeps_verdicts_and_pins_without_signals_and_the_reports() -> None:
    """Every destination with signals, a verdict or a pin is judged; each
    keeps the window's error reports (for the status page's chart), also
    those before counted_from."""
    previous = {"gone": was("excluded", NOW - 60)}
    signals = {"a": Signals([(NOW - H, 20)], [(NOW - 3 * H - 10, 7), (NOW - 2 * H, 2), (NOW - 600, 1)])}
    verdicts = judge_all(previous, signals, {"pinned": ALICE}, NOW, RULES)
    assert set(verdicts) == {"a", "gone", "pinned"}
    assert verdicts["gone"].state == "excluded" and verdicts["pinned"].state == "drained"
    assert verdicts["a"].reports == [(NOW - 2 * H, 2), (NOW - 600, 1)]
    assert verdicts["gone"].reports == []


# -- the Wilson bound and the draw -----------------------------------------------------------------
@pytest.mark.parametrize(("errors", "jobs", "lower"), [
    (3, 10, 0.1078),  # docs/health.md: "3 failures in 10 jobs: at least 11 %"
    (30, 100, 0.2189),  # "30 in 100: at least 22 %"
    (20, 20, 0.8389),
    (10, 10, 0.7225),
    (0, 20, 0.0),
    (0, 0, 0.0),  # no jobs: nothing proven
])
def test_wilson_lower_bound(errors: float, jobs: float, lower: float) -> None:
    assert wilson_lower(errors, jobs) == pytest.approx(lower, abs=5e-5)


def test_wilson_lower_bound_is_below_the_share_and_grows_with_the_evidence() -> None:
    for jobs in (1, 5, 10, 100, 1000):
        bounds = [wilson_lower(e, jobs) for e in range(jobs + 1)]
        # (a share of 0 may come out a rounding error above it: 3e-18 for 0 of 100)
        assert all(0.0 <= b <= e / jobs + 1e-15 for e, b in enumerate(bounds))
        assert bounds == sorted(bounds)
    # the same 30 % share proves more on more jobs
    assert wilson_lower(3, 10) < wilson_lower(30, 100) < wilson_lower(300, 1000) < 0.3
    # more errors than jobs count as all of them
    assert wilson_lower(30, 10) == wilson_lower(10, 10)


def test_probe_draw_is_the_jobs_own_and_uniform() -> None:
    assert probe_draw("default", "4711") == probe_draw("default", "4711")
    assert probe_draw("default", "4711") != probe_draw("usegalaxy-eu", "4711")
    draws = [probe_draw("default", str(i)) for i in range(20_000)]
    assert all(0.0 <= d < 1.0 for d in draws)
    # 5 % of 20 000: 1000 +- 4 standard deviations (sqrt(20000 * 0.05 * 0.95) = 30.8)
    assert 877 <= sum(d < 0.05 for d in draws) <= 1123
    # ten equal bins, each 2000 +- 4 sd (42.4)
    bins = Counter(int(d * 10) for d in draws)
    assert all(1830 <= bins[b] <= 2170 for b in range(10)), bins


# -- the collector's transitions ---------------------------------------------------------------------
def test_transitions_name_each_change_once() -> None:
    previous = {"a": was("healthy", NOW - H), "b": was("excluded", NOW - 600), "c": was("degraded", NOW - 60),
                "d": was("healthy", NOW - 60)}
    verdicts = {"a": was("excluded", NOW), "b": was("excluded", NOW - 600), "new": was("degraded", NOW),
                "calm": was("healthy", NOW)}
    changes = transitions(previous, verdicts)
    # b unchanged, calm new but healthy, d gone while healthy: no transition; c gone while degraded: healthy
    assert [(t.destination, t.before, t.after.state) for t in changes] == [
        ("a", "healthy", "excluded"), ("new", "healthy", "degraded"), ("c", "degraded", "healthy")]
    assert changes[-1].after.reason == "no longer judged"


def test_each_transition_is_logged_once_with_its_figures(caplog: pytest.LogCaptureFixture) -> None:
    verdict = judge(None, Signals([(NOW - H, 20)], [(NOW - 600, 20)]), 0.05, None, NOW, RULES)
    back = judge(was("probation", NOW - 8000, NOW - 8000), Signals([(NOW - 7000, 5)], []), 0.0, None, NOW, RULES)
    with caplog.at_level(logging.INFO, logger="tpv_broker.collector"):
        log_transitions(transitions({"b": was("probation", NOW - 3900)}, {"a": verdict, "b": back}))
    records = [r for r in caplog.records if getattr(r, "tpv_event", None) == "health_transition"]
    assert [(r.levelno, r.tpv_fields["destination"], r.tpv_fields["before"], r.tpv_fields["after"])
            for r in records] == [(logging.WARNING, "a", "healthy", "excluded"), (logging.INFO, "b", "probation",
                                                                                    "healthy")]
    assert records[0].tpv_fields == {"destination": "a", "before": "healthy", "after": "excluded",
                                     "errors": 20, "placements": 20, "share": 1.0, "network_share": 0.05}
    assert verdict.reason in records[0].getMessage()


# -- what the rank core makes of a verdict -----------------------------------------------------------
MODEL = scoring_model(ScoringSettings())
JOB = JobFacts(tool_id="bwa", cores=1, mem=1)


def fig(dest_id: str, health: DestinationHealth | None = None, free: float = 64, **kw: Any) -> DestinationFigures:
    return DestinationFigures(id=dest_id, status=kw.pop("status", "online"), queued=0, running=1, cpus_total=128,
                              cpus_free=free, mem_free_gb=256, live_at=NOW - 10,
                              sources={"queue_by_destination": NOW - 10}, health=health, **kw)


def rank_of(*figures: DestinationFigures, draw: float = 1.0, ids: list[str] | None = None) -> RankResult:
    view = RankView(meta=SnapshotMeta(created_at=NOW - 5, destinations=len(figures)),
                    destinations={f.id: f for f in figures})
    return rank([Candidate(d) for d in ids or [f.id for f in figures]], JOB, [], view, NOW, MODEL, 300, {},
                probe_draw=draw)


def verdict_of(state: str, **kw: Any) -> DestinationHealth:
    kw.setdefault("reason", f"{state} for a test")
    if state == "degraded":
        kw.setdefault("score_factor", 0.5)
    if state == "probation":
        kw.setdefault("probe_share", 0.05)
    return DestinationHealth(state=state, since=NOW - 60, **kw)


def test_an_excluded_destination_is_ranked_last_with_its_reason() -> None:
    # "best" has the most free cores: without health it comes first
    best = verdict_of("excluded", errors=20, placements=20, share=1.0)
    result = rank_of(fig("best", best, free=128), fig("off", status="offline"), fig("ok", free=8), fig("ok2", free=4))
    assert result.ids == ["ok", "ok2", "best", "off"]
    p = result.placements[2]
    assert (p.group, p.reason, p.total, p.health) == (Group.EXCLUDED, "excluded for a test", None, best)
    entry = explain(result)[2]
    assert entry["group"] == "excluded" and entry["health"]["state"] == "excluded"
    assert entry["health"]["errors"] == 20 and "score" not in entry
    # drained is excluded too
    drained = rank_of(fig("best", verdict_of("drained"), free=128), fig("ok", free=8))
    assert drained.ids == ["ok", "best"] and drained.placements[1].group is Group.EXCLUDED
    assert drained.first_scored_id == "ok"


def test_a_degraded_destination_scores_by_its_factor() -> None:
    healthy = rank_of(fig("a", free=128), fig("b", free=100))
    base = {p.id: p.total for p in healthy.placements}
    result = rank_of(fig("a", verdict_of("degraded"), free=128), fig("b", free=100))
    totals = {p.id: p.total for p in result.placements}
    assert totals["a"] == pytest.approx(base["a"] * 0.5) and totals["b"] == base["b"]
    a = next(p for p in result.placements if p.id == "a")
    assert a.group is Group.SCORED and "x 0.5: degraded for a test)" in a.reason
    assert result.ids == ["b", "a"]


@pytest.mark.parametrize(("draw", "probe"), [(0.0, True), (0.0499, True), (0.05, False), (0.9, False)])
def test_on_probation_a_job_under_the_probe_share_is_a_probe(draw: float, probe: bool) -> None:
    result = rank_of(fig("p", verdict_of("probation"), free=128), fig("ok", free=8), draw=draw)
    p = next(p for p in result.placements if p.id == "p")
    if probe:
        assert result.ids == ["p", "ok"] and p.group is Group.SCORED
        assert "(this job is one of its probes: probation for a test)" in p.reason
    else:
        assert result.ids == ["ok", "p"] and p.group is Group.EXCLUDED
        assert p.reason == "on probation, and this job is not one of its probes: probation for a test"


# -- the property: health only moves a destination down ---------------------------------------------
STATES = ["healthy", "degraded", "excluded", "probation", "drained"]
MOVED_DOWN = {"degraded", "excluded", "drained"}
small = st.integers(0, 64).map(float)


@st.composite
def world(draw: Any, verdicts: str = "any") -> dict[str, Any]:
    """A snapshot of live, stale, offline and unmeasured destinations, some
    with in-flight charges; candidates (with ties of TPV's tag score and an
    unknown one); a job and its probe draw; and health verdicts: ``any``
    (any state on any destination), ``one`` (one destination moved down)
    or ``none``. Lighter than test_rank_properties' scenario, so that a few
    hundred cases run in a second or two."""
    ids = [f"d{i}" for i in range(draw(st.integers(1, 8)))]
    figures, loads = {}, {}
    for d in ids:
        kind = draw(st.sampled_from(["live", "live", "live", "stale", "offline", "unmeasured"]))
        if kind == "unmeasured":
            figures[d] = DestinationFigures(id=d, in_config=True, cpus_total=draw(small))
            continue
        live_at = NOW - (draw(st.floats(1000, 5000)) if kind == "stale" else draw(st.floats(0, 600)))
        figures[d] = DestinationFigures(
            id=d, status="offline" if kind == "offline" else "online", queued=draw(small), running=draw(small),
            cpus_total=draw(small), cpus_free=draw(st.floats(-4, 64)), mem_free_gb=draw(st.floats(0, 512)),
            median_run_s=draw(st.none() | st.floats(60, 36000)), live_at=live_at,
            sources={"queue_by_destination": live_at})
        if draw(st.integers(0, 3)) == 0:
            # Halves, as jobs ask for them: sums stay exact.
            loads[d] = ChargeLoad().plus(Charge(d, draw(st.integers(1, 16)) / 2, 2.0, NOW - 30, "j1", 600.0))
    pool = [*ids, "unknown"]
    asked = draw(st.permutations(pool))[:draw(st.integers(1, len(pool)))]
    tags = st.none() | st.sampled_from([0.0, 1.0, 2.0])
    chosen: list[str] = []
    if verdicts == "one":
        chosen = [draw(st.sampled_from(ids))]
    elif verdicts == "any":
        chosen = draw(st.lists(st.sampled_from(ids), unique=True))
    health = {}
    for d in chosen:
        state = draw(st.sampled_from(sorted(MOVED_DOWN) if verdicts == "one" else STATES))
        health[d] = verdict_of(state, score_factor=draw(st.sampled_from([0.1, 0.5, 0.9])) if state == "degraded"
                               else 1.0, probe_share=draw(st.sampled_from([0.05, 0.3, 1.0])) if state == "probation"
                               else None)
    return {"view": RankView(meta=SnapshotMeta(created_at=NOW - 5, destinations=len(ids)), destinations=figures,
                             charges=ChargeState(loads)),
            "candidates": [Candidate(d, draw(tags)) for d in asked],
            "job": JobFacts("bwa", cores=draw(st.integers(1, 16)), mem=draw(st.floats(0, 64))),
            "health": health, "draw": draw(st.floats(0.0, 1.0, exclude_max=True))}


def with_health(view: RankView, verdicts: dict[str, DestinationHealth]) -> RankView:
    destinations = {d: f.model_copy(update={"health": verdicts.get(d)}) for d, f in view.destinations.items()}
    return RankView(meta=view.meta, destinations=destinations, tool_stats=view.tool_stats, charges=view.charges)


def rank_in(w: dict[str, Any], view: RankView, **kw: Any) -> RankResult:
    return rank(w["candidates"], w["job"], [], view, NOW, MODEL, 300, {}, 600.0, **kw)


def moved_down(verdicts: dict[str, DestinationHealth], draw: float) -> set[str]:
    """Those health may move: degraded, excluded, drained, and on
    probation when this job is not one of its probes."""
    return {d for d, v in verdicts.items() if v.state in MOVED_DOWN
            or (v.state == "probation" and v.probe_share is not None and draw >= v.probe_share)}


@settings(max_examples=200, deadline=None)
@given(world())
def test_health_only_moves_destinations_down(w: dict[str, Any]) -> None:
    verdicts, draw = w["health"], w["draw"]
    base = rank_in(w, w["view"], probe_draw=draw)
    judged = rank_in(w, with_health(w["view"], verdicts), probe_draw=draw)
    assert not base.degraded and not judged.degraded
    # nothing dropped, nothing added
    assert Counter(judged.ids) == Counter(base.ids) == Counter(c.id for c in w["candidates"])
    moved = moved_down(verdicts, draw)
    # the others (healthy, no verdict, or this job one of its probes) keep their relative order
    assert [d for d in judged.ids if d not in moved] == [d for d in base.ids if d not in moved]
    # an excluded one is never ahead of a scored one
    groups = [p.group for p in judged.placements]
    if Group.EXCLUDED in groups and Group.SCORED in groups:
        assert max(i for i, g in enumerate(groups) if g is Group.SCORED) < groups.index(Group.EXCLUDED)
    # one moved down never overtakes one that was not: those ahead of it stay ahead, so a degraded one's
    # place among the others is never better than without health
    before = {d: i for i, d in enumerate(base.ids)}
    after = {d: i for i, d in enumerate(judged.ids)}
    for m in moved:
        for other in before:
            if m in before and other not in moved and before[other] < before[m]:
                assert after[other] < after[m], (other, m)
    # a degraded one's score is its score times its factor; only health's states are excluded
    base_totals = {p.id: p.total for p in base.placements}
    for p in judged.placements:
        v = verdicts.get(p.id)
        if p.group is Group.SCORED and v is not None and v.state == "degraded":
            assert p.total == pytest.approx(base_totals[p.id] * v.score_factor, rel=1e-12, abs=1e-15)
        if p.group is Group.EXCLUDED:
            assert v is not None and v.state in ("excluded", "drained", "probation")


@settings(max_examples=150, deadline=None)
@given(world(verdicts="one"))
def test_one_destination_moved_down_never_gains_a_place(w: dict[str, Any]) -> None:
    """With one verdict only, its position is never better than without
    health. (With several, one may gain a place when another, moved down
    too, falls behind it: the property above covers that.)"""
    base = rank_in(w, w["view"], probe_draw=w["draw"])
    judged = rank_in(w, with_health(w["view"], w["health"]), probe_draw=w["draw"])
    for d in w["health"]:
        if d in base.ids:
            assert judged.ids.index(d) >= base.ids.index(d)


@settings(max_examples=100, deadline=None)
@given(world(verdicts="none"))
def test_without_verdicts_the_answer_is_todays(w: dict[str, Any]) -> None:
    """No health anywhere, or every destination healthy: the same order,
    reasons and totals whatever the job's draw (docs/health.md: 'Without
    error counts or pins nothing changes')."""
    plain = rank_in(w, w["view"])
    drawn = rank_in(w, w["view"], probe_draw=w["draw"])
    healthy = rank_in(w, with_health(w["view"], {d: verdict_of("healthy") for d in w["view"].destinations}),
                      probe_draw=w["draw"])
    for other in (drawn, healthy):
        assert [(p.id, p.group, p.reason, p.total) for p in other.placements] == [
            (p.id, p.group, p.reason, p.total) for p in plain.placements]
    assert all(p.health is None for p in drawn.placements)


def test_judge_is_pure_and_total_over_its_inputs() -> None:
    """A seeded sweep over random signals and previous verdicts: judge
    never raises, never shows a share outside [0, 1], keeps since for a
    state it stays in and keeps its knobs to its state."""
    import random

    rng = random.Random(22)
    for _ in range(3000):
        state = rng.choice([None, *STATES])
        since = NOW - rng.uniform(0, 6 * H)
        previous = None if state is None else was(state, since, rng.choice([None, since]))
        placed = [(NOW - rng.uniform(0, 4 * H), float(rng.randint(0, 40))) for _ in range(rng.randint(0, 3))]
        failed = [(NOW - rng.uniform(0, 4 * H), float(rng.randint(0, 40))) for _ in range(rng.randint(0, 3))]
        v = judge(previous, Signals(placed, failed), rng.random(), None, NOW, RULES)
        assert v.share is None or 0.0 <= v.share <= 1.0
        assert v.placements >= 0 and v.errors >= 0 and not math.isnan(v.placements)
        assert v.score_factor == (RULES.degraded_factor if v.state == "degraded" else 1.0)
        assert (v.probe_share is not None) == (v.state == "probation")
        if previous is not None and previous.state == v.state and v.state != "healthy":
            assert v.since == previous.since
        assert v.state != "drained"  # only a pin drains


def test_only_the_galaxies_whose_errors_are_read_count_as_placements() -> None:
    """Two Galaxies share a black hole; only fr's own InfluxDB has error
    counts. Its 20 placements and 20 errors there are a 100 % share: eu's
    80 placements, whose errors nobody reports, must not dilute it to 20 %."""
    from tpv_broker.collector.health import error_tenants
    from tpv_broker.collector.presets import presets_for
    from tpv_broker.collector.source import Source
    from tpv_broker.config.collector_settings import CollectorSettings

    s = CollectorSettings()
    errors = tuple(presets_for(s, ["queue_by_destination", "errored_jobs_by_destination"]))
    queue = tuple(presets_for(s, ["queue_by_destination"]))

    def source(name: str, presets: tuple[Any, ...], tenant: str | None) -> Source:
        return Source(name, None, presets, {}, tenant)  # type: ignore[arg-type]

    assert error_tenants([source("eu", queue, "eu"), source("fr", errors, "fr")]) == frozenset({"fr"})
    # A shared source of error counts covers every Galaxy's jobs; so does a single Galaxy's one source.
    assert error_tenants([source("net", errors, None), source("fr", errors, "fr")]) is None
    assert error_tenants([source("influxdb", errors, None)]) is None
    # 20 of 20 (fr's) against 20 of 100 (everyone's): excluded against degraded.
    only_fr = judge(None, Signals(placements=[(NOW - H, 20)], errors=[(NOW - 60, 20)]), 0.0, None, NOW, RULES)
    everyone = judge(None, Signals(placements=[(NOW - H, 100)], errors=[(NOW - 60, 20)]), 0.0, None, NOW, RULES)
    assert (only_fr.state, everyone.state) == ("excluded", "degraded")


def test_only_the_galaxies_whose_errors_are_read_count_their_returns_too() -> None:
    """The same split for the jobs that come back: eu's 20 returns from the
    black hole go with its placements, out of the count (fr's errors are
    the ones read, its 20 jobs there went well); counted, they would make
    20 of 20. The store is fakeredis: this is judge_cycle's choice of
    signals (the charge script's counting is tested on a real Redis)."""
    import fakeredis

    from tpv_broker.collector.cycle_data import CycleData
    from tpv_broker.collector.health import judge_cycle
    from tpv_broker.collector.presets import presets_for
    from tpv_broker.collector.source import Source
    from tpv_broker.config.collector_settings import CollectorSettings
    from tpv_broker.config.settings import BrokerConfig
    from tpv_broker.store.inflight import placement_field
    from tpv_broker.store.keys import KeySchema
    from tpv_broker.store.snapshots import SnapshotStore

    store = SnapshotStore(fakeredis.FakeRedis(), KeySchema("t"))
    at = NOW - 600
    store.client.hset(store.keys.health_placements, mapping={placement_field(at, "eu", "bh"): 20,
                                                             placement_field(at, "fr", "bh"): 20})
    store.client.hset(store.keys.health_returns, mapping={placement_field(at, "eu", "bh"): 20})
    errors = tuple(presets_for(CollectorSettings(), ["errored_jobs_by_destination"]))
    sources = [Source("eu", None, (), {}, "eu"), Source("fr", None, errors, {}, "fr")]  # type: ignore[arg-type]
    data = CycleData(aliases={}, errors={})
    verdicts, problem = judge_cycle(data, sources, BrokerConfig(), store, {}, NOW)
    assert problem is None
    bh = verdicts["bh"]
    assert (bh.state, bh.placements, bh.errors, bh.returned) == ("healthy", 20, 0, 0)
    # a shared source of error counts covers everyone: 20 of 40 came back (Wilson 0.35): degraded
    shared = [Source("net", None, errors, {}, None)]  # type: ignore[arg-type]
    verdicts, _ = judge_cycle(data, shared, BrokerConfig(), store, {}, NOW)
    assert (verdicts["bh"].state, verdicts["bh"].errors, verdicts["bh"].placements) == ("degraded", 20, 40)


def test_the_last_hour_of_placements_is_kept_whatever_the_health_window() -> None:
    """The status page charts and /metrics count the last hour of
    placements: a window shorter than that (the config allows 600 s) must
    not drop them."""
    import fakeredis

    from tpv_broker.collector.cycle_data import CycleData
    from tpv_broker.collector.health import judge_cycle
    from tpv_broker.collector.presets import presets_for
    from tpv_broker.collector.source import Source
    from tpv_broker.config.collector_settings import CollectorSettings, HealthSettings
    from tpv_broker.config.settings import BrokerConfig
    from tpv_broker.store.inflight import placement_field
    from tpv_broker.store.keys import KeySchema
    from tpv_broker.store.snapshots import SnapshotStore

    store = SnapshotStore(fakeredis.FakeRedis(), KeySchema("t"))
    forty_min, two_hours = placement_field(NOW - 2400, "eu", "a"), placement_field(NOW - 7200, "eu", "a")
    store.client.hset(store.keys.health_placements, mapping={forty_min: 3, two_hours: 4})
    errors = tuple(presets_for(CollectorSettings(), ["errored_jobs_by_destination"]))
    config = BrokerConfig(collector=CollectorSettings(health=HealthSettings(window_s=1800, recent_s=300)))
    _, problem = judge_cycle(CycleData(aliases={}, errors={}), [Source("eu", None, errors, {}, "eu")],  # type: ignore[arg-type]
                             config, store, {}, NOW)
    assert problem is None
    assert store.client.hkeys(store.keys.health_placements) == [forty_min.encode()]


def test_errors_past_the_placements_do_not_raise_the_networks_share() -> None:
    """b's Galaxy reports 60 errors where the broker placed 10 (its local
    runners): only 10 of them are the network's. Counted whole, they would
    raise the bar a's 10 of 20 is judged against and let it off."""
    signals = {"a": Signals([(NOW - 600, 20)], [(NOW - 300, 10)], 300),
               "b": Signals([(NOW - 600, 10)], [(NOW - 300, 60)], 300),
               "c": Signals([(NOW - 600, 100)], [], 300)}
    verdicts = judge_all({}, signals, {}, NOW, RULES)
    assert verdicts["a"].network_share == pytest.approx(10 / 110, abs=1e-4)
    assert verdicts["a"].state == "degraded"


def test_the_recent_network_share_counts_returns_only() -> None:
    """b and c have error reports but nothing came back from them: over
    the recent span the others' share is 0, and a's 12 of 12 returns
    exclude it (over the window its 12 of 12 against the others' reported
    10 of 24 would not: 0.757 - 0.417 < 0.5)."""
    signals = {"a": Signals([(NOW - 600, 12)], [], 300, [(NOW - 600, 12)]),
               "b": Signals([(NOW - 600, 12)], [(NOW - 60, 5)], 300),
               "c": Signals([(NOW - 600, 12)], [(NOW - 60, 5)], 300)}
    verdicts = judge_all({}, signals, {}, NOW, RULES)
    assert verdicts["a"].state == "excluded" and "in the last 10 min" in verdicts["a"].reason


def test_errors_without_placements_do_not_raise_the_networks_bar() -> None:
    """A Galaxy's local runner reports 250 errors where the broker placed
    nothing: they are not the network's, and must not hide a black hole."""
    signals = {"bh": Signals(placements=[(NOW - H, 20)], errors=[(NOW - 60, 20)]),
               "b": Signals(placements=[(NOW - H, 100)], errors=[(NOW - 60, 2)]),
               "local_slurm": Signals(errors=[(NOW - 60, 250)])}
    verdicts = judge_all({}, signals, {}, NOW, RULES)
    assert verdicts["bh"].state == "excluded" and verdicts["bh"].network_share == 0.02


def test_a_collector_standing_by_goes_on_from_the_live_verdicts_when_it_takes_over() -> None:
    """While another collector holds the lease it publishes transitions; the
    one standing by must not take over with its own, older verdicts."""
    from tpv_broker.collector.daemon import CycleRunner
    from tpv_broker.config.settings import BrokerConfig

    class Standby:
        last_error, last_holder = None, "collector-b"

        def is_leader(self) -> bool:
            return False

    from tpv_broker.collector.metrics import CollectorMetrics

    metrics = CollectorMetrics(clock=lambda: NOW)
    # It had failed as leader before it lost the lease.
    metrics.failures_in_a_row.set(4)
    runner = CycleRunner(BrokerConfig(), object(), None, metrics=metrics, leader=Standby())  # type: ignore[arg-type]
    runner.state.health = {"bh": DestinationHealth(state="excluded", since=NOW)}
    report = runner()
    assert report is not None and not report.published
    assert runner.state.health is None  # the next cycle as leader seeds them from the live snapshot
    # Standing by is no failure (an alert on failures in a row would fire for as long as it stands by).
    assert metrics.registry.get_sample_value("tpv_broker_collector_consecutive_failures") == 0


def test_error_counts_that_are_no_count_of_jobs_are_left_out() -> None:
    """-3 or NaN jobs in error is garbage (a hand-written line, a broken
    awk): it must take neither the judge nor the collector down."""
    from tpv_broker.collector.cycle_data import CycleData
    from tpv_broker.collector.presets import PRESETS
    from tpv_broker.collector.rows import Row
    from tpv_broker.config.collector_settings import CollectorSettings

    rows = [Row(NOW - 60, {"destination_id": d, "state": "errored"}, {"count": n})
            for d, n in (("a", -3), ("b", float("nan")), ("c", float("inf")), ("d", 4), ("e", "NaN"))]
    data = CycleData(aliases={})
    assert PRESETS["errored_jobs_by_destination"].apply_checked(rows, data, CollectorSettings()) is None
    assert data.errors == {"d": [(NOW - 60, 4.0)]}
    # The judge does not fail on them either, were they to reach it.
    assert 0.0 <= wilson_lower(-3, 20) <= 1.0 and wilson_lower(float("nan"), 20) == 0.0
