"""TPV Broker's client for TPV rank clauses.

In a TPV config::

    rank: |
      from tpv_broker_client import rank
      rank(candidate_destinations, globals(), url="http://127.0.0.1:8000")

Needs only ``requests``; never raises; never waits past ``budget_s``.
"""

from .breaker import Breaker
from .client import (
    DEFAULT_BUDGET_S,
    DEFAULT_COOLDOWN_S,
    DEFAULT_FAILURES_TO_OPEN,
    BrokerClient,
    client_for,
    rank,
)

__all__ = [
    "DEFAULT_BUDGET_S",
    "DEFAULT_COOLDOWN_S",
    "DEFAULT_FAILURES_TO_OPEN",
    "Breaker",
    "BrokerClient",
    "client_for",
    "rank",
]
