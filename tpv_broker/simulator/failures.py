"""Failure scenarios (issue 22): destinations that fail jobs, the error
reports Galaxy sites write about them, and the broker's destination health
judged on those reports, compared with the same broker without health.

* ``blackhole``: one well-sized endpoint fails every job within 30 s of
  its placement from hour 2 on, and heals at hour 6;
* ``noisy``: every endpoint fails 5-10 % of the jobs at random (user
  errors: the tool runs part of its time, then fails);
* ``userburst``: no endpoint is at fault, but a user's workflow (a tool run
  over a large collection, on bad input) fails every job, every attempt,
  wherever it runs: its jobs all come back, from where the broker placed
  them. Health must not exclude a destination for that (it does:
  docs/simulation.md). ``userburst_noretry``: the same, not resubmitted.

A failed job is submitted again once, ranked anew, **with the same job
id**: that is Galaxy's job resubmission (``resubmit`` in the job
configuration) which puts the same job back in the queue, and TPV maps the
same job again, so the broker sees the same id. Hence a retry draws the
same probe draw (a probe's retry is a probe again), and the charge script
counts it as a placement again only if it goes to another destination.

The error reports are what usegalaxy.eu writes: every hour on the hour,
``gxadmin tsvquery errored-jobs 1`` per destination, the jobs that ended in
error in the hour before, no line for a destination without any. Galaxy's
resubmission does not put a job in state ``error``, it goes back to
``queued``: by default (``errors="final"``) a job is counted once, when its
last attempt fails, at the destination of that attempt (what gxadmin's
query of ``job.state = 'error'`` by ``job.destination_id`` returns).
``errors="attempts"`` counts every failed attempt where it failed (as if
each were its own Galaxy job): more errors for health to see, both the
black hole's and the noise.

The broker sees a failure two ways: in the error reports, and at once when
the failed job comes back to be ranked again (``signals="returns"``, the
default, as ``collector.health.count_returns``); ``signals="reports"``
judges on the reports alone.

The broker's health is judged by the collector's own code every refresh
(``collector.health.judge_cycle`` over ``core.health.judge_all``): the
reports are read from a source shared by every Galaxy (``ReportSource``)
through the real ``errored_jobs_by_destination`` preset and its reducer,
the placements are those the real charge script counted in
(fake)redis, and the verdicts go into the published snapshot's
destinations, as ``collector.cycle`` puts them. The rank service draws each
job's probe draw from ``core.health.probe_draw`` (tenant, job id)."""

from __future__ import annotations

import bisect
import hashlib
import math
import random
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import fakeredis

from tpv_broker.api.rank_service import RankService
from tpv_broker.collector.cycle_data import CycleData
from tpv_broker.collector.health import judge_cycle, rules_of, transitions
from tpv_broker.collector.presets import PRESETS, Preset
from tpv_broker.collector.rows import ReadResult, Row
from tpv_broker.collector.source import Source
from tpv_broker.config.collector_settings import CollectorSettings
from tpv_broker.config.settings import BrokerConfig
from tpv_broker.core.health import wilson_lower
from tpv_broker.core.models import DestinationHealth, Snapshot
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore

from .compare import broker_config, offered
from .engine import Fate, JobRecord, new_world, run
from .policies import Broker
from .report import spread
from .workload import SITES, TOOLS, Job, arrivals

ErrorCount = Literal["final", "attempts"]
ERROR_COUNTS: tuple[ErrorCount, ...] = ("final", "attempts")
# What health judges on: the error reports and the jobs that come back, or
# the reports alone.
HealthSignals = Literal["returns", "reports"]
HEALTH_SIGNALS: tuple[HealthSignals, ...] = ("returns", "reports")
# The same broker with in-flight charges, without and with destination
# health; and, for reference, without any failure.
FAILURE_POLICIES = ("broker_inflight", "broker_inflight_health")
BASELINE = "no_failures"
HOUR = 3600.0


# The ids of a broken workflow's jobs start with this.
BROKEN_PREFIX = "broken"


@dataclass(frozen=True)
class BrokenWorkflow:
    """A user's workflow whose every job fails whatever the destination:
    ``jobs`` jobs of ``tool`` on inputs in ``input_store``, all submitted
    at ``at_s`` (a tool over a collection), each attempt failing after
    5-20 % of its run time (a tool's error on bad input)."""

    at_s: float
    jobs: int
    tool: str
    input_store: str


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    hours: float
    # The endpoint that turns into a black hole, when, and when it heals.
    black_hole: str | None = None
    broken_from_s: float = 2 * HOUR
    heals_at_s: float = 6 * HOUR
    # A job placed there while broken ends in error this soon (uniform).
    fail_within_s: float = 30.0
    # Each endpoint's share of failing jobs, drawn per seed in this range.
    user_errors: tuple[float, float] | None = None
    # 2: a failed job is submitted again once.
    attempts: int = 2
    broken_workflow: BrokenWorkflow | None = None


