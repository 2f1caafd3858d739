"""The typed configuration, loaded once (YAML file + ``TPV_BROKER_*``
environment overrides) and passed to whatever needs it."""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tpv_broker.config.preset_spec import BUILTIN_PRESETS, DEFAULT_PRESETS, PresetSpec
from tpv_broker.config.redis_urls import SENTINEL_SCHEME, parse_sentinel_url
from tpv_broker.config.terms import DEFAULT_TERMS, check_terms, with_defaults
from tpv_broker.config.urls import redact_url, url_password
from tpv_broker.errors import ConfigError
from tpv_broker.ids import DEFAULT_TENANT, SOURCE_ID_RULE, check_destination_id, check_tenant_id, is_source_id

ENV_PREFIX = "TPV_BROKER_"
CONFIG_ENV = "TPV_BROKER_CONFIG"

# The presets read when collector.presets is not set (the built-in ones are
# in preset_spec.BUILTIN_PRESETS; sites add theirs in collector.custom_presets).
ALL_PRESETS: tuple[str, ...] = DEFAULT_PRESETS

# The name of the one source of a config without ``sources`` (the
# ``influxdb`` section and ``collector.presets``).
SINGLE_SOURCE = "influxdb"


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


class _Section(BaseModel):
    # A typo in config.yaml must fail start-up, not be silently ignored.
    model_config = ConfigDict(extra="forbid")


class InfluxDBSettings(_Section):
    url: str = "http://127.0.0.1:8086"
    database: str = "galaxy"
    username: str | None = None
    password: SecretStr | None = None
    # InfluxDB 2.x/3.x v1-compatible endpoints take a token instead of a password.
    token: SecretStr | None = None
    verify_tls: bool = True
    timeout_s: float = Field(10.0, gt=0, le=300)
    # influxql: InfluxDB 1.x (or the v1-compatible endpoint of 2.x/3.x);
    # flux: InfluxDB 2.x natively, with org, bucket and token.
    api: Literal["influxql", "flux"] = "influxql"
    org: str | None = Field(None, min_length=1)
    bucket: str | None = Field(None, min_length=1)

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {redact_url(url)!r}")
        return url

    @model_validator(mode="after")
    def _flux_needs(self) -> InfluxDBSettings:
        if self.api == "flux":
            missing = [name for name in ("org", "bucket", "token") if getattr(self, name) is None]
            if missing:
                raise ValueError("; ".join(f"{name}: required when api is flux" for name in missing))
        return self


class SourceSettings(InfluxDBSettings):
    """One InfluxDB of several (``sources``): where it is, how to log in,
    and which presets the collector reads there. The Pulsar network's
    endpoint metrics in one, each Galaxy's gxadmin figures in its own."""

    # Preset names: built-in ones or collector.custom_presets.
    presets: list[str]
    # The Galaxy (an api.tenants name) whose destination ids this source
    # reports: they go through that tenant's aliases to the snapshot's ids.
    tenant: str | None = None


class RedisSettings(_Section):
    # redis://, rediss://, unix://, or redis+sentinel://[:password@]host:26379[,host:26379...]/master_name[/db]
    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field("tpv_broker", pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    # Short on purpose: the rank path must answer (degraded if need be)
    # long before TPV's caller gives up. A command is tried at most twice
    # (once more only after a dropped connection, never after a timeout), so
    # a dead or hung Redis costs a request at most about
    # 2 x (connect_timeout_s + socket_timeout_s).
    socket_timeout_s: float = Field(0.5, gt=0, le=60)
    connect_timeout_s: float = Field(0.5, gt=0, le=60)

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, url: str) -> str:
        if url.startswith(SENTINEL_SCHEME):
            parse_sentinel_url(url)  # names what is wrong, password redacted
        elif not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"must start with redis://, rediss://, unix:// or {SENTINEL_SCHEME}, got {redact_url(url)!r}"
            )
        return url


class HealthSettings(_Section):
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


class CollectorSettings(_Section):
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

    @property
    def effective_lease_s(self) -> float:
        return self.lease_s if self.lease_s is not None else self.interval_s
    # After failed cycles (InfluxDB down, hung, garbled) the next attempt
    # waits interval x 2^(failures - 1), at most this long: a returning
    # InfluxDB is noticed within it.
    backoff_max_s: float = Field(60.0, gt=0, le=3600)


