"""Request bodies, validated with pydantic, and how a validation failure is
told to the client: every problem names its field."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, NotRequired

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator, with_config
from typing_extensions import TypedDict

from tpv_broker.core.inputs import Candidates, JobFacts
from tpv_broker.ids import (
    DEST_ID_PATTERN,
    DEST_ID_RULE,
    JOB_ID_PATTERN,
    JOB_ID_RULE,
    TOOL_ID_MAX_CHARS,
    TOOL_ID_PATTERN,
    TOOL_ID_RULE,
)

__all__ = [
    "DEST_ID_PATTERN",
    "JOB_ID_PATTERN",
    "TOOL_ID_PATTERN",
    "ProcessDataRequest",
    "RankRequest",
    "describe_errors",
]

# Strict numbers: JSON true or "4" is a client bug, not a number of cores.
Cores = Annotated[float, Field(strict=True, allow_inf_nan=False, gt=0, le=100_000)]
MemGB = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=1_000_000)]
Gpus = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=10_000)]
SizeBytes = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=1e18)]
Score = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-1e12, le=1e12)]
Latitude = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-90, le=90)]
Longitude = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-180, le=180)]
DestId = Annotated[str, Field(pattern=DEST_ID_PATTERN)]
ToolId = Annotated[str, Field(pattern=TOOL_ID_PATTERN, max_length=TOOL_ID_MAX_CHARS)]
JobId = Annotated[str, Field(pattern=JOB_ID_PATTERN)]
StoreId = Annotated[str, Field(min_length=1, max_length=255)]


class _Strict(BaseModel):
    # A misspelt field ("core") silently ignored would rank on defaults.
    model_config = ConfigDict(extra="forbid")


class JobIn(_Strict):
    id: JobId | None = None
    tool_id: ToolId
    cores: Cores = 1.0
    mem: MemGB = 0.0
    gpus: Gpus | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _int_id(cls, v: Any) -> Any:
        # Galaxy's job ids are integers; TPV clients may send either.
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    def facts(self) -> JobFacts:
        return JobFacts(
            tool_id=self.tool_id,
            cores=self.cores,
            mem=self.mem,
            gpus=self.gpus or 0.0,
            id=self.id,
        )


@with_config(ConfigDict(extra="forbid"))
class DestinationIn(TypedDict):
    # A JSON object as it came, not a model: the rank core reads candidates
    # a column at a time (inputs.Candidates), and a model per candidate
    # made validating 200 of them take 1.7x as long.
    id: DestId
    context: NotRequired[dict[str, Any] | None]
    tpv_score: NotRequired[Score | None]


class DatasetIn(_Strict):
    object_store_id: StoreId
    size: SizeBytes = 0.0


def _no_duplicate_ids(ids: list[str], field: str) -> None:
    if len(set(ids)) == len(ids):  # the usual case, in one C-level pass
        return
    first: dict[str, int] = {}
    for i, dest_id in enumerate(ids):
        if dest_id in first:
            raise ValueError(
                f"{field}[{i}].id: duplicate destination id {dest_id!r} (also at {field}[{first[dest_id]}])"
            )
        first[dest_id] = i


class ObjectStoreIn(_Strict):
    latitude: Latitude
    longitude: Longitude


class RankRequest(_Strict):
    job: JobIn
    destinations: list[DestinationIn]
    datasets: list[DatasetIn] = []
    # Coordinates of object stores config does not know (config wins).
    object_stores: dict[StoreId, ObjectStoreIn] = {}

    def store_locations(self) -> dict[str, tuple[float, float]]:
        return {k: (v.latitude, v.longitude) for k, v in self.object_stores.items()}

    @model_validator(mode="after")
    def _unique(self) -> RankRequest:
        _no_duplicate_ids([d["id"] for d in self.destinations], "destinations")
        return self

    def candidates(self) -> Candidates:
        return Candidates.from_rows(self.destinations)


# -- the prototype's /process_data shape, kept so existing TPV configs work --
class _Lenient(BaseModel):
    # The prototype ignored extra keys (clients send each destination's whole
    # TPV context); so do we, on this endpoint only.
    model_config = ConfigDict(extra="ignore")


class LegacyJobInfo(_Lenient):
    tool_id: ToolId
    mem: MemGB = 0.0
    cores: Cores = 1.0
    gpus: Gpus | None = None


class LegacyDestination(_Lenient):
    id: DestId
    latitude: Latitude | None = None
    longitude: Longitude | None = None


class LegacyObjectStore(_Lenient):
    latitude: Latitude
    longitude: Longitude


class LegacyDataset(_Lenient):
    object_store_id: StoreId
    size: SizeBytes = 0.0


class ProcessDataRequest(_Lenient):
    job_info: LegacyJobInfo
    destinations: list[LegacyDestination]
    objectstores: dict[str, LegacyObjectStore] = {}
    datasets: dict[str, LegacyDataset] = {}

    @field_validator("destinations")
    @classmethod
    def _unique(cls, v: list[LegacyDestination]) -> list[LegacyDestination]:
        _no_duplicate_ids([d.id for d in v], "destinations")
        return v

    def to_rank_request(self) -> RankRequest:
        return RankRequest.model_construct(
            job=JobIn.model_construct(
                id=None,
                tool_id=self.job_info.tool_id,
                cores=self.job_info.cores,
                mem=self.job_info.mem,
                gpus=self.job_info.gpus,
            ),
            destinations=[
                DestinationIn(
                    id=d.id,
                    context={k: v for k, v in (("latitude", d.latitude), ("longitude", d.longitude)) if v is not None},
                )
                for d in self.destinations
            ],
            datasets=[
                DatasetIn.model_construct(object_store_id=d.object_store_id, size=d.size)
                for d in self.datasets.values()
            ],
            object_stores={
                k: ObjectStoreIn.model_construct(latitude=v.latitude, longitude=v.longitude)
                for k, v in self.objectstores.items()
            },
        )


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _field_path(loc: tuple[Any, ...]) -> str:
    """``job.cores``, ``destinations[2].id``; a key that is no plain name (an
    unknown field " ", an object store "my store") is quoted:
    ``object_stores["my store"].latitude``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _NAME.fullmatch(str(part)):
            out += ("." if out else "") + str(part)
        else:
            text = str(part)
            out += "[" + json.dumps(text[:60] + ("..." if len(text) > 60 else "")) + "]"
    return out or "body"


