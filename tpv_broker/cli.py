"""The ``tpv-broker`` command line: serve, collect, inspect."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import click

from .shared.config import BrokerConfig, load_config
from .shared.errors import BrokerError
from .shared.store import store_from_config
from .shared.urls import redact_url


def _fail(message: str) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(1)


class _Context:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: BrokerConfig | None = None

    @property
    def config(self) -> BrokerConfig:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config


class _Group(click.Group):
    # BrokerErrors (bad config, Redis or InfluxDB unreachable) print as one
    # red line and exit 1, never as a traceback.
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
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
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.version_option(package_name="tpv-broker")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, log_level: str) -> None:
    """TPV Broker: metrics-informed ranking of TPV destinations."""
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    ctx.obj = _Context(config_path)


@main.command()
@click.option("--once", is_flag=True, help="Run one cycle, print a report, exit (1 if nothing was published).")
@click.pass_obj
def collect(obj: _Context, once: bool) -> None:
    """Read metrics from InfluxDB and publish snapshots to Redis."""
    from .collector.daemon import CycleRunner, run_daemon
    from .collector.influx import InfluxQLClient

    config = obj.config
    store = store_from_config(config.redis.url, config.redis.key_prefix, config.redis.socket_timeout_s)
    runner = CycleRunner(config, InfluxQLClient(config.influxdb), store, time.time)
    if once:
        report = runner()
        click.echo(report.summary())
        if not report.published:
            sys.exit(1)
        return
    run_daemon(runner, config.collector.interval_s)


@main.command()
@click.option("--bind", help="host:port to listen on (default: api.bind from config).")
@click.option("--workers", type=int, help="gunicorn worker processes (default: api.workers from config).")
@click.pass_obj
def serve(obj: _Context, bind: str | None, workers: int | None) -> None:
    """Serve the rank API with gunicorn."""
    from .api.server import run_gunicorn

    config = obj.config
    run_gunicorn(config, bind or config.api.bind, workers or config.api.workers)


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as JSON, for scripts.")
@click.pass_obj
def inspect(obj: _Context, as_json: bool) -> None:
    """Show what Redis holds now: per destination its figures, order key and age."""
    from .shared.ranking import order_key

    config = obj.config
    store = store_from_config(config.redis.url, config.redis.key_prefix, config.redis.socket_timeout_s)
    snapshot = store.read_all()
    now = time.time()
    if snapshot is None:
        if as_json:
            click.echo(json.dumps({"snapshot": None}))
        else:
            click.echo(f"no snapshot in Redis at {redact_url(config.redis.url)} (prefix {config.redis.key_prefix!r}): is the collector running?")
        sys.exit(1)
    if as_json:
        out = snapshot.model_dump(mode="json")
        out["meta"]["age_s"] = round(snapshot.meta.age_s(now), 3)
        click.echo(json.dumps(out, indent=2))
        return
    meta = snapshot.meta
    click.echo(
        f"snapshot age {meta.age_s(now):.1f} s (by {meta.collector or '?'}, cycle {meta.cycle_s * 1000:.0f} ms), "
        f"{meta.destinations} destinations, {meta.tools} tools"
    )
    header = ("destination", "status", "queued", "running", "cpus free/total", "mem GB free/total", "order key", "age s")
    rows = []
    for dest_id, d in sorted(snapshot.destinations.items(), key=lambda kv: (order_key(kv[1]), kv[0])):
        queued, neg_free = order_key(d)
        key = f"({_fmt(d.queued)}, {-neg_free:g})"
        rows.append(
            (
                dest_id + ("" if d.in_config or not config.destinations else " (not in config)"),
                d.status,
                _fmt(d.queued),
                _fmt(d.running),
                f"{_fmt(d.cpus_free)}/{_fmt(d.cpus_total)}",
                f"{_fmt(d.mem_free_gb, 1)}/{_fmt(d.mem_total_gb, 1)}",
                key,
                _fmt(None if d.metrics_at is None else now - d.metrics_at),
            )
        )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