def _token_shapes(tokens: list[SecretStr]) -> list[SecretStr]:
    # Never echo a token: the message names its position only.
    problems = [f"token #{i + 1} {p}" for i, t in enumerate(tokens) if (p := token_problem(t.get_secret_value()))]
    if problems:
        raise ValueError("; ".join(problems))
    return tokens


def _empty_is_none(value: Any) -> Any:
    # TPV_BROKER_API_AUTH_TOKENS_FILE= (set but empty, as compose files do) means no file.
    return None if value == "" else value


class CapSettings(_Section):
    """Caps on a destination (docs/policy.md): at or over one, counting its
    in-flight charges, it goes after the destinations under theirs; from
    ``soft_from`` of a cap on, its score falls linearly to
    ``at_cap_factor`` at the cap."""

    # Jobs there: queued + running + placed by the broker but not yet shown.
    max_jobs: float | None = Field(None, gt=0)
    max_queued: float | None = Field(None, gt=0)
    max_running: float | None = Field(None, gt=0)
    # PanDA's rule: no more queued than twice the running ones.
    max_queued_per_running: float | None = Field(None, gt=0)
    soft_from: float = Field(0.8, gt=0, lt=1)
    at_cap_factor: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _some_cap(self) -> CapSettings:
        if all(v is None for v in (self.max_jobs, self.max_queued, self.max_running, self.max_queued_per_running)):
            raise ValueError("give at least one of max_jobs, max_queued, max_running, max_queued_per_running")
        return self


