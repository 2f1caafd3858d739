"""The ``tpv-broker`` command line: serve, collect, inspect, rank, check-config."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from tpv_broker.cli.hints import redis_hint
from tpv_broker.config.server_settings import RedisSettings
from tpv_broker.config.settings import ENV_COVERS, BrokerConfig, ignored_env, load_config
from tpv_broker.config.urls import redact_url, scrub, url_secrets
from tpv_broker.errors import URL_UNPARSABLE, BrokerError, ConfigError, StoreError, network_reason
from tpv_broker.ids import DEFAULT_TENANT
from tpv_broker.logging_setup import configure_logging, event
from tpv_broker.store.snapshots import SnapshotStore, store_from_config
from tpv_broker.wording import counted

if TYPE_CHECKING:
    from tpv_broker.api.schemas import RankRequest
    from tpv_broker.core.models import SnapshotMeta

log = logging.getLogger("tpv_broker.cli")



def _above_zero(ctx: click.Context, param: click.Parameter, value: float) -> float:
    # A simulated span of 0, NaN or infinity divided by zero or never ended.
    if not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"{value:g} is not a finite number above 0")
    return value


def _zero_or_more(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise click.BadParameter(f"{value:g} is not a finite number of at least 0")
    return value


def _fail(message: str) -> NoReturn:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(1)


class _Context:
    def __init__(self, config_path: str | None, log_level: str | None) -> None:
        self.config_path = config_path
        self.log_level = log_level
        self._config: BrokerConfig | None = None

    @property
    def config(self) -> BrokerConfig:
        if self._config is None:
            self._config = load_config(self.config_path)
            # Now the format, the level and the secrets to keep out of logs are known.
            configure_logging(self.log_level or self._config.logging.level, self._config.logging.format,
                              self._config.secrets())
            ignored = ignored_env(self._config, os.environ)
            if ignored:
                log.warning("environment variables ignored, no such setting: %s (%s)", ", ".join(ignored),
                            ENV_COVERS, extra=event("config_env_ignored", variables=ignored))
        return self._config


class _Group(click.Group):
    # BrokerErrors (bad config, Redis or InfluxDB unreachable) print as one
    # red line and exit 1, never as a traceback.
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StoreError as e:
            # Redis was asked: the config it was asked with is loaded.
            prefix = ctx.obj.config.redis.key_prefix if isinstance(ctx.obj, _Context) else RedisSettings().key_prefix
            _fail(f"{str(e).rstrip('.')}; {redis_hint(e, prefix)}")
        except BrokerError as e:
            _fail(str(e))


@click.group(cls=_Group)
@click.option(
    "--config",
    "config_path",
    envvar="TPV_BROKER_CONFIG",
    type=click.Path(dir_okay=False),
    help="config.yaml to use (env TPV_BROKER_CONFIG); without it, built-in defaults.",
)
@click.option(
    "--log-level",
    default=None,
    help="Overrides logging.level from config (default INFO).",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.version_option(package_name="tpv-broker")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, log_level: str | None) -> None:
    """TPV Broker: metrics-informed ranking of TPV destinations."""
    # Until the config is read (it may set logging.format and logging.level).
    configure_logging(log_level or "INFO")
    ctx.obj = _Context(config_path, log_level)


@main.command()
@click.option("--once", is_flag=True, help="Run one cycle, print a report, exit (1 if nothing was published).")
@click.pass_obj
def collect(obj: _Context, once: bool) -> None:
    """Read metrics from InfluxDB and publish snapshots to Redis."""
    from tpv_broker.collector.daemon import CycleRunner, run_daemon
    from tpv_broker.collector.metrics import CollectorMetrics, MetricsServer
    from tpv_broker.collector.source import sources_for
    from tpv_broker.store.leader_lock import LeaderLease, default_instance_id

    config = obj.config
    store = _store(config)
    lease = LeaderLease(store.client, store.keys.collector_lease, config.collector.instance_id or default_instance_id(),
                        config.collector.effective_lease_s)
    port = None if once else config.collector.metrics_port
    metrics = CollectorMetrics(time.time) if port is not None else None
    runner = CycleRunner(config, sources_for(config), store, time.time, metrics,
                         leader=lease, daemon=not once)
    if once:
        # Even a one-off run publishes only if no daemon holds the lease.
        lease.hold()
        try:
            report = runner()
        finally:
            lease.release()
        assert report is not None  # only a failing daemon skips cycles
        failed = lease.last_exception
        hint = redis_hint(failed, config.redis.key_prefix) if failed is not None else None
        click.echo(report.summary().rstrip(".") + (f"; {hint}" if hint else ""))
        if not report.published:
            sys.exit(1)
        return
    server = MetricsServer(metrics.registry, config.collector.metrics_host, port) if metrics and port else None
    if server is not None:
        logging.getLogger("tpv_broker.collector").info(
            "metrics at http://%s:%d/metrics", server.host, server.port,
            extra=event("metrics_served", host=server.host, port=server.port))
    try:
        run_daemon(runner)
    finally:
        if server is not None:
            server.close()


@main.command()
@click.option("--bind", help="host:port to listen on (default: api.bind from config).")
# api.workers' own bounds (ApiSettings), so the option cannot take what the config refuses.
@click.option("--workers", type=click.IntRange(1, 64),
              help="gunicorn worker processes, 1 to 64 (default: api.workers from config).")
@click.pass_obj
def serve(obj: _Context, bind: str | None, workers: int | None) -> None:
    """Serve the rank API with gunicorn."""
    from tpv_broker.api.server import run_gunicorn
    from tpv_broker.config.api_settings import bind_problem

    problem = bind_problem(bind) if bind is not None else None
    if problem is not None:
        raise click.BadParameter(problem, param_hint="'--bind'")
    config = obj.config
    run_gunicorn(config, bind or config.api.bind, workers if workers is not None else config.api.workers)


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _no_snapshot(config: BrokerConfig) -> str:
    return (f"no snapshot in Redis at {redact_url(config.redis.url)} (prefix {config.redis.key_prefix!r}): is the "
            f"collector running, and is this its Redis, database and key_prefix?")


def _store(config: BrokerConfig) -> SnapshotStore:
    return store_from_config(config.redis.url, config.redis.key_prefix, config.redis.socket_timeout_s,
                             config.redis.connect_timeout_s)


def _require_redis(store: SnapshotStore, action: str) -> None:
    """Fail (as a StoreError, one line) unless Redis answers: for commands
    that would otherwise carry on without it and show a degraded answer."""
    import redis

    try:
        store.client.ping()
    except redis.RedisError as e:
        raise store.failure(action, e) from None


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as JSON, for scripts.")
@click.pass_obj
def inspect(obj: _Context, as_json: bool) -> None:
    """Show what Redis holds now: per destination its figures, score and age.

    The score is the one a 1-core job of a tool with no history and no
    inputs would get, i.e. the job-independent part of the order."""
    from tpv_broker.api.rank_service import scoring_model, site_policy
    from tpv_broker.core.inputs import Candidate, JobFacts
    from tpv_broker.core.models import RankView
    from tpv_broker.core.ranking import rank

    config = obj.config
    snapshot = _store(config).read_all()
    now = time.time()
    if snapshot is None:
        if as_json:
            click.echo(json.dumps({"snapshot": None}))
        else:
            click.echo(_no_snapshot(config))
        sys.exit(1)
    unmatched = sorted(d for d, f in snapshot.destinations.items() if not f.in_config) if config.destinations else []
    if as_json:
        out = snapshot.model_dump(mode="json")
        out["meta"]["age_s"] = round(snapshot.meta.age_s(now), 3)
        for name, source in snapshot.meta.sources.items():
            age = source.age_s(now)
            out["meta"]["sources"][name]["age_s"] = None if age is None else round(age, 3)
        out["unmatched_ids"] = unmatched
        click.echo(json.dumps(out, indent=2))
        return
    meta = snapshot.meta
    click.echo(
        f"snapshot age {meta.age_s(now):.1f} s (by {meta.collector or '?'}, cycle {meta.cycle_s * 1000:.0f} ms), "
        f"{counted(meta.destinations, 'destination')}, {counted(meta.tools, 'tool')}"
    )
    if meta.stale_since is not None:
        retry = "" if meta.retry_at is None else f"; next attempt in {max(0.0, meta.retry_at - now):.0f} s"
        click.echo(f"STALE: the collector has failed {counted(meta.failed_cycles, 'cycle')} in a row since "
                   f"{now - meta.stale_since:.0f} s ago{retry}: {meta.stale_reason}")
    if meta.problems:
        click.echo(f"problems in the cycle that built it: {meta.problems}")
    for line in source_lines(meta, now):
        click.echo(line)
    view = RankView(meta=meta, destinations=snapshot.destinations)
    probe = JobFacts(tool_id="", cores=1, mem=0)
    result = rank([Candidate(d) for d in sorted(snapshot.destinations)], probe, [], view, now,
                  scoring_model(config.scoring), float("inf"), config.destination_locations(),
                  policy=site_policy(config))
    header = ("destination", "status", "queued", "running", "cpus free/total", "mem GB free/total", "score", "age s",
              "health")
    rows = []
    for p in result.placements:
        d = snapshot.destinations[p.id]
        score = _fmt(p.total * 100, 1) if p.total is not None else p.group.value
        rows.append((p.id, d.status, _fmt(d.queued), _fmt(d.running), f"{_fmt(d.cpus_free)}/{_fmt(d.cpus_total)}",
                     f"{_fmt(d.mem_free_gb, 1)}/{_fmt(d.mem_total_gb, 1)}", score,
                     _fmt(None if d.live_at is None else now - d.live_at), "-" if d.health is None else d.health.state))
    _table(header, rows)
    for dest_id, d in sorted(snapshot.destinations.items()):
        if d.health is not None and d.health.state != "healthy":
            click.echo(f"health of {dest_id}: {d.health.state}: {d.health.reason}")
    if unmatched:
        click.echo(f"ids seen in the metrics that match no configured destination or alias: {', '.join(unmatched)}")


def source_lines(meta: SnapshotMeta, now: float) -> list[str]:
    """One line per metric source of the cycle that built the snapshot:
    its state, when it last answered, whose it is, and what went wrong.
    The CLI is the operators' view (the default tenant): every source shows."""
    lines = []
    for name, s in sorted(meta.sources.items()):
        age = s.age_s(now)
        answered = "no answer on record" if age is None else f"answered {age:.0f} s ago"
        owner = "shared" if s.tenant is None else f"tenant {s.tenant}"
        problem = f": {s.problem}" if s.problem else ""
        lines.append(f"source {name}: {s.state}, {answered}, {owner}{problem}")
    return lines


