"""A lease in Redis that lets exactly one of several collectors publish.

The lease is one key (``KeySchema.collector_lease``) holding the holder's
token, "<instance id>/<nonce>", set with SET NX PX and renewed or released
only by the holder (a Lua compare-and-set on the token). A holder that dies
without releasing it loses it when it expires. A holder that was paused and
wakes after losing it cannot publish over the new one: every publish checks
the token inside its MULTI/EXEC (``Fence``, see ``SnapshotStore.publish``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import redis

from tpv_broker.errors import StoreError

log = logging.getLogger("tpv_broker.collector")

# Both compare the stored token with ours first, so a holder whose lease
# expired and was taken never extends or deletes the new holder's.
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def default_instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Fence:
    """What a publish checks inside its transaction: the lease key still
    holds this token."""

    key: str
    token: str


class LeaseLost(StoreError):
    """A publish was refused because this collector no longer holds the lease."""

    def __init__(self, holder: str | None) -> None:
        super().__init__(f"this collector no longer holds the lease (holder now: {holder or 'nobody'}); not publishing")
        self.holder = holder


class LeaderLease:
    """One collector's side of the lease. ``hold()`` is called every
    ``lease_s / 3``: it renews the lease if held, else tries to take it.
    ``is_leader()`` is this process's belief, bounded by the lease's own
    expiry measured on the local monotonic clock."""

    def __init__(self, client: redis.Redis, key: str, instance_id: str, lease_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client, self.key, self.lease_s, self.clock = client, key, lease_s, clock
        self.instance_id = instance_id
        self.token = f"{instance_id}/{uuid.uuid4().hex[:12]}"
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._valid_until = float("-inf")
        self._released = False
        self._state = "starting"  # what was last logged: leader, standby, redis-down
        self.last_holder: str | None = None  # who held it at the last hold() we did not win
        self.last_error: str | None = None  # why the last hold() could not ask Redis
        self.last_exception: redis.RedisError | None = None  # the same, as redis-py raised it

    @property
    def fence(self) -> Fence:
        return Fence(self.key, self.token)

    def is_leader(self) -> bool:
        return self.clock() < self._valid_until

    def hold(self) -> bool:
        """Renew or take the lease; True if held now. Never raises for Redis
        trouble: the lease then lapses by itself (locally and in Redis)."""
        started = self.clock()
        ms = max(1, int(self.lease_s * 1000))
        if self._released:
            return False  # a lease job still running at a stop must not take it back
        try:
            # Renewed whenever Redis holds our token, whatever our own clock
            # says: a SET NX that reached Redis after its reply timed out (a
            # stall) left the key ours, and we stood by behind it for a lease.
            held = bool(self._renew(keys=[self.key], args=[self.token, ms]))
            if not held:
                # Not ours (any more), or expired: take it if it is free
                # (also after a Redis restart wiped it).
                held = bool(self.client.set(self.key, self.token, nx=True, px=ms))
            if held and self._released:
                # release() ran while this was on the wire: give it back.
                self._release(keys=[self.key], args=[self.token])
                return False
            holder = None if held else self.holder()
            self.last_holder, self.last_error, self.last_exception = holder, None, None
        except redis.RedisError as e:
            self.last_error, self.last_exception = str(e), e
            if self._state != "redis-down":
                log.warning("collector lease: Redis unreachable (%s); %s", e,
                            "publishing stops when the lease lapses" if self.is_leader() else "standing by")
                self._state = "redis-down"
            return self.is_leader()
        if held:
            self._valid_until = started + self.lease_s
            if self._state != "leader":
                log.info("collector lease acquired by %s (key %s, lease %g s): publishing", self.token, self.key,
                         self.lease_s)
                self._state = "leader"
        else:
            self._valid_until = float("-inf")
            if self._state != "standby":
                log.info("collector lease held by %s: standing by", holder)
                self._state = "standby"
        return held

    def holder(self) -> str | None:
        raw = self.client.get(self.key)
        return raw.decode(errors="replace") if isinstance(raw, bytes) else raw

    def release(self) -> None:
        """On a clean stop, so a standby need not wait for the lease to expire."""
        self._released = True
        self._valid_until = float("-inf")
        try:
            if self._release(keys=[self.key], args=[self.token]):
                log.info("collector lease released")
        except redis.RedisError as e:
            log.warning("collector lease not released (it expires by itself): %s", e)
