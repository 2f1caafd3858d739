"""The ``scoring.terms`` vocabulary: each score term's parameters, their
defaults and their checks. The terms themselves are in the rank core
(``core/terms.py``), which gets the parameters as plain numbers: config
knows what a term accepts, not how it scores (the Kubernetes scheduler
keeps its plugins' argument types in its config API the same way)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class TermParams(BaseModel):
    # An infinite scale made every term score NaN, every rank answer a 500.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    weight: float = Field(ge=0, allow_inf_nan=False)


class SecondsParams(TermParams):
    """A cost in seconds on a log scale: ``scale_s`` is the resolution,
    ``cap_s`` scores 0."""

    scale_s: float = Field(gt=0)
    cap_s: float = Field(gt=0)


class FitNowParams(TermParams):
    unknown_score: float = Field(ge=0, le=1)


class DataLocalityParams(TermParams):
    scale_km: float = Field(gt=0)
    cap_km: float = Field(gt=0)
    unknown_score: float = Field(ge=0, le=1)


class TpvScoreParams(TermParams):
    scale: float = Field(gt=0)


class StagingTimeParams(SecondsParams):
    unknown_score: float = Field(0.5, ge=0, le=1)


class CarbonParams(TermParams):
    # A server core under load draws about 10-15 W (node power / cores).
    watts_per_core: float = Field(12.0, gt=0)
    # Grams: 1 g is the resolution, 10 kg scores 0.
    scale_g: float = Field(1.0, gt=0)
    cap_g: float = Field(10000.0, gt=0)
    unknown_score: float = Field(0.5, ge=0, le=1)
    # Above 0: carbon only breaks near-ties, among the candidates whose
    # expected turnaround is within this share of the best one.
    near_ties_share: float = Field(0.0, ge=0, le=10)


TERM_PARAMS: dict[str, type[TermParams]] = {
    "queue_wait": SecondsParams,
    "run_time": SecondsParams,
    "fit_now": FitNowParams,
    "data_locality": DataLocalityParams,
    "tpv_score": TpvScoreParams,
    "finish_time": SecondsParams,
    "staging_time": StagingTimeParams,
    "carbon": CarbonParams,
}

# Why these weights: turnaround is what users feel, and its two measured
# parts (waiting, running) come first; "fits now" is the freshest signal
# and as strong as the wait; data locality matters for large inputs only;
# TPV's tags break near-ties the admin's way. Scales: a minute (or 100 km)
# is the resolution, a week (or half the globe) scores 0.
DEFAULT_TERMS: dict[str, dict[str, float]] = {
    "queue_wait": {"weight": 3.0, "scale_s": 60.0, "cap_s": 604800.0},
    "run_time": {"weight": 2.0, "scale_s": 60.0, "cap_s": 604800.0},
    "fit_now": {"weight": 3.0, "unknown_score": 0.5},
    "data_locality": {"weight": 1.0, "scale_km": 100.0, "cap_km": 20000.0, "unknown_score": 0.5},
    "tpv_score": {"weight": 1.0, "scale": 1.0},
}


def check_terms(terms: dict[str, Any]) -> list[str]:
    """Problems with a ``scoring.terms`` mapping, each naming the term and key."""
    problems = []
    for name, params in terms.items():
        schema = TERM_PARAMS.get(name)
        if schema is None:
            problems.append(f"{name}: unknown term (known: {', '.join(sorted(TERM_PARAMS))})")
            continue
        if not isinstance(params, dict):
            problems.append(f"{name}: must be a mapping with weight and parameters")
            continue
        try:
            schema.model_validate(params)
        except ValidationError as e:
            for err in e.errors(include_url=False):
                loc = ".".join(str(p) for p in err["loc"])
                problems.append(f"{name}.{loc}: {err['msg']}")
    if not problems and not any(float(p["weight"]) > 0 for p in terms.values()):
        problems.append("no term has a positive weight: at least one needs one")
    return problems


def with_defaults(terms: dict[str, Any]) -> dict[str, dict[str, float]]:
    """A checked ``scoring.terms`` mapping with every parameter's default
    filled in, as the terms take them."""
    return {name: TERM_PARAMS[name].model_validate(params).model_dump() for name, params in terms.items()}