def _number(text: str) -> int | float:
    """A number as JSON would carry it: ``4`` stays an int, so the API's
    validation answers the same words for the same value ("got -4", not
    "got -4.0"). ``nan`` and ``inf`` get through to be refused there."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a number") from None


def _number_option(_ctx: click.Context, _param: click.Parameter, value: str) -> int | float:
    return _number(value)


Choice = TypeVar("Choice", bound=str)


def _chosen(value: str, known: Sequence[Choice], option: str) -> list[Choice]:
    """The comma-separated choices of ``value``, in ``known``'s order."""
    given = {x.strip() for x in value.split(",") if x.strip()}
    if not given or not given <= set(known):
        raise click.BadParameter(f"{value!r}: expected {' or '.join(known)}, comma-separated", param_hint=option)
    return [k for k in known if k in given]


def _parse_dataset(value: str) -> dict[str, Any]:
    store_id, sep, size = value.rpartition("=")
    if not sep or not store_id:
        raise click.BadParameter(f"{value!r}: expected OBJECT_STORE_ID=SIZE_IN_BYTES", param_hint="--dataset")
    try:
        return {"object_store_id": store_id, "size": _number(size)}
    except click.BadParameter:
        raise click.BadParameter(f"{value!r}: expected OBJECT_STORE_ID=SIZE_IN_BYTES", param_hint="--dataset") \
            from None


