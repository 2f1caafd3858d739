"""Destination health, pure: from each destination's error reports, the
broker's own placements there and the jobs that came back from there (a
job Galaxy resubmits after it failed is ranked again: the broker sees it
within seconds, the error report up to an hour later), and the previous
verdict, the next one.

An endpoint that fails its jobs (storage full, staging broken, nodes
killing jobs) finishes them in seconds with an empty queue: to a
capacity-based ranker the best destination there is. Its error share
gives it away, compared with the other endpoints' over the same window
(a day of broken user inputs raises everyone's):

    healthy -> degraded (score x degraded_factor) -> excluded (after the
    others, as offline ones are) -> probation (probe_share of jobs let
    through) -> healthy, or excluded again if the probes fail.

The share is judged on its 95 % Wilson lower bound, so 3 failures in 10
jobs prove less than 30 in 100. No clock, no I/O: ``now`` and the signals
come in, the verdicts go out (docs/health.md)."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from tpv_broker.core.models import DestinationHealth, HealthPin, HealthState

# The 95 % two-sided normal quantile.
_Z = 1.959963984540054


@dataclass(frozen=True)
class HealthRules:
    """``collector.health`` as plain numbers (config/collector_settings.HealthSettings)."""

    window_s: float = 3 * 3600.0
    min_jobs: int = 10
    degraded_excess: float = 0.1
    excluded_excess: float = 0.5
    degraded_factor: float = 0.5
    exclude_s: float = 1800.0
    probe_share: float = 0.05
    probe_jobs: int = 5
    report_lag_s: float = 3900.0
    recent_s: float = 600.0


@dataclass(frozen=True)
class Signals:
    """One destination's raw signals in the window."""

    # (start of a placement bucket, jobs the broker placed there in it)
    placements: Sequence[tuple[float, float]] = ()
    # (time of an error report, jobs it says ended in error)
    errors: Sequence[tuple[float, float]] = ()
    # How long a placement bucket lasts (s; 0: placements are points). A
    # bucket that began before ``since`` but ends after it counts: its jobs
    # may have been placed after (the probes of a probation's first minutes
    # were lost otherwise, while their errors counted).
    bucket_s: float = 0.0
    # (start of a bucket, jobs placed there that came back to be placed
    # again in it): failures too, known at once; counted as the placements.
    returns: Sequence[tuple[float, float]] = ()

    def counted(self, since: float) -> tuple[float, float]:
        """Placements and failures after ``since``: the failures are the
        errors reported or the jobs returned, whichever are more (most
        returned jobs are reported too, an hour later; some failed jobs are
        not resubmitted, some returned ones end well elsewhere)."""
        return (self._in_buckets(self.placements, since),
                max(math.fsum(n for at, n in self.errors if at > since), self.returned(since)))

    def returned(self, since: float) -> float:
        return self._in_buckets(self.returns, since)

    def counted_returns(self, since: float) -> tuple[float, float]:
        """Placements and returns after ``since`` (no error report)."""
        return self._in_buckets(self.placements, since), self.returned(since)

    def _in_buckets(self, buckets: Sequence[tuple[float, float]], since: float) -> float:
        return math.fsum(n for at, n in buckets if self._after(at, since))

    def _after(self, at: float, since: float) -> bool:
        """Whether the bucket starting at ``at`` may hold jobs placed after ``since``."""
        return at >= since or at + self.bucket_s > since

    def placed_between(self, since: float, until: float) -> float:
        """Placements after ``since`` in buckets that ended by ``until``."""
        return math.fsum(n for at, n in self.placements if self._after(at, since) and at + self.bucket_s <= until)


def wilson_lower(errors: float, jobs: float) -> float:
    """The 95 % lower bound of the error share ``errors / jobs``."""
    if not jobs > 0:
        return 0.0
    p = min(1.0, max(0.0, errors / jobs))
    z2 = _Z * _Z
    centre = p + z2 / (2 * jobs)
    spread = _Z * math.sqrt(p * (1 - p) / jobs + z2 / (4 * jobs * jobs))
    return max(0.0, (centre - spread) / (1 + z2 / jobs))


