"""InfluxQL without the HTTP: the statement a preset sends and the series
its answer comes back in. The client (``influx.py``) only carries them, so
the presets build their statements here without importing the client."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tpv_broker.config.collector_settings import CollectorSettings
from tpv_broker.config.preset_spec import PresetSpec

from .rows import Row


@dataclass(frozen=True)
class Series:
    name: str
    tags: dict[str, str]
    columns: list[str]
    values: list[list[Any]]

    def rows(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, v, strict=True)) for v in self.values]


def quote_ident(name: str) -> str:
    """Measurement, tag and field names come from our presets, never from a
    request; quoting still keeps names like ``destination-queue-run-time`` valid."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ms_literal(seconds: float) -> str:
    """An InfluxQL (and Flux) duration literal; milliseconds keep sub-second settings."""
    return f"{max(1, round(seconds * 1000))}ms"


MAX_CLOCK_SKEW_S = 300.0


def time_window(lookback_s: float) -> str:
    # The upper bound matters: a point stamped in the future (a Galaxy host
    # with a skewed clock, a wrong write precision) would otherwise win
    # last() and hide every real update until its time came.
    return f"time > now() - {ms_literal(lookback_s)} AND time <= now() + {ms_literal(MAX_CLOCK_SKEW_S)}"


def influxql_statement(spec: PresetSpec, s: CollectorSettings, since_s: float | None = None) -> str:
    """One statement for every destination: GROUP BY the preset's tags, the
    newest point of each group; or, for an id held in a field (which cannot
    be grouped by), every row of the window (sites x minutes: few).

    ``since_s``: only the points of the last ``since_s`` seconds instead
    (``points_since``)."""
    if since_s is not None:
        return points_since(spec, since_s)
    where = time_window(spec.window_s(s.lookback_s, s.stats_lookback_s, s.health.window_s))
    measurement = quote_ident(spec.measurement)
    if spec.read == "all_rows":
        # The keys the preset reads, not *: about half the bytes to send and
        # parse for pulsar-util's lines, whose other fields nothing reads.
        return f"SELECT {', '.join(_read_columns(spec))} FROM {measurement} WHERE {where}"
    fields = spec.field_names()
    group_by = ", ".join(quote_ident(t) for t in spec.tags_used())
    if len(fields) == 1:
        # last() skips points without the field; its time is the point's.
        f = quote_ident(fields[0])
        return f"SELECT last({f}) AS {f} FROM {measurement} WHERE {where} GROUP BY {group_by}"
    # Several selectors in one statement would lose the points' times.
    selected = ", ".join(quote_ident(f) for f in fields)
    return f"SELECT {selected} FROM {measurement} WHERE {where} GROUP BY {group_by} ORDER BY time DESC LIMIT 1"


def points_since(spec: PresetSpec, since_s: float) -> str:
    """Every point of the last ``since_s`` seconds, its tags as columns.
    No GROUP BY: InfluxDB 1.6 spends about 1.5 s grouping 100,000 series
    even when the window holds no point of them, against 0.4 s without
    (the newest point of each group is chosen when the rows are applied).
    Its one series can exceed InfluxDB's max-row-limit: send it chunked."""
    columns = [quote_ident(f) for f in _fields_read(spec)] + [f"{quote_ident(t)}::tag" for t in spec.tags_used()]
    return f"SELECT {', '.join(columns)} FROM {quote_ident(spec.measurement)} WHERE {time_window(since_s)}"


def _fields_read(spec: PresetSpec) -> list[str]:
    """The preset's fields and the field that holds its destination id, if one does."""
    fields = spec.field_names()
    if spec.destination.field is not None and spec.destination.field not in fields:
        fields.append(spec.destination.field)
    return fields


def _read_columns(spec: PresetSpec) -> list[str]:
    """Every field and tag the preset reads, as ``all_rows`` selects them.
    An id held in a field is asked for as a tag too: pulsar-util's newer
    lines in the same measurement tag it (a measurement can hold both; the
    rows read either, as with *)."""
    columns = [f"{quote_ident(f)}::field" for f in _fields_read(spec)]
    if spec.destination.field is not None:
        columns.append(f"{quote_ident(spec.destination.field)}::tag")
    return columns + [f"{quote_ident(t)}::tag" for t in spec.tags_used()]


def series_rows(series: Sequence[Series]) -> list[Row]:
    """InfluxQL series (asked with epoch=s) as rows: one per value row."""
    out = []
    for ser in series:
        for row in ser.rows():
            at = row.pop("time", None)
            out.append(Row(at=at if isinstance(at, (int, float)) and not isinstance(at, bool) else None,
                           tags=ser.tags, values=row))
    return out