# fastp (4 cores, 5 min) over a collection of 200 samples, in one store.
_BROKEN = BrokenWorkflow(2 * HOUR, 200, TOOLS[2].id, "object_store_poland")
SCENARIOS: dict[str, Scenario] = {
    "blackhole": Scenario(
        "blackhole", "pulsar_uk (256 cores) fails every job within 30 s from hour 2 to hour 6", hours=9.0,
        black_hole="pulsar_uk"),
    "noisy": Scenario("noisy", "every endpoint fails 5-10 % of jobs at random (user errors)", hours=9.0,
                      user_errors=(0.05, 0.10)),
    "userburst": Scenario(
        "userburst", "no endpoint at fault; at hour 2 a user's workflow of 200 fastp jobs on data in "
        "object_store_poland fails every attempt wherever it runs", hours=6.0,
        broken_workflow=_BROKEN),
    # The same where Galaxy resubmits on infrastructure failures only (what
    # docs/health.md advises): the jobs do not come back, their errors are
    # reported an hour later. Nothing else fails here, so one attempt for
    # all is one for them.
    "userburst_noretry": Scenario(
        "userburst_noretry", "userburst where the site does not resubmit tool errors: one attempt each", hours=6.0,
        broken_workflow=_BROKEN, attempts=1),
}
# The tests' and --quick's short versions: the black hole from hour 1 to 2.5.
QUICK: dict[str, Scenario] = {
    "blackhole": replace(SCENARIOS["blackhole"], hours=4.0, broken_from_s=1 * HOUR, heals_at_s=2.5 * HOUR,
                         description="pulsar_uk fails every job within 30 s from hour 1 to hour 2.5"),
    "noisy": replace(SCENARIOS["noisy"], hours=3.0),
    "userburst": replace(SCENARIOS["userburst"], hours=3.0, description=SCENARIOS["userburst"].description.replace(
        "hour 2", "hour 1"), broken_workflow=replace(_BROKEN, at_s=1 * HOUR)),
    "userburst_noretry": replace(SCENARIOS["userburst_noretry"], hours=3.0,
                                 broken_workflow=replace(_BROKEN, at_s=1 * HOUR)),
}


def scenario_jobs(scenario: Scenario, load: float, seed: int, burst_size: tuple[int, int] = (10, 40)) -> list[Job]:
    """The arrivals of ``scenario`` at ``load``, and its broken workflow's jobs."""
    jobs = arrivals(load, scenario.hours * HOUR, seed, burst_size=burst_size)
    w = scenario.broken_workflow
    if w is None:
        return jobs
    (tool,) = [t for t in TOOLS if t.id == w.tool]
    rng = random.Random(seed * 7919 + 3)
    # Ids of their own per seed: a job's probe draw comes from its id.
    broken = [Job(f"{BROKEN_PREFIX}{seed}_{k}", w.at_s, tool, tool.median_run_s * math.exp(rng.gauss(0, tool.sigma)),
                  w.input_store, rng.lognormvariate(math.log(2e9), 1.0)) for k in range(w.jobs)]
    return sorted(jobs + broken, key=lambda j: j.arrival)


def _uniforms(*key: object) -> tuple[float, float]:
    """Two draws in [0, 1) from ``key`` alone: an attempt's fate does not
    depend on what else happened, so both policies' runs draw alike."""
    digest = hashlib.blake2b(":".join(map(str, key)).encode(), digest_size=16).digest()
    return int.from_bytes(digest[:8], "big") / 2**64, int.from_bytes(digest[8:], "big") / 2**64


