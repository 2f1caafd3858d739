"""What a metric preset is, as data: which measurement to read, where each
row's destination id comes from, which fields feed which snapshot figures
(with their units), how rows are grouped and how they combine. The built-in
presets below are written in this same vocabulary, and a site can describe
its own under ``collector.custom_presets`` in config.yaml.

The combine strategies are the only code: a handful of named reducers
(collector/reducers.py) that a preset picks by name.
Schemas of the built-in measurements: docs/metric-schemas.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Figure = Literal[
    # destination figures
    "queued", "running",
    "cpus_total", "cpus_free", "cpus_used",
    "mem_total", "mem_free", "mem_used",
    "gpus_total", "gpus_free", "gpus_used",
    "status",  # text: online / offline (anything else is ignored)
    "carbon_intensity",  # the grid's, where the destination is (gCO2e/kWh)
    "node_state",  # text: a node's state (combine sum_newest_batch); see unavailable_states
    # free slot shapes (combine slot_shapes): `slot_count` slots of this size are free
    "slot_count", "slot_cpus", "slot_mem", "slot_gpus",
    # per (tool, destination) run-time statistics (combine tool_stats)
    "job_count", "median_queue", "median_run", "perc_95_run",
    # jobs that ended in error (combine error_counts): destination health
    "errors",
]
Unit = Literal[
    "count", "cores", "gpus",
    "bytes", "kB", "KiB", "MB", "MiB", "GB", "GiB",
    "ms", "seconds", "minutes", "hours", "days",
    "text",
    "g_per_kwh",
]
Combine = Literal["newest", "sum_newest_batch", "slot_shapes", "tool_stats", "error_counts"]

MEMORY_FIGURES = frozenset({"mem_total", "mem_free", "mem_used", "slot_mem"})
TIME_FIGURES = frozenset({"median_queue", "median_run", "perc_95_run"})
TEXT_FIGURES = frozenset({"status", "node_state"})
DESTINATION_FIGURES = frozenset({
    "queued", "running", "cpus_total", "cpus_free", "cpus_used", "mem_total", "mem_free", "mem_used",
    "gpus_total", "gpus_free", "gpus_used", "status", "carbon_intensity",
})
# Figures that say nothing of whether a destination's live figures are
# current: a preset of these alone is no live source.
CONTEXT_FIGURES = frozenset({"carbon_intensity"})
SHAPE_FIGURES = frozenset({"slot_count", "slot_cpus", "slot_mem", "slot_gpus"})
TOOL_FIGURES = frozenset({"job_count", "median_queue", "median_run", "perc_95_run"})

# Snapshot memory is in GB as TPV counts it: 1 GB = 1024 MiB = 2**30 bytes.
MEMORY_UNITS: dict[str, float] = {
    "bytes": 1 / 2**30, "kB": 1e3 / 2**30, "KiB": 1 / 2**20, "MB": 1e6 / 2**30,
    "MiB": 1 / 1024, "GB": 1e9 / 2**30, "GiB": 1.0,
}
TIME_UNITS: dict[str, float] = {"ms": 0.001, "seconds": 1.0, "minutes": 60.0, "hours": 3600.0, "days": 86400.0}
PLAIN_UNITS: dict[str, float] = {"count": 1.0, "cores": 1.0, "gpus": 1.0, "g_per_kwh": 1.0}

# What each strategy accepts (status is accepted by all but tool_stats).
_COMBINE_FIGURES: dict[str, frozenset[str]] = {
    "newest": DESTINATION_FIGURES,
    "sum_newest_batch": DESTINATION_FIGURES | {"node_state"},
    "slot_shapes": SHAPE_FIGURES | {"status"},
    "tool_stats": TOOL_FIGURES,
    "error_counts": frozenset({"errors"}),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldMap(_Strict):
    """One InfluxDB field feeding one figure, optionally only on rows whose
    tags have given values (``where: {state: [queued]}``)."""

    field: str = Field(min_length=1)
    figure: Figure
    # Default: seconds for times, text for status/node_state, count otherwise;
    # memory figures must say their unit.
    unit: Unit | None = None
    where: dict[str, list[str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unit_fits_figure(self) -> FieldMap:
        unit, figure = self.resolved_unit, self.figure
        if figure in MEMORY_FIGURES:
            allowed = MEMORY_UNITS
        elif figure in TIME_FIGURES:
            allowed = TIME_UNITS
        elif figure in TEXT_FIGURES:
            allowed = {"text": 1.0}
        elif figure in CONTEXT_FIGURES:
            allowed = {"g_per_kwh": 1.0}
        else:
            allowed = PLAIN_UNITS
        if unit not in allowed:
            got = "nothing" if unit is None else repr(unit)
            raise ValueError(f"unit: {figure} needs one of {', '.join(allowed)} (got {got})")
        return self

    @property
    def resolved_unit(self) -> str | None:
        if self.unit is not None:
            return self.unit
        if self.figure in TIME_FIGURES:
            return "seconds"
        if self.figure in TEXT_FIGURES:
            return "text"
        if self.figure in CONTEXT_FIGURES:
            return "g_per_kwh"
        if self.figure in MEMORY_FIGURES:
            return None
        return "count"

    def factor(self) -> float:
        unit = self.resolved_unit or ""
        return MEMORY_UNITS.get(unit) or TIME_UNITS.get(unit) or PLAIN_UNITS.get(unit, 1.0)


class MemberMatch(_Strict):
    """Rows belonging to one destination: the id value matches one of the
    shell-style ``values`` patterns (e.g. node names) and every ``tags`` entry
    equals the row's tag."""

    values: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _says_something(self) -> MemberMatch:
        if not self.values and not self.tags:
            raise ValueError("values: give node name patterns and/or tags to match")
        return self


