"""Where the metrics come from and where the snapshot goes: the
``influxdb`` section (and each of ``sources``) and ``redis``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from tpv_broker.config.redis_urls import (
    SENTINEL_SCHEME,
    parse_sentinel_url,
    redis_url_problem,
    sentinel_hosts_problem,
)
from tpv_broker.config.section import Section
from tpv_broker.config.urls import redact_url, url_secrets


class InfluxDBSettings(Section):
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

    def secrets(self) -> list[str | None]:
        """This InfluxDB's credentials, in every form a message may quote
        them (``urls.scrub`` takes them out)."""
        return [self.password.get_secret_value() if self.password else None,
                self.token.get_secret_value() if self.token else None, *url_secrets(self.url)]

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


class RedisSettings(Section):
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
            # names what is wrong, password redacted
            problem = sentinel_hosts_problem(parse_sentinel_url(url))
            if problem is not None:
                raise ValueError(f"{redact_url(url)!r}: {problem}")
        elif not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"must start with redis://, rediss://, unix:// or {SENTINEL_SCHEME}, got {redact_url(url)!r}"
            )
        else:
            problem = redis_url_problem(url)
            if problem is not None:
                raise ValueError(f"{redact_url(url)!r}: {problem}")
        return url
