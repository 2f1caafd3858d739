"""One rank request end to end: resolve coordinates, read Redis once, call
the pure rank core. Shared by the API and ``tpv-broker rank``; Redis trouble
becomes a degraded answer in TPV's order, never an exception."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tpv_broker.config.ranking_settings import ScoringSettings
from tpv_broker.config.settings import BrokerConfig
from tpv_broker.core.charges import Charge
from tpv_broker.core.columns import DestinationColumns
from tpv_broker.core.health import probe_draw
from tpv_broker.core.inputs import Candidate, Candidates, DatasetInput, JobFacts
from tpv_broker.core.models import RankView, SnapshotMeta
from tpv_broker.core.policy import Cap, SitePolicy, StagingTable
from tpv_broker.core.ranking import rank, tpv_order
from tpv_broker.core.result import DegradedReason, RankResult
from tpv_broker.core.scoring import ScoringModel
from tpv_broker.core.tool_ids import stats_field, tool_id_forms
from tpv_broker.errors import StoreError
from tpv_broker.ids import DEFAULT_TENANT
from tpv_broker.logging_setup import event
from tpv_broker.store.charge_writer import ChargeWriter
from tpv_broker.store.snapshots import SnapshotStore

log = logging.getLogger("tpv_broker.rank")


def scoring_model(s: ScoringSettings) -> ScoringModel:
    """The rank core's scoring model for this config's ``scoring`` section."""
    return ScoringModel.from_settings(s.terms, s.default_queue_s, s.default_run_s, s.max_metrics_age_s)


def site_policy(config: BrokerConfig, tenant: str = DEFAULT_TENANT) -> SitePolicy:
    """Caps and the staging table for ``tenant``'s jobs, as the rank core takes them."""
    st = config.scoring.staging
    # Only when asked for: finish_time of a config from before counts no
    # staging, nor does one that lists staging_time weighted 0 (a term
    # weighted 0 has no effect).
    staging_time = config.scoring.terms.get("staging_time")
    staged = (staging_time is not None and staging_time["weight"] > 0) or "staging" in config.scoring.model_fields_set
    return SitePolicy({d: Cap(**c.model_dump()) for d, c in config.caps_for(tenant).items()},
                      StagingTable(st.throughput_mb_s, st.default_mb_s, st.halving_km) if staged else None)


class RankService:
    def __init__(self, config: BrokerConfig, store: SnapshotStore, clock: Callable[[], float],
                 probe_random: Callable[[], float] = random.random) -> None:
        self.store = store
        self.clock = clock
        # Which job without an id is a probe of a destination on probation.
        self.probe_random = probe_random
        self.model = scoring_model(config.scoring)
        self.max_snapshot_age_s = config.api.max_snapshot_age_s
        self.locations = config.destination_locations()
        self.store_locations = config.object_store_locations()
        self.charge_by_work = config.inflight.charge_by == "work"
        self.inflight = store.inflight(config.inflight)
        self.charges = ChargeWriter(self.inflight) if self.inflight is not None else None
        self._kept_columns: tuple[float, DestinationColumns] | None = None
        # Each tenant's names for the snapshot's destinations, and the
        # endpoints private to the others.
        self.aliases = {name: t.aliases for name, t in config.api.tenants.items() if t.aliases}
        self.hidden = {name: config.api.hidden_from(name) for name in config.api.tenants}
        self.policies = {name: site_policy(config, name) for name in [DEFAULT_TENANT, *config.api.tenants]}

    def datasets(
        self, datasets: Sequence[tuple[str, float]], request_locations: Mapping[str, tuple[float, float]]
    ) -> list[DatasetInput]:
        """Object store coordinates from config win; the request fills gaps
        (as the prototype's clients send them)."""
        return [
            DatasetInput(store_id, size, self.store_locations.get(store_id) or request_locations.get(store_id))
            for store_id, size in datasets
        ]

    def rank(
        self,
        candidates: Sequence[Candidate] | Candidates,
        job: JobFacts,
        datasets: Sequence[DatasetInput],
        charge: bool = True,
        tenant: str = DEFAULT_TENANT,
    ) -> RankResult:
        """Rank, then (unless ``charge`` is false or in-flight accounting is
        off) charge the job to the destination ranked first. ``tenant``:
        the Galaxy server the job belongs to."""
        fields = [stats_field(level, form) for level, form in tool_id_forms(job.tool_id)]
        now = self.clock()
        cands = Candidates.of(candidates).as_seen_by(self.aliases.get(tenant, {}), self.hidden.get(tenant, ()))
        charges = (self.inflight.rank_read(cands.keys, tenant, job.id, now) if self.inflight is not None else None)
        try:
            view = self.store.read_for_rank(fields, charges)
        except StoreError as e:
            # Galaxy must keep dispatching: answer TPV's own order, and say so.
            log.warning("answering in TPV order: %s", e,
                        extra=event("rank_degraded", reason="redis_unavailable", tenant=tenant))
            return tpv_order(cands, DegradedReason.REDIS_UNAVAILABLE, "Redis unavailable",
                             "TPV order: Redis unavailable")
        view.columns = self._columns(view)
        max_age_s = self.inflight.max_age_s if self.inflight is not None else 0.0
        # A job with an id draws the same each time it is ranked; one without, anew.
        draw = probe_draw(tenant, job.id) if job.id is not None else self.probe_random()
        result = rank(cands, job, datasets, view, now, self.model, self.max_snapshot_age_s, self.locations,
                      max_age_s, self.charge_by_work, draw, self.policies.get(tenant, self.policies[DEFAULT_TENANT]))
        if view.meta is not None and view.meta.sources:
            result.lagging_sources = _lagging(view.meta, tenant, now)
        if charge:
            self.charge_first(result, job, now, tenant)
        return result

    def _columns(self, view: RankView) -> DestinationColumns | None:
        """The live snapshot's figures as columns, built once per snapshot
        (its ``created_at`` is its id) for all of this worker's requests."""
        if view.meta is None:
            return None
        kept = self._kept_columns
        if kept is None or kept[0] != view.meta.created_at:
            kept = self._kept_columns = (view.meta.created_at, DestinationColumns.build(view.destinations))
        return kept[1]

    def charge_first(self, result: RankResult, job: JobFacts, now: float | None = None,
                     tenant: str = DEFAULT_TENANT, by_galaxy: bool = True) -> str | None:
        """Charge the job to the destination ranked first (if in-flight
        accounting is on and it was ranked on live figures); the destination
        charged (as the snapshot names it), None if none was. Never raises
        for Redis trouble: the answer stands either way. ``by_galaxy``
        false: an admin's placement by hand, never a job coming back."""
        first = result.first_scored_id
        if self.charges is None or first is None:
            return None
        first = self.aliases.get(tenant, {}).get(first, first)
        charge = Charge(first, job.cores, job.mem, self.clock() if now is None else now, job.id, result.first_run_s,
                        tenant)
        # Logs its own trouble, once per outage.
        return first if self.charges.charge(charge, by_galaxy) else None


def _lagging(meta: SnapshotMeta, tenant: str, now: float) -> dict[str, dict[str, Any]]:
    """The sources ``tenant`` may see whose figures are not the last cycle's."""
    out = {}
    for name, source in meta.sources_seen_by(tenant).items():
        if source.state != "ok":
            age = source.age_s(now)
            out[name] = {"state": source.state, "age_s": None if age is None else round(age, 1),
                         "problem": source.problem}
    return out
