"""``tpv-broker health``: each destination's health as the last snapshot
says, and an admin's pins (drained for maintenance, or healthy whatever
its errors say), written to Redis where the collector reads them at its
next cycle: no restart, and they outlive the collector."""

from __future__ import annotations

import getpass
import json
import os
import sys
import time

import click

from tpv_broker.core.models import HealthPin
from tpv_broker.errors import StoreError
from tpv_broker.ids import check_destination_id

from .commands import _Context, _fail, _no_snapshot, _store, _table


def _who() -> str:
    # The person behind sudo, rather than root.
    return os.environ.get("SUDO_USER") or getpass.getuser()


def _destination(value: str) -> str:
    try:
        return check_destination_id(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@click.group()
def health() -> None:
    """Destination health: list it, pin a destination drained or healthy."""


@health.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print it as JSON, for scripts.")
@click.pass_obj
def list_health(obj: _Context, as_json: bool) -> None:
    """Each judged destination's state, figures and reason, and every pin."""
    store = _store(obj.config)
    snapshot = store.read_overview()
    pins = store.health().pins()
    judged = {d: f.health for d, f in snapshot.destinations.items() if f.health is not None}
    if as_json:
        click.echo(json.dumps({"destinations": {d: h.model_dump(mode="json") for d, h in sorted(judged.items())},
                               "pins": {d: p.model_dump(mode="json") for d, p in sorted(pins.items())},
                               **({"snapshot": None} if snapshot.meta is None else {})}, indent=2))
        if snapshot.meta is None:
            sys.exit(1)
        return
    if snapshot.meta is None:
        # Not "nothing is judged": nothing here is read by a collector.
        if pins:
            click.echo(f"pinned: {', '.join(sorted(pins))}")
        _fail(_no_snapshot(obj.config))
    if not judged and not pins:
        click.echo("no destination is judged: no source reads error counts (see docs/health.md) and none is pinned")
        return
    now = time.time()
    rows = []
    for dest_id, h in sorted(judged.items()):
        share = "-" if h.share is None else f"{h.share:.0%}"
        network = "-" if h.network_share is None else f"{h.network_share:.0%}"
        rows.append((dest_id, h.state, f"{now - h.since:.0f} s", f"{h.errors:.0f}", f"{h.returned:.0f}",
                     f"{h.placements:.0f}", share, network, h.reason))
    _table(("destination", "state", "for", "failed", "came back", "placed", "share", "others", "why"), rows)
    waiting = sorted(set(pins) - set(judged))
    if waiting:
        click.echo(f"pinned, not in the snapshot yet (the collector applies pins at its next cycle): "
                   f"{', '.join(waiting)}")


@health.command("pin")
@click.argument("destination", callback=lambda _c, _p, v: _destination(v))
@click.option("--drained", is_flag=True, help="Send it no job (maintenance).")
@click.option("--healthy", is_flag=True, help="Ignore its error counts.")
@click.option("--reason", required=True, help="Why: shown in explain and on the status page.")
@click.option("--by", "by", default=None, help="Who pins it (default: the user running this).")
@click.pass_obj
def pin(obj: _Context, destination: str, drained: bool, healthy: bool, reason: str, by: str | None) -> None:
    """Pin DESTINATION drained or healthy until unpinned."""
    if drained == healthy:
        raise click.UsageError("say --drained or --healthy" + (", not both" if drained else ""))
    if not reason.strip():
        raise click.BadParameter("give a reason: the people reading explain need it", param_hint="--reason")
    store = _store(obj.config)
    entry = HealthPin(state="drained" if drained else "healthy", reason=reason.strip(),
                      by=by or _who(), at=time.time())
    store.health().pin(destination, entry)
    click.echo(f"{destination} pinned {entry.state} by {entry.by}: {entry.reason} (the collector applies it at its "
               f"next cycle)")
    # A typo (or an alias, not the snapshot's id) would drain nothing while
    # the admin believes it drained: say so, and keep the pin (the
    # destination may appear later).
    try:
        overview = store.read_overview()
    except StoreError:
        return  # the pin is written; only the warning is lost
    if overview.meta is None:
        click.echo(f"warning: {_no_snapshot(obj.config)} The pin waits for a collector to read it.", err=True)
    elif destination not in overview.destinations:
        click.echo(f"warning: {destination} is not a destination of the live snapshot (a typo, or an alias?): "
                   f"the pin does nothing until the metrics or the config name it", err=True)


@health.command("unpin")
@click.argument("destination", callback=lambda _c, _p, v: _destination(v))
@click.pass_obj
def unpin(obj: _Context, destination: str) -> None:
    """Remove DESTINATION's pin: its error counts decide again, counted from now."""
    if not _store(obj.config).health().unpin(destination):
        _fail(f"{destination} is not pinned")
    click.echo(f"{destination} unpinned (the collector judges it again at its next cycle)")
