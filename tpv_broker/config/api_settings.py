"""The ``api`` section: the service, its tokens and the Galaxy servers
(``api.tenants``) it serves."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator

from tpv_broker.config.ranking_settings import CapSettings
from tpv_broker.config.section import Section
from tpv_broker.ids import DEFAULT_TENANT, check_destination_id, check_tenant_id

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


def _token_shapes(tokens: list[SecretStr]) -> list[SecretStr]:
    # Never echo a token: the message names its position only.
    problems = [f"token #{i + 1} {p}" for i, t in enumerate(tokens) if (p := token_problem(t.get_secret_value()))]
    if problems:
        raise ValueError("; ".join(problems))
    return tokens


def _empty_is_none(value: Any) -> Any:
    # TPV_BROKER_API_AUTH_TOKENS_FILE= (set but empty, as compose files do) means no file.
    return None if value == "" else value


class TenantSettings(Section):
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


def bind_problem(bind: str) -> str | None:
    """Why gunicorn could not listen on ``bind`` (host, host:port,
    [v6 address]:port or unix:path), or None."""
    if bind.startswith("unix:"):
        return None if bind[5:] else "unix: needs a socket path"
    host, sep, port = bind.rpartition(":")
    if not sep or host.endswith(":"):
        return None  # a host alone (gunicorn's port 8000), or a bare IPv6 address
    if not host:
        return f"{bind!r} has no host"
    if not port.isdigit() or int(port) > 65535:
        return f"port {port!r} is not a number from 0 to 65535"
    return None


class ApiSettings(Section):
    bind: str = "127.0.0.1:8000"

    @field_validator("bind")
    @classmethod
    def _bind_shape(cls, bind: str) -> str:
        problem = bind_problem(bind)
        if problem is not None:
            raise ValueError(problem)
        return bind

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

    def private_endpoints(self) -> frozenset[str]:
        """Every endpoint private to some tenant."""
        return frozenset(d for t in self.tenants.values() for d in t.private)

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
