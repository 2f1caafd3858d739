"""``GET /``: the status page for admins. Server-rendered from one Redis read
(``SnapshotStore.read_overview``) and, for the last hour's charts, the
placement counts (``HealthStore.read``); a small script reloads its content
every collector interval. It always renders: no snapshot, a stale one or no Redis
is shown as such, never as an error page."""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, current_app, make_response, render_template

from tpv_broker.core.charges import ChargeState
from tpv_broker.core.models import RankView
from tpv_broker.errors import StoreError
from tpv_broker.ids import DEFAULT_TENANT

from .auth import viewer
from .state import get_state
from .status_view import CHART_SPAN_S, build_status

log = logging.getLogger("tpv_broker.api")

bp = Blueprint("status_page", __name__, template_folder="web/templates", static_folder="web/static",
               static_url_path="/status/static")

# Everything the page loads comes from this server; no inline script, so a
# destination id that slipped past escaping still could not run.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
# Refresh no faster than this, whatever collector.interval_s is.
MIN_REFRESH_S = 5.0


def _fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _utc(epoch: float | None) -> str:
    if epoch is None:
        return "–"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _as_seen_by(view: RankView, hidden: frozenset[str], tenant: str) -> RankView:
    """``view`` as ``tenant`` may see it: without the ``hidden``
    destinations (another tenant's private ones), neither their figures
    nor their charges, and without another tenant's metric sources."""
    meta = view.meta
    if meta is not None and len(meta.sources_seen_by(tenant)) != len(meta.sources):
        view = view.model_copy(update={"meta": meta.model_copy(update={"sources": meta.sources_seen_by(tenant)})})
    if not hidden:
        return view
    charges = view.charges
    return view.model_copy(update={
        "destinations": {d: f for d, f in view.destinations.items() if d not in hidden},
        "charges": ChargeState({d: load for d, load in charges.loads.items() if d not in hidden},
                               [c for c in charges.expired if c.destination not in hidden]),
    })


@bp.get("/")
def status_page() -> Response:
    state = get_state(current_app)
    config = state.config
    now = state.clock()
    inflight = state.ranker.inflight
    view, error = None, None
    try:
        charges = inflight.rank_read(None, DEFAULT_TENANT, None, now) if inflight is not None else None
        view = state.store.read_overview(charges)
    except StoreError as e:
        log.warning("status page: %s", e)
        error = str(e)
    placements, returns, placements_error = None, None, None
    if view is not None and view.meta is not None:
        # A second round trip, for the charts only: without it the page
        # still renders, without charts. Buckets before the chart's hour
        # stay for the collector (its window is longer).
        try:
            inputs = state.store.health().read(now - CHART_SPAN_S, drop_old=False)
            placements, returns = inputs.placements, inputs.returned_by(None)
        except StoreError as e:
            log.warning("status page: no placement charts: %s", e)
            placements_error = str(e)
        tenant = viewer(config)
        view = _as_seen_by(view, config.api.hidden_from(tenant), tenant)
    status = build_status(view, error, now, config, state.ranker.model, placements, placements_error, returns)
    html = render_template("status.html", s=status, now=now, fmt=_fmt, age=_age, utc=_utc,
                           refresh_s=max(MIN_REFRESH_S, config.collector.interval_s))
    resp = make_response(html)
    resp.headers["Content-Security-Policy"] = PAGE_CSP
    resp.headers["Cache-Control"] = "no-store"
    return resp
