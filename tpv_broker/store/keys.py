"""The Redis key schema: the one place that builds key names.

Everything lives under one prefix (``redis.key_prefix``, default
``tpv_broker``). Callers never format key strings; user input never becomes
a key name (destination and tool ids are only ever hash *fields*).

What each key holds (type, fields, expiry) is in docs/redis-keys.md, for
the people reading Redis with redis-cli; a test checks that every key built
here is in its table. It is said there alone, so that a second table here
cannot drift from it (one did).
"""

from __future__ import annotations

from dataclasses import dataclass

from tpv_broker.ids import check_job_id, check_tenant_id

SCHEMA_VERSION = 1
# A collector that dies between writing and swapping leaves staging keys
# behind; they must not accumulate.
STAGING_TTL_S = 300


@dataclass(frozen=True)
class KeySchema:
    prefix: str = "tpv_broker"

    @property
    def snapshot_meta(self) -> str:
        return f"{self.prefix}:snapshot"

    @property
    def destinations(self) -> str:
        return f"{self.prefix}:destinations"

    @property
    def tool_stats(self) -> str:
        return f"{self.prefix}:tool_stats"

    @property
    def inflight(self) -> str:
        return f"{self.prefix}:inflight"

    @property
    def inflight_load(self) -> str:
        return f"{self.prefix}:inflight:load"

    @property
    def inflight_reflected(self) -> str:
        return f"{self.prefix}:inflight:reflected"

    def inflight_job(self, tenant: str, job_id: str) -> str:
        # The one key that holds request data. The API has checked the ids
        # already; checked again here so no other caller can build a key
        # with spaces, colons, glob characters or newlines in it.
        return f"{self.prefix}:inflight:job:{check_tenant_id(tenant)}:{check_job_id(job_id)}"

    @property
    def health_placements(self) -> str:
        return f"{self.prefix}:health:placements"

    @property
    def health_returns(self) -> str:
        return f"{self.prefix}:health:returns"

    def health_came_back(self, tenant: str, job_id: str) -> str:
        # Checked as inflight_job's: the job id comes from the request.
        return f"{self.prefix}:health:back:{check_tenant_id(tenant)}:{check_job_id(job_id)}"

    @property
    def health_pins(self) -> str:
        return f"{self.prefix}:health:pins"

    def rate_limit(self, tenant: str) -> str:
        return f"{self.prefix}:ratelimit:{check_tenant_id(tenant)}"

    def check_probe(self, token: str) -> str:
        # check-config proves it may write under the prefix with this key.
        return f"{self.prefix}:check:{token}"

    @property
    def collector_lease(self) -> str:
        return f"{self.prefix}:collector:lease"

    def live_keys(self) -> tuple[str, str, str]:
        return (self.snapshot_meta, self.destinations, self.tool_stats)

    def staging(self, token: str, live_key: str) -> str:
        name = live_key.rsplit(":", 1)[1]
        return f"{self.prefix}:staging:{token}:{name}"