class StagingSettings(_Section):
    """Throughput between object stores and destinations, for the
    staging_time term and finish_time's turnaround (docs/policy.md)."""

    # object store id -> destination id -> MB/s (measured or agreed).
    throughput_mb_s: dict[str, dict[str, float]] = Field(default_factory=dict)
    # A pair not in the table: this, halved every halving_km of distance.
    default_mb_s: float = Field(100.0, gt=0)
    halving_km: float = Field(1000.0, gt=0)

    @field_validator("throughput_mb_s")
    @classmethod
    def _positive(cls, table: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for store, row in table.items():
            for dest, mb_s in row.items():
                if not mb_s > 0:
                    raise ValueError(f"{store}.{dest}: must be more than 0 MB/s, got {mb_s}")
        return table


class TenantSettings(_Section):
    """One Galaxy server on a shared broker: the tokens its requests carry
    (inline and/or a file, one per line, re-read when workers start)."""

    auth_tokens: list[SecretStr] = Field(default_factory=list)
    auth_tokens_file: Path | None = None
    # Rank requests a second, on average over time, and how many may come
    # at once (a token bucket shared by every API worker; over it: 429 with
    # Retry-After). None: no limit.
    rate_per_s: float | None = Field(None, gt=0)
    burst: int | None = Field(None, ge=1)
    # This Galaxy's destination ids -> the snapshot's (the network's) ids,
    # where its TPV config names an endpoint otherwise; answers keep its own.
    aliases: dict[str, str] = Field(default_factory=dict)
    # Endpoints only this Galaxy may use (its own cluster, a user's own
    # endpoint), by the snapshot's ids: any other tenant's ranking treats
    # them as unknown, and no other tenant sees their figures.
    private: list[str] = Field(default_factory=list)
    # This Galaxy's own caps (its allocation there), by the snapshot's ids
    # or its own (aliases): for its jobs they replace the destination's caps.
    caps: dict[str, CapSettings] = Field(default_factory=dict)

    _token_shape = field_validator("auth_tokens")(_token_shapes)
    _no_empty_file = field_validator("auth_tokens_file", mode="before")(_empty_is_none)

    @field_validator("private")
    @classmethod
    def _private_ids(cls, ids: list[str]) -> list[str]:
        for dest_id in ids:
            check_destination_id(dest_id)
        return ids

    @field_validator("aliases")
    @classmethod
    def _alias_ids(cls, aliases: dict[str, str]) -> dict[str, str]:
        for own, theirs in aliases.items():
            # "x: ...: not a valid destination id" names the entry.
            for which in (own, theirs):
                try:
                    check_destination_id(which)
                except ValueError as e:
                    raise ValueError(f"{own}: {e}") from None
        return aliases

    @model_validator(mode="after")
    def _has_tokens(self) -> TenantSettings:
        if not self.auth_tokens and self.auth_tokens_file is None:
            raise ValueError("a tenant needs auth_tokens or auth_tokens_file: its token says who is asking")
        if self.burst is not None and self.rate_per_s is None:
            raise ValueError("burst without rate_per_s limits nothing: set rate_per_s too")
        return self

    @property
    def burst_or_default(self) -> int:
        """A second's worth of requests unless set."""
        return self.burst if self.burst is not None else max(1, math.ceil(self.rate_per_s or 1))


class ApiSettings(_Section):
    bind: str = "127.0.0.1:8000"
    workers: int = Field(2, ge=1, le=64)
    # Older snapshots make rank answers fall back to TPV's order (degraded).
    max_snapshot_age_s: float = Field(300.0, gt=0)
    max_candidates: int = Field(1000, ge=1, le=100_000)
    max_request_bytes: int = Field(1_048_576, ge=1024)
    # `serve` keeps the workers' Prometheus metrics in a directory of its
    # own under this one (default: the system's temporary directory),
    # created at start and removed at exit.
    metrics_dir: str | None = None
    # Status of a degraded answer (TPV's order, degraded: true): 200 keeps
    # Galaxy dispatching on TPV's order; 503 makes callers treat it as a failure.
    degraded_status: int = 200

    @field_validator("degraded_status")
    @classmethod
    def _degraded_status(cls, status: int) -> int:
        if status not in (200, 503):
            raise ValueError(f"must be 200 or 503, got {status}")
        return status

    # Bearer tokens the protected endpoints accept (several, so a new one can
    # be rolled out before the old one is retired). With none here and no
    # file, the API is open: deploy it on loopback or behind a proxy then.
    auth_tokens: list[SecretStr] = Field(default_factory=list)
    # One token per line (# comments); re-read when workers start (kill -HUP).
    auth_tokens_file: Path | None = None
    # Routes that need a token when auth is on. /health never does.
    auth_protected: list[str] = Field(default_factory=lambda: ["/api/rank", "/process_data"])
    # Several Galaxy servers on one broker: name -> its tokens. A request's
    # tenant is the one its token belongs to (the tokens above: the
    # broker's own, tenant "default"); job ids are per tenant.
    tenants: dict[str, TenantSettings] = Field(default_factory=dict)

    _token_shape = field_validator("auth_tokens")(_token_shapes)
    _no_empty_file = field_validator("auth_tokens_file", mode="before")(_empty_is_none)

    @field_validator("tenants")
    @classmethod
    def _tenant_names(cls, tenants: dict[str, TenantSettings]) -> dict[str, TenantSettings]:
        owners: dict[str, str] = {}
        for name, tenant in tenants.items():
            if name == DEFAULT_TENANT:
                raise ValueError(f"{name!r} is the broker's own tenant (api.auth_tokens): name yours otherwise")
            check_tenant_id(name)
            for dest_id in tenant.private:
                other = owners.setdefault(dest_id, name)
                if other != name:
                    raise ValueError(f"{dest_id!r} is private to both {other!r} and {name!r}: "
                                     f"an endpoint has one owner")
        return tenants

    @model_validator(mode="after")
    def _tenants_need_tokens_on_the_rank_routes(self) -> ApiSettings:
        # An unprotected rank route would serve a request without a token
        # as the broker's own tenant, which sees every private endpoint.
        open_routes = [r for r in ("/api/rank", "/process_data") if r not in self.auth_protected]
        if self.tenants and open_routes:
            raise ValueError(f"with api.tenants, api.auth_protected must hold {', '.join(open_routes)}: "
                             f"a request's tenant comes from its token")
        return self

    def hidden_from(self, tenant: str) -> frozenset[str]:
        """The endpoints ``tenant`` must not see: those private to another
        tenant. The broker's own tenant (its operators) sees every one."""
        if tenant == DEFAULT_TENANT:
            return frozenset()
        return frozenset(d for name, t in self.tenants.items() if name != tenant for d in t.private)

    @field_validator("auth_protected")
    @classmethod
    def _protected_paths(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not path.startswith("/"):
                raise ValueError(f"{path!r} is not a path (must start with /)")
            if path == "/health":
                raise ValueError("/health stays open: liveness probes carry no token")
        return paths

    @property
    def auth_configured(self) -> bool:
        return bool(self.auth_tokens) or self.auth_tokens_file is not None or bool(self.tenants)


class LoggingSettings(_Section):
    # `--log-level` on the command line wins over this.
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # text: key=value pairs (logfmt); json: one JSON object per line.
    format: Literal["text", "json"] = "text"

    @field_validator("level", "format", mode="before")
    @classmethod
    def _case(cls, value: Any, info: Any) -> Any:
        if isinstance(value, str):
            return value.upper() if info.field_name == "level" else value.lower()
        return value


# RFC 6750's token68 alphabet (what fits in "Authorization: Bearer <token>"
# unquoted), and a length that makes guessing hopeless.
TOKEN_CHARS = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
MIN_TOKEN_CHARS = 16


def token_problem(token: str) -> str | None:
    """What is wrong with an API token, in words that never include it."""
    if len(token) < MIN_TOKEN_CHARS:
        return f"is too short ({len(token)} characters, at least {MIN_TOKEN_CHARS})"
    if not TOKEN_CHARS.fullmatch(token):
        return "holds a character other than A-Z a-z 0-9 - . _ ~ + / (and = at the end)"
    return None


class InflightSettings(_Section):
    # Charge each placement to the destination ranked first, so jobs ranked
    # before the next refresh see it (no herding on a stale snapshot).
    enabled: bool = True
    # How long a dispatched job takes to show in the figures (gxadmin and
    # the exporters run every minute): a charge ends once the destination's
    # newest live point is this much younger than the charge.
    reflect_lag_s: float = Field(60.0, ge=0)
    # A charge never outlives this, whatever the figures say.
    max_age_s: float = Field(600.0, gt=0)
    # What a charged job that does not fit adds to the destination's queue:
    # one job ("slot"), or its expected core-seconds in typical jobs ("work").
    charge_by: Literal["slot", "work"] = "slot"


class ScoringSettings(_Section):
    # Destinations whose live figures are older than this go last, with a reason.
    max_metrics_age_s: float = Field(900.0, gt=0)
    # Used when neither the tool nor the destination has a figure.
    default_queue_s: float = Field(300.0, ge=0)
    default_run_s: float = Field(3600.0, gt=0)
    # term name -> weight and parameters; listing terms replaces the defaults.
    terms: dict[str, dict[str, Any]] = Field(default_factory=lambda: copy.deepcopy(DEFAULT_TERMS))
    staging: StagingSettings = Field(default_factory=StagingSettings)

    @field_validator("terms")
    @classmethod
    def _known_terms(cls, terms: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        problems = check_terms(terms)
        if problems:
            raise ValueError("; ".join(problems))
        return with_defaults(terms)


class Coordinates(BaseModel):
    # Object store files carry extra keys of their own (see the prototype's
    # object_store_locations.yml); they are not ours to reject.
    model_config = ConfigDict(extra="ignore")
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)


class DestinationSettings(_Section):
    aliases: list[str] = Field(default_factory=list)
    latitude: float | None = Field(None, ge=-90, le=90)
    longitude: float | None = Field(None, ge=-180, le=180)
    # Total capacity, used when the metrics do not report it. mem in GB as TPV.
    cores: float | None = Field(None, gt=0)
    mem: float | None = Field(None, gt=0)
    gpus: float | None = Field(None, ge=0)
    caps: CapSettings | None = None


class BrokerConfig(_Section):
    influxdb: InfluxDBSettings = Field(default_factory=InfluxDBSettings)
    # Several InfluxDBs, read in one cycle (one request each, concurrently),
    # instead of ``influxdb`` and ``collector.presets``: name -> source.
    sources: dict[str, SourceSettings] = Field(default_factory=dict)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    collector: CollectorSettings = Field(default_factory=CollectorSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)
    inflight: InflightSettings = Field(default_factory=InflightSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    destinations: dict[str, DestinationSettings] = Field(default_factory=dict)
    object_stores: dict[str, Coordinates] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _sources_consistent(self) -> BrokerConfig:
        if not self.sources:
            return self
        problems = []
        # Set in the file or by a TPV_BROKER_INFLUXDB_* / _COLLECTOR_PRESETS variable.
        if "influxdb" in self.model_fields_set:
            problems.append("influxdb: not used with sources (each source has its own url, database and "
                            "credentials): move it under sources.<name>")
        if "presets" in self.collector.model_fields_set:
            problems.append("collector.presets: not used with sources: list each source's presets under "
                            "sources.<name>.presets")
        known = [*BUILTIN_PRESETS, *self.collector.custom_presets]
        env_names: dict[str, str] = {}
        for name, source in self.sources.items():
            other = env_names.setdefault(source_env_name(name, ""), name)
            if other != name:
                problems.append(f"sources.{name}: its environment variables would be {other!r}'s "
                                f"({source_env_name(name, 'password')}): name one otherwise")
            if not is_source_id(name):
                problems.append(f"sources.{name}: {SOURCE_ID_RULE}")
            if not source.presets:
                problems.append(f"sources.{name}.presets: empty: a source needs at least one preset")
            for preset in source.presets:
                if preset not in known:
                    problems.append(f"sources.{name}.presets: unknown preset {preset!r} (known: "
                                    f"{', '.join(known)}, or define it in collector.custom_presets)")
            if source.tenant is not None and source.tenant not in self.api.tenants:
                problems.append(f"sources.{name}.tenant: {source.tenant!r} is not in api.tenants "
                                f"(known: {', '.join(self.api.tenants) or 'none'})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def metric_sources(self) -> dict[str, SourceSettings]:
        """Every InfluxDB the collector reads, by name: ``sources``, or else
        the one of ``influxdb`` with ``collector.presets`` (``SINGLE_SOURCE``)."""
        return dict(self.sources) or {SINGLE_SOURCE: SourceSettings.model_validate(
            {**dict(self.influxdb), "presets": list(self.collector.presets)})}

    def source_aliases(self, source: str) -> dict[str, str]:
        """The ids ``source`` reports -> the snapshot's: the destinations'
        aliases, and before them, for a Galaxy's own source, its tenant's."""
        aliases = self.alias_map()
        settings = self.metric_sources()[source]
        tenant = self.api.tenants.get(settings.tenant) if settings.tenant is not None else None
        if tenant is None:
            return aliases
        return {**aliases, **{own: aliases.get(theirs, theirs) for own, theirs in tenant.aliases.items()}}

    @model_validator(mode="after")
    def _aliases_unique(self) -> BrokerConfig:
        seen: dict[str, str] = {}
        for dest_id, dest in self.destinations.items():
            for alias in dest.aliases:
                if alias in self.destinations and alias != dest_id:
                    raise ValueError(
                        f"destinations.{dest_id}.aliases: {alias!r} is itself a configured destination"
                    )
                if alias in seen and seen[alias] != dest_id:
                    raise ValueError(
                        f"destinations.{dest_id}.aliases: {alias!r} is already an alias of {seen[alias]!r}"
                    )
                seen[alias] = dest_id
        return self

    def alias_map(self) -> dict[str, str]:
        """Metric-source id -> canonical destination id."""
        return {a: dest_id for dest_id, d in self.destinations.items() for a in d.aliases}

    def destination_locations(self) -> dict[str, tuple[float, float]]:
        return {
            dest_id: (d.latitude, d.longitude)
            for dest_id, d in self.destinations.items()
            if d.latitude is not None and d.longitude is not None
        }

    def secrets(self) -> list[str]:
        """Credential values that must never be logged (the log formatter
        replaces them with ``***``)."""
        influxes = [self.influxdb, *self.sources.values()]
        values = [s.get_secret_value() for i in influxes for s in (i.password, i.token) if s is not None]
        for url in (self.redis.url, *(i.url for i in influxes)):
            password = url_password(url)
            if password:
                values.append(unquote(password))
                values.append(password)
        return values

    def caps_for(self, tenant: str = DEFAULT_TENANT) -> dict[str, CapSettings]:
        """Caps by destination for ``tenant``'s jobs: its own replace the
        destination's."""
        caps = {d: s.caps for d, s in self.destinations.items() if s.caps is not None}
        own = self.api.tenants.get(tenant)
        if own is None:
            return caps
        # A Galaxy may name the endpoint as its TPV config does (its aliases).
        return caps | {own.aliases.get(d, d): c for d, c in own.caps.items()}

    def object_store_locations(self) -> dict[str, tuple[float, float]]:
        return {store_id: (c.latitude, c.longitude) for store_id, c in self.object_stores.items()}


_ENV_SECTIONS: dict[str, type[_Section]] = {
    "influxdb": InfluxDBSettings,
    "redis": RedisSettings,
    "collector": CollectorSettings,
    "api": ApiSettings,
    "inflight": InflightSettings,
    "logging": LoggingSettings,
}


def env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``TPV_BROKER_<SECTION>_<FIELD>`` for every scalar setting of the
    service sections, e.g. ``TPV_BROKER_REDIS_URL``; lists are comma-separated."""
    out: dict[str, dict[str, Any]] = {}
    for section, model in _ENV_SECTIONS.items():
        for field_name, field in model.model_fields.items():
            value = environ.get(f"{ENV_PREFIX}{section}_{field_name}".upper())
            if value is None:
                continue
            if getattr(field.annotation, "__origin__", None) is list:
                out.setdefault(section, {})[field_name] = [v.strip() for v in value.split(",") if v.strip()]
            else:
                out.setdefault(section, {})[field_name] = value
    return out


def source_env_name(source: str, field_name: str) -> str:
    """``TPV_BROKER_SOURCES_<SOURCE>_<FIELD>``: a source's setting (its
    password or token, say) from the environment, the source's name in
    capitals with anything but letters and digits as ``_``."""
    return f"{ENV_PREFIX}SOURCES_{re.sub(r'[^A-Za-z0-9]', '_', source)}_{field_name}".upper()


def _source_env_overrides(sources: Any, environ: Mapping[str, str]) -> None:
    """Apply ``source_env_name`` variables to the sources the file declares."""
    if not isinstance(sources, dict):
        return
    for name, settings in sources.items():
        if not isinstance(settings, dict):
            continue
        for field_name, field in SourceSettings.model_fields.items():
            value = environ.get(source_env_name(str(name), field_name))
            if value is None:
                continue
            if getattr(field.annotation, "__origin__", None) is list:
                settings[field_name] = [v.strip() for v in value.split(",") if v.strip()]
            else:
                settings[field_name] = value


_SUBPATH = re.compile(r"^([A-Za-z_][\w.]*): ")


def _format_validation_error(exc: ValidationError, source: str, from_env: set[tuple[str, str]]) -> str:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        where = ""
        if len(err["loc"]) >= 2 and (str(err["loc"][0]), str(err["loc"][1])) in from_env:
            env_name = f"{ENV_PREFIX}{err['loc'][0]}_{err['loc'][1]}".upper()
            where = f" (from {env_name})"
        for msg in err["msg"].removeprefix("Value error, ").split("; "):
            # Validators of a mapping name the key inside it: "queue_wait.scale_s: ...".
            sub = _SUBPATH.match(msg)
            if sub:
                # A model-level check names its key itself: no "(top level)." before it.
                key = sub.group(1) if not err["loc"] else f"{loc}.{sub.group(1)}"
                problems.append(f"{key}{where}: {msg[sub.end():]}")
            else:
                problems.append(f"{loc}{where}: {msg}")
    return f"invalid configuration in {source}: " + "; ".join(problems)


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> BrokerConfig:
    """Read the YAML file (``path``, else ``$TPV_BROKER_CONFIG``, else built-in
    defaults: a zero-config start works) and apply environment overrides."""
    environ = os.environ if environ is None else environ
    if path is None:
        path = environ.get(CONFIG_ENV) or None
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        source = str(p)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {p}") from None
        except OSError as e:
            raise ConfigError(f"cannot read config file {p}: {e.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level, got {type(loaded).__name__}")
        raw = loaded
    overrides = env_overrides(environ)
    from_env: set[tuple[str, str]] = set()
    for section, values in overrides.items():
        current = raw.get(section)
        if current is None:
            current = {}
        if not isinstance(current, dict):
            raise ConfigError(f"invalid configuration in {source}: {section}: must be a mapping")
        raw[section] = {**current, **values}
        from_env.update((section, k) for k in values)
    _source_env_overrides(raw.get("sources"), environ)
    try:
        return BrokerConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source, from_env)) from None
