"""The snapshot's payload: written by the collector, read by the API and
``inspect``. Units are fixed here so nobody converts twice: seconds, epoch
seconds, and memory in GB as TPV counts it (1 GB = 1024 MiB: TPV configs
turn ``mem`` into MiB as ``mem * 1024``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tpv_broker.core.charges import ChargeState
from tpv_broker.ids import DEFAULT_TENANT

MIB_PER_GB = 1024.0

Status = Literal["online", "offline", "unknown"]


class _Payload(BaseModel):
    # Readers ignore fields a newer collector adds, so a rolling upgrade
    # never breaks the API.
    model_config = ConfigDict(extra="ignore")


class SlotShape(_Payload):
    """``count`` free slots of this size (HTCondor partitionable slots as
    pulsar-util reports them). ``None``: that resource is not reported."""

    count: float
    cpus: float | None = None
    mem_gb: float | None = None
    gpus: float | None = None


HealthState = Literal["healthy", "degraded", "excluded", "probation", "drained"]


class HealthPin(_Payload):
    """An admin's word on a destination, over what its errors say:
    drained (no jobs, e.g. for maintenance) or healthy (errors ignored)."""

    state: Literal["drained", "healthy"]
    reason: str
    by: str
    at: float


class DestinationHealth(_Payload):
    """A destination's health as the collector judged it (core/health.py),
    with the figures it was judged on."""

    state: HealthState
    # When it entered this state (epoch s).
    since: float
    # Errors and placements before this are not held against it (its last
    # probation began then, or a pin ended).
    counted_from: float | None = None
    # In the window (``collector.health.window_s``), from counted_from on:
    # the failures (errors reported, or jobs returned if more) ...
    errors: float = 0.0
    # ... of which jobs that came back to be placed again (resubmitted).
    returned: float = 0.0
    placements: float = 0.0
    share: float | None = None
    # The other endpoints' error share over the whole window.
    network_share: float | None = None
    reason: str = ""
    # degraded: its score is multiplied by this.
    score_factor: float = 1.0
    # probation: the share of jobs let through as probes.
    probe_share: float | None = None
    pin: HealthPin | None = None
    # The error reports of the window (report time, errors), for the
    # status page's chart; counted_from does not apply.
    reports: list[tuple[float, float]] = Field(default_factory=list)


class DestinationFigures(_Payload):
    """What the collector knows about one destination. ``None`` = not reported."""

    id: str
    status: Status = "unknown"
    queued: float | None = None
    running: float | None = None
    cpus_total: float | None = None
    cpus_free: float | None = None
    mem_total_gb: float | None = None
    mem_free_gb: float | None = None
    gpus_total: float | None = None
    gpus_free: float | None = None
    # The free slot shapes, when the source reports them (None: not
    # reported; []: no free slot). A job fits now only if one shape holds it,
    # whatever the free totals above say.
    slot_shapes: list[SlotShape] | None = None
    # The grid's carbon intensity where it is (gCO2e/kWh, pulsar_carbon_intensity).
    carbon_intensity: float | None = None
    # All tools together: count-weighted mean of the per-tool medians.
    median_queue_s: float | None = None
    median_run_s: float | None = None
    # Epoch seconds of the newest point that went into these figures.
    metrics_at: float | None = None
    # The same for live figures only (queue, free capacity), without the
    # daily run-time statistics: what freshness is judged on.
    live_at: float | None = None
    # Where the figures came from: preset name -> newest point's epoch seconds.
    sources: dict[str, float] = Field(default_factory=dict)
    in_config: bool = False
    # Judged only when error counts are read, or an admin pinned it.
    health: DestinationHealth | None = None


class ToolFigures(_Payload):
    """One tool on one destination, from gxadmin's destination-queue-run-time."""

    count: float = 0
    median_queue_s: float | None = None
    median_run_s: float | None = None
    perc_95_run_s: float | None = None
    at: float | None = None


SourceState = Literal["ok", "partial", "stale", "missing"]


class SourceStatus(_Payload):
    """How one metric source (an InfluxDB) fared in the cycle that built the
    snapshot. ok: every preset read; partial: some failed (their last good
    figures kept, if recent); stale: not read this cycle, its last good
    figures kept; missing: not read, and nothing recent to keep."""

    state: SourceState
    # When it last answered (epoch s): the age of a stale source's figures.
    answered_at: float | None = None
    problem: str = ""
    # The Galaxy it belongs to (api.tenants), if not shared.
    tenant: str | None = None

    def age_s(self, now: float) -> float | None:
        return None if self.answered_at is None else max(0.0, now - self.answered_at)


class SnapshotMeta(_Payload):
    created_at: float
    newest_point_at: float | None = None
    destinations: int = 0
    tools: int = 0
    cycle_s: float = 0.0
    collector: str = ""
    schema_version: int = 1
    # What the cycle that built this snapshot could not read ("": nothing).
    problems: str = ""
    # Set on the live snapshot by a collector that cannot publish a newer
    # one (InfluxDB down, hung, garbled): since when, how many cycles in a
    # row failed, the last problem, and when it tries again. A publish
    # replaces the whole hash, so they go with the next good snapshot.
    stale_since: float | None = None
    failed_cycles: int = 0
    stale_reason: str = ""
    retry_at: float | None = None
    # Each metric source's state in the cycle that built it, by name.
    sources: dict[str, SourceStatus] = Field(default_factory=dict)

    def age_s(self, now: float) -> float:
        return max(0.0, now - self.created_at)

    def lagging_sources(self) -> dict[str, SourceStatus]:
        """The sources whose figures in this snapshot are not this cycle's."""
        return {name: s for name, s in self.sources.items() if s.state != "ok"}

    def sources_seen_by(self, tenant: str) -> dict[str, SourceStatus]:
        """The sources ``tenant`` may see: the shared ones and its own (the
        broker's own tenant, its operators, sees every one)."""
        if tenant == DEFAULT_TENANT:
            return dict(self.sources)
        return {name: s for name, s in self.sources.items() if s.tenant in (None, tenant)}


class Snapshot(_Payload):
    meta: SnapshotMeta
    destinations: dict[str, DestinationFigures] = Field(default_factory=dict)
    # "<level>:<tool id form>" (tool_ids.stats_field) -> destination id -> figures
    tool_stats: dict[str, dict[str, ToolFigures]] = Field(default_factory=dict)


class RankView(_Payload):
    """The part of a snapshot one rank request needs: read in one round trip."""

    meta: SnapshotMeta | None = None
    destinations: dict[str, DestinationFigures] = Field(default_factory=dict)
    tool_stats: dict[str, dict[str, ToolFigures]] = Field(default_factory=dict)
    # In-flight charges on the candidates, when the request asked for them.
    charges: ChargeState = Field(default_factory=ChargeState)
    # The snapshot's figures as columns (columns.DestinationColumns), when
    # the caller keeps them per snapshot; the rank core builds them otherwise.
    columns: Any = None
