"""One candidate through the one rank path, for the tests of a single term:
a ``TermInput`` (what a term sees of one candidate, as plain models) is put
in a snapshot of its own, ranked with a model of that term alone, and the
term's line of the candidate's breakdown comes back (``score``), or the
batch that path built and the term's values over it (``evaluated``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from tpv_broker.core.batch import Batch
from tpv_broker.core.inputs import Candidate, DatasetInput, JobFacts
from tpv_broker.core.models import (
    DestinationFigures,
    RankView,
    SnapshotMeta,
    ToolFigures,
)
from tpv_broker.core.ranking import rank
from tpv_broker.core.result import Group, Placement
from tpv_broker.core.scoring import Defaults, Scores, ScoringModel
from tpv_broker.core.terms import Term, TermValues
from tpv_broker.core.tool_ids import stats_field, tool_id_forms

NOW = 1_700_000_000.0
# A toolshed id with all three fallback forms, whatever the test's own tool id.
_TOOL_ID = "toolshed.g2.bx.psu.edu/repos/owner/repo/tool/1.0"
_FIELDS = dict(tool_id_forms(_TOOL_ID))


@dataclasses.dataclass(frozen=True)
class TermInput:
    job: JobFacts
    candidate: Candidate
    figures: DestinationFigures
    # This destination's figures for the job's tool, most specific level first.
    tool_stats: Sequence[tuple[str, ToolFigures]]
    location: tuple[float, float] | None
    datasets: Sequence[DatasetInput]
    defaults: Defaults


@dataclasses.dataclass(frozen=True)
class TermScore:
    score: float
    raw: dict[str, Any]
    level: str | None
    summary: str


class RecordingModel(ScoringModel):
    """A scoring model that keeps what it computed for the last batch it
    scored: the batch the rank path built, and each term's values over it."""

    last: Scores | None = None

    def evaluate(self, b: Batch) -> Scores:
        self.last = super().evaluate(b)
        return self.last


def _rank_one(term: Term, x: TermInput) -> tuple[Placement, Scores]:
    """The candidate of ``x`` ranked alone, with a model of ``term`` alone."""
    d = x.figures.id
    # Scored, whatever the figures: fresh live metrics from some source.
    figures = x.figures.model_copy(update={"sources": x.figures.sources or {"test": NOW},
                                           "live_at": NOW if x.figures.live_at is None else x.figures.live_at,
                                           "status": "online" if x.figures.status == "offline" else x.figures.status})
    tool_stats: dict[str, dict[str, ToolFigures]] = {}
    for level, tf in x.tool_stats:
        tool_stats.setdefault(stats_field(level, _FIELDS[level]), {d: tf})
    view = RankView(meta=SnapshotMeta(created_at=NOW), destinations={d: figures}, tool_stats=tool_stats)
    model = RecordingModel([(term, 1.0)], x.defaults, max_metrics_age_s=float("inf"))
    job = dataclasses.replace(x.job, tool_id=_TOOL_ID)
    result = rank([dataclasses.replace(x.candidate, id=d)], job, x.datasets, view, NOW, model, float("inf"),
                  {d: x.location} if x.location is not None else {})
    p = result.placements[0]
    assert p.group is Group.SCORED, p
    assert model.last is not None
    return p, model.last


def score(term: Term, x: TermInput) -> TermScore:
    """``term``'s score and explanation for the one candidate of ``x``."""
    t = _rank_one(term, x)[0].terms[0]
    return TermScore(t.score, t.raw, t.level, t.summary)


def evaluated(term: Term, x: TermInput) -> tuple[Batch, TermValues]:
    """The one candidate's batch as the rank path built it (in-flight
    charges and fallbacks applied), and ``term``'s values over it."""
    scores = _rank_one(term, x)[1]
    return scores.batch, scores.values[0]