class ErrorReports:
    """What gxadmin writes, every ``interval_s`` on the hour: per
    destination the jobs that ended in error in the interval before (point
    time: the hour), no line for none; a point is readable ``delay_s``
    after its time."""

    def __init__(self, interval_s: float = HOUR, delay_s: float = 0.0) -> None:
        self.interval_s = interval_s
        self.delay_s = delay_s
        # destination -> when jobs ended in error there (in time order).
        self.ends: dict[str, list[float]] = {}

    def note(self, dest_id: str, at: float) -> None:
        self.ends.setdefault(dest_id, []).append(at)

    def count(self, dest_id: str, report_at: float) -> int:
        """The count the report at ``report_at`` gives ``dest_id``."""
        ends = self.ends.get(dest_id, [])
        return bisect.bisect_right(ends, report_at) - bisect.bisect_right(ends, report_at - self.interval_s)

    def report_times(self, now: float, window_s: float) -> list[float]:
        """The reports readable at ``now`` whose time is in the window."""
        last = math.floor((now - self.delay_s) / self.interval_s)
        first = math.floor((now - window_s) / self.interval_s) + 1
        return [k * self.interval_s for k in range(max(first, 1), last + 1)]

    def rows(self, now: float, window_s: float) -> list[Row]:
        """The points an InfluxDB query of the window returns at ``now``,
        as the collector's query paths hand them to the reducers."""
        out = []
        for at in self.report_times(now, window_s):
            for dest_id in sorted(self.ends):
                n = self.count(dest_id, at)
                if n:
                    out.append(Row(at, {"destination_id": dest_id, "state": "errored"}, {"count": float(n)}))
        return out

    def first_showing(self, dest_id: str, after: float) -> float | None:
        """The time of the first report after ``after`` that counts errors
        of ``dest_id``."""
        ends = self.ends.get(dest_id, [])
        i = bisect.bisect_right(ends, after)
        if i == len(ends):
            return None
        return math.ceil(ends[i] / self.interval_s) * self.interval_s


class ReportSource:
    """The error reports as a metric source (``collector.source.MetricSource``):
    what an InfluxDB holding gxadmin's points answers at the simulated
    ``now``, over the preset's window (``collector.health.window_s``)."""

    where = "simulated gxadmin error reports"

    def __init__(self, reports: ErrorReports) -> None:
        self.reports = reports
        self.now = 0.0

    def read(self, presets: Sequence[Preset], s: CollectorSettings) -> list[ReadResult]:
        return [ReadResult(self.reports.rows(self.now, s.health.window_s)) for _ in presets]

    def database_problem(self) -> str | None:
        return None


class FailureModel:
    """Which attempts fail (engine.Faults), and the error reports about them."""

    def __init__(self, scenario: Scenario, seed: int, errors: ErrorCount = "final",
                 reports: ErrorReports | None = None, resubmit_delay_s: float = 5.0) -> None:
        self.scenario = scenario
        self.seed = seed
        self.errors = errors
        self.reports = reports if reports is not None else ErrorReports()
        self.attempts = scenario.attempts
        self.resubmit_delay_s = resubmit_delay_s
        rng = random.Random(seed * 104729 + 17)
        low, high = scenario.user_errors or (0.0, 0.0)
        self.user_error_share = {s.id: rng.uniform(low, high) if scenario.user_errors else 0.0 for s in SITES}
        # Every failed attempt: (when, where, which job).
        self.failures: list[tuple[float, str, str]] = []

    def broken(self, dest_id: str, now: float) -> bool:
        s = self.scenario
        return dest_id == s.black_hole and s.broken_from_s <= now < s.heals_at_s

    def fate(self, job: Job, dest_id: str, now: float, attempt: int) -> Fate | None:
        u, v = _uniforms(self.seed, job.id, attempt)
        if self.broken(dest_id, now):
            return Fate(fast_s=1.0 + (self.scenario.fail_within_s - 1.0) * u)
        if job.id.startswith(BROKEN_PREFIX):
            return Fate(run_share=0.05 + 0.15 * v)
        if u < self.user_error_share.get(dest_id, 0.0):
            return Fate(run_share=v)
        return None

    def failed(self, job: Job, dest_id: str, now: float, final: bool) -> None:
        self.note(job.id, dest_id, now, final)

    def note(self, job_id: str, dest_id: str, now: float, final: bool) -> None:
        self.failures.append((now, dest_id, job_id))
        if final or self.errors == "attempts":
            self.reports.note(dest_id, now)

    def replayed(self, errors: ErrorCount, reports: ErrorReports) -> FailureModel:
        """The same failures, counted and reported another way."""
        model = FailureModel(self.scenario, self.seed, errors, reports, self.resubmit_delay_s)
        seen: dict[str, int] = {}
        for at, dest_id, job_id in self.failures:
            seen[job_id] = seen.get(job_id, 0) + 1
            model.note(job_id, dest_id, at, seen[job_id] >= self.attempts)
        return model


@dataclass
class Transition:
    at: float
    destination: str
    before: str
    after: str
    reason: str