# The API's request fields, as the options and arguments of `rank` name them.
_RANK_OPTIONS = {"job.tool_id": "--tool", "job.cores": "--cores", "job.mem": "--mem", "job.gpus": "--gpus",
                 "job.id": "--job-id", "destinations": "DESTINATIONS", "datasets": "--dataset"}


def _option_for(field: str) -> str:
    """``job.cores`` -> ``--cores``; ``destinations[2].id`` -> ``DESTINATIONS[2]``
    (the third destination given), ``datasets[0].size`` -> ``--dataset[0]``."""
    if field in _RANK_OPTIONS:
        return _RANK_OPTIONS[field]
    head, bracket, rest = field.partition("[")
    index = "[" + rest.split("]", 1)[0] + "]" if bracket else ""
    return _RANK_OPTIONS.get(head, field) + index


def _rank_request(tool_id: str, cores: float, mem: float, gpus: float, job_id: str | None,
                  destinations: tuple[str, ...], datasets: tuple[str, ...], max_candidates: int) -> RankRequest:
    """The request the API would get for these options, validated by the
    API's own models: the same values are refused, in the same words, the
    field named as the option that set it."""
    from pydantic import ValidationError

    from tpv_broker.api.schemas import RankRequest, describe_errors, too_many_candidates

    body = {
        "job": {"tool_id": tool_id, "cores": cores, "mem": mem, "gpus": gpus,
                **({"id": job_id} if job_id is not None else {})},
        "destinations": [{"id": d} for d in destinations],
        "datasets": [_parse_dataset(v) for v in datasets],
    }
    try:
        request = RankRequest.model_validate(body)
    except ValidationError as e:
        problems = [f"{_option_for(p['field'])}: {_options_in(p['problem'])}" for p in describe_errors(e)]
        raise click.UsageError("; ".join(problems)) from None
    problem = too_many_candidates(len(request.destinations), max_candidates)
    if problem is not None:
        raise click.UsageError(f"{_option_for('destinations')}: {problem}")
    return request


