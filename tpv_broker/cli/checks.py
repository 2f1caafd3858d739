"""``tpv-broker check-config``: is this config valid, and can the services
reach what it names? Each check gives one line an admin can act on.

It is part of the CLI, above ``api/``, ``collector/`` and ``store/``: it
uses the collector's InfluxQL client (the same one the daemon uses) and the
store's Redis connection and key schema. Credentials never reach a message:
URLs are redacted and only the names of environment variables are shown.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import redis
import requests

from tpv_broker.cli.hints import REDIS_AUTH_HINT, redis_permission_hint
from tpv_broker.collector.influx import InfluxQLClient
from tpv_broker.collector.influxql import quote_ident, time_window
from tpv_broker.config.collector_settings import CollectorSettings
from tpv_broker.config.server_settings import SourceSettings
from tpv_broker.config.settings import (
    CONFIG_ENV,
    ENV_COVERS,
    ENV_PREFIX,
    BrokerConfig,
    env_overrides,
    ignored_env,
    load_config,
    source_env_name,
)
from tpv_broker.config.urls import redact_url
from tpv_broker.errors import URL_UNPARSABLE, BrokerError, ConfigError, MetricSourceError, network_reason
from tpv_broker.store.keys import KeySchema
from tpv_broker.store.snapshots import SnapshotStore, connect_redis
from tpv_broker.wording import counted

Status = Literal["OK", "WARN", "FAIL"]

# HSET with several field/value pairs (every snapshot write) came with 4.0.
MIN_REDIS_VERSION = (4, 0)


@dataclass(frozen=True)
class Check:
    status: Status
    name: str
    message: str
    hint: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"

    def text(self) -> str:
        hint = f" (hint: {self.hint})" if self.hint else ""
        return f"{self.name}: {self.message}{hint}"

    def line(self) -> str:
        return f"{self.status:<4} {self.text()}"


# -- the measurements to look for ----------------------------------------------
@dataclass(frozen=True)
class MeasurementProbe:
    """One measurement a configured preset reads, and over which window."""

    preset: str
    measurement: str
    lookback_s: float
    lookback_key: str
    writer: str
    # Error counts: a writer prints nothing when there is nothing to count,
    # so an empty window is good news, not silence.
    empty_is_fine: bool = False


# Who writes each built-in preset's measurement, for the hint when it has no
# data; a site's own preset is named by its description.
_WRITERS = {
    "queue_by_destination": "gxadmin's `iquery queue --by destination` (every minute)",
    "destination_queue_run_time": "gxadmin's `iquery destination-queue-run-time --seconds` (daily)",
    "htcondor_cluster_usage": "pulsar-util's HTCondor exporter (every minute)",
    "htcondor_slot_shapes": "pulsar-util's HTCondor exporter, one line per free slot shape (every minute)",
    "slurm_nodes": "Telegraf's slurm input (every minute)",
    "queue_overview": "gxadmin's `iquery queue-overview` (every minute)",
    "pulsar_carbon_intensity": "pulsar-util's AMQP consumer (with an electricity-data token)",
    "errored_jobs_by_destination": "gxadmin's `tsvquery errored-jobs 1` (hourly; no line for a destination "
                                   "without errors, so an empty window can be right)",
}
_WINDOW_KEYS = {"live": "lookback_s", "stats": "stats_lookback_s", "health": "health.window_s"}


def measurement_probes(collector: CollectorSettings, source: SourceSettings) -> list[MeasurementProbe]:
    """The measurements ``source``'s presets read, with the window each is
    read over. The one place that knows how presets map to measurements
    for this check."""
    from tpv_broker.collector.presets import presets_for

    out = []
    for preset in presets_for(collector, source.presets):
        spec = preset.spec
        lookback_key = _WINDOW_KEYS[spec.window]
        out.append(MeasurementProbe(
            preset=preset.name,
            measurement=spec.measurement,
            lookback_s=spec.window_s(collector.lookback_s, collector.stats_lookback_s, collector.health.window_s),
            lookback_key=f"collector.{lookback_key}",
            writer=_WRITERS.get(preset.name) or spec.description or f"the writer of {spec.measurement!r}",
            empty_is_fine=spec.combine == "error_counts",
        ))
    return out


# -- config ---------------------------------------------------------------------
def check_config(path: str | Path | None, environ: Mapping[str, str]) -> tuple[Check, BrokerConfig | None]:
    """Load the config exactly as the services do (file + environment)."""
    if path is None:
        path = environ.get(CONFIG_ENV) or None
    overridden = [
        f"TPV_BROKER_{section}_{key}".upper()
        for section, values in env_overrides(environ).items()
        for key in values
    ]
    try:
        config = load_config(path, environ)
    except ConfigError as e:
        return Check("FAIL", "config", str(e)), None
    # A source's variables count only for the sources the file declares.
    overridden = sorted([*overridden, *(env for name in config.sources for field in SourceSettings.model_fields
                                        if (env := source_env_name(name, field)) in environ)])
    if path is not None:
        source = f"{path}: valid"
    else:
        source = f"no file (no --config, {CONFIG_ENV} unset): the built-in defaults"
    extra = f"; overridden from the environment: {', '.join(overridden)}" if overridden else ""
    return Check("OK", "config", f"{source}{extra}"), config


def check_environment(config: BrokerConfig, environ: Mapping[str, str]) -> list[Check]:
    """``TPV_BROKER_*`` variables nothing reads (``ignored_env``)."""
    ignored = ignored_env(config, environ)
    return [Check("WARN", "environment", f"ignored, no such setting: {', '.join(ignored)}", ENV_COVERS)] \
        if ignored else []


# -- InfluxDB --------------------------------------------------------------------
@dataclass(frozen=True)
class SourceTarget:
    """One InfluxDB to check and the words its checks use. A config without
    ``sources`` keeps the words it always had (``influxdb``, ``influxdb.url``,
    ``TPV_BROKER_INFLUXDB_URL``, ``collector.presets``), so its output and
    the scripts reading it stay as they were."""

    name: str
    settings: SourceSettings
    single: bool = False

    def label(self, part: str = "") -> str:
        base = "influxdb" if self.single else f"source {self.name}"
        return f"{base} {part}" if part else base

    def key(self, field: str) -> str:
        return f"influxdb.{field}" if self.single else f"sources.{self.name}.{field}"

    def env(self, field: str) -> str:
        return f"{ENV_PREFIX}INFLUXDB_{field}".upper() if self.single else source_env_name(self.name, field)

    def setting(self, field: str) -> str:
        """``influxdb.url (TPV_BROKER_INFLUXDB_URL)``: the key and the variable that overrides it."""
        return f"{self.key(field)} ({self.env(field)})"

    @property
    def presets_key(self) -> str:
        return "collector.presets" if self.single else self.key("presets")


def source_targets(config: BrokerConfig) -> list[SourceTarget]:
    """Every InfluxDB the collector reads, in config order."""
    return [SourceTarget(name, settings, single=not config.sources)
            for name, settings in config.metric_sources().items()]


def _request_problem(e: requests.RequestException, client: InfluxQLClient) -> str:
    """Why a request to InfluxDB failed, as the collector says it, never
    with a credential or a piece of one."""
    if isinstance(e, requests.exceptions.InvalidURL):
        return URL_UNPARSABLE
    return network_reason(e, client.scrubbed)


def check_flux(collector: CollectorSettings, target: SourceTarget) -> list[Check]:
    """InfluxDB 2.x natively (``api: flux``): the collector's own read, one
    Flux query for every preset of the source, through the same client and
    error messages as the daemon's."""
    from tpv_broker.collector.presets import presets_for
    from tpv_broker.collector.source import metric_source

    hint = (f"check {target.key('url')}, {target.key('org')}, {target.key('bucket')} and "
            f"{target.env('token')}")
    presets = presets_for(collector, target.settings.presets)
    try:
        source = metric_source(target.settings)
        results = source.read(presets, collector)
    except MetricSourceError as e:
        return [Check("FAIL", target.label(), str(e), hint)]
    checks = [Check("OK", target.label(), f"{source.where} answered the collector's query")]
    probes = {p.preset: p for p in measurement_probes(collector, target.settings)}
    for preset, result in zip(presets, results, strict=True):
        probe = probes[preset.name]
        if result.error:
            checks.append(Check("FAIL", target.label("data"), f"{preset.name}: {result.error}"))
        elif not result.rows:
            checks.append(Check("FAIL", target.label("data"),
                                f"{preset.name}: no point of {probe.measurement!r} in the last "
                                f"{probe.lookback_s:g} s ({probe.lookback_key})",
                                f"is {probe.writer} writing to this bucket? "
                                f"Or drop {preset.name} from {target.presets_key}"))
        else:
            checks.append(Check("OK", target.label("data"), f"{preset.name}: {counted(len(result.rows), 'row')}"))
    return checks


