"""What a rank request is about, as plain data: the job, the candidates and
the job's input datasets. Built by the API or the CLI, read by the pure
ranking code."""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any


@dataclass(frozen=True)
class Candidate:
    id: str
    tpv_score: float | None = None
    # The destination's TPV context, as the client sent it.
    context: Any = None


@dataclass(frozen=True, eq=False)
class Candidates:
    """The candidates as columns, in TPV's order: the rank core reads them a
    field at a time. The API builds them from its validated JSON objects as
    they came (``from_rows``), without a model per candidate."""

    ids: list[str]
    tpv_scores: list[float | None]
    contexts: list[Any]
    # Each candidate's id in the snapshot, when the asking Galaxy names
    # destinations its own way (a tenant's aliases); None: the ids above.
    # Answers keep the asker's ids.
    snapshot_ids: list[str] | None = None

    @property
    def keys(self) -> list[str]:
        """The ids to look the candidates up by in the snapshot and charges."""
        return self.ids if self.snapshot_ids is None else self.snapshot_ids

    def as_seen_by(self, aliases: Mapping[str, str], hidden: Container[str]) -> Candidates:
        """These candidates as one asker sees the snapshot: looked up by
        ``aliases`` (its id -> the snapshot's; an id without one means
        itself), and ``hidden`` destinations (another asker's private
        ones) as unknown: looked up by an id no destination has."""
        if not aliases and not hidden:
            return self
        keys = [aliases.get(i, i) for i in self.ids]
        return Candidates(self.ids, self.tpv_scores, self.contexts, [_UNKNOWN if k in hidden else k for k in keys])

    @classmethod
    def of(cls, candidates: Sequence[Candidate] | Candidates) -> Candidates:
        if isinstance(candidates, Candidates):
            return candidates
        return cls([c.id for c in candidates], [c.tpv_score for c in candidates], [c.context for c in candidates])

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> Candidates:
        """JSON objects with an ``id`` and optional ``tpv_score`` and ``context``."""
        return cls(list(map(itemgetter("id"), rows)), list(map(dict.get, rows, repeat("tpv_score"))),  # type: ignore[arg-type]
                   list(map(dict.get, rows, repeat("context"))))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.ids)


# Not a valid destination id (ids.py): no snapshot holds it.
_UNKNOWN = ""


@dataclass(frozen=True)
class JobFacts:
    tool_id: str
    cores: float = 1.0
    mem: float = 0.0  # GB, as TPV
    gpus: float = 0.0
    id: str | None = None


@dataclass(frozen=True)
class DatasetInput:
    object_store_id: str
    size: float  # bytes
    # The object store's (latitude, longitude), if config or the request knows it.
    location: tuple[float, float] | None = None