class HealthJudge:
    """The collector's health step, run on each snapshot before it is
    published: the error reports read from one source (shared by every
    Galaxy) through the real preset and reducer, the placements from the
    store, ``judge_cycle``, the verdicts put into the snapshot's
    destinations (as ``collector.cycle._health`` does)."""

    def __init__(self, store: SnapshotStore, config: BrokerConfig, reports: ErrorReports) -> None:
        self.store = store
        self.config = config
        self.reader = ReportSource(reports)
        self.source = Source("gxadmin", self.reader, (PRESETS["errored_jobs_by_destination"],), {})
        self.min_jobs = rules_of(config).min_jobs
        self.verdicts: dict[str, DestinationHealth] = {}
        self.timeline: list[Transition] = []
        # Per destination, the highest excess it was judged on (the lower
        # bound of its error share minus the others' share; degraded from
        # 0.1 on, excluded from 0.5 on, by default) and when.
        self.max_excess: dict[str, tuple[float, float]] = {}

    def __call__(self, snapshot: Snapshot) -> None:
        now = snapshot.meta.created_at
        self.reader.now = now
        data = CycleData(aliases={})
        settings = self.config.collector
        for preset, result in zip(self.source.presets, self.reader.read(self.source.presets, settings), strict=True):
            preset.apply_rows(result.rows, data, settings)
        verdicts, problem = judge_cycle(data, [self.source], self.config, self.store, self.verdicts, now)
        if problem is not None:
            raise AssertionError(problem)
        for t in transitions(self.verdicts, verdicts):
            self.timeline.append(Transition(now, t.destination, t.before, t.after.state, t.after.reason))
        self.verdicts = verdicts
        for dest_id, verdict in verdicts.items():
            if verdict.placements >= self.min_jobs and verdict.state in ("healthy", "degraded"):
                jobs = max(verdict.placements, verdict.errors)
                excess = wilson_lower(verdict.errors, jobs) - (verdict.network_share or 0.0)
                if excess > self.max_excess.get(dest_id, (-math.inf, 0.0))[0]:
                    self.max_excess[dest_id] = (round(excess, 4), now)
            figures = snapshot.destinations.get(dest_id)
            if figures is not None:
                figures.health = verdict

    def states(self, dest_id: str) -> list[Transition]:
        return [t for t in self.timeline if t.destination == dest_id]


def run_failures(scenario: Scenario, jobs: list[Job], seed: int, health: bool, errors: ErrorCount = "final",
                 report_every_s: float = HOUR, refresh_s: float = 60.0, lag_s: float = 30.0,
                 failures: bool = True, signals: HealthSignals = "returns") -> dict[str, Any]:
    """One run of the broker with in-flight charges, with or without
    health, on ``jobs``: its row (``failure_row``). Without ``failures``:
    the reference run where nothing fails."""
    records, model, judge, name = _run(scenario, jobs, seed, health, errors, report_every_s, refresh_s, lag_s,
                                       failures, signals)
    return failure_row(scenario, records, model, judge, name, seed)


def _run(scenario: Scenario, jobs: list[Job], seed: int, health: bool, errors: ErrorCount, report_every_s: float,
         refresh_s: float, lag_s: float, failures: bool = True, signals: HealthSignals = "returns"
         ) -> tuple[list[JobRecord], FailureModel, HealthJudge | None, str]:
    world = new_world()
    store = SnapshotStore(fakeredis.FakeRedis(), KeySchema("sim"))
    config = broker_config(0.0)
    if signals == "reports":
        rules = config.collector.health.model_copy(update={"count_returns": False})
        config = config.model_copy(update={"collector": config.collector.model_copy(update={"health": rules})})
    model = FailureModel(scenario, seed, errors, ErrorReports(report_every_s))
    judge = HealthJudge(store, config, model.reports) if health else None
    broker = Broker(RankService(config, store, clock=lambda: world.now), charge=True, seed=seed)
    name = FAILURE_POLICIES[health] if failures else BASELINE
    result = run(jobs, broker.choose, name, store, world, refresh_s, lag_s, store.inflight(config.inflight),
                 faults=model if failures else None, on_publish=judge)
    return result.records, model, judge, name


def _not_healthy_s(timeline: Sequence[Transition], end: float) -> dict[str, float]:
    """Per destination that was ever anything but healthy, for how long in
    all (a destination is healthy until its first transition says not)."""
    out: dict[str, float] = {}
    since: dict[str, float] = {}
    for t in timeline:
        at = min(t.at, end)
        if t.after != "healthy" and t.destination not in since:
            since[t.destination] = at
        elif t.after == "healthy" and t.destination in since:
            out[t.destination] = out.get(t.destination, 0.0) + at - since.pop(t.destination)
    for dest_id, at in since.items():
        out[dest_id] = out.get(dest_id, 0.0) + end - at
    return {d: round(v, 1) for d, v in sorted(out.items())}


