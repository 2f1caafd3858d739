"""The combiner: owns the weights (from config), checks every term's range,
and keeps the per-term breakdown next to the total."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from tpv_broker.core.batch import Batch
from tpv_broker.core.terms import Defaults, Term, TermInput, build_terms


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
class CandidateScore:
    total: float  # in [0, 1]
    terms: tuple[TermBreakdown, ...]


class TermRangeError(ValueError):
    """A term returned a score outside [0, 1]: a bug in the term, not input."""


class ScoringModel:
    def __init__(self, terms: list[tuple[Term, float]], defaults: Defaults, max_metrics_age_s: float) -> None:
        self.terms = terms
        self.total_weight = sum(w for _, w in terms)
        if self.total_weight <= 0:
            raise ValueError("at least one term needs a positive weight")
        self.defaults = defaults
        self.max_metrics_age_s = max_metrics_age_s
        # The rank path needs only the totals: each term's score without its
        # explanation (raw figures, summary), built only on demand (explain).
        self._values: list[tuple[Callable[[TermInput], float], float, str]] = [
            (getattr(term, "value", None) or _score_only(term), weight, term.name) for term, weight in terms
        ]
        self._weights = np.array([[w] for _, w in terms], dtype=np.float64)
        self._batch_values: list[tuple[Callable[[Batch], np.ndarray], float, str]] = [
            (getattr(term, "values", None) or _one_at_a_time(value), weight, name)
            for (term, _), (value, weight, name) in zip(terms, self._values)
        ]

    @classmethod
    def from_settings(cls, terms: dict[str, dict[str, Any]], default_queue_s: float, default_run_s: float,
                      max_metrics_age_s: float) -> ScoringModel:
        return cls(build_terms(terms), Defaults(queue_s=default_queue_s, run_s=default_run_s), max_metrics_age_s)

    def total(self, x: TermInput) -> float:
        """``score(x).total``, without building the breakdown: the same
        arithmetic in the same order, so the very same float."""
        tw = self.total_weight
        parts = []
        for value, weight, name in self._values:
            v = value(x)
            # NaN fails both comparisons, so this also rejects NaN.
            if not 0.0 <= v <= 1.0:
                raise TermRangeError(f"term {name} scored {v!r} for {x.candidate.id!r}, outside [0, 1]")
            parts.append(weight * v / tw)
        return sum(parts)

    def totals(self, b: Batch) -> np.ndarray:
        """``total`` for every candidate of a batch, each term over all
        candidates at once. The same weighted mean; only the order of the
        additions may differ (a few units in the last place)."""
        # Python's floats overflow to inf without a word (a job of 1e-300
        # GB); numpy's would warn.
        with np.errstate(over="ignore"):
            scores = np.array([values(b) for values, _, _ in self._batch_values], dtype=np.float64)
        # NaN fails both comparisons (the min and max of an array holding one are NaN).
        if not (scores.min() >= 0.0 and scores.max() <= 1.0):
            for (_, _, name), v in zip(self._batch_values, scores):
                bad = (~((v >= 0.0) & (v <= 1.0))).nonzero()[0]
                if bad.size:
                    i = int(bad[0])
                    raise TermRangeError(f"term {name} scored {float(v[i])!r} for {b.input(i).candidate.id!r}, "
                                         "outside [0, 1]")
        return (self._weights * scores).sum(axis=0) / self.total_weight

    def score(self, x: TermInput) -> CandidateScore:
        parts = []
        for term, weight in self.terms:
            r = term.score(x)
            if not 0.0 <= r.score <= 1.0 or math.isnan(r.score):
                raise TermRangeError(f"term {term.name} scored {r.score!r} for {x.candidate.id!r}, outside [0, 1]")
            parts.append(TermBreakdown(term.name, weight, r.score, weight * r.score / self.total_weight,
                                       r.level, r.raw, r.summary))
        return CandidateScore(sum(p.contribution for p in parts), tuple(parts))


def _score_only(term: Term) -> Callable[[TermInput], float]:
    return lambda x: term.score(x).score


def _one_at_a_time(value: Callable[[TermInput], float]) -> Callable[[Batch], np.ndarray]:
    def values(b: Batch) -> np.ndarray:
        return np.array([value(b.input(i)) for i in range(b.size)], dtype=np.float64)

    return values