def check_influxdb(collector: CollectorSettings, target: SourceTarget,
                   session: requests.Session | None = None) -> list[Check]:
    """One InfluxDB: reachable, credentials, database, then each preset's
    measurement; nothing is checked behind a step that failed."""
    settings = target.settings
    if settings.api == "flux":
        return check_flux(collector, target)
    client = InfluxQLClient(settings, session)
    checks = _check_ping(client, target)
    if checks[-1].failed:
        return checks
    checks += _check_databases(client, target)
    if checks[-1].failed:
        return checks
    return [*checks, *check_measurements(client, measurement_probes(collector, settings), target)]


def _url_hint(target: SourceTarget) -> str:
    return f"check {target.setting('url')} and that InfluxDB runs there"


def _check_ping(client: InfluxQLClient, target: SourceTarget) -> list[Check]:
    settings = target.settings
    url = redact_url(client.base)
    try:
        ping = client.session.get(f"{client.base}/ping", timeout=settings.timeout_s)
    except requests.Timeout:
        return [Check("FAIL", target.label(), f"{url} did not answer within {settings.timeout_s:g} s "
                      f"({target.key('timeout_s')})", _url_hint(target))]
    except requests.RequestException as e:
        return [Check("FAIL", target.label(), f"{url} is unreachable: {_request_problem(e, client)}",
                      _url_hint(target))]
    version = ping.headers.get("X-Influxdb-Version")
    if ping.status_code in (200, 204):
        answers = f"answers (InfluxDB {version})" if version else "answers /ping (no version reported)"
    elif ping.status_code in (401, 403) and version:
        # Some InfluxDB versions want credentials even for /ping.
        answers = f"answers (InfluxDB {version}; /ping needs credentials)"
    else:
        return [Check("FAIL", target.label(),
                      f"{url} answered /ping with HTTP {ping.status_code}, not as InfluxDB does",
                      f"{target.key('url')} must be InfluxDB's HTTP API (for 2.x/3.x: its v1-compatible endpoint)")]
    return [Check("OK", target.label(), f"{url} {answers}")]


