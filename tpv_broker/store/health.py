"""What destination health reads and writes in Redis (keys: ``keys.py``):
the placements and returns the charge script counts
(``<p>:health:placements``, ``<p>:health:returns``) and the admins' pins
(``<p>:health:pins``). The judging itself is pure
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

Buckets = dict[str, list[tuple[float, float]]]


@dataclass(frozen=True)
class HealthInputs:
    """Per tenant and destination, the buckets (start, jobs) of its
    placements and of its returns (jobs that came back to be placed again);
    and the pins."""

    by_tenant: dict[str, Buckets]
    returns_by_tenant: dict[str, Buckets]
    pins: dict[str, HealthPin]

    @property
    def placements(self) -> Buckets:
        """Every tenant's placements together."""
        return self.placed_by(None)

    def placed_by(self, tenants: frozenset[str] | None) -> Buckets:
        """The placements of these tenants only (None: every tenant's)."""
        return _joined(self.by_tenant, tenants)

    def returned_by(self, tenants: frozenset[str] | None) -> Buckets:
        """The returns of these tenants only (None: every tenant's)."""
        return _joined(self.returns_by_tenant, tenants)


def _joined(per_tenant: dict[str, Buckets], tenants: frozenset[str] | None) -> Buckets:
    out: Buckets = {}
    for tenant in sorted(per_tenant if tenants is None else tenants):
        for dest, buckets in per_tenant.get(tenant, {}).items():
            out.setdefault(dest, []).extend(buckets)
    return out


class HealthStore:
    def __init__(self, client: redis.Redis, keys: KeySchema,
                 failure: Callable[[str, redis.RedisError], StoreError]) -> None:
        self.client = client
        self.keys = keys
        self.failure = failure

    def read(self, since: float, drop_old: bool = True) -> HealthInputs:
        """The placements and returns from ``since`` on and every pin, in
        one round trip; the buckets before ``since`` are dropped (nobody
        counts them) unless ``drop_old`` is false (a reader with a shorter
        window)."""
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(self.keys.health_placements)
            pipe.hgetall(self.keys.health_returns)
            pipe.hgetall(self.keys.health_pins)
            raw_placed, raw_returned, raw_pins = cast("list[dict[bytes, bytes]]", pipe.execute())
            by_tenant, old = _buckets(raw_placed, since)
            returns, old_returns = _buckets(raw_returned, since)
            if drop_old:
                if old:
                    self.client.hdel(self.keys.health_placements, *old)
                if old_returns:
                    self.client.hdel(self.keys.health_returns, *old_returns)
        except redis.RedisError as e:
            raise self.failure("reading placements and health pins", e) from None
        return HealthInputs(by_tenant, returns, _pins(raw_pins))

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


def _buckets(raw: dict[bytes, bytes], since: float) -> tuple[dict[str, Buckets], list[bytes]]:
    """tenant -> destination -> buckets, and the fields to drop."""
    out: dict[str, Buckets] = {}
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
