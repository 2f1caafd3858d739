"""What a rank request is about, as plain data: the job, the candidates and
the job's input datasets. Built by the API or the CLI, read by the pure
ranking code."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter, itemgetter
from typing import Any, Iterator, Protocol, Sequence, overload


@dataclass(frozen=True)
class Candidate:
    id: str
    tpv_score: float | None = None
    # The destination's TPV context, as the client sent it.
    context: Any = None


class CandidateLike(Protocol):
    """What the rank core reads of a candidate: a ``Candidate``, or the
    API's validated request entry as it is (no copy per candidate)."""

    @property
    def id(self) -> str: ...

    @property
    def tpv_score(self) -> float | None: ...

    @property
    def context(self) -> Any: ...


class CandidateRows(Sequence[Candidate]):
    """The API's validated candidates as they came: JSON objects with an
    ``id`` and optional ``tpv_score`` and ``context``. Many candidates are
    scored all at once, from columns (``candidate_column``);
    a ``Candidate`` is built only for one asked for (the first placement,
    explain) or when they are walked one at a time. Validating 200 of them
    as a model each took 1.7x as long as validating them as they are."""

    __slots__ = ("rows", "ids", "_all")

    def __init__(self, rows: Sequence[dict[str, Any]]) -> None:
        self.rows = rows
        self.ids: list[str] = list(map(itemgetter("id"), rows))
        self._all: list[Candidate] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, i: int) -> Candidate: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[Candidate]: ...

    def __getitem__(self, i: int | slice) -> Candidate | Sequence[Candidate]:
        if isinstance(i, slice):
            return CandidateRows(self.rows[i])
        if self._all is not None:
            return self._all[i]
        return _candidate(self.rows[i])

    def __iter__(self) -> Iterator[Candidate]:
        # Whoever walks them all (a few candidates, one at a time) may ask again.
        if self._all is None:
            self._all = list(map(_candidate, self.rows))
        return iter(self._all)

    def column(self, name: str) -> list[Any]:
        if name == "id":
            return self.ids
        return list(map(dict.get, self.rows, repeat(name)))


def _candidate(row: dict[str, Any]) -> Candidate:
    return Candidate(row["id"], row.get("tpv_score"), row.get("context"))


def candidate_column(candidates: Sequence[CandidateLike], name: str) -> list[Any]:
    """One field ("id", "tpv_score" or "context") of every candidate, in order."""
    if isinstance(candidates, CandidateRows):
        return candidates.column(name)
    return list(map(attrgetter(name), candidates))


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