def _check_databases(client: InfluxQLClient, target: SourceTarget) -> list[Check]:
    """The credentials (SHOW DATABASES), then the configured database among those listed."""
    settings = target.settings
    url = redact_url(client.base)
    auth = target.label("auth")
    who = ("the token" if settings.token is not None else
           f"user {settings.username!r}" if settings.username is not None else None)
    try:
        resp = client.session.post(f"{client.base}/query", data={"q": "SHOW DATABASES"}, timeout=settings.timeout_s)
    except requests.RequestException as e:
        return [Check("FAIL", auth, f"SHOW DATABASES failed: {_request_problem(e, client)}", _url_hint(target))]
    if resp.status_code in (401, 403):
        username, password, token = target.key("username"), target.env("password"), target.env("token")
        hint = (f"set {username} and {password} (or {token})" if who is None else
                f"check {username} / {password}, or {token}")
        refused = f"refused {who}" if who else "requires credentials"
        return [Check("FAIL", auth, f"{url} {refused} (HTTP {resp.status_code})", hint)]
    try:
        result = resp.json()["results"][0]
        if "error" in result:
            raise ValueError(result["error"])
        names = sorted({row[0] for s in result.get("series") or [] for row in s.get("values") or []})
    except (ValueError, KeyError, IndexError, TypeError) as e:
        return [Check("FAIL", auth, f"SHOW DATABASES answered HTTP {resp.status_code}: {e}",
                      "the user needs to be able to list the database it reads")]
    checks = [_auth_enforced(client, who, target)]
    database = target.label("database")
    if settings.database not in names:
        return [*checks, Check("FAIL", database,
                               f"database {settings.database!r} does not exist on {url} or is not readable "
                               f"{'by ' + who if who else 'without credentials'} "
                               f"(databases there: {', '.join(names) or 'none'})",
                               f"set {target.setting('database')}")]
    return [*checks, Check("OK", database, f"{settings.database!r} exists")]


