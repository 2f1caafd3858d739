"""The Redis key schema: the one place that builds key names.

Everything lives under one prefix (``redis.key_prefix``, default
``tpv_broker``). Callers never format key strings; user input never becomes
a key name (destination and tool ids are only ever hash *fields*).

=================================  ======  ==============================================
key                                type    value
=================================  ======  ==============================================
``<p>:snapshot``                   hash    snapshot metadata: created_at, newest_point_at,
                                           destinations, tools, cycle_s, collector,
                                           schema_version; sources: JSON {source name:
                                           {state, answered_at, problem, tenant}}
``<p>:destinations``               hash    destination id -> JSON of its figures
``<p>:tool_stats``                 hash    "<level>:<tool id form>" -> JSON {destination id:
                                           figures}; levels tool, tool_unversioned, tool_short
``<p>:staging:<token>:<name>``     hash    a snapshot being written; renamed onto the
                                           live keys in one MULTI/EXEC, expires by itself
``<p>:inflight``                   zset    live in-flight charges: member = JSON {d: destination,
                                           c: cores, m: mem GB, t: charged at, g: tenant,
                                           j: job id, r: expected run s, n: nonce},
                                           score = charged at (epoch s)
``<p>:inflight:load``              hash    destination id -> JSON {n: live charges, cores, mem,
                                           core_s, timed}: the sums of its members above
``<p>:inflight:reflected``         hash    destination id -> epoch s: its published figures
                                           show every charge made before then
``<p>:inflight:job:<t>:<job id>``  string  the member charged for job <job id> of tenant <t>,
                                           so a job ranked again moves its charge
``<p>:health:placements``          hash    "<bucket start>:<tenant>:<destination id>" -> jobs the
                                           broker placed there for that tenant in those 5 minutes
                                           (destination health); old buckets dropped by the collector
``<p>:health:returns``             hash    "<bucket start>:<tenant>:<destination id>" -> jobs placed
                                           there that came back to be placed again (Galaxy
                                           resubmitted them) in those 5 minutes; as placements
``<p>:health:back:<t>:<job id>``   string  the destination job <job id> of tenant <t> came back from
                                           while placed there again (counted once there); expires
                                           inflight.max_age_s after that return
``<p>:health:pins``                hash    destination id -> JSON {state: drained | healthy, reason,
                                           by, at}: an admin's pin (``tpv-broker health``)
``<p>:ratelimit:<tenant>``        string  epoch s: when the tenant's next request is due at its
                                           rate (api.tenants.<t>.rate_per_s); expires when idle
``<p>:check:<token>``              string  written, read back and deleted by
                                           ``tpv-broker check-config``; expires in 10 s
``<p>:collector:lease``            string  the publishing collector's lease: "<instance id>/<nonce>"
                                           (instance id: host:pid unless configured);
                                           expires unless renewed (collector.lease_s)
=================================  ======  ==============================================
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