def _options_in(problem: str) -> str:
    """A problem's own mentions of fields as options too: "(also at
    destinations[0])" -> "(also at DESTINATIONS[0])"."""
    return re.sub(r"\b(?:destinations|datasets)\[\d+\]", lambda m: _option_for(m.group(0)), problem)


def answer_lines(answer: dict[str, Any]) -> list[str]:
    """An explained rank answer (the API's JSON, ``?explain=1``) as a person
    reads it: a line on the snapshot's age and whether the answer is
    degraded, then per candidate its position, id, and score and reason.
    The demo prints the same lines for its sample answer."""
    age = answer.get("snapshot_age_s")
    lines = [("no snapshot" if age is None else f"snapshot {age:.1f} s old") + ", "
             + (f"DEGRADED: {answer.get('degraded_reason') or 'reason unknown'}"
                if answer.get("degraded") else "not degraded")]
    explained = answer.get("explain") or []
    width = max((len(e["id"]) for e in explained), default=0) + 2
    lines += [f"{e['position']:>3} {e['id']:<{width}}{e['reason']}" for e in explained]
    return lines


def _term_rows(entry: dict[str, Any]) -> list[tuple[str, ...]]:
    return [("    ", t["term"], f"{t['score']:.3f}", f"{t['weight']:g}", f"{t['contribution']:.2f}",
             t["level"] or "-", ", ".join(f"{k}={v}" for k, v in t["raw"].items()))
            for t in entry.get("terms", [])]


@main.command("rank")
@click.argument("destinations", nargs=-1, required=True)
@click.option("--tool", "tool_id", required=True, help="Tool id (full toolshed id or short).")
@click.option("--cores", default="1", show_default=True, callback=_number_option, metavar="NUMBER")
@click.option("--mem", default="0", show_default=True, callback=_number_option, metavar="NUMBER", help="GB, as TPV.")
@click.option("--gpus", default="0", show_default=True, callback=_number_option, metavar="NUMBER")
@click.option("--dataset", "datasets", multiple=True, metavar="STORE=BYTES", help="An input dataset; repeatable.")
@click.option("--job-id", help="Galaxy's job id: this is a real placement, charge it (as the API does).")
@click.option("--charge", is_flag=True, help="Charge the destination ranked first, as the API does for each "
              "request (without it, or --job-id, nothing is written to Redis).")
@click.option("--explain", is_flag=True, help="Show each term's figures, score, weight and contribution.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer (with --explain: explained).")
@click.pass_obj
def rank_command(obj: _Context, destinations: tuple[str, ...], tool_id: str, cores: float, mem: float,
                 gpus: float, datasets: tuple[str, ...], job_id: str | None, charge: bool, explain: bool,
                 as_json: bool) -> None:
    """Rank DESTINATIONS for a job, from the snapshot in Redis, as the API would.

    Read-only unless --charge or --job-id: debugging a live system must not
    change the ranking that Galaxy's next jobs get."""
    from tpv_broker.api.rank_service import RankService
    from tpv_broker.core.explain import answer as answer_body

    config = obj.config
    request = _rank_request(tool_id, cores, mem, gpus, job_id, destinations, datasets, config.api.max_candidates)
    store = _store(config)
    # Without Redis the service answers TPV's order, as Galaxy needs; a
    # person asking here needs to know why instead.
    _require_redis(store, "reading the snapshot")
    service = RankService(config, store, time.time)
    job = request.job.facts()
    inputs = service.datasets([(d.object_store_id, d.size) for d in request.datasets], {})
    result = service.rank(request.candidates(), job, inputs, charge=False)
    # By hand: ranking a placed job again here is no sign that it failed there.
    charged = service.charge_first(result, job, by_galaxy=False) if charge or job_id is not None else None
    if as_json:
        click.echo(json.dumps(answer_body(result, explain), indent=2))
        return
    explained = answer_body(result, True)
    lines = answer_lines(explained)
    click.echo(lines[0])
    for entry, line in zip(explained["explain"], lines[1:], strict=True):
        click.echo(line)
        if explain and "terms" in entry:
            _table(("", "term", "score", "weight", "contribution", "level", "raw"), _term_rows(entry))
    if charged is not None:
        click.echo(f"charged {'job ' + job_id if job_id is not None else 'this job'} to {charged} (in-flight, "
                   f"as the API does)")
    elif charge or job_id is not None:
        # As the API: it charges nothing in these cases either.
        if service.inflight is None:
            click.echo("not charged: in-flight accounting is off (inflight.enabled: false)")
        elif result.first_scored_id is None:
            click.echo("not charged: no candidate was ranked on live figures (the answer is in TPV's order)")
        else:
            _fail(f"the job was not charged to {result.first_scored_id}: Redis did not confirm it (see the warning)")


