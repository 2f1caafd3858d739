"""In-flight charges in Redis. One sorted set holds every live charge (score:
when it was made; member: the charge as JSON), so reading them is one
command whatever the number of candidates, inside the rank request's
MULTI/EXEC. A charge is written by a Lua script, so several API workers
charging at once, and a job ranked twice, stay correct."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import redis

from tpv_broker.core.models import Charge
from tpv_broker.errors import StoreError
from tpv_broker.store.keys import KeySchema

# KEYS[1]: the charges zset; KEYS[2] (optional): the job's key.
# ARGV: member, charged_at, drop charges older than this, job key TTL (s).
# Returns nothing: the API's charge is written after its answer.
_CHARGE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
if #KEYS == 2 then
  local old = redis.call('GET', KEYS[2])
  if old then redis.call('ZREM', KEYS[1], old) end
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[4])
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
"""


def _plain_failure(action: str, exc: redis.RedisError) -> StoreError:
    return StoreError(f"Redis failed while {action}: {exc}")


class InflightStore:
    def __init__(self, client: redis.Redis, keys: KeySchema, max_age_s: float,
                 failure: Callable[[str, redis.RedisError], StoreError] | None = None) -> None:
        self.client = client
        self.keys = keys
        self.max_age_s = max_age_s
        # How a Redis error is told: the snapshot store's (Redis named, password
        # scrubbed) when it shares the client.
        self.failure = failure or _plain_failure
        self._script = client.register_script(_CHARGE)

    @property
    def script(self) -> str:
        return _CHARGE

    @property
    def sha(self) -> str:
        return str(self._script.sha)

    def command(self, charge: Charge) -> tuple[list[str], list[str | float | int]]:
        """The script's keys and arguments for ``charge``. Raises ValueError
        for a job id that must not become part of a key."""
        keys = [self.keys.inflight]
        if charge.job_id is not None:
            keys.append(self.keys.inflight_job(charge.job_id))
        ttl = max(1, int(self.max_age_s) + 1)
        return keys, [charge.to_member(uuid.uuid4().hex[:12]), charge.charged_at,
                      charge.charged_at - self.max_age_s, ttl]

    def charge(self, charge: Charge) -> None:
        """Charge a placement and wait for Redis to confirm it; a job id
        already charged moves its charge (never adds a second)."""
        keys, args = self.command(charge)
        try:
            self._script(keys=keys, args=args)
        except redis.RedisError as e:
            raise self.failure("charging a placement", e) from None

    def read(self, now: float) -> list[Charge]:
        try:
            members = self.client.zrangebyscore(self.keys.inflight, now - self.max_age_s, "+inf")
            # Plain members (no scores asked): bytes, or str on a decoding client.
            charges = (Charge.from_member(m) for m in members if isinstance(m, bytes | str))
            return [c for c in charges if c is not None]
        except redis.RedisError as e:
            raise self.failure("reading in-flight charges", e) from None
