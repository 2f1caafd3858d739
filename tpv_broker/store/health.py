"""What destination health reads and writes in Redis (keys: ``keys.py``):
the placements the charge script counts (``<p>:health:placements``) and
the admins' pins (``<p>:health:pins``). The judging itself is pure
(``core/health.py``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import redis
from pydantic import ValidationError

from tpv_broker.core.models import HealthPin
from tpv_broker.errors import StoreError
from tpv_broker.store.inflight import PLACEMENT_BUCKET_S
from tpv_broker.store.keys import KeySchema


@dataclass(frozen=True)
class HealthInputs:
    """Per destination, its placement buckets (start, jobs), every tenant's
    together and per tenant; and the pins."""

    placements: dict[str, list[tuple[float, float]]]
    pins: dict[str, HealthPin]
    by_tenant: dict[str, dict[str, list[tuple[float, float]]]]

    def placed_by(self, tenants: frozenset[str] | None) -> dict[str, list[tuple[float, float]]]:
        """The placements of these tenants only (None: every tenant's)."""
        if tenants is None:
            return self.placements
        out: dict[str, list[tuple[float, float]]] = {}
        for tenant in sorted(tenants):
            for dest, buckets in self.by_tenant.get(tenant, {}).items():
                out.setdefault(dest, []).extend(buckets)
        return out


class HealthStore:
    def __init__(self, client: redis.Redis, keys: KeySchema,
                 failure: Callable[[str, redis.RedisError], StoreError]) -> None:
        self.client = client
        self.keys = keys
        self.failure = failure

    def read(self, since: float, drop_old: bool = True) -> HealthInputs:
        """The placements from ``since`` on and every pin, in one round
        trip; the buckets before ``since`` are dropped (nobody counts them)
        unless ``drop_old`` is false (a reader with a shorter window)."""
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(self.keys.health_placements)
            pipe.hgetall(self.keys.health_pins)
            raw_placed, raw_pins = cast("list[dict[bytes, bytes]]", pipe.execute())
            by_tenant, old = _placements(raw_placed, since)
            if old and drop_old:
                self.client.hdel(self.keys.health_placements, *old)
        except redis.RedisError as e:
            raise self.failure("reading placements and health pins", e) from None
        placements: dict[str, list[tuple[float, float]]] = {}
        for per_dest in by_tenant.values():
            for dest, buckets in per_dest.items():
                placements.setdefault(dest, []).extend(buckets)
        return HealthInputs(placements, _pins(raw_pins), by_tenant)

    def pins(self) -> dict[str, HealthPin]:
        try:
            raw = cast("dict[bytes, bytes]", self.client.hgetall(self.keys.health_pins))
        except redis.RedisError as e:
            raise self.failure("reading health pins", e) from None
        return _pins(raw)

    def pin(self, destination: str, pin: HealthPin) -> None:
        try:
            self.client.hset(self.keys.health_pins, destination, pin.model_dump_json())
        except redis.RedisError as e:
            raise self.failure("pinning a destination", e) from None

    def unpin(self, destination: str) -> bool:
        """False if it was not pinned."""
        try:
            return bool(self.client.hdel(self.keys.health_pins, destination))
        except redis.RedisError as e:
            raise self.failure("unpinning a destination", e) from None


def _placements(raw: dict[bytes, bytes],
                since: float) -> tuple[dict[str, dict[str, list[tuple[float, float]]]], list[bytes]]:
    """tenant -> destination -> buckets, and the fields to drop."""
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    old: list[bytes] = []
    for field, value in raw.items():
        bucket, _, rest = field.decode(errors="replace").partition(":")
        tenant, _, destination = rest.partition(":")
        try:
            start, count = float(bucket), float(value)
        except ValueError:
            old.append(field)  # not ours: never counted
            continue
        # Kept while any of it is inside the window.
        if start + PLACEMENT_BUCKET_S < since:
            old.append(field)
        elif tenant and destination:
            out.setdefault(tenant, {}).setdefault(destination, []).append((start, count))
    return out, old


def _pins(raw: dict[bytes, bytes]) -> dict[str, HealthPin]:
    pins = {}
    for field, value in raw.items():
        try:
            pins[field.decode()] = HealthPin.model_validate(json.loads(value))
        except (ValueError, ValidationError, UnicodeDecodeError):
            continue  # garbage under our prefix: no pin
    return pins