def _auth_enforced(client: InfluxQLClient, who: str | None, target: SourceTarget) -> Check:
    """InfluxDB with authentication off accepts any credentials: say so
    rather than call them correct."""
    auth = target.label("auth")
    if who is None:
        return Check("OK", auth, "no credentials configured, none required")
    parts = urlsplit(client.base)
    bare_url = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))
    try:
        bare = requests.post(f"{bare_url}/query", data={"q": "SHOW DATABASES"},
                             timeout=client.settings.timeout_s, verify=client.settings.verify_tls)
    except requests.RequestException as e:
        return Check("FAIL", auth, f"SHOW DATABASES without credentials failed: {_request_problem(e, client)}")
    if bare.status_code in (401, 403):
        return Check("OK", auth, f"{who} accepted")
    return Check("OK", auth, f"authentication is off on the server: {who} not checked")


def _probe_statement(p: MeasurementProbe) -> str:
    # The collector's own window (it accepts points slightly in the future: skewed clocks).
    return f"SELECT * FROM {quote_ident(p.measurement)} WHERE {time_window(p.lookback_s)} ORDER BY time DESC LIMIT 1"


def check_measurements(client: InfluxQLClient, probes: list[MeasurementProbe], target: SourceTarget,
                       now: float | None = None) -> list[Check]:
    """Which probed measurements have a point in their window: one request."""
    name = target.label("data")
    if not probes:
        return [Check("WARN", name, f"{target.presets_key} is empty: the collector reads nothing")]
    try:
        results = client.query(["SHOW MEASUREMENTS", *(_probe_statement(p) for p in probes)])
    except MetricSourceError as e:
        return [Check("FAIL", name, str(e))]
    now = time.time() if now is None else now
    existing = {row[0] for s in results[0].series for row in s.values}
    checks = []
    for p, res in zip(probes, results[1:], strict=True):
        what = p.measurement if p.measurement == p.preset else f"{p.measurement} (preset {p.preset})"
        if res.error:
            checks.append(Check("FAIL", name, f"reading {what} failed: {res.error}"))
        elif res.series and res.series[0].values:
            at = res.series[0].values[0][0]
            if isinstance(at, (int, float)):
                age = f"newest point {max(0.0, now - float(at)):.0f} s old"
            else:
                age = "has points"
            checks.append(Check("OK", name, f"{what}: {age}"))
        elif p.measurement not in existing:
            checks.append(Check("FAIL", name, f"{what}: no such measurement in database "
                                f"{client.settings.database!r}",
                                f"is {p.writer} writing to this database? Or drop {p.preset} from "
                                f"{target.presets_key}"))
        elif p.empty_is_fine:
            checks.append(Check("OK", name, f"{what}: no error reported in the last {p.lookback_s:g} s "
                                f"({p.lookback_key})"))
        else:
            checks.append(Check("FAIL", name, f"{what}: no point in the last {p.lookback_s:g} s "
                                f"({p.lookback_key})", f"has {p.writer} stopped?"))
    return checks


