"""Per-tenant request rate limits, shared by every API worker through Redis.

A token bucket (as GCRA: one number per tenant, the "theoretical arrival
time" of its next request, ``<p>:ratelimit:<tenant>``): ``rate_per_s``
requests a second on average, up to ``burst`` at once. One script call per
request of a limited tenant, so the limit holds across workers and hosts
(the time is the API host's: hosts whose clocks disagree by s seconds let
about s x rate_per_s requests more through, once; docs/inflight.md asks
for clocks within a second); tenants without a limit cost nothing.

Redis trouble lets requests through (the rank request itself then answers
in TPV's order): a limit protects the broker from one Galaxy, it must not
become a way for Redis trouble to fail every Galaxy's jobs."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import redis

from tpv_broker.logging_setup import OutageLog
from tpv_broker.store.keys import KeySchema

log = logging.getLogger("tpv_broker.api")

# KEYS[1]: the tenant's key. ARGV: now (s), interval between requests at the
# rate (s), burst. Returns {1, 0} if admitted, else {0, seconds to wait}
# (as a string: a script's numbers are truncated to integers).
_ADMIT = """
local now, interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local wait = tat - now - (burst - 1) * interval
if wait > 0 then return {0, string.format('%.3f', wait)} end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.17g', next_tat), 'PX', math.ceil((next_tat - now) * 1000) + 1000)
return {1, '0'}
"""


@dataclass(frozen=True)
class Limit:
    rate_per_s: float
    burst: int

    @property
    def interval_s(self) -> float:
        return 1.0 / self.rate_per_s


class RateLimiter:
    def __init__(self, client: redis.Redis, keys: KeySchema, limits: dict[str, Limit]) -> None:
        self.keys = keys
        self.limits = limits
        self._admit = client.register_script(_ADMIT)
        self._outage = OutageLog(log, "rate_limit", "rate limits not applied while Redis fails (logged once until "
                                 "it answers): %s", "rate limits applied again; %d request(s) let through meanwhile",
                                 "let_through")

    def wait_s(self, tenant: str, now: float) -> float | None:
        """None if ``tenant`` may make a request at ``now`` (and it is
        counted), else how long to wait (s)."""
        limit = self.limits.get(tenant)
        if limit is None:
            return None
        try:
            admitted, wait = self._admit(keys=[self.keys.rate_limit(tenant)],
                                         args=[repr(now), repr(limit.interval_s), limit.burst])
        except redis.RedisError as e:
            self._outage.failed(e)
            return None
        self._outage.succeeded()
        return None if int(admitted) else max(0.001, float(wait))


def retry_after(wait_s: float) -> str:
    """The Retry-After header's value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_s)))
