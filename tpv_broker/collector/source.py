"""Where a cycle's metrics come from: InfluxQL (InfluxDB 1.x, or the
v1-compatible endpoint of 2.x/3.x) or Flux (InfluxDB 2.x natively), as
``influxdb.api`` says. Both answer one read per cycle with rows per preset.

A collector may read several InfluxDBs (config ``sources``): ``Source`` is
one of them with its presets and the aliases its ids go through."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tpv_broker.config.collector_settings import CollectorSettings
from tpv_broker.config.server_settings import InfluxDBSettings
from tpv_broker.config.settings import BrokerConfig

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


@dataclass(frozen=True)
class Source:
    """One InfluxDB a cycle reads: its name in config, its client, the
    presets read there, and its ids -> the snapshot's (``source_aliases``)."""

    name: str
    reader: MetricSource
    presets: tuple[Preset, ...]
    aliases: Mapping[str, str]
    tenant: str | None = None
    # Ids (after aliases) whose rows are dropped: BrokerConfig.source_hidden.
    hidden: frozenset[str] = frozenset()


def sources_for(config: BrokerConfig, readers: Mapping[str, MetricSource] | None = None) -> list[Source]:
    """The config's sources (``BrokerConfig.metric_sources``), each with its
    reader: from ``readers`` by name when given (tests, benchmarks), else a
    new client."""
    from .presets import presets_for

    out = []
    for name, settings in config.metric_sources().items():
        reader = readers[name] if readers is not None else metric_source(settings)
        out.append(Source(name, reader, tuple(presets_for(config.collector, settings.presets)),
                          config.source_aliases(name), settings.tenant, config.source_hidden(name)))
    return out


def as_sources(config: BrokerConfig, sources: MetricSource | Sequence[Source]) -> list[Source]:
    """``sources`` as a list: a bare reader stands for the config's one
    source (a config with several needs them all)."""
    if isinstance(sources, Sequence):
        return list(sources)
    names = list(config.metric_sources())
    if len(names) != 1:
        raise ValueError(f"this config reads {len(names)} sources ({', '.join(names)}): pass one reader each")
    return sources_for(config, {names[0]: sources})
