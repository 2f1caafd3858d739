"""How candidates are ordered: ``scoring``, ``inflight`` and the
``destinations`` with their caps."""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tpv_broker.config.section import Section
from tpv_broker.config.terms import DEFAULT_TERMS, check_terms, with_defaults


class CapSettings(Section):
    """Caps on a destination (docs/policy.md): at or over one, counting its
    in-flight charges, it goes after the destinations under theirs; from
    ``soft_from`` of a cap on, its score falls linearly to
    ``at_cap_factor`` at the cap."""

    # Jobs there: queued + running + placed by the broker but not yet shown.
    max_jobs: float | None = Field(None, gt=0)
    max_queued: float | None = Field(None, gt=0)
    max_running: float | None = Field(None, gt=0)
    # PanDA's rule: no more queued than twice the running ones.
    max_queued_per_running: float | None = Field(None, gt=0)
    soft_from: float = Field(0.8, gt=0, lt=1)
    at_cap_factor: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _some_cap(self) -> CapSettings:
        if all(v is None for v in (self.max_jobs, self.max_queued, self.max_running, self.max_queued_per_running)):
            raise ValueError("give at least one of max_jobs, max_queued, max_running, max_queued_per_running")
        return self


class StagingSettings(Section):
    """Throughput between object stores and destinations, for the
    staging_time term and finish_time's turnaround (docs/policy.md)."""

    # object store id -> destination id -> MB/s (measured or agreed).
    throughput_mb_s: dict[str, dict[str, float]] = Field(default_factory=dict)
    # A pair not in the table: this, halved every halving_km of distance.
    default_mb_s: float = Field(100.0, gt=0)
    halving_km: float = Field(1000.0, gt=0)

    @field_validator("throughput_mb_s")
    @classmethod
    def _positive(cls, table: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for store, row in table.items():
            for dest, mb_s in row.items():
                if not mb_s > 0:
                    raise ValueError(f"{store}.{dest}: must be more than 0 MB/s, got {mb_s}")
        return table


class InflightSettings(Section):
    # Charge each placement to the destination ranked first, so jobs ranked
    # before the next refresh see it (no herding on a stale snapshot).
    enabled: bool = True
    # How long a dispatched job takes to show in the figures (gxadmin and
    # the exporters run every minute): a charge ends once the destination's
    # newest live point is this much younger than the charge.
    reflect_lag_s: float = Field(60.0, ge=0)
    # A charge never outlives this, whatever the figures say.
    max_age_s: float = Field(600.0, gt=0)
    # What a charged job that does not fit adds to the destination's queue:
    # one job ("slot"), or its expected core-seconds in typical jobs ("work").
    charge_by: Literal["slot", "work"] = "slot"


class ScoringSettings(Section):
    # Destinations whose live figures are older than this go last, with a reason.
    max_metrics_age_s: float = Field(900.0, gt=0)
    # Used when neither the tool nor the destination has a figure.
    default_queue_s: float = Field(300.0, ge=0)
    default_run_s: float = Field(3600.0, gt=0)
    # term name -> weight and parameters; listing terms replaces the defaults.
    terms: dict[str, dict[str, Any]] = Field(default_factory=lambda: copy.deepcopy(DEFAULT_TERMS))
    staging: StagingSettings = Field(default_factory=StagingSettings)

    @field_validator("terms")
    @classmethod
    def _known_terms(cls, terms: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        problems = check_terms(terms)
        if problems:
            raise ValueError("; ".join(problems))
        return with_defaults(terms)


class Coordinates(BaseModel):
    # Object store files carry extra keys of their own (see the prototype's
    # object_store_locations.yml); they are not ours to reject.
    model_config = ConfigDict(extra="ignore")
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)


class DestinationSettings(Section):
    aliases: list[str] = Field(default_factory=list)
    latitude: float | None = Field(None, ge=-90, le=90)
    longitude: float | None = Field(None, ge=-180, le=180)
    # Total capacity, used when the metrics do not report it. mem in GB as TPV.
    cores: float | None = Field(None, gt=0)
    mem: float | None = Field(None, gt=0)
    gpus: float | None = Field(None, ge=0)
    caps: CapSettings | None = None
