"""The combiner: owns the weights (from config), checks every term's range,
and keeps each term's values next to the totals, so a candidate's
breakdown is read from the very computation that ordered it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from tpv_broker.core.batch import Batch
from tpv_broker.core.result import TermBreakdown
from tpv_broker.core.terms import Term, TermValues, build_terms


@dataclass(frozen=True)
class Defaults:
    """Queue and run time when neither the tool nor the destination has one."""

    queue_s: float
    run_s: float


class TermRangeError(ValueError):
    """A term returned a score outside [0, 1]: a bug in the term, not input."""


@dataclass(frozen=True, eq=False)
class Scores:
    """A batch's scores: each term's values (in the model's term order) and
    the weighted totals, in [0, 1]; and, where a term breaks near-ties
    (carbon's near_ties_share), its key per candidate (NaN: not in the
    band): the ranker orders the band's candidates by it among the places
    they hold."""

    batch: Batch
    values: list[TermValues]
    totals: np.ndarray
    tie_key: np.ndarray | None = None


class ScoringModel:
    def __init__(self, terms: list[tuple[Term, float]], defaults: Defaults, max_metrics_age_s: float) -> None:
        self.terms = terms
        self.total_weight = sum(w for _, w in terms)
        if self.total_weight <= 0:
            raise ValueError("at least one term needs a positive weight")
        self.defaults = defaults
        self.max_metrics_age_s = max_metrics_age_s
        self._weights = np.array([[w] for _, w in terms], dtype=np.float64)

    @classmethod
    def from_settings(cls, terms: Mapping[str, Mapping[str, float]], default_queue_s: float, default_run_s: float,
                      max_metrics_age_s: float) -> ScoringModel:
        return cls(build_terms(terms), Defaults(queue_s=default_queue_s, run_s=default_run_s), max_metrics_age_s)

    def evaluate(self, b: Batch) -> Scores:
        """Every term over every candidate, and the weighted means."""
        # Python's floats overflow to inf without a word (a job of 1e-300
        # GB); numpy's would warn.
        with np.errstate(over="ignore"):
            values = [term.evaluate(b) for term, _ in self.terms]
        scores = np.array([v.scores for v in values], dtype=np.float64).reshape(len(values), b.size)
        # NaN fails both comparisons.
        bad = ~((scores >= 0.0) & (scores <= 1.0))
        if bad.any():
            t, k = (int(i) for i in np.argwhere(bad)[0])
            raise TermRangeError(f"term {self.terms[t][0].name} scored {float(scores[t, k])!r} for "
                                 f"{b.ids[k]!r}, outside [0, 1]")
        ties = [v.parts["tie_key"] for v in values if "tie_key" in v.parts]
        return Scores(b, values, (self._weights * scores).sum(axis=0) / self.total_weight,
                      ties[0] if ties else None)

    def breakdown(self, scores: Scores, k: int) -> tuple[TermBreakdown, ...]:
        """Candidate ``k``'s terms: weight, score, contribution, and what
        each term computed it from."""
        out = []
        for (term, weight), v in zip(self.terms, scores.values, strict=True):
            score = float(v.scores[k])
            detail = term.explain(scores.batch, v, k)
            out.append(TermBreakdown(term.name, weight, score, weight * score / self.total_weight, detail.level,
                                     detail.raw, detail.summary))
        return tuple(out)
