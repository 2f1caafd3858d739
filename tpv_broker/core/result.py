"""What the rank core answers: the order, each candidate's place in it
(group, score, per-term breakdown, reason) and whether the answer is
degraded, with a code for why."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tpv_broker.core.models import DestinationHealth


class Group(StrEnum):
    """Where a candidate goes: scored ones first, by score; then those
    without usable metrics; offline ones last. A degraded answer puts every
    candidate in TPV's order."""

    SCORED = "scored"
    NO_METRICS = "no_metrics"
    STALE = "stale"
    OFFLINE = "offline"
    # Failing its jobs, drained by an admin, or on probation and this job
    # not a probe (destination health): last, as offline ones.
    EXCLUDED = "excluded"
    # Scored, but at or over one of its caps (site policy): after every
    # scored one under its caps, by score.
    AT_CAP = "at_cap"
    TPV_ORDER = "tpv_order"

    @property
    def place(self) -> int:
        """The group's rank in the answer: lower comes first."""
        return _PLACE[self]


# At a cap is a place of its own: known figures, known to be full, before
# the unknown ones whatever its score (at_cap_factor may make it 0).
_PLACE = {Group.SCORED: 0, Group.TPV_ORDER: 0, Group.AT_CAP: 1, Group.NO_METRICS: 2, Group.STALE: 2,
          Group.OFFLINE: 3, Group.EXCLUDED: 3}


class DegradedReason(StrEnum):
    """Why an answer is in TPV's order: the answer's ``degraded_code`` and
    the label of the degraded-answers metric (bounded, unlike the reason's
    text, which carries numbers)."""

    NO_SNAPSHOT = "no_snapshot"
    STALE_SNAPSHOT = "stale_snapshot"
    REDIS_UNAVAILABLE = "redis_unavailable"


@dataclass(frozen=True)
class TermBreakdown:
    term: str
    weight: float
    score: float
    # weight x score / sum of weights: the contributions add up to the total.
    contribution: float
    level: str | None
    raw: dict[str, Any]
    summary: str


@dataclass(frozen=True)
class Placement:
    id: str
    group: Group
    reason: str
    total: float | None = None
    terms: tuple[TermBreakdown, ...] = ()
    # Its destination health, when judged (core/health.py).
    health: DestinationHealth | None = None
    # Its tightest cap and how near it is (core/policy.py), if it has caps.
    cap: dict[str, Any] | None = None


@dataclass(eq=False)
class RankResult:
    """The order (``ids``), and each candidate's place in it. ``placements``
    are built on first use from what the ranking computed (explain, the CLI,
    the status page): an answer needs only the ids."""

    ids: list[str]
    snapshot_age_s: float | None
    build_placements: Callable[[], list[Placement]] = field(repr=False)
    # Set: the answer is TPV's own order, for this reason.
    degraded_code: DegradedReason | None = None
    degraded_reason: str | None = None
    # The job's expected run time on the destination ranked first (its
    # tool's median there, with fallbacks), for an in-flight charge by work.
    first_run_s: float | None = None
    # Was the first one ranked on live figures? Only then is a job charged.
    first_scored: bool = False
    # The metric sources whose figures in the snapshot are not the last
    # cycle's (name -> state, age_s, problem), as the asking tenant may see
    # them; shown with the explanation.
    lagging_sources: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def degraded(self) -> bool:
        return self.degraded_code is not None

    @cached_property
    def placements(self) -> list[Placement]:
        return self.build_placements()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RankResult):
            return NotImplemented
        return self._fields() == other._fields()

    # Compared by value and holding lists: unhashable. None is Python's way
    # to say so, which mypy, typing __hash__ as a method, does not know.
    __hash__ = None  # type: ignore[assignment]

    def _fields(self) -> tuple[object, ...]:
        return (self.ids, self.placements, self.snapshot_age_s, self.degraded_code,
                self.degraded_reason, self.first_run_s, self.first_scored)

    @property
    def first_scored_id(self) -> str | None:
        """The id ranked first if it was ranked on live figures, else None."""
        return self.ids[0] if self.first_scored and self.ids else None

    def reorder(self, placements: list[Placement]) -> RankResult:
        """The same result in another order (the simulator's policies)."""
        first = placements[0] if placements else None
        return RankResult([p.id for p in placements], self.snapshot_age_s, lambda: placements,
                          self.degraded_code, self.degraded_reason, self.first_run_s,
                          first is not None and first.group is Group.SCORED)