def _first(transitions: Sequence[Transition], state: str, after: float) -> float | None:
    return next((t.at for t in transitions if t.after == state and t.at >= after), None)


def failure_row(scenario: Scenario, records: list[JobRecord], model: FailureModel, judge: HealthJudge | None,
                policy: str, seed: int) -> dict[str, Any]:
    """A run's figures: jobs failed (once or more), failed twice (ended in
    error), mean turnaround, and the black hole's exclusion and return."""
    turns = [r.turnaround_s for r in records]
    ok = [r.turnaround_s for r in records if not r.failed]
    lost = sum(r.job.tool.cores * r.job.run_s for r in records if r.failed)
    row: dict[str, Any] = {
        "scenario": scenario.name,
        "seed": seed,
        "policy": policy,
        "jobs": len(records),
        "jobs_failed": sum(1 for r in records if r.failed_at),
        "jobs_failed_twice": sum(1 for r in records if len(r.failed_at) >= 2),
        "failed_attempts": len(model.failures),
        "errors_reported": sum(len(v) for v in model.reports.ends.values()),
        "mean_turnaround_s": round(statistics.fmean(turns), 1) if turns else 0.0,
        "mean_turnaround_ok_s": round(statistics.fmean(ok), 1) if ok else 0.0,
        # Work never done: the core-hours (at speed 1.0) of the jobs that ended in error.
        "core_hours_lost": round(lost / HOUR, 1),
    }
    if judge is not None:
        ever: dict[str, set[str]] = {t.destination: set() for t in judge.timeline}
        for t in judge.timeline:
            ever[t.destination].add(t.after)
        row["excluded"] = sorted(d for d, s in ever.items() if "excluded" in s)
        row["degraded"] = sorted(d for d, s in ever.items() if "degraded" in s)
        row["transitions"] = [[t.at, t.destination, t.before, t.after, t.reason] for t in judge.timeline]
        row["max_excess"] = {d: list(v) for d, v in sorted(judge.max_excess.items())}
    if scenario.user_errors is not None and policy != BASELINE:
        row["user_error_share"] = {d: round(v, 4) for d, v in model.user_error_share.items()}
    if scenario.broken_workflow is not None and policy != BASELINE:
        row["broken_jobs"] = scenario.broken_workflow.jobs
        # Where its attempts failed: where the broker had placed them.
        row["broken_failures_at"] = dict(sorted(Counter(
            d for _, d, job in model.failures if job.startswith(BROKEN_PREFIX)).items()))
        if judge is not None:
            row["not_healthy_s"] = _not_healthy_s(judge.timeline, scenario.hours * HOUR)
    hole = scenario.black_hole
    if hole is None:
        return row
    at_hole = [at for at, d, _ in model.failures if d == hole]
    first_report = model.reports.first_showing(hole, scenario.broken_from_s)
    row.update({
        "failed_at_black_hole": len(at_hole),
        # The first error report showing its failures, readable from then on.
        "first_report_s": first_report,
        # The first job that failed there coming back (resubmitted).
        "first_return_s": _first_return(model, hole),
        # What no judge of the reports alone can save: the jobs failed before the first.
        "jobs_failed_before_first_report": len({job for at, _, job in model.failures
                                                if first_report is not None
                                                and at < first_report + model.reports.delay_s}),
        "first_signal_s": None, "demoted_s": None, "demotion_delay_s": None, "excluded_s": None,
        "exclusion_delay_s": None, "excluded_times": 0, "readmitted_s": None,
        "probations": [], "healthy_while_broken": [],
    })
    if judge is None:
        return row
    returns = judge.config.collector.health.count_returns
    row["signals"] = "returns" if returns else "reports"
    # The first failure the broker's signals show it: a job come back, or the first report (once readable).
    shown = [t for t in (None if first_report is None else first_report + model.reports.delay_s,
                         row["first_return_s"] if returns else None) if t is not None]
    first_signal = row["first_signal_s"] = min(shown) if shown else None
    states = judge.states(hole)
    excluded = _first(states, "excluded", scenario.broken_from_s)
    # Its first verdict other than healthy: degraded (score x 0.5) or excluded.
    demoted = next((t for t in states if t.after in ("degraded", "excluded") and t.at >= scenario.broken_from_s),
                   None)
    row["excluded_s"] = excluded
    row["demoted_s"] = demoted.at if demoted is not None else None
    row["demotion_reason"] = demoted.reason if demoted is not None else None
    if demoted is not None and first_signal is not None:
        row["demotion_delay_s"] = round(demoted.at - first_signal, 1)
    if excluded is not None and first_signal is not None:
        row["exclusion_delay_s"] = round(excluded - first_signal, 1)
        row["failed_before_exclusion"] = sum(1 for at in at_hole if at < excluded)
        row["failed_after_exclusion"] = sum(1 for at in at_hole if at >= excluded)
    row["excluded_times"] = sum(1 for t in states if t.after == "excluded")
    row["probations"] = [t.at for t in states if t.after == "probation"]
    row["readmitted_s"] = _first(states, "healthy", scenario.heals_at_s)
    row["exclusion_reason"] = next((t.reason for t in states if t.after == "excluded"), None)
    # Let back in (healthy) before it healed (docs/simulation.md: the probation defects).
    row["healthy_while_broken"] = [t.at for t in states if t.after == "healthy"
                                   and excluded is not None and excluded < t.at < scenario.heals_at_s]
    # ... and the attempts that failed there while it was.
    ends = [next((u.at for u in states if u.at > at), math.inf) for at in row["healthy_while_broken"]]
    row["failed_while_readmitted_early"] = sum(
        1 for at in at_hole for start, end in zip(row["healthy_while_broken"], ends, strict=True) if start <= at < end)
    return row


