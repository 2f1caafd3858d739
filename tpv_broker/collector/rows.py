"""Rows as both query paths hand them to the reducers: one point (or one
group's newest point) with its tags and field values, whatever the wire
format (InfluxQL JSON series, Flux annotated CSV)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Row:
    at: float | None  # epoch seconds
    tags: Mapping[str, str]
    values: Mapping[str, Any]

    def tag(self, name: str) -> Any:
        """A tag's value; InfluxQL's SELECT * returns tags as plain columns,
        so those count too."""
        for value in (self.tags.get(name), self.values.get(name)):
            if value not in (None, ""):
                return value
        return None

    def field(self, name: str) -> Any:
        """A field's value, or its namesake's: when a statement selects a
        field and a tag of the same name, InfluxDB 1.x calls the later
        column ``<name>_1``, which is the tag in ``SELECT *`` and in the
        statements built here (fields first), and this reads that column
        first. Used where either will do: ``tag_or_field`` and a preset's
        ``require``."""
        for value in (self.values.get(f"{name}_1"), self.values.get(name)):
            if value not in (None, ""):
                return value
        return None

    def tag_or_field(self, name: str) -> Any:
        value = self.tag(name)
        return value if value is not None else self.field(name)


@dataclass(frozen=True)
class ReadResult:
    """One preset's rows, or why they could not be read."""

    rows: list[Row] = field(default_factory=list)
    error: str | None = None
    # Oddities that did not make the answer unusable (values read as missing).
    warnings: tuple[str, ...] = ()
