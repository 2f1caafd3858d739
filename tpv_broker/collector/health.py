"""Destination health in a cycle: the signals gathered (error reports from
the sources, the broker's own placements and returns and the admins' pins
from Redis),
judged by the pure core (``core/health.py``), the transitions told. Only
when a source reads error counts, or an admin pinned a destination:
otherwise nothing here changes a snapshot."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from tpv_broker.config.settings import BrokerConfig
from tpv_broker.core.health import HealthRules, Signals, judge, judge_all
from tpv_broker.core.models import DestinationHealth, HealthPin
from tpv_broker.errors import StoreError
from tpv_broker.logging_setup import event
from tpv_broker.store.inflight import PLACEMENT_BUCKET_S
from tpv_broker.store.snapshots import SnapshotStore

from .cycle_data import CycleData
from .presets import Preset
from .source import Source

log = logging.getLogger("tpv_broker.collector")


@dataclass(frozen=True)
class Transition:
    destination: str
    before: str
    after: DestinationHealth


def rules_of(config: BrokerConfig) -> HealthRules:
    # count_returns chooses the signals, not how they are judged.
    return HealthRules(**config.collector.health.model_dump(exclude={"count_returns"}))


def reads_errors(presets: Sequence[Preset]) -> bool:
    return any(p.spec.combine == "error_counts" for p in presets)


def error_tenants(sources: Sequence[Source]) -> frozenset[str] | None:
    """Whose jobs the error counts cover: every tenant's when a shared
    source reads them (or the one source of a single Galaxy), else only
    those of the Galaxies whose own sources do. The placements of the
    others must not dilute the share: their errors go unreported."""
    readers = [s for s in sources if reads_errors(s.presets)]
    if any(s.tenant is None for s in readers):
        return None
    return frozenset(s.tenant for s in readers if s.tenant is not None)


def judge_cycle(data: CycleData, sources: Sequence[Source], config: BrokerConfig, store: SnapshotStore,
                previous: dict[str, DestinationHealth], now: float) -> tuple[dict[str, DestinationHealth], str | None]:
    """Every destination's verdict for this cycle, and what went wrong
    reading Redis (the previous verdicts stand then). Without error
    counts configured only pins are judged; when they are configured but
    could not be read this cycle, the verdicts stand but for pins."""
    rules = rules_of(config)
    presets = [p for s in sources for p in s.presets]
    try:
        # The status page's chart and /metrics read the last hour of them.
        inputs = store.health().read(now - max(rules.window_s, 3600.0))
    except StoreError as e:
        return previous, f"destination health not judged: {e}"
    pins = inputs.pins
    if not reads_errors(presets) or data.errors is None:
        kept = dict(previous) if reads_errors(presets) else {}
        for dest_id in {*pins, *(d for d, v in previous.items() if v.pin is not None)}:
            pinned = _judge_pin(previous.get(dest_id), pins.get(dest_id), now, rules)
            if pinned is None:
                kept.pop(dest_id, None)
            else:
                kept[dest_id] = pinned
        return kept, None
    # bucket_s: placements are counted in buckets (store/inflight.py); one
    # that began before probation (or an unpinning) holds its first probes.
    tenants = error_tenants(sources)
    placed = inputs.placed_by(tenants)
    returned = inputs.returned_by(tenants) if config.collector.health.count_returns else {}
    signals = {d: Signals(placements=placed.get(d, ()), errors=data.errors.get(d, ()), returns=returned.get(d, ()),
                          bucket_s=PLACEMENT_BUCKET_S)
               for d in {*placed, *data.errors, *returned}}
    return judge_all(previous, signals, pins, now, rules, config.api.private_endpoints()), None


def _judge_pin(previous: DestinationHealth | None, pin: HealthPin | None, now: float,
               rules: HealthRules) -> DestinationHealth | None:
    """Health from pins alone (no error counts): a pinned destination's,
    None for one no longer pinned."""
    if pin is None:
        return None
    return judge(previous, Signals(), 0.0, pin, now, rules)


def transitions(previous: dict[str, DestinationHealth], verdicts: dict[str, DestinationHealth]) -> list[Transition]:
    """The destinations whose state changed (a new one counts as from healthy)."""
    out = []
    for dest_id, verdict in sorted(verdicts.items()):
        before = previous[dest_id].state if dest_id in previous else "healthy"
        if verdict.state != before:
            out.append(Transition(dest_id, before, verdict))
    for dest_id in sorted(set(previous) - set(verdicts)):
        if previous[dest_id].state != "healthy":
            out.append(Transition(dest_id, previous[dest_id].state,
                                  DestinationHealth(state="healthy", since=previous[dest_id].since,
                                                    reason="no longer judged")))
    return out


def log_transitions(changes: Sequence[Transition]) -> None:
    """Each transition once, with the figures it was judged on."""
    for t in changes:
        h = t.after
        level = logging.WARNING if h.state in ("excluded", "degraded", "drained") else logging.INFO
        log.log(level, "destination %s: %s -> %s: %s", t.destination, t.before, h.state, h.reason,
                extra=event("health_transition", destination=t.destination, before=t.before, after=h.state,
                            errors=h.errors, placements=h.placements, share=h.share,
                            network_share=h.network_share))