def _first_return(model: FailureModel, dest_id: str) -> float | None:
    """When the first job that failed at ``dest_id`` and was submitted
    again came back to be ranked."""
    seen: dict[str, int] = {}
    for at, d, job in model.failures:
        seen[job] = seen.get(job, 0) + 1
        if d == dest_id and seen[job] < model.attempts:
            return at + model.resubmit_delay_s
    return None


def simulate_failures(scenarios: Sequence[Scenario], loads: Sequence[float], seed: int, seeds: int,
                      errors: Sequence[ErrorCount] = ("final",), report_every: Sequence[float] = (HOUR,),
                      refresh_s: float = 60.0, lag_s: float = 30.0,
                      progress: Callable[[str], None] = lambda _: None, baseline: bool = True,
                      burst_size: tuple[int, int] = (10, 40),
                      signals: Sequence[HealthSignals] = ("returns",)) -> list[dict[str, Any]]:
    """Per scenario, health's signals, way of counting errors, report
    interval, load and seed, both policies on the same arrivals, and with
    ``baseline`` the same broker where nothing fails (run once per
    arrivals): one row each."""
    rows = []
    baselines: dict[tuple[float, float, int, BrokenWorkflow | None], dict[str, Any]] = {}
    # Without health, how errors are counted and reported changes no
    # placement: one run, its failures reported each way.
    without: dict[tuple[str, float, int], tuple[list[JobRecord], FailureModel, HealthJudge | None, str]] = {}
    for scenario, signal in ((sc, sig) for sc in scenarios for sig in signals):
        duration_s = scenario.hours * HOUR
        for count in errors:
            for every in report_every:
                for load in loads:
                    for s in range(seed, seed + seeds):
                        jobs = scenario_jobs(scenario, load, s, burst_size)
                        config = {"scenario": scenario.name, "signals": signal, "errors": count,
                                  "report_every_s": every, "load": load,
                                  "offered_load": round(offered(jobs, duration_s), 3)}
                        if baseline:
                            key = (duration_s, load, s, scenario.broken_workflow)
                            if key not in baselines:
                                baselines[key] = run_failures(replace(scenario, black_hole=None), jobs, s, False,
                                                              failures=False, refresh_s=refresh_s, lag_s=lag_s)
                            rows.append({**config, **baselines[key], "scenario": scenario.name})
                        for health in (False, True):
                            if health:
                                row = run_failures(scenario, jobs, s, health, count, every, refresh_s, lag_s,
                                                   signals=signal)
                            else:
                                key2 = (scenario.name, load, s)
                                if key2 not in without:
                                    without[key2] = _run(scenario, jobs, s, False, count, every, refresh_s, lag_s)
                                records, model, _, name = without[key2]
                                row = failure_row(scenario, records, model.replayed(count, ErrorReports(every)),
                                                  None, name, s)
                            rows.append({**config, **row})
                            progress(f"{scenario.name} ({signal}, {count} errors, reports every {every:g} s) "
                                     f"load {load:.0%} "
                                     f"seed {s} {row['policy']}: {row['jobs']} jobs, {row['jobs_failed']} failed, "
                                     f"{row['jobs_failed_twice']} twice")
    return rows


