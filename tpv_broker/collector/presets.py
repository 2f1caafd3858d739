"""Metric presets at run time: each preset's description (data, see
config/preset_spec.py) with the query that reads it for *all* destinations
at once and the reducer its rows go through. All presets of a cycle go to
InfluxDB in one request (GROUP BY tags, never a query per destination).

Schemas: docs/metric-schemas.md. gxadmin writes every number
as a float; pulsar-util reports HTCondor memory in MiB.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from tpv_broker.config.collector_settings import CollectorSettings
from tpv_broker.config.preset_spec import BUILTIN_PRESETS, CONTEXT_FIGURES, PresetSpec

from .cycle_data import CycleData, num, strip_quotes
from .influxql import MAX_CLOCK_SKEW_S, Series, influxql_statement, series_rows
from .reducers import apply_rows
from .rows import Row

__all__ = [
    "MAX_CLOCK_SKEW_S",
    "PRESETS",
    "CycleData",
    "Preset",
    "live_sources",
    "num",
    "presets_for",
    "strip_quotes",
]

QUEUE_MEASUREMENT = BUILTIN_PRESETS["queue_by_destination"].measurement
RUNTIME_MEASUREMENT = BUILTIN_PRESETS["destination_queue_run_time"].measurement
CONDOR_MEASUREMENT = BUILTIN_PRESETS["htcondor_cluster_usage"].measurement


@dataclass(frozen=True)
class Preset:
    name: str
    spec: PresetSpec
    # Read only the points of the last since_s seconds, not the preset's
    # whole window (``recent``).
    since_s: float | None = None

    def recent(self, since_s: float) -> Preset:
        """This preset, reading only what was written in the last
        ``since_s`` seconds: for the daily statistics, what changed since
        the last read of them."""
        return replace(self, since_s=since_s)

    def statement(self, s: CollectorSettings) -> str:
        """The one InfluxQL statement that reads this preset for every destination."""
        return influxql_statement(self.spec, s, self.since_s)

    def apply(self, series: list[Series], data: CycleData, s: CollectorSettings) -> None:
        """Apply the answer to ``statement``."""
        self.apply_rows(series_rows(series), data, s)

    def apply_rows(self, rows: Iterable[Row], data: CycleData, s: CollectorSettings) -> None:
        apply_rows(self.spec, rows, data, s)

    def apply_checked(self, rows: list[Row], data: CycleData, s: CollectorSettings) -> str | None:
        """``apply_rows``, saying what went wrong instead of raising, or None."""
        try:
            self.apply_rows(rows, data, s)
        # The rows come from outside: whatever they break is this preset's
        # problem, reported, never the cycle's end.
        except Exception as e:  # noqa: BLE001
            return f"unexpected data ({type(e).__name__}: {e})"
        if rows and not data.rows_read and data.rows_hidden < len(rows):
            # Rows, none of them usable (every count text, say): read as "no
            # rows", that would say "no jobs anywhere".
            why = ("values negative, not a number or implausibly large" if data.implausible
                   else "values of the wrong type?")
            return f"{len(rows)} row(s), none usable ({why})"
        return None

    @property
    def feeds_queue(self) -> bool:
        return any(fm.figure in ("queued", "running") for fm in self.spec.fields)


PRESETS: dict[str, Preset] = {name: Preset(name, spec) for name, spec in BUILTIN_PRESETS.items()}


def presets_for(s: CollectorSettings, names: Iterable[str] | None = None) -> list[Preset]:
    """The configured presets (``names``: a source's), in order."""
    if names is None:
        return [Preset(name, spec) for name, spec in s.preset_specs().items()]
    return [Preset(name, s.custom_presets.get(name) or BUILTIN_PRESETS[name]) for name in names]


def live_sources(presets: Iterable[Preset]) -> frozenset[str]:
    """Sources of live figures (queue, free capacity), as opposed to daily
    statistics: destination freshness is judged on these."""
    return frozenset(p.spec.measurement for p in presets
                     if p.spec.window == "live" and any(fm.figure not in CONTEXT_FIGURES for fm in p.spec.fields))