def judge_all(previous: Mapping[str, DestinationHealth], signals: Mapping[str, Signals],
              pins: Mapping[str, HealthPin], now: float, rules: HealthRules,
              private: frozenset[str] = frozenset()) -> dict[str, DestinationHealth]:
    """The next verdict of every destination with signals, a verdict or a
    pin. ``private``: endpoints private to a tenant, left out of the
    others' share (every tenant sees that share in the verdicts of the
    shared endpoints: with one other endpoint, it was that one's)."""
    since = now - rules.window_s
    ids = sorted({*signals, *previous, *pins})
    shared = {d: s for d, s in signals.items() if d not in private}
    network = _network_shares({d: s.counted(since) for d, s in shared.items()}, ids)
    # Over the recent window, the returns alone: the error reports are
    # hourly and would not line up with a few minutes of placements.
    recent = _network_shares({d: s.counted_returns(now - rules.recent_s) for d, s in shared.items()}, ids)
    out = {}
    for dest_id in ids:
        own = signals.get(dest_id, Signals())
        verdict = judge(previous.get(dest_id), own, network[dest_id], pins.get(dest_id), now, rules,
                        recent[dest_id])
        reports = sorted((at, n) for at, n in own.errors if at > since)
        out[dest_id] = verdict.model_copy(update={"reports": reports}) if reports else verdict
    return out


def _network_shares(counts: Mapping[str, tuple[float, float]], ids: Sequence[str]) -> dict[str, float]:
    """Per destination of ``ids``, the other endpoints' failure share,
    from each one's (placements, failures). It counts the jobs the broker
    placed and, of their failures, no more than them: errors of jobs
    placed by other means (a Galaxy's local runners) would raise the bar
    for everyone."""
    totals = {d: (p, min(e, p)) for d, (p, e) in counts.items() if p > 0}
    all_placed = math.fsum(p for p, _ in totals.values())
    all_failed = math.fsum(e for _, e in totals.values())
    out = {}
    for dest_id in ids:
        own_placed, own_failed = totals.get(dest_id, (0.0, 0.0))
        others = all_placed - own_placed
        out[dest_id] = min(1.0, max(0.0, all_failed - own_failed) / others) if others > 0 else 0.0
    return out


def judge(previous: DestinationHealth | None, signals: Signals, network_share: float, pin: HealthPin | None,
          now: float, rules: HealthRules, recent_network_share: float = 0.0) -> DestinationHealth:
    """The next verdict of one destination (the table in docs/health.md);
    ``recent_network_share``: the others' share of returns over
    ``recent_s``."""
    if pin is not None:
        return _pinned(pin, previous, now)
    was: HealthState = "healthy" if previous is None or previous.pin is not None else previous.state
    counted_from = None if previous is None else previous.counted_from
    if previous is not None and previous.pin is not None:
        # What happened while it was pinned is not held against it.
        counted_from = now
    after = counted_from if counted_from is not None else -math.inf
    start = max(now - rules.window_s, after)
    placed, failed = signals.counted(start)
    figures = _Figures(placed, failed, network_share, signals.returned(start))
    if was == "excluded" and previous is not None:
        if now - previous.since >= rules.exclude_s:
            return _verdict("probation", now, now, _Figures(0.0, 0.0, network_share), rules,
                            f"on probation since {_clock(now)}: {rules.probe_share:.0%} of jobs go there as "
                            f"probes")
        return _verdict("excluded", previous.since, counted_from, figures, rules, previous.reason)
    if was == "probation" and previous is not None:
        # Probes placed in the last report_lag_s may have failed unreported:
        # only those placed before can show it healed.
        reported = signals.placed_between(start, now - rules.report_lag_s)
        return _on_probation(previous, figures, replace(figures, placed=reported), now, rules)
    # Just back from probation (or a pin), it is judged on what came since,
    # from as many jobs as probation needed.
    least = rules.probe_jobs if counted_from is not None and counted_from > now - rules.window_s else rules.min_jobs
    state, span = _level(figures, rules, least), rules.window_s
    # A black hole's failures come back within a minute, but over the whole
    # window the hours it ran well dilute them: judged on the recent
    # returns too, it is excluded in minutes, not hours. Excluded only: a
    # few minutes of user errors can look degraded (4 of 10 jobs), not
    # like nearly every job failing.
    recent_start = max(now - rules.recent_s, after)
    recent_placed, recent_returned = signals.counted_returns(recent_start)
    recent = _Figures(recent_placed, recent_returned, recent_network_share, recent_returned)
    if state != "excluded" and _level(recent, rules, least) == "excluded":
        state, figures, span = "excluded", recent, rules.recent_s
    since = previous.since if previous is not None and previous.state == state and previous.pin is None else now
    return _verdict(state, since, counted_from, figures, rules, _why(state, figures, since, least, span))