def _api_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not re.match(r"https?://[^/\s]", value):
        raise click.BadParameter(f"{value!r}: expected the API's URL, e.g. http://127.0.0.1:8000")
    return value


@main.command()
@click.option("--api", "api_url", metavar="URL", callback=_api_url,
              help="A running API (e.g. http://127.0.0.1:8000): add each tenant's rank requests so far, from its "
                   "/metrics (all workers).")
@click.pass_obj
def tenants(obj: _Context, api_url: str | None) -> None:
    """List the Galaxy servers this broker serves (api.tenants).

    Per tenant: its tokens' sources (never a token), its rate limit, its
    aliases and private endpoints, and the metric sources that report its
    ids (the shared ones on the default row); with --api, its rank requests
    answered, degraded and refused (429) so far, and each metric source's
    state."""
    config = obj.config
    names = [DEFAULT_TENANT, *config.api.tenants]
    counts = _tenant_counts(api_url, config) if api_url else None
    states = _source_states(api_url, config) if api_url else None
    header: tuple[str, ...] = ("tenant", "tokens from", "rate limit", "aliases", "private", "sources")
    if counts is not None:
        header += ("requests ok", "degraded", "refused 429")
    rows = []
    for name in names:
        t = config.api.tenants.get(name)
        if t is None:  # the broker's own
            sources = [*(["api.auth_tokens"] if config.api.auth_tokens else []),
                       *([str(config.api.auth_tokens_file)] if config.api.auth_tokens_file else [])]
            row: tuple[str, ...] = (name, ", ".join(sources) or "(auth off: everyone)", "-", "-", "-")
        else:
            sources = [*(["inline"] if t.auth_tokens else []), *([str(t.auth_tokens_file)] if t.auth_tokens_file
                                                               else [])]
            limit = f"{t.rate_per_s:g}/s, burst {t.burst_or_default}" if t.rate_per_s else "-"
            row = (name, ", ".join(sources), limit, str(len(t.aliases)), ", ".join(t.private) or "-")
        row += (_tenant_sources(config, None if t is None else name, states),)
        if counts is not None:
            mine = counts.get(name, {})
            row += tuple(_fmt(mine.get(k, 0.0)) for k in ("ok", "degraded", "too_many_requests"))
        rows.append(row)
    _table(header, rows)


def _tenant_sources(config: BrokerConfig, tenant: str | None, states: dict[str, Any] | None) -> str:
    """The metric sources of ``tenant`` (None: the shared ones, which the
    broker's own tenant stands for: their ids are the snapshot's), each
    with its state when the API told it."""
    names = [n for n, s in config.metric_sources().items() if s.tenant == tenant]
    return ", ".join(_with_state(n, (states or {}).get(n)) for n in names) or "-"


def _with_state(name: str, state: Any) -> str:
    """``eu (ok)``, ``eu (stale 120 s)``; the bare name when /ready did not say."""
    if not isinstance(state, dict) or not isinstance(state.get("state"), str):
        return name
    age = state.get("age_s")
    if state["state"] == "ok" or not isinstance(age, (int, float)):
        return f"{name} ({state['state']})"
    return f"{name} ({state['state']} {age:.0f} s)"


def _operator_headers(config: BrokerConfig) -> dict[str, str]:
    """The broker's own token (api.auth_tokens, else the first of its file),
    so the API shows the operators' view: every tenant's sources, and
    /metrics if protected. None readable: no header (the shared view)."""
    from tpv_broker.api.auth import read_tokens_file

    tokens = [t.get_secret_value() for t in config.api.auth_tokens]
    if not tokens and config.api.auth_tokens_file is not None:
        try:
            tokens = read_tokens_file(config.api.auth_tokens_file)
        except ConfigError:
            tokens = []
    return {"Authorization": f"Bearer {tokens[0]}"} if tokens else {}