# -- Redis -----------------------------------------------------------------------
def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(".")[:2])
    except ValueError:
        return ()


def check_redis(config: BrokerConfig, now: float | None = None) -> list[Check]:
    settings = config.redis
    url = redact_url(settings.url)
    url_hint = "check redis.url (TPV_BROKER_REDIS_URL) and that redis-server runs there"
    try:
        client = connect_redis(settings.url, settings.socket_timeout_s, settings.connect_timeout_s)
    except BrokerError as e:
        return [Check("FAIL", "redis", str(e), "redis.url must be redis://, rediss:// or unix://")]
    try:
        client.ping()
    except redis.AuthenticationError as e:
        return [Check("FAIL", "redis", f"{url} refused the credentials: {e}", REDIS_AUTH_HINT)]
    except redis.TimeoutError:
        return [Check("FAIL", "redis", f"{url} did not answer within {settings.socket_timeout_s:g} s "
                      "(redis.socket_timeout_s)", url_hint)]
    except redis.ConnectionError as e:
        return [Check("FAIL", "redis", f"{url} is unreachable: {network_reason(e)}", url_hint)]
    except redis.ResponseError as e:
        # A server that wants a password answers NOAUTH here.
        return [Check("FAIL", "redis", f"{url} answered PING with an error: {e}",
                      "put the password into redis.url: redis://:PASSWORD@host:6379/0")]
    except redis.RedisError as e:
        return [Check("FAIL", "redis", f"{url}: PING failed: {e}", url_hint)]
    try:
        version = str(client.info("server").get("redis_version", "?"))
    except redis.ResponseError as e:
        # An ACL user may not be allowed INFO; the services never use it.
        version = f"unknown, INFO refused: {e}"
    except redis.RedisError as e:
        return [Check("FAIL", "redis", f"{url} answered PING, then failed: {e}", url_hint)]
    if _version(version) and _version(version) < MIN_REDIS_VERSION:
        checks = [Check("FAIL", "redis", f"{url} answers, but is Redis {version}",
                        f"TPV Broker needs Redis {'.'.join(map(str, MIN_REDIS_VERSION))} or newer")]
    else:
        checks = [Check("OK", "redis", f"{url} answers (Redis {version})")]

    keys = KeySchema(settings.key_prefix)
    probe_key = keys.check_probe(uuid.uuid4().hex)
    token = uuid.uuid4().hex
    try:
        client.set(probe_key, token, px=10_000)
        read_back = client.get(probe_key)
        client.delete(probe_key)
    except redis.RedisError as e:
        return [*checks, Check("FAIL", "redis write", f"cannot write under {settings.key_prefix + ':'!r}: {e}",
                               redis_permission_hint(settings.key_prefix))]
    if read_back != token.encode():
        return [*checks, Check("FAIL", "redis write", f"a key written under {settings.key_prefix + ':'!r} "
                               "did not read back the same")]
    checks.append(Check("OK", "redis write", f"can write under {settings.key_prefix + ':'!r}"))

    try:
        meta = SnapshotStore(client, keys).read_meta()
    except BrokerError as e:
        return [*checks, Check("FAIL", "redis snapshot", str(e))]
    if meta is None:
        checks.append(Check("WARN", "redis snapshot", f"none under {settings.key_prefix + ':'!r} yet",
                            "start the collector (tpv-broker collect); rank answers are degraded until then"))
    else:
        age = meta.age_s(time.time() if now is None else now)
        limit = config.api.max_snapshot_age_s
        status: Status = "OK" if age <= limit else "WARN"
        stale = ("" if status == "OK"
                 else f", older than api.max_snapshot_age_s ({limit:g} s): rank answers are degraded")
        size = counted(meta.destinations, "destination")
        text = f"{age:.0f} s old, {size}, by {meta.collector or '?'}{stale}"
        checks.append(Check(status, "redis snapshot", text,
                            "" if status == "OK" else "is the collector running and publishing?"))
    return checks


