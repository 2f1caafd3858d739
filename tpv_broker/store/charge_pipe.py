"""In-flight charges sent without waiting for Redis's reply: what the API
uses. The request's worker pays for packing and one ``send`` (tens of
microseconds), not a round trip; the charge reaches Redis at once, so other
workers see it for the very next job. Replies are read later, without
blocking, before the next send (or by ``flush``), and a failed one is
logged then.

One dedicated connection per process (a pooled one would hand our unread
replies to someone else's command), behind a lock (gthread with several
threads). It runs the same Lua script as ``InflightStore.charge``, loaded
with ``SCRIPT LOAD`` on each new connection (a restarted Redis comes back
with an empty script cache); a ``NOSCRIPT`` reply (``SCRIPT FLUSH``) loads
it again and resends that charge, and so does ``READONLY`` (a Sentinel
failover demoted the master we were talking to) after reconnecting, since
Redis applied neither. Charges whose reply never came (connection lost,
Redis hung past the socket timeout) are counted as unconfirmed: as with the
waiting client, Galaxy's answer stands and only later rankings miss them.
Trouble is logged once when it starts and once when charges get through
again. The simulator and ``tpv-broker rank`` keep the waiting client."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import NoScriptError, ReadOnlyError

from tpv_broker.store.inflight import InflightStore
from tpv_broker.logging_setup import event
from tpv_broker.core.models import Charge

log = logging.getLogger("tpv_broker.rank")

# Replies not read yet, at most: more means Redis stopped answering.
MAX_PENDING = 10_000
# redis-py's Sentinel connection turns READONLY into this (and disconnects).
_DEMOTED = "previous master is now a slave"


@dataclass
class _Sent:
    at: float  # time.monotonic() when sent
    keys: list[str] | None  # None: the SCRIPT LOAD sent on connecting
    args: list[Any]
    resent: bool = False


class ChargePipe:
    def __init__(self, inflight: InflightStore) -> None:
        self.inflight = inflight
        self.pool = inflight.client.connection_pool
        # A reply later than this means the connection is dead or Redis hangs.
        timeout = self.pool.connection_kwargs.get("socket_timeout")
        self.timeout_s: float = timeout if timeout else 5.0
        self._lock = threading.Lock()
        self._conn: Any = None
        self._pid = 0
        self._pending: deque[_Sent] = deque()
        self._resend: list[_Sent] = []
        # The trouble logged (None: all well) and the charges lost since.
        self._failing: str | None = None
        self._lost = 0
        # At exit (a gunicorn worker stopping), read the last replies so
        # that a failed charge is still logged; bounded by the timeout.
        atexit.register(_flush_at_exit, weakref.ref(self))

    def charge(self, charge: Charge) -> None:
        """Send the charge; never raises for Redis trouble (it is logged)."""
        keys, args = self.inflight.command(charge)
        with self._lock:
            try:
                # Also finds a connection Redis closed (restart, failover)
                # before a charge is sent into it.
                self._collect(block=False)
            except redis.RedisError as e:
                self._broken(e)
            try:
                conn = self._send_resends()
                self._send(conn, keys, args)
            except redis.RedisError as e:
                self._broken(e, lost=1)

    def flush(self, timeout_s: float | None = None) -> None:
        """Read every pending reply (waiting at most ``timeout_s``, default
        the socket timeout) and log trouble: at worker exit, and in tests."""
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        with self._lock:
            try:
                while (self._pending or self._resend) and time.monotonic() < deadline:
                    self._send_resends()
                    self._collect(block=True)
                if self._pending or self._resend:
                    raise redis.TimeoutError(f"no reply to {len(self._pending)} charge(s) by the deadline")
            except redis.RedisError as e:
                self._broken(e)

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._disconnect()

    # -- the connection ------------------------------------------------------
    def _connection(self) -> Any:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        # A connection inherited through fork is the parent's: leave it be.
        self._conn, self._pending = None, deque()
        conn = self.pool.make_connection()
        # A health check's PING would read a charge's reply as its own.
        conn.health_check_interval = 0
        conn.connect()
        self._conn, self._pid = conn, os.getpid()
        # Pipelined like the charges: its reply is read with theirs.
        conn.send_packed_command(conn.pack_command("SCRIPT", "LOAD", self.inflight.script), check_health=False)
        self._pending.append(_Sent(time.monotonic(), None, []))
        return conn

    def _disconnect(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.disconnect()
        self._conn = None
        self._pending.clear()

    def _send_resends(self) -> Any:
        """The connection (connecting if need be), with the charges Redis
        refused without applying them sent again."""
        conn = self._connection()
        while self._resend:
            sent = self._resend.pop(0)
            self._send(conn, sent.keys or [], sent.args, resent=True)
        return conn

    def _send(self, conn: Any, keys: list[str], args: list[Any], resent: bool = False) -> None:
        if len(self._pending) >= MAX_PENDING:
            raise redis.TimeoutError(f"{len(self._pending)} charges sent without a reply")
        conn.send_packed_command(conn.pack_command("EVALSHA", self.inflight.sha, len(keys), *keys, *args),
                                 check_health=False)
        self._pending.append(_Sent(time.monotonic(), keys, args, resent))

    # -- the replies ---------------------------------------------------------
    def _collect(self, block: bool) -> None:
        """Read the replies that are in (``block``: at least the next one)."""
        conn = self._conn
        if conn is None or self._pid != os.getpid():
            return
        while (self._pending and block) or conn.can_read(0):
            block = False
            if not self._pending:
                raise redis.ConnectionError("a reply to nothing sent")
            sent = self._pending[0]
            try:
                conn.read_response(disconnect_on_error=True)
            except redis.ResponseError as e:
                self._pending.popleft()
                self._refused(sent, e)
                if self._conn is None:
                    return
                continue
            except redis.ConnectionError as e:
                if _DEMOTED not in str(e):
                    raise
                self._demoted()
                return
            self._pending.popleft()
            if sent.keys is not None:
                self._recovered()
        if self._pending and time.monotonic() - self._pending[0].at > self.timeout_s:
            raise redis.TimeoutError(f"no reply from Redis to a charge for over {self.timeout_s:g} s")

    def _refused(self, sent: _Sent, e: redis.ResponseError) -> None:
        if isinstance(e, ReadOnlyError):
            self._pending.appendleft(sent)
            self._demoted()
        elif isinstance(e, NoScriptError) and sent.keys is not None and not sent.resent:
            # The script cache was flushed: load it again, resend this one.
            # (Charges sent after it and refused too follow the same way.)
            conn = self._conn
            conn.send_packed_command(conn.pack_command("SCRIPT", "LOAD", self.inflight.script), check_health=False)
            self._pending.append(_Sent(time.monotonic(), None, []))
            self._send(conn, sent.keys, sent.args, resent=True)
        elif sent.keys is not None:
            self._trouble(e, lost=1)
        else:
            self._trouble(e)

    def _demoted(self) -> None:
        """The master became a replica (failover): Redis refused the
        pending charges; reconnect (Sentinel names the new master) and
        resend them."""
        refused = [s for s in self._pending if s.keys is not None]
        self._resend.extend(s for s in refused if not s.resent)
        self._disconnect()
        if any(s.resent for s in refused):
            # Refused again after reconnecting: not a failover, a replica.
            self._trouble(ReadOnlyError("You can't write against a read only replica."),
                          lost=sum(1 for s in refused if s.resent))

    def _broken(self, e: redis.RedisError, lost: int = 0) -> None:
        lost += sum(1 for s in self._pending if s.keys is not None) + len(self._resend)
        self._resend.clear()
        self._disconnect()
        if lost:
            self._trouble(e, lost)
        # else Redis closed a connection with nothing pending on it (a
        # restart, a failover, its idle timeout): the next send reconnects.

    # -- logging: once per outage ----------------------------------------------
    def _trouble(self, e: redis.RedisError, lost: int = 0) -> None:
        self._lost += lost
        if self._failing is None:
            message = str(self.inflight.failure("charging a placement", e))
            self._failing = message
            log.warning("in-flight charges are not reaching Redis (logged once until they do): %s", message,
                        extra=event("charge_failed"))

    def _recovered(self) -> None:
        if self._failing is not None:
            log.info("in-flight charges reach Redis again; %d charge(s) unconfirmed or lost meanwhile", self._lost,
                     extra=event("charge_recovered", lost=self._lost))
            self._failing, self._lost = None, 0


def _flush_at_exit(ref: weakref.ref[ChargePipe]) -> None:
    pipe = ref()
    if pipe is not None and pipe._pending:
        pipe.flush()
