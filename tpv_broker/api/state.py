"""What every blueprint reads from the app: the config, the store, the clock
and the rank service, attached once by ``create_app``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask

from tpv_broker.api.rank_service import RankService
from tpv_broker.config.settings import BrokerConfig
from tpv_broker.store.rate_limit import RateLimiter
from tpv_broker.store.snapshots import SnapshotStore


@dataclass(frozen=True)
class ApiState:
    config: BrokerConfig
    store: SnapshotStore
    clock: Callable[[], float]
    ranker: RankService
    limiter: RateLimiter


def get_state(app: Flask) -> ApiState:
    state: ApiState = app.extensions["tpv_broker"]
    return state