# -- tenants ---------------------------------------------------------------------
# Why a tenant check could not compare with the snapshot's ids.
_NOT_READ = "Redis not read"


def check_tenants(config: BrokerConfig, known: set[str] | None, unknown_why: str = _NOT_READ) -> list[Check]:
    """Each tenant's tokens as the API will read them, and its aliases and
    private endpoints against the destinations there are: those config
    names and, when Redis could be read (``known``), the snapshot's. An id
    nobody reports is a warning: that Galaxy's jobs would never be ranked
    on figures there."""
    if not config.api.tenants:
        return []
    from tpv_broker.api.auth import load_tokens

    try:
        load_tokens(config.api)
    except ConfigError as e:
        return [Check("FAIL", "tenants", str(e))]
    destinations = set(config.destinations) | (known or set())
    checks = []
    for name, tenant in config.api.tenants.items():
        limit = f", at most {tenant.rate_per_s:g} requests/s (burst {tenant.burst_or_default})" if tenant.rate_per_s \
            else ""
        checks.append(Check("OK", f"tenant {name}", f"{counted(len(tenant.aliases), 'alias', 'aliases')}, "
                            f"{len(tenant.private)} private{limit}"))
        unknown = sorted({*tenant.aliases.values(), *tenant.private} - destinations)
        if unknown:
            where = "in config or in the snapshot" if known is not None else f"in config ({unknown_why})"
            checks.append(Check("WARN", f"tenant {name}", f"names endpoints no source reports {where}: "
                                f"{', '.join(unknown)}", "check its aliases and private lists against "
                                "`tpv-broker inspect`"))
    return checks


def _snapshot_ids(config: BrokerConfig) -> tuple[set[str] | None, str]:
    """The destinations in the snapshot (None if Redis cannot tell), and why not."""
    try:
        store = SnapshotStore(connect_redis(config.redis.url, config.redis.socket_timeout_s,
                                            config.redis.connect_timeout_s), KeySchema(config.redis.key_prefix))
        snapshot = store.read_all()
    except BrokerError:
        return None, _NOT_READ
    return (None, "no snapshot in Redis yet") if snapshot is None else (set(snapshot.destinations), "")


def check_api(config: BrokerConfig) -> list[Check]:
    """What ``serve`` refuses at start-up beyond the config's validation (a
    protected path that is no route, a tokens file that cannot be read),
    found by building the app as each worker does; nothing is connected."""
    from tpv_broker.api.app import create_app

    try:
        create_app(config)
    except BrokerError as e:
        return [Check("FAIL", "api", str(e))]
    return []


def _startup_checks(config: BrokerConfig, known: set[str] | None, unknown_why: str = _NOT_READ) -> list[Check]:
    tenants = check_tenants(config, known, unknown_why)
    # A tenant's tokens that fail are said once, under its name.
    return tenants if any(c.failed for c in tenants) else [*tenants, *check_api(config)]


def run_checks(path: str | Path | None, environ: Mapping[str, str], connect: bool = True) -> list[Check]:
    """Every check, in order; connection checks only for a valid config."""
    config_check, config = check_config(path, environ)
    if config is None:
        return [config_check]
    config_checks = [config_check, *check_environment(config, environ)]
    if not connect:
        return [*config_checks, *_startup_checks(config, None)]
    redis_checks = check_redis(config)
    known, unknown_why = (None, _NOT_READ) if any(c.failed for c in redis_checks) or not config.api.tenants \
        else _snapshot_ids(config)
    influx_checks = [c for target in source_targets(config) for c in check_influxdb(config.collector, target)]
    return [*config_checks, *influx_checks, *redis_checks, *_startup_checks(config, known, unknown_why)]