def _group(row: dict[str, Any]) -> tuple[str, str, str, float, float]:
    return row["scenario"], row["signals"], row["errors"], row["report_every_s"], row["load"]


def _values(runs: list[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in runs if r.get(key) is not None]


def failure_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per scenario, load and policy, each figure's spread over the seeds;
    and per scenario and load, the targets: the black hole's failed jobs
    at least 10x fewer with health, excluded within 10 minutes of the first
    report showing its failures; in the noisy network nobody excluded."""
    out = []
    for group in dict.fromkeys(_group(r) for r in rows):
        at = [r for r in rows if _group(r) == group]
        scenario, signal, errors, every, load = group
        entry: dict[str, Any] = {"scenario": scenario, "signals": signal, "errors": errors, "report_every_s": every,
                                 "load": load, "seeds": len({r["seed"] for r in at})}
        for policy in (BASELINE, *FAILURE_POLICIES):
            runs = [r for r in at if r["policy"] == policy]
            if not runs:
                continue
            figures: dict[str, Any] = {}
            for key in ("jobs", "jobs_failed", "jobs_failed_twice", "failed_attempts", "errors_reported",
                        "mean_turnaround_s", "mean_turnaround_ok_s", "core_hours_lost", "failed_at_black_hole",
                        "jobs_failed_before_first_report", "first_report_s", "first_return_s", "first_signal_s",
                        "demoted_s", "demotion_delay_s",
                        "excluded_s", "exclusion_delay_s", "failed_while_readmitted_early",
                        "readmitted_s", "excluded_times", "failed_before_exclusion", "failed_after_exclusion"):
                values = _values(runs, key)
                if values:
                    figures[key] = spread(values)
            if policy == "broker_inflight_health":
                figures["ever_excluded"] = sorted({d for r in runs for d in r.get("excluded", [])})
                figures["ever_degraded"] = sorted({d for r in runs for d in r.get("degraded", [])})
                figures["seeds_healthy_while_broken"] = sum(bool(r.get("healthy_while_broken")) for r in runs)
            entry[policy] = figures
        entry["targets"] = _targets(scenario, at)
        out.append(entry)
    return out


def _targets(scenario: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    by = {(r["seed"], r["policy"]): r for r in runs}
    seeds = sorted({s for s, _ in by})
    paired = [s for s in seeds if (s, FAILURE_POLICIES[0]) in by and (s, FAILURE_POLICIES[1]) in by]
    out: dict[str, Any] = {}
    if paired:
        without = {s: by[s, FAILURE_POLICIES[0]] for s in paired}
        health = {s: by[s, FAILURE_POLICIES[1]] for s in paired}
        for key in ("jobs_failed", "jobs_failed_twice"):
            # None: no job failed with health (the ratio has no bound).
            per_seed = {s: _ratio(without[s][key], health[s][key]) for s in paired}
            out[f"{key}_without_vs_health"] = {
                "per_seed": per_seed, **_spread(per_seed),
                "pooled": _ratio(sum(without[s][key] for s in paired), sum(health[s][key] for s in paired))}
    if scenario == "blackhole" and paired:
        # The most a judge of the reports alone could reach: every job
        # that failed without health, over those failed before the first
        # report showing the black hole's failures.
        ceiling = {s: _ratio(without[s]["jobs_failed"], health[s].get("jobs_failed_before_first_report") or 0)
                   for s in paired}
        out["ceiling_without_vs_first_report"] = {"per_seed": ceiling, **_spread(ceiling)}
        ratio = out["jobs_failed_without_vs_health"]
        delays = {s: by[s, FAILURE_POLICIES[1]].get("exclusion_delay_s") for s in paired}
        out["fewer_failed_10x"] = {"target": ">= 10", "of": len(paired),
                                   "seeds_meeting": sum(v is None or v >= 10 for v in ratio["per_seed"].values())}
        out["excluded_within_10_min"] = {
            "target": "<= 600 s after the first failure health's signals show (a job come back, or a report)",
            "per_seed": delays,
            "seeds_meeting": sum(d is not None and d <= 600 for d in delays.values()), "of": len(paired)}
    if scenario in ("noisy", "userburst", "userburst_noretry"):
        # Nobody's fault but the users': any exclusion is a wrong one.
        excluded = {s: by[s, FAILURE_POLICIES[1]].get("excluded", []) for s in seeds
                    if (s, FAILURE_POLICIES[1]) in by}
        out["nobody_excluded"] = {"per_seed": excluded, "seeds_meeting": sum(not v for v in excluded.values()),
                                  "of": len(excluded)}
    return out


def failure_json(rows: list[dict[str, Any]], scenarios: Sequence[Scenario], **run: Any) -> dict[str, Any]:
    """What ``simulate --failures --json`` prints: how it was run, the
    scenarios, one row per run and the summary with the targets."""
    return {
        **run,
        "scenarios": {sc.name: {"description": sc.description, "hours": sc.hours, "black_hole": sc.black_hole,
                                "broken_from_s": sc.broken_from_s, "heals_at_s": sc.heals_at_s,
                                "fail_within_s": sc.fail_within_s, "user_errors": sc.user_errors,
                                "attempts": sc.attempts,
                                "broken_workflow": None if sc.broken_workflow is None else {
                                    "at_s": sc.broken_workflow.at_s, "jobs": sc.broken_workflow.jobs,
                                    "tool": sc.broken_workflow.tool,
                                    "input_store": sc.broken_workflow.input_store}} for sc in scenarios},
        "results": rows,
        "summary": failure_summary(rows),
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


def _spread(per_seed: dict[int, float | None]) -> dict[str, float]:
    finite = [v for v in per_seed.values() if v is not None]
    return spread(finite) if finite else {}


def _hm(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}"


def failure_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per run, then per scenario and load the spreads and targets."""
    header = ("scenario", "signals", "errors", "reports", "load", "seed", "policy", "jobs", "failed", "twice",
              "mean turnaround s", "(ok jobs)", "first report", "first seen", "excluded", "delay s", "readmitted",
              "ever excluded")
    lines = [header]
    for r in rows:
        lines.append((r["scenario"], r["signals"], r["errors"], f"{r['report_every_s']:g} s", f"{r['load']:.0%}",
                      str(r["seed"]), r["policy"], str(r["jobs"]),
                      str(r["jobs_failed"]), str(r["jobs_failed_twice"]), f"{r['mean_turnaround_s']:.0f}",
                      f"{r['mean_turnaround_ok_s']:.0f}", _hm(r.get("first_report_s")), _hm(r.get("first_signal_s")),
                      _hm(r.get("excluded_s")),
                      "-" if r.get("exclusion_delay_s") is None else f"{r['exclusion_delay_s']:.0f}",
                      _hm(r.get("readmitted_s")),
                      ",".join(r["excluded"]) or "none" if "excluded" in r else "-"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    for entry in failure_summary(rows):
        out.append(f"{entry['scenario']} (health on {entry['signals']}, {entry['errors']} errors counted, a report "
                   f"every {entry['report_every_s']:g} s) at load {entry['load']:.0%}, {entry['seeds']} seed(s), "
                   f"mean ± sd:")
        for policy in (BASELINE, *FAILURE_POLICIES):
            f = entry.get(policy)
            if not f:
                continue
            parts = [f"failed {_pm(f['jobs_failed'])}", f"twice {_pm(f['jobs_failed_twice'])}",
                     f"turnaround {_pm(f['mean_turnaround_s'])} s (ok jobs {_pm(f['mean_turnaround_ok_s'])} s)"]
            if "demotion_delay_s" in f:
                parts.append(f"first degraded or excluded {_pm(f['demotion_delay_s'])} s after its first failure "
                             f"was seen")
            if "exclusion_delay_s" in f:
                parts.append(f"excluded {_pm(f['exclusion_delay_s'])} s after that")
            if "readmitted_s" in f:
                parts.append(f"readmitted at {_hm(f['readmitted_s']['min'])}-{_hm(f['readmitted_s']['max'])}")
            if "ever_excluded" in f:
                parts.append(f"ever excluded: {', '.join(f['ever_excluded']) or 'none'}")
            if f.get("ever_degraded"):
                parts.append(f"ever degraded: {', '.join(f['ever_degraded'])}")
            out.append(f"  {policy}: " + "; ".join(parts))
        for name, t in entry["targets"].items():
            if "seeds_meeting" in t:
                out.append(f"  target {name}: {t['seeds_meeting']}/{t['of']} seeds")
            else:
                pooled = f", pooled {t['pooled']}" if "pooled" in t else ""
                out.append(f"  {name}: median {t.get('median')} ({t.get('min')}-{t.get('max')}){pooled}; "
                           f"per seed {t['per_seed']}")
    return out


def _pm(s: dict[str, float]) -> str:
    return f"{s['mean']:.0f} ± {s['sd']:.0f}"

