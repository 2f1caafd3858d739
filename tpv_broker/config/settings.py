"""The typed configuration, loaded once (YAML file + ``TPV_BROKER_*``
environment overrides) and passed to whatever needs it."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from tpv_broker.config.api_settings import ApiSettings
from tpv_broker.config.collector_settings import CollectorSettings
from tpv_broker.config.preset_spec import BUILTIN_PRESETS
from tpv_broker.config.ranking_settings import (
    CapSettings,
    Coordinates,
    DestinationSettings,
    InflightSettings,
    ScoringSettings,
)
from tpv_broker.config.section import Section
from tpv_broker.config.server_settings import InfluxDBSettings, RedisSettings, SourceSettings
from tpv_broker.config.urls import url_password
from tpv_broker.errors import ConfigError
from tpv_broker.ids import DEFAULT_TENANT, SOURCE_ID_RULE, is_source_id

ENV_PREFIX = "TPV_BROKER_"


CONFIG_ENV = "TPV_BROKER_CONFIG"


# The name of the one source of a config without ``sources`` (the
# ``influxdb`` section and ``collector.presets``).
SINGLE_SOURCE = "influxdb"


class LoggingSettings(Section):
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


class BrokerConfig(Section):
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

    def source_hidden(self, source: str) -> frozenset[str]:
        """The destinations ``source`` must not report on: for a Galaxy's
        own source, the endpoints private to the other tenants (its jobs at
        an endpoint of the same name are not theirs)."""
        tenant = self.metric_sources()[source].tenant
        return frozenset() if tenant is None else self.api.hidden_from(tenant)

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


_ENV_SECTIONS: dict[str, type[Section]] = {
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


def ignored_env(config: BrokerConfig, environ: Mapping[str, str]) -> list[str]:
    """The ``TPV_BROKER_*`` variables nothing reads for ``config``: a typo,
    a nested or list setting (``collector.health.*``, ``scoring.*``: the
    file only), or a source the file does not declare."""
    # The client's own may share a host's environment.
    read = {CONFIG_ENV, f"{ENV_PREFIX}TOKEN", f"{ENV_PREFIX}TOKEN_FILE"}
    read |= {f"{ENV_PREFIX}{section}_{name}".upper() for section, model in _ENV_SECTIONS.items()
             for name in model.model_fields}
    read |= {source_env_name(source, name) for source in config.sources for name in SourceSettings.model_fields}
    return sorted(name for name in environ if name.startswith(ENV_PREFIX) and name not in read)


# Said with every warning about ignored variables.
ENV_COVERS = ("overrides cover the scalar keys of influxdb, redis, collector, api, inflight and logging "
              "(TPV_BROKER_<SECTION>_<KEY>) and of each source the file declares (TPV_BROKER_SOURCES_<NAME>_<KEY>); "
              "set the rest in the file")


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


def _yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's message on one line: the problem and where (its own spans
    several lines and quotes the text)."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem:
        mark = e.problem_mark
        return e.problem + (f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else "")
    return " ".join(str(e).split())


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
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {p} is not UTF-8 text (byte {e.start}: {e.reason})") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {_yaml_problem(e)}") from None
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
