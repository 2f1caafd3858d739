"""The ``collector`` section: what it reads and how often, and
destination health (``collector.health``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from tpv_broker.config.preset_spec import BUILTIN_PRESETS, DEFAULT_PRESETS, PresetSpec
from tpv_broker.config.section import Section

# The presets read when collector.presets is not set (the built-in ones are
# in preset_spec.BUILTIN_PRESETS; sites add theirs in collector.custom_presets).
ALL_PRESETS: tuple[str, ...] = DEFAULT_PRESETS


def _known_preset(name: str, info: ValidationInfo) -> str:
    # custom_presets is declared before presets, so it is validated by now;
    # when it failed, that error says enough.
    if "custom_presets" not in info.data:
        return name
    custom = info.data["custom_presets"]
    if name not in BUILTIN_PRESETS and name not in custom:
        known = ", ".join([*BUILTIN_PRESETS, *custom])
        raise ValueError(f"unknown preset {name!r} (known: {known}, or define it in collector.custom_presets)")
    return name


PresetName = Annotated[str, AfterValidator(_known_preset)]


class HealthSettings(Section):
    """Destination health (docs/health.md): an endpoint whose jobs fail
    far more often than the others' is penalised, then excluded, then let
    back in through probes. Judged only when a source reads error counts
    (a preset with combine error_counts, e.g. errored_jobs_by_destination);
    the defaults are argued in docs/health.md against DIRAC's and PanDA's."""

    # The errors and the broker's own placements counted: three of
    # gxadmin's hourly error reports.
    window_s: float = Field(3 * 3600.0, ge=600)
    # Fewer placements in the window: too few to judge, healthy.
    min_jobs: int = Field(10, ge=1)
    # The error share (its 95 % lower bound: small counts prove little)
    # minus the other endpoints' share: from this much on, degraded ...
    degraded_excess: float = Field(0.1, gt=0, le=1)
    # ... and from this much on, excluded.
    excluded_excess: float = Field(0.5, gt=0, le=1)
    # A degraded endpoint's score is multiplied by this.
    degraded_factor: float = Field(0.5, gt=0, lt=1)
    # How long an excluded endpoint gets no job before probation.
    exclude_s: float = Field(1800.0, gt=0)
    # On probation, this share of jobs may go there (probes) ...
    probe_share: float = Field(0.05, gt=0, le=1)
    # ... and once this many went and one error report has had time to
    # count them (report_lag_s after probation began), it is judged on them.
    probe_jobs: int = Field(5, ge=1)
    report_lag_s: float = Field(3900.0, gt=0)
    # The jobs that came back are also judged over this recent span alone
    # (error reports are hourly: they are not): a black hole is excluded
    # minutes after it broke, however well it ran before in window_s.
    recent_s: float = Field(600.0, ge=300)
    # A job placed on a destination that comes back to be placed again
    # (Galaxy resubmitted it) failed there: counted at once, without
    # waiting for the error report. Off for a site whose Galaxy ranks jobs
    # again for other reasons.
    count_returns: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> HealthSettings:
        if self.excluded_excess < self.degraded_excess:
            raise ValueError("excluded_excess: must be at least degraded_excess")
        if self.recent_s > self.window_s:
            raise ValueError("recent_s: must be at most window_s")
        return self


class CollectorSettings(Section):
    interval_s: float = Field(15.0, gt=0, le=3600)
    # A site's own presets (name -> description, see preset_spec.PresetSpec);
    # listed before presets, which may name them.
    custom_presets: dict[str, PresetSpec] = Field(default_factory=dict)
    presets: list[PresetName] = Field(default_factory=lambda: list(ALL_PRESETS))
    # Queue and cluster figures arrive every minute; anything older than this
    # is not "current" any more.
    lookback_s: float = Field(900.0, gt=0)
    # gxadmin's destination-queue-run-time runs once a day.
    stats_lookback_s: float = Field(3 * 86400.0, gt=0)
    # ... so the daemon re-reads it this often, not every cycle (at 100,000
    # (tool, destination) series that read alone takes InfluxDB 1.x seconds).
    # Cycles in between reuse the last figures and leave them untouched in Redis.
    stats_refresh_s: float = Field(300.0, gt=0)
    # A refresh reads only the points written since the last one, and the
    # whole window this often (points written long after their time, deleted
    # series); at most stats_refresh_s: every refresh reads everything.
    stats_full_read_s: float = Field(3600.0, gt=0)
    # gxadmin prints only non-empty (destination, state) groups, so a series
    # missing from the newest batch means zero jobs. Points within this many
    # seconds of the newest one belong to the same batch.
    batch_window_s: float = Field(30.0, ge=0)
    # Prometheus metrics of the daemon on http://<metrics_host>:<metrics_port>/metrics;
    # no port: not served.
    metrics_port: int | None = Field(None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    health: HealthSettings = Field(default_factory=HealthSettings)

    @field_validator("custom_presets")
    @classmethod
    def _no_builtin_names(cls, custom: dict[str, PresetSpec]) -> dict[str, PresetSpec]:
        for name in custom:
            if name in BUILTIN_PRESETS:
                raise ValueError(f"{name}: is a built-in preset; give yours another name")
        return custom

    def preset_specs(self) -> dict[str, PresetSpec]:
        """The presets to read, by name, in the configured order."""
        return {name: self.custom_presets.get(name) or BUILTIN_PRESETS[name] for name in self.presets}

    # Several collectors may run for high availability: the one holding a
    # lease in Redis publishes, the others stand by. The holder renews it
    # every lease_s / 3 s; a standby checks as often and takes over (and
    # publishes at once) within lease_s + lease_s / 3 of the holder's last
    # renewal. Unset: interval_s, so a dead collector is replaced within two
    # intervals.
    lease_s: float | None = Field(None, gt=0, le=3600)
    # Shown as the lease holder and as the snapshot's collector; unset: host:pid.
    instance_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:\-]{1,100}$")

    # After failed cycles (InfluxDB down, hung, garbled) the next attempt
    # waits interval x 2^(failures - 1), at most this long: a returning
    # InfluxDB is noticed within it.
    backoff_max_s: float = Field(60.0, gt=0, le=3600)

    @property
    def effective_lease_s(self) -> float:
        return self.lease_s if self.lease_s is not None else self.interval_s
