"""What the client sends to ``POST /api/rank``, built from what a TPV rank
clause sees.

The API rejects with a 400 anything it does not expect (unknown fields,
non-finite or out-of-range numbers, odd ids), and a 400 costs the job its
informed ranking. So only values the API accepts are sent: a fact TPV left
undefined or odd is left out (the API has a default for each), a destination
whose id the API would reject is not sent (it is placed after the ranked
ones), and a tool id the API would reject means no request at all.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Python 3.10's; the client still installs on 3.9, where only mypy reads it.
    from typing import TypeGuard

# The API's rules (tpv_broker/api/schemas.py), repeated because this
# distribution must not import the service; tests/test_client_request.py
# checks that they agree and that every request built here validates.
DEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@+\-/]{0,254}$"
TOOL_ID_PATTERN = r"^[A-Za-z0-9_](?: ?[A-Za-z0-9_.:@+\-/~]){0,511}$"
TOOL_ID_MAX_CHARS = 512
JOB_ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,128}$"
MAX_CORES = 100_000.0
MAX_MEM_GB = 1_000_000.0
MAX_GPUS = 10_000.0
MAX_SIZE_BYTES = 1e18
MAX_TPV_SCORE = 1e12
MAX_STORE_ID_CHARS = 255
# Contexts may carry long strings (scripts, paths); the API reads only
# latitude and longitude, so a cap keeps the request small without loss.
MAX_CONTEXT_STRING_CHARS = 1000

Json = dict[str, Any]


class Unsendable(Exception):
    """This job cannot be asked about at all (say, its tool id is one the API rejects)."""


def _matches(value: object, pattern: str) -> TypeGuard[str]:
    # fullmatch, not match: Python's `$` also matches before a trailing
    # newline, the API's regex engine does not.
    return isinstance(value, str) and re.fullmatch(pattern, value) is not None


def _utf8(value: str) -> bool:
    # Lone surrogates survive json.dumps but not the API's string validation.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def number(value: object, low: float, high: float, low_inclusive: bool = True) -> float | None:
    """``value`` as a float if it is a real number (not a bool) within the
    bounds, else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    x = float(value)
    if not math.isfinite(x) or x > high or x < low or (x == low and not low_inclusive):
        return None
    return x


def job_section(namespace: Mapping[str, Any]) -> Json:
    """The ``job`` object from the clause's names. ``cores``/``mem``/``gpus``
    exist only if some TPV entity set them (``gpus`` rarely is)."""
    tool_id = getattr(namespace.get("tool"), "id", None)
    if not _matches(tool_id, TOOL_ID_PATTERN) or len(tool_id) > TOOL_ID_MAX_CHARS:
        raise Unsendable(f"tool id {tool_id!r} is not one the broker accepts")
    job: Json = {"tool_id": tool_id}
    job_id = getattr(namespace.get("job"), "id", None)
    if isinstance(job_id, int) and not isinstance(job_id, bool):
        job_id = str(job_id)
    if _matches(job_id, JOB_ID_PATTERN):
        job["id"] = job_id
    for name, high, low_inclusive in (("cores", MAX_CORES, False), ("mem", MAX_MEM_GB, True), ("gpus", MAX_GPUS, True)):
        value = number(namespace.get(name), 0.0, high, low_inclusive)
        if value is not None:
            job[name] = value
    return job


def datasets_section(namespace: Mapping[str, Any]) -> list[Json]:
    """The inputs' bytes per object store, from
    ``helpers.get_dataset_attributes(job.input_datasets)``. Summed per store:
    the broker weighs locality by size, so this loses nothing and keeps a job
    with thousands of inputs to one entry per store. Inputs with no object
    store id (or an odd size) are left out. May raise: the caller decides."""
    helpers, job = namespace.get("helpers"), namespace.get("job")
    if helpers is None or job is None:
        return []
    attributes = helpers.get_dataset_attributes(getattr(job, "input_datasets", None)) or {}
    totals: dict[str, float] = {}
    for attrs in attributes.values():
        store = attrs.get("object_store_id")
        size = number(attrs.get("size"), 0.0, MAX_SIZE_BYTES)
        if isinstance(store, str) and 1 <= len(store) <= MAX_STORE_ID_CHARS and _utf8(store) and size is not None:
            totals[store] = min(totals.get(store, 0.0) + size, MAX_SIZE_BYTES)
    return [{"object_store_id": store, "size": size} for store, size in totals.items()]


def _json_scalar(value: object) -> bool:
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, str):
        return len(value) <= MAX_CONTEXT_STRING_CHARS and _utf8(value)
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


# The only context keys the API reads: a site's contexts may hold much more
# (hundreds of values in a shared config made requests over the API's size
# limit, and every job fell back to TPV's order).
CONTEXT_KEYS = ("latitude", "longitude")


def context_section(context: object) -> Json:
    """A destination's TPV context as the API reads it: its ``latitude`` and
    ``longitude``, when JSON scalars (contexts may hold any Python object)."""
    if not isinstance(context, Mapping):
        return {}
    return {k: context[k] for k in CONTEXT_KEYS if k in context and _json_scalar(context[k])}


def destination_entry(destination: Any, tpv_score: object) -> Json | None:
    """One candidate as the API takes it, or None if its id would be rejected."""
    dest_id = getattr(destination, "id", None)
    if not _matches(dest_id, DEST_ID_PATTERN):
        return None
    entry: Json = {"id": dest_id}
    score = number(tpv_score, -MAX_TPV_SCORE, MAX_TPV_SCORE)
    if score is not None:
        # TPV's tag scores are integers; keep them so in the request.
        entry["tpv_score"] = int(score) if score.is_integer() else score
    context = context_section(getattr(destination, "context", None))
    if context:
        entry["context"] = context
    return entry


def destinations_section(ordered: Sequence[Any], scores: Sequence[object]) -> tuple[list[Json], list[str]]:
    """The candidates in TPV's order, and the ids left out (rejected by the
    API's rules, or a repeat of an id already sent)."""
    entries: list[Json] = []
    left_out: list[str] = []
    seen = set()
    for destination, score in zip(ordered, scores):
        entry = destination_entry(destination, score)
        if entry is None or entry["id"] in seen:
            left_out.append(repr(getattr(destination, "id", destination)))
            continue
        seen.add(entry["id"])
        entries.append(entry)
    return entries, left_out


def object_stores_section(locations: Mapping[str, Any] | None) -> Json:
    """``{store id: {latitude, longitude}}`` given by the admin, for stores the
    broker's config does not locate; entries the API would reject are dropped."""
    out: Json = {}
    for store, where in (locations or {}).items():
        if not (isinstance(store, str) and 1 <= len(store) <= MAX_STORE_ID_CHARS and _utf8(store)):
            continue
        if not isinstance(where, Mapping):
            continue
        lat = number(where.get("latitude"), -90.0, 90.0)
        lon = number(where.get("longitude"), -180.0, 180.0)
        if lat is not None and lon is not None:
            out[store] = {"latitude": lat, "longitude": lon}
    return out
