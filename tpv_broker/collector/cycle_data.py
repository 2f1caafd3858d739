"""What one cycle gathers from the presets, keyed by canonical destination id."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tpv_broker.core.models import DestinationFigures, ToolFigures


def strip_quotes(value: str) -> str:
    """pulsar-util writes ``destination_id="galaxy_sk01"`` into tag values and
    usegalaxy.eu ``classad='machine'``: the quotes are not part of the id."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclass
class CycleData:
    """What one cycle has gathered so far, keyed by canonical destination id."""

    aliases: dict[str, str]
    # Ids (after aliases) this source must not report on, and how many rows
    # named one (dropped, though usable; a row of a grouped preset may name
    # several destinations: counted once).
    hidden: frozenset[str] = frozenset()
    rows_hidden: int = 0
    destinations: dict[str, DestinationFigures] = field(default_factory=dict)
    tool_stats: dict[str, dict[str, ToolFigures]] = field(default_factory=dict)
    rows_read: int = 0
    # Presets whose statement succeeded this cycle (even with no rows).
    read_ok: set[str] = field(default_factory=set)
    # Jobs that ended in error: destination -> (point time, count) per
    # report (destination health); None: no source reads them.
    errors: dict[str, list[tuple[float, float]]] | None = None
    # Values read as missing for being negative, not a number or too large.
    implausible: int = 0

    # raw id -> canonical id: every row names one, and most name the same few.
    _canonical: dict[str, str] = field(default_factory=dict, repr=False)

    def canonical(self, raw_id: str) -> str:
        known = self._canonical.get(raw_id)
        if known is None:
            clean = strip_quotes(raw_id)
            known = self._canonical[raw_id] = self.aliases.get(clean, clean)
        return known

    def destination(self, raw_id: str, source: str, at: float | None) -> DestinationFigures:
        dest_id = self.canonical(raw_id)
        d = self.destinations.get(dest_id)
        if d is None:
            d = self.destinations[dest_id] = DestinationFigures(id=dest_id)
        if at is not None:
            d.sources[source] = max(at, d.sources.get(source, at))
        return d