def _source_states(api_url: str, config: BrokerConfig) -> dict[str, Any] | None:
    """Source name -> its state and age, from the API's /ready; None when
    it does not say (an older API, no snapshot yet, /ready protected): the
    table then names the sources only, as without --api."""
    import requests

    try:
        body = requests.get(api_url.rstrip("/") + "/ready", headers=_operator_headers(config),
                            timeout=5).json()
    except (requests.RequestException, ValueError):
        return None
    sources = body.get("sources") if isinstance(body, dict) else None
    return sources if isinstance(sources, dict) else None


def _tenant_counts(api_url: str, config: BrokerConfig) -> dict[str, dict[str, float]]:
    """tenant -> outcome -> rank requests, from the API's /metrics."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    url = api_url.rstrip("/") + "/metrics"
    try:
        resp = requests.get(url, headers=_operator_headers(config), timeout=5)
        resp.raise_for_status()
    except requests.RequestException as e:
        problem = (URL_UNPARSABLE if isinstance(e, requests.exceptions.InvalidURL)
                   else network_reason(e, lambda text: scrub(text, url_secrets(url))))
        _fail(f"cannot read {redact_url(url)}: {type(e).__name__}: {problem}")
    counts: dict[str, dict[str, float]] = {}
    ours = False
    try:
        for family in text_string_to_metric_families(resp.text):
            # The API's own gauges are there on every scrape, requests or not.
            ours |= family.name.startswith("tpv_broker_api_")
            for sample in family.samples:
                if sample.name == "tpv_broker_api_requests_total" and sample.labels.get("endpoint") in (
                        "/api/rank", "/process_data"):
                    per = counts.setdefault(sample.labels.get("tenant", ""), {})
                    outcome = sample.labels.get("outcome", "")
                    per[outcome] = per.get(outcome, 0.0) + sample.value
    except ValueError as e:
        # A wrong port or a proxy's page answers 200 too.
        _fail(f"{redact_url(url)} is not the broker's /metrics (not Prometheus text: {str(e)[:120]})")
    if not ours:
        # Another exporter (InfluxDB's own /metrics, say): its zeros would read as counts.
        _fail(f"{redact_url(url)} is not the broker's /metrics (Prometheus text without tpv_broker_api_ metrics)")
    return counts


@main.command("check-config")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="config.yaml to check (default: the one given to tpv-broker, or TPV_BROKER_CONFIG).")
@click.option("--no-connect", is_flag=True, help="Only validate the config; do not contact InfluxDB or Redis.")
@click.pass_obj
def check_config(obj: _Context, config_path: str | None, no_connect: bool) -> None:
    """Validate the config and test the connections to InfluxDB and Redis.

    One line per check (OK, WARN or FAIL with the reason and a hint); exit
    status 0 only if no check failed. Credentials are never printed."""
    import os

    from tpv_broker.cli.checks import run_checks

    colours = {"OK": "green", "WARN": "yellow", "FAIL": "red"}
    checks = run_checks(config_path or obj.config_path, os.environ, connect=not no_connect)
    for c in checks:
        click.echo(f"{click.style(f'{c.status:<4}', fg=colours[c.status])} {c.text()}")
    failed = sum(c.failed for c in checks)
    untested = " (connections not tested: --no-connect)" if no_connect else ""
    summary = f"{counted(len(checks), 'check')}, {failed} failed" if failed else (
        f"{counted(len(checks), 'check')} passed")
    click.echo(summary + untested)
    if failed:
        sys.exit(1)


@main.command()
@click.option("--loads", default="0.5,0.8,0.95", show_default=True,
              help="Offered loads, as fractions of the sites' capacity, comma-separated.")
@click.option("--hours", type=float, callback=_above_zero, default=4.0, show_default=True,
              help="Simulated hours of arrivals per load.")
@click.option("--seed", type=int, default=1, show_default=True, help="The first seed.")
@click.option("--seeds", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="Seeds per load (seed, seed+1, ...): every ratio is reported per seed and over them.")
@click.option("--refresh", "refresh_s", type=float, callback=_above_zero, default=60.0, show_default=True,
              help="Metrics refresh, s.")
@click.option("--lag", "lag_s", type=float, callback=_zero_or_more, default=30.0, show_default=True,
              help="Exporter lag, s.")
@click.option("--bursts", default="10-40", show_default=True, help="Workflow burst sizes, MIN-MAX jobs.")
@click.option("--policies", "policy_list", default=None,
              help="Comma-separated policies (default: the comparison's; also the experiments' variants).")
@click.option("--quick", is_flag=True, help="A small, fast run (one load, 20 simulated minutes, at most 2 seeds) "
              "for tests.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Also write a PNG plot here.")
@click.option("--galaxies", is_flag=True, help="Three Galaxy servers (50/30/20 %% of the jobs) on the same sites: "
              "one shared broker against a broker per Galaxy, with and without charges.")
@click.option("--failures", "failure_list", default=None,
              help="Failure scenarios, comma-separated: blackhole (one endpoint fails every job within 30 s from "
              "hour 2 to hour 6), noisy (every endpoint fails 5-10 % of jobs), userburst (no endpoint at fault: "
              "a user's workflow of 200 jobs fails everywhere at hour 2 of 6), userburst_noretry (the same, "
              "not resubmitted); a failed job is submitted again once. Compares the broker with charges with and "
              "without destination health (and where nothing fails); default load 0.6 and the scenario's hours; "
              "with --quick, short versions (the black hole from hour 1 to 2.5 of 4, the noise over 3 hours, "
              "the workflow at hour 1 of 3).")
@click.option("--error-count", "error_counts", default="final", show_default=True,
              help="With --failures: what the hourly error report counts, comma-separated: final (a job once, if "
              "its last attempt failed: Galaxy's resubmission) or attempts (every failed attempt).")
@click.option("--report-every", "report_every", default="3600", show_default=True,
              help="With --failures: seconds between two error reports (gxadmin's: hourly), comma-separated.")
@click.option("--health-signals", "health_signals", default="returns", show_default=True,
              help="With --failures: what health judges on, comma-separated: returns (the error reports and the "
              "jobs that come back to be ranked again, collector.health.count_returns) or reports (the error "
              "reports alone).")
@click.option("--carbon", is_flag=True,
              help="The carbon term off, in near-ties mode and weighted, on grids whose carbon intensity follows a "
              "daily cycle, staging from a throughput table: mean turnaround and kg CO2e per variant, and their "
              "change against off (default loads 0.5,0.8; --policies picks variants: off, near_ties_<share>"
              "[_w<weight>], weighted_<weight>, each with _flat (the broker shown flat grids) and/or _anti (the "
              "grids dealt out against speed)).")
def simulate(loads: str, hours: float, seed: int, seeds: int, refresh_s: float, lag_s: float, bursts: str,
             policy_list: str | None, quick: bool, as_json: bool, plot_path: str | None, galaxies: bool,
             failure_list: str | None, error_counts: str, report_every: str, health_signals: str,
             carbon: bool) -> None:
    """Compare placement policies in a discrete-event simulation that drives
    the real ranking code and stores (fakeredis, simulated clock)."""
    if plot_path is not None and not Path(plot_path).resolve().parent.is_dir():
        # Said now, not after minutes of simulation.
        raise click.BadParameter(f"{plot_path}: its directory does not exist", param_hint="'--plot'")
    try:
        from tpv_broker.simulator import compare, report
    except ImportError as e:
        raise click.ClickException(
            f"the simulator needs the 'sim' extra (pip install 'tpv-broker[sim]'): {e}"
        ) from None
    try:
        load_list = [float(x) for x in loads.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{loads!r}: expected numbers like 0.5,0.8", param_hint="--loads") from None
    if not load_list or not all(0 < x <= 2 for x in load_list):
        raise click.BadParameter("each load must be in (0, 2]", param_hint="--loads")
    try:
        low, high = (int(x) for x in bursts.split("-"))
    except ValueError:
        raise click.BadParameter(f"{bursts!r}: expected MIN-MAX, like 10-40", param_hint="--bursts") from None
    if not 1 <= low <= high:
        raise click.BadParameter(f"{bursts!r}: need 1 <= MIN <= MAX", param_hint="--bursts")
    if carbon:
        from click.core import ParameterSource

        from tpv_broker.simulator import carbon as carbon_sim

        for name, given in (("--galaxies", galaxies), ("--failures", failure_list is not None)):
            if given:
                raise click.BadParameter(f"{name} does not go with --carbon", param_hint="--carbon")
        variants: tuple[str, ...] = carbon_sim.VARIANTS
        if policy_list is not None:
            variants = tuple(p.strip() for p in policy_list.split(",") if p.strip())
            for name in variants or ("(none given)",):
                try:
                    carbon_sim.variant(name)
                except ValueError as e:
                    raise click.BadParameter(str(e), param_hint="--policies") from None
        if click.get_current_context().get_parameter_source("loads") is ParameterSource.DEFAULT:
            load_list = [0.5, 0.8]
        if quick:
            load_list, hours, seeds = load_list[:1], 1 / 3, min(seeds, 2)
        carbon_rows = carbon_sim.simulate_carbon(
            variants, load_list, hours * 3600, seed, seeds, refresh_s, lag_s, (low, high),
            progress=(lambda _: None) if as_json else (lambda line: click.echo(line, err=True)))
        if plot_path:
            carbon_sim.plot(carbon_rows, Path(plot_path))
        if as_json:
            click.echo(json.dumps(carbon_sim.carbon_json(carbon_rows, seed=seed, seeds=seeds, hours=hours,
                                                         refresh_s=refresh_s, lag_s=lag_s, bursts=[low, high],
                                                         loads=load_list), indent=2))
        else:
            click.echo("\n".join(carbon_sim.carbon_lines(carbon_rows)))
        return
    known = compare.POLICIES + compare.VARIANTS
    policies: tuple[str, ...]
    if policy_list is None:
        policies = compare.POLICIES
    else:
        policies = tuple(p.strip() for p in policy_list.split(",") if p.strip())
    unknown = [p for p in policies if p not in known]
    if unknown or not policies:
        raise click.BadParameter(f"unknown policy {', '.join(unknown) or '(none given)'} (known: {', '.join(known)})",
                                 param_hint="--policies")
    progress = (lambda _: None) if as_json else (lambda line: click.echo(line, err=True))
    if failure_list is not None:
        from dataclasses import replace

        from click.core import ParameterSource

        from tpv_broker.simulator import failures as sim

        ctx = click.get_current_context()
        for name, given in (("--galaxies", galaxies), ("--policies", policy_list is not None),
                            ("--plot", plot_path is not None)):
            if given:
                raise click.BadParameter(f"{name} does not go with --failures", param_hint="--failures")
        names = [x.strip() for x in failure_list.split(",") if x.strip()]
        unknown = [x for x in names if x not in sim.SCENARIOS]
        if unknown or not names:
            raise click.BadParameter(f"unknown scenario {', '.join(unknown) or '(none given)'} "
                                     f"(known: {', '.join(sim.SCENARIOS)})", param_hint="--failures")
        counts = _chosen(error_counts, sim.ERROR_COUNTS, "--error-count")
        try:
            intervals = [float(x) for x in report_every.split(",") if x.strip()]
        except ValueError:
            intervals = []
        if not intervals or not all(60 <= x <= 86400 for x in intervals):
            raise click.BadParameter(f"{report_every!r}: expected seconds in [60, 86400], comma-separated",
                                     param_hint="--report-every")
        signals = _chosen(health_signals, sim.HEALTH_SIGNALS, "--health-signals")
        scenarios = [(sim.QUICK if quick else sim.SCENARIOS)[n] for n in names]
        if ctx.get_parameter_source("loads") is ParameterSource.DEFAULT:
            load_list = [0.6]
        if quick:
            load_list, seeds = load_list[:1], min(seeds, 2)
        elif ctx.get_parameter_source("hours") is not ParameterSource.DEFAULT:
            scenarios = [replace(sc, hours=hours) for sc in scenarios]
        failure_rows = sim.simulate_failures(scenarios, load_list, seed, seeds,
                                             counts, intervals, refresh_s,
                                             lag_s, progress, burst_size=(low, high),
                                             signals=signals)
        if as_json:
            click.echo(json.dumps(sim.failure_json(failure_rows, scenarios, seed=seed, seeds=seeds,
                                                   refresh_s=refresh_s, lag_s=lag_s, bursts=[low, high]), indent=2))
        else:
            click.echo("\n".join(sim.failure_lines(failure_rows)))
        return
    if quick:
        load_list, hours, seeds = load_list[:1], 1 / 3, min(seeds, 2)
    if galaxies:
        from tpv_broker.simulator import galaxies as multi

        galaxy_rows = multi.simulate_galaxies(load_list, hours * 3600, seed, seeds, refresh_s, lag_s, progress)
        if as_json:
            click.echo(json.dumps({"seed": seed, "seeds": seeds, "hours": hours, "shares": dict(multi.SHARES),
                                   "results": galaxy_rows, "ratios": multi.galaxy_ratios(galaxy_rows)}, indent=2))
        else:
            click.echo("\n".join(multi.galaxy_lines(galaxy_rows)))
        return
    rows = compare.as_rows(compare.simulate(load_list, hours * 3600, seed, refresh_s, lag_s, policies,
                                            progress=progress, seeds=seeds, burst_size=(low, high)))
    if plot_path:
        report.plot(rows, Path(plot_path))
    if as_json:
        click.echo(json.dumps({"seed": seed, "seeds": seeds, "hours": hours, "refresh_s": refresh_s, "lag_s": lag_s,
                               "bursts": [low, high], "results": rows, "summary": report.summary(rows),
                               "ratios": report.ratios(rows)}, indent=2))
        return
    click.echo(report.table(rows))
    for line in report.ratio_lines(rows):
        click.echo(line)


if __name__ == "__main__":
    main()
