"""What a rank request is about, as plain data: the job, the candidates and
the job's input datasets. Built by the API or the CLI, read by the pure
ranking code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


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