def probe_draw(tenant: str, job_id: str) -> float:
    """A job's draw in [0, 1) for probation, the same each time it is
    ranked (a job ranked again is a probe again, or not)."""
    digest = hashlib.blake2b(f"{tenant}:{job_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class _Figures:
    placed: float
    failed: float
    network: float
    # Of the jobs placed, those that came back (at most ``failed``).
    returned: float = 0.0

    @property
    def share(self) -> float | None:
        jobs = max(self.placed, self.failed)
        return None if jobs <= 0 else self.failed / jobs

    @property
    def excess(self) -> float:
        # Errors of jobs the broker did not place there (placed by another
        # way) can outnumber its placements: the share is at most 1.
        return wilson_lower(self.failed, max(self.placed, self.failed)) - self.network


def _level(f: _Figures, rules: HealthRules, least: int) -> HealthState:
    if f.placed < least:
        return "healthy"
    if f.excess >= rules.excluded_excess:
        return "excluded"
    if f.excess >= rules.degraded_excess:
        return "degraded"
    return "healthy"


def _on_probation(previous: DestinationHealth, f: _Figures, reported: _Figures, now: float,
                  rules: HealthRules) -> DestinationHealth:
    """Judged on its probes only (counted from the start of probation):
    excluded again as soon as enough of them failed; once enough went
    there ``report_lag_s`` ago or more (``reported``: their errors have
    been reported), healthy, or degraded if they fail clearly more than
    the others' jobs."""
    start = previous.since
    if f.placed >= rules.probe_jobs and f.excess >= rules.excluded_excess:
        return _verdict("excluded", now, previous.counted_from, f, rules,
                        f"excluded again at {_clock(now)}, on its probes: {_failed(f)}")
    if reported.placed >= rules.probe_jobs:
        # Reported, and not bad enough to exclude: healthy, or degraded as
        # a healthy endpoint with these figures would be.
        state: HealthState = "healthy" if reported.excess < rules.degraded_excess else "degraded"
        return _verdict(state, now, previous.counted_from, reported, rules,
                        f"{state} since {_clock(now)}, on its probes: {_failed(reported)}")
    return _verdict("probation", start, previous.counted_from, f, rules,
                    f"on probation since {_clock(start)}: {f.placed:.0f} probe(s) so far, {f.failed:.0f} failed")


def _pinned(pin: HealthPin, previous: DestinationHealth | None, now: float) -> DestinationHealth:
    state: HealthState = "drained" if pin.state == "drained" else "healthy"
    what = "drained" if pin.state == "drained" else "pinned healthy (its errors ignored)"
    counted_from = None if previous is None else previous.counted_from
    return DestinationHealth(state=state, since=pin.at, counted_from=counted_from,
                             reason=f"{what} by {pin.by} at {_clock(pin.at)}: {pin.reason}", pin=pin)


def _verdict(state: HealthState, since: float, counted_from: float | None, f: _Figures, rules: HealthRules,
             reason: str) -> DestinationHealth:
    return DestinationHealth(
        state=state, since=since, counted_from=counted_from, errors=f.failed, returned=f.returned,
        placements=f.placed,
        share=None if f.share is None else round(f.share, 4), network_share=round(f.network, 4), reason=reason,
        score_factor=rules.degraded_factor if state == "degraded" else 1.0,
        probe_share=rules.probe_share if state == "probation" else None)


def _why(state: HealthState, f: _Figures, since: float, least: int, span_s: float) -> str:
    hours = f"{span_s / 3600:g} h" if span_s >= 3600 else f"{span_s / 60:.0f} min"
    if state == "healthy":
        if f.placed < least:
            return f"{f.placed:.0f} job(s) placed in the last {hours}: too few to judge (at least {least})"
        return f"{_failed(f)} in the last {hours}"
    what = "excluded" if state == "excluded" else "degraded"
    return f"{what} since {_clock(since)}: {_failed(f)} in the last {hours}"


def _failed(f: _Figures) -> str:
    share = "" if f.share is None else f" ({f.share:.0%}; the other endpoints {f.network:.0%})"
    back = f", {f.returned:.0f} came back to be placed again" if f.returned else ""
    return f"{f.failed:.0f} of {max(f.placed, f.failed):.0f} jobs failed{share}{back}"


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M UTC", time.gmtime(epoch))