class DestinationFrom(_Strict):
    """Where a row's destination id comes from: a tag or a (string) field.
    Quote characters around the value are stripped and destination aliases
    applied. With ``groups``, the value is matched against each group instead
    and the row counts for every destination whose group matches."""

    tag: str | None = Field(None, min_length=1)
    field: str | None = Field(None, min_length=1)
    groups: dict[str, MemberMatch] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> DestinationFrom:
        if (self.tag is None) == (self.field is None):
            raise ValueError("tag: give exactly one of tag or field")
        return self

    @property
    def name(self) -> str:
        name = self.tag if self.tag is not None else self.field
        assert name is not None, "validated by _one_source: exactly one of tag or field"
        return name


class PresetSpec(_Strict):
    description: str = ""
    measurement: str = Field(min_length=1)
    destination: DestinationFrom
    fields: list[FieldMap] = Field(min_length=1)
    # Tags whose distinct values make separate series (the destination tag,
    # `where` tags, group tags and the tool tag are added when missing).
    group_by: list[str] = Field(default_factory=list)
    # newest_per_group: the newest point of each group; all_rows: every point
    # in the window (needed when the destination id is a field).
    read: Literal["newest_per_group", "all_rows"] = "newest_per_group"
    # live: collector.lookback_s; stats: collector.stats_lookback_s (daily
    # figures); health: collector.health.window_s (error counts).
    window: Literal["live", "stats", "health"] = "live"
    combine: Combine
    # sum_newest_batch / slot_shapes: rows within collector.batch_window_s of
    # the newest one count, the newest across all destinations (global: one
    # writer prints every destination, and omits empty ones) or per destination.
    batch: Literal["global", "per_destination"] = "per_destination"
    # tool_stats: the tag that holds the tool id.
    tool_tag: str | None = None
    # node_state values (case-insensitive; any part of "idle+drain"; a
    # trailing "*" means not responding) whose nodes give no free capacity.
    unavailable_states: list[str] = Field(default_factory=list)
    # Rows missing any of these fields give their status only.
    require: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _coherent(self) -> PresetSpec:
        accepted = _COMBINE_FIGURES[self.combine]
        for i, fm in enumerate(self.fields):
            if fm.figure not in accepted:
                raise ValueError(
                    f"fields.{i}.figure: combine {self.combine} cannot feed {fm.figure} "
                    f"(it feeds {', '.join(sorted(accepted))})"
                )
        figures = {fm.figure for fm in self.fields}
        if self.combine == "tool_stats" and not self.tool_tag:
            raise ValueError("tool_tag: combine tool_stats needs the tag holding the tool id")
        if self.combine != "tool_stats" and self.tool_tag:
            raise ValueError("tool_tag: only combine tool_stats uses a tool tag")
        if (self.combine == "error_counts") != (self.window == "health"):
            raise ValueError("window: combine error_counts reads window health, and only it does")
        if self.combine == "slot_shapes" and not ({"slot_count"} <= figures and figures & {"slot_cpus", "slot_mem"}):
            raise ValueError("fields: combine slot_shapes needs slot_count and slot_cpus and/or slot_mem")
        if self.unavailable_states and "node_state" not in figures:
            raise ValueError("unavailable_states: no field feeds node_state")
        if self.destination.field is not None and self.read != "all_rows":
            raise ValueError("read: a destination id held in a field cannot be grouped by; use all_rows")
        return self

    def tags_used(self) -> list[str]:
        """group_by plus every tag the preset reads, in a stable order."""
        out = list(self.group_by)
        extra: list[str] = []
        if self.destination.tag is not None:
            extra.append(self.destination.tag)
        for fm in self.fields:
            extra.extend(fm.where)
        for match in self.destination.groups.values():
            extra.extend(match.tags)
        if self.tool_tag:
            extra.append(self.tool_tag)
        for tag in extra:
            if tag not in out:
                out.append(tag)
        return out

    def field_names(self) -> list[str]:
        """The InfluxDB fields read, in order, without repeats."""
        out: list[str] = []
        for name in [fm.field for fm in self.fields] + list(self.require):
            if name not in out:
                out.append(name)
        return out

    def window_s(self, lookback_s: float, stats_lookback_s: float, health_window_s: float) -> float:
        return {"stats": stats_lookback_s, "health": health_window_s}.get(self.window, lookback_s)


