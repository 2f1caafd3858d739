"""In-flight charges as the rank service makes them: each is written with
``InflightStore.charge``, waiting for Redis's reply, and Redis trouble is
logged rather than raised. The API calls it after the answer has gone out
(``api.routes`` sends the body first), so the reply costs the worker about
a tenth of a millisecond but not Galaxy.

redis-py's ``Script`` loads the Lua script again after a Redis restart or a
``SCRIPT FLUSH``; the client's retry policy reconnects once after a dropped
connection, and a Sentinel-managed client asks the sentinels for the new
master after a failover (the demoted one's READONLY becomes a
``ConnectionError`` there), so none of these loses a charge.

Trouble is logged once when it starts and once when charges get through
again, with the number unconfirmed or lost meanwhile (a charge that timed
out may have been applied). Nothing is queued: a charge is written or given
up before its request ends, so nothing grows while Redis is down, and a
gunicorn worker that stops gracefully has nothing left to send. A charge
only steers later rankings; Galaxy's answer stands either way.

A sender thread was tried instead (the request queuing the charge, the
thread waiting for the reply): it served fewer requests, not more, since it
competes with the request thread for the GIL, and other readers (another
worker, the status page, the metrics) could read Redis before the charge
reached it."""

from __future__ import annotations

import logging

from tpv_broker.core.charges import Charge
from tpv_broker.errors import StoreError
from tpv_broker.logging_setup import OutageLog
from tpv_broker.store.inflight import InflightStore

log = logging.getLogger("tpv_broker.rank")


class ChargeWriter:
    def __init__(self, inflight: InflightStore) -> None:
        self.inflight = inflight
        self._outage = OutageLog(log, "charge", "in-flight charges are not reaching Redis (logged once until they "
                                 "do): %s", "in-flight charges reach Redis again; %d charge(s) unconfirmed or lost "
                                 "meanwhile", "lost")

    def charge(self, charge: Charge, by_galaxy: bool = True) -> bool:
        """Write ``charge`` (``InflightStore.charge``): True if Redis
        confirmed it. Never raises for Redis trouble (it is logged)."""
        try:
            self.inflight.charge(charge, by_galaxy)
        except StoreError as e:
            self._outage.failed(e)
            return False
        self._outage.succeeded()
        return True
