"""Where a cycle's metrics come from: InfluxQL (InfluxDB 1.x, or the
v1-compatible endpoint of 2.x/3.x) or Flux (InfluxDB 2.x natively), as
``influxdb.api`` says. Both answer one read per cycle with rows per preset."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from tpv_broker.config.settings import CollectorSettings, InfluxDBSettings

from .rows import ReadResult

if TYPE_CHECKING:
    from .presets import Preset


class MetricSource(Protocol):
    @property
    def where(self) -> str: ...

    def read(self, presets: Sequence[Preset], s: CollectorSettings) -> list[ReadResult]:
        """Raises MetricSourceError when the source cannot be read at all."""
        ...

    def database_problem(self) -> str | None: ...


def metric_source(settings: InfluxDBSettings) -> MetricSource:
    if settings.api == "flux":
        from .flux import FluxSource

        return FluxSource(settings)
    from .influx import InfluxQLClient

    return InfluxQLClient(settings)
