"""InfluxDB 2.x natively: the presets as one Flux query (one ``yield`` per
preset) through influxdb-client, whose own annotated-CSV parser turns the
answer into tables; here they become the same rows the InfluxQL path gives,
so the reducers, and the snapshot, are the same.

Differences from InfluxQL worth knowing: a group's newest point is chosen
here among its series' newest points (Flux's ``last()`` works per series
and field); and a Flux query fails as a whole, so one bad preset fails the
cycle (InfluxQL reports it per statement).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import urllib3
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.flux_csv_parser import FluxCsvParserException, FluxQueryException
from influxdb_client.client.flux_table import FluxRecord
from influxdb_client.client.influxdb_client import InfluxDBClient

from tpv_broker.config.collector_settings import CollectorSettings
from tpv_broker.config.preset_spec import PresetSpec
from tpv_broker.config.server_settings import InfluxDBSettings
from tpv_broker.config.urls import redact_url, scrub
from tpv_broker.errors import URL_UNPARSABLE, MetricSourceError, MetricSourceTimeout, network_reason

from .influxql import MAX_CLOCK_SKEW_S, ms_literal
from .rows import ReadResult, Row

if TYPE_CHECKING:
    from .presets import Preset

# Columns of every Flux record that are not tags.
_NOT_TAGS = frozenset({"result", "table"})


def flux_string(value: str) -> str:
    """A Flux string literal: backslash, double quote and the start of an
    interpolation (``${``) escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${") + '"'



def yield_name(index: int) -> str:
    return f"p{index}"


def _fields(spec: PresetSpec) -> list[str]:
    names = spec.field_names()
    if spec.destination.field is not None and spec.destination.field not in names:
        names.append(spec.destination.field)
    return names


def _window(preset: Preset, s: CollectorSettings) -> tuple[str, float]:
    """The name of the window a preset reads, and its lookback (s). A
    preset read ``recent``-ly has a window of its own; its series' newest
    points are what changed (Flux's ``last()`` costs no grouping)."""
    if preset.since_s is not None:
        return f"{preset.spec.window}_since_window", preset.since_s
    return f"{preset.spec.window}_window", preset.spec.window_s(s.lookback_s, s.stats_lookback_s, s.health.window_s)


def flux_query(presets: Sequence[Preset], s: CollectorSettings, bucket: str) -> str:
    """One query for all presets: a time window per lookback, then per
    preset its measurement and fields, each series' newest point (or every
    point), yielded under the preset's position."""
    windows = dict(_window(p, s) for p in presets)
    lines = []
    for name, lookback in sorted(windows.items()):
        # stop in the future: a point with a slightly skewed clock still counts,
        # as in the InfluxQL statements (a far-future one does not).
        lines.append(
            f"{name} = from(bucket: {flux_string(bucket)})"
            f" |> range(start: -{ms_literal(lookback)}, stop: {ms_literal(MAX_CLOCK_SKEW_S)})"
        )
    for i, preset in enumerate(presets):
        spec = preset.spec
        fields = " or ".join(f"r._field == {flux_string(f)}" for f in _fields(spec))
        lines.append("")
        lines.append(_window(preset, s)[0])
        lines.append(f"  |> filter(fn: (r) => r._measurement == {flux_string(spec.measurement)} and ({fields}))")
        if spec.read == "newest_per_group":
            lines.append("  |> last()")
        lines.append(f"  |> yield(name: {flux_string(yield_name(i))})")
    return "\n".join(lines) + "\n"


def _epoch_s(value: Any) -> float | None:
    # Whole seconds, as the InfluxQL path asks for (epoch=s truncates).
    if isinstance(value, datetime):
        return float(math.floor(value.timestamp()))
    return None


def records_rows(records: Iterable[FluxRecord]) -> list[Row]:
    """Flux gives one record per (series, field, time); a row holds every
    field of one series at one time, as InfluxQL returns it."""
    merged: dict[tuple[frozenset[tuple[str, str]], float | None], dict[str, Any]] = {}
    tags_of: dict[frozenset[tuple[str, str]], dict[str, str]] = {}
    for record in records:
        values = record.values
        tags = {k: str(v) for k, v in values.items() if not k.startswith("_") and k not in _NOT_TAGS and v is not None}
        key = frozenset(tags.items())
        tags_of[key] = tags
        field = values.get("_field")
        if not isinstance(field, str):
            continue
        merged.setdefault((key, _epoch_s(values.get("_time"))), {})[field] = values.get("_value")
    return [Row(at=at, tags=tags_of[key], values=fields) for (key, at), fields in merged.items()]


class FluxSource:
    def __init__(self, settings: InfluxDBSettings, client: InfluxDBClient | None = None) -> None:
        if settings.org is None or settings.bucket is None or settings.token is None:
            # config validation makes this unreachable from a config file
            raise MetricSourceError("influxdb.api flux needs influxdb.org, influxdb.bucket and influxdb.token")
        self.settings = settings
        self.bucket = settings.bucket
        self.client = client or InfluxDBClient(
            url=settings.url,
            token=settings.token.get_secret_value(),
            org=settings.org,
            timeout=int(settings.timeout_s * 1000),
            verify_ssl=settings.verify_tls,
        )

    @property
    def where(self) -> str:
        return (f"InfluxDB at {redact_url(self.settings.url)} "
                f"(org {self.settings.org!r}, bucket {self.settings.bucket!r}, Flux)")

    def scrubbed(self, text: str) -> str:
        """``text`` without this source's credentials."""
        return scrub(text, self.settings.secrets())

    def read(self, presets: Sequence[Preset], s: CollectorSettings) -> list[ReadResult]:
        query = flux_query(presets, s, self.bucket)
        try:
            tables = self.client.query_api().query(query, org=self.settings.org)
        except InfluxDBError as e:
            status = getattr(e, "status", None) or (e.response.status if e.response is not None else None)
            if status in (401, 403):
                raise MetricSourceError(f"{self.where} refused the token (HTTP {status})") from None
            raise MetricSourceError(f"{self.where} answered an error: {self.scrubbed(str(e.message))}"
                                    + (f" (HTTP {status})" if status else "")) from None
        except FluxQueryException as e:
            raise MetricSourceError(f"{self.where} answered an error: {self.scrubbed(str(e.message))}") from None
        except FluxCsvParserException as e:
            raise MetricSourceError(f"{self.where} answered with unreadable CSV: {e}") from None
        except urllib3.exceptions.ReadTimeoutError:
            raise MetricSourceTimeout(f"{self.where} did not answer within {self.settings.timeout_s:g} s") from None
        except urllib3.exceptions.LocationParseError:
            raise MetricSourceError(f"{self.where}: {URL_UNPARSABLE}") from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise MetricSourceError(f"{self.where} is unreachable: {network_reason(e, self.scrubbed)}") from None
        except ValueError as e:
            # A header it will not send (a token with a line break in it).
            raise MetricSourceError(f"{self.where}: request failed: {network_reason(e, self.scrubbed)}") from None
        by_result: dict[str, list[FluxRecord]] = {}
        for table in tables:
            for record in table.records:
                by_result.setdefault(str(record.values.get("result")), []).append(record)
        return [ReadResult(rows=records_rows(by_result.get(yield_name(i), []))) for i in range(len(presets))]

    def database_problem(self) -> str | None:
        # A missing bucket is named in the query's own error.
        return None

    def close(self) -> None:
        self.client.close()