# An id that fails its pattern is described in words, not as a regex.
_PATTERN_RULES = {DEST_ID_PATTERN: DEST_ID_RULE, TOOL_ID_PATTERN: TOOL_ID_RULE, JOB_ID_PATTERN: JOB_ID_RULE}


def too_many_candidates(count: int, limit: int) -> str | None:
    """The problem with ``count`` candidates under ``api.max_candidates``, if any
    (the API and ``tpv-broker rank`` refuse them alike)."""
    return f"at most {limit} candidates, got {count}" if count > limit else None


def describe_errors(exc: ValidationError) -> list[dict[str, str]]:
    """``[{"field": "job.cores", "problem": "Input should be greater than 0 (got -1)"}]``"""
    problems = []
    for err in exc.errors(include_url=False):
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "string_pattern_mismatch":
            msg = _PATTERN_RULES.get(str((err.get("ctx") or {}).get("pattern")), msg)
        field = _field_path(tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))))
        # Model validators report the path inside their message.
        if msg.startswith(("destinations[",)) and ": " in msg:
            field, msg = msg.split(": ", 1)
        if err["type"] not in ("missing", "extra_forbidden") and "input" in err:
            value = err["input"]
            if isinstance(value, (int, float, bool)) or value is None:
                msg += f" (got {value!r})"
            elif isinstance(value, str):
                msg += f" (got {value[:60]!r}{'...' if len(value) > 60 else ''})"
        problems.append({"field": field, "problem": msg})
    return problems