_UNAVAILABLE_SLURM = [
    "down", "drain", "drained", "draining", "fail", "failing", "maint", "reserved", "future",
    "unknown", "not_responding", "no_respond", "power_down", "powered_down", "powering_down",
    "power_up", "powering_up", "reboot_issued", "reboot_requested", "invalid", "invalid_reg",
]

BUILTIN_PRESETS: dict[str, PresetSpec] = {
    name: PresetSpec.model_validate(raw)
    for name, raw in {
        "queue_by_destination": {
            "description": "gxadmin iquery queue --by destination",
            "measurement": "queue_by_destination",
            "destination": {"tag": "destination_id"},
            "group_by": ["destination_id", "state"],
            "fields": [
                {"field": "count", "figure": "queued", "where": {"state": ["queued"]}},
                {"field": "count", "figure": "running", "where": {"state": ["running"]}},
            ],
            "combine": "sum_newest_batch",
            # gxadmin prints every non-empty (destination, state) at once.
            "batch": "global",
        },
        "destination_queue_run_time": {
            "description": "gxadmin iquery destination-queue-run-time --seconds",
            "measurement": "destination-queue-run-time",
            "destination": {"tag": "destination_id"},
            "group_by": ["destination_id", "tool_id"],
            "tool_tag": "tool_id",
            "window": "stats",
            "fields": [
                {"field": "count", "figure": "job_count"},
                {"field": "median_queue", "figure": "median_queue", "unit": "seconds"},
                {"field": "median_run", "figure": "median_run", "unit": "seconds"},
                {"field": "perc_95_run", "figure": "perc_95_run", "unit": "seconds"},
            ],
            "combine": "tool_stats",
        },
        "htcondor_cluster_usage": {
            "description": "pulsar-util htcondor_cluster_usage, one line per site (before Nov 2025)",
            "measurement": "htcondor_cluster_usage",
            # A string field in this format, so every row of the window is read.
            "destination": {"field": "destination_id"},
            "read": "all_rows",
            "fields": [
                {"field": "total_detected_cpus", "figure": "cpus_total", "unit": "cores"},
                {"field": "unclaimed_cpus", "figure": "cpus_free", "unit": "cores"},
                {"field": "total_memory", "figure": "mem_total", "unit": "MiB"},
                {"field": "unclaimed_memory", "figure": "mem_free", "unit": "MiB"},
                {"field": "total_gpu_slots", "figure": "gpus_total", "unit": "gpus"},
                {"field": "unclaimed_gpus", "figure": "gpus_free", "unit": "gpus"},
                {"field": "destination_status", "figure": "status"},
            ],
            "combine": "newest",
            # The newer one-line-per-free-slot-shape rows have no totals: from
            # them this preset takes the status only (htcondor_slot_shapes
            # reads their shapes).
            "require": ["total_detected_cpus"],
        },
        "htcondor_slot_shapes": {
            "description": "pulsar-util htcondor_cluster_usage, one line per free slot shape (since Nov 2025)",
            "measurement": "htcondor_cluster_usage",
            "destination": {"tag": "destination_id"},
            "group_by": ["destination_id", "unclaimed_tag"],
            "fields": [
                {"field": "count", "figure": "slot_count"},
                {"field": "unclaimed_cpus", "figure": "slot_cpus", "unit": "cores"},
                {"field": "unclaimed_memory", "figure": "slot_mem", "unit": "MiB"},
                {"field": "unclaimed_gpus", "figure": "slot_gpus", "unit": "gpus"},
                {"field": "destination_status", "figure": "status"},
            ],
            "combine": "slot_shapes",
        },
        "slurm_nodes": {
            "description": "Telegraf inputs.slurm: slurm_nodes, one cluster (source tag) per destination",
            "measurement": "slurm_nodes",
            # The slurmrestd host; alias it to the TPV destination id, or
            # define a preset with destination groups of node names.
            "destination": {"tag": "source"},
            "group_by": ["source", "name"],
            "fields": [
                {"field": "cpus", "figure": "cpus_total", "unit": "cores"},
                {"field": "alloc_cpu", "figure": "cpus_used", "unit": "cores"},
                # Slurm's "MB" are 2**20 bytes. free_memory is the OS's idle
                # memory, not what Slurm can still allocate: not used.
                {"field": "real_memory", "figure": "mem_total", "unit": "MiB"},
                {"field": "alloc_memory", "figure": "mem_used", "unit": "MiB"},
                {"field": "state", "figure": "node_state"},
            ],
            "combine": "sum_newest_batch",
            "unavailable_states": _UNAVAILABLE_SLURM,
        },
        "errored_jobs_by_destination": {
            "description": "gxadmin tsvquery errored-jobs 1, hourly: jobs that ended in error in the last hour",
            "measurement": "errored_jobs_by_destination",
            "destination": {"tag": "destination_id"},
            # Every hourly point of the window: each counts its own hour.
            "read": "all_rows",
            "window": "health",
            "fields": [{"field": "count", "figure": "errors", "where": {"state": ["errored"]}}],
            "combine": "error_counts",
        },
        "pulsar_carbon_intensity": {
            "description": "pulsar-util's AMQP consumer: the grid's carbon intensity at each endpoint (hourly figures)",
            "measurement": "pulsar_carbon_intensity",
            # No tags: the endpoint's vhost is a string field.
            "destination": {"field": "destination_id"},
            "read": "all_rows",
            "fields": [{"field": "carbon_intensity", "figure": "carbon_intensity"}],
            "combine": "newest",
        },
        "queue_overview": {
            "description": "gxadmin iquery queue-overview: jobs per tool, destination, state, ...",
            "measurement": "queue-overview",
            "destination": {"tag": "destination_id"},
            # Every tag gxadmin writes, so no two of its series merge; jobs in
            # state "new" have no destination yet.
            "group_by": ["destination_id", "state", "tool_id", "tool_version", "handler", "job_runner_name", "user_id"],
            "fields": [
                {"field": "count", "figure": "queued", "where": {"state": ["queued"]}},
                {"field": "count", "figure": "running", "where": {"state": ["running"]}},
            ],
            "combine": "sum_newest_batch",
            "batch": "global",
        },
    }.items()
}

DEFAULT_PRESETS: tuple[str, ...] = ("queue_by_destination", "destination_queue_run_time", "htcondor_cluster_usage")
